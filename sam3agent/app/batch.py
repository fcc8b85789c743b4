"""``sam3agent batch PAIRS.jsonl --out DIR``: the agent over a list of (image, query) pairs, resumable.

The pairs file has one ``{"id"?, "image", "query"}`` object per line (:mod:`evals.pairs`); the run
goes through the eval runner (:mod:`evals.run_pairs`), so it keeps K pairs in flight on one SAM 3,
appends one fsynced line per finished pair to ``DIR/samples.jsonl``, writes ``DIR/masks/<id>.png``
atomically before that line, holds ``DIR/.lock`` (a second process on the same folder is refused),
and resumes by id when the same command runs again (a different list or other settings are refused
by the manifest). The backend, SAM 3 and agent flags are ``sam3agent run``'s. The progress bar shows
on a terminal or with ``-v``; one summary is printed at the end.

Exit codes:
    0: every selected pair has a record, and none failed.
    1: some pairs failed (LLM backend errors, unreadable images); rerun the same command to retry them.
    2: usage or input error (a bad pairs file, a locked or differently set up DIR, SAM 3 weights missing).
    3: the run stopped after too many consecutive LLM backend failures; rerun to resume.
    130: interrupted (finished pairs are kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from evals import run_pairs
from evals.errors import EvalInputError
from evals.records import STATUSES
from evals.run_options import add_run_arguments
from evals.runner import RunAborted

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BACKEND, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

_DESCRIPTION = """Run the agent on every (image, query) pair of a JSON Lines file, K pairs in flight sharing one
SAM 3. Each line: {"id": "optional-name", "image": "path/to/image.jpg", "query": "what to segment"};
relative image paths are taken from the file's folder, and a line without an id is named by its
line number. RUN_DIR gets samples.jsonl (one record per pair: status, masks as COCO RLE, turns, tokens),
masks/<id>.png (0 = background, i = answer mask i), summary.json and index.html. Rerun the same
command to resume: finished pairs are skipped, failed ones run again."""


def add_batch_command(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``batch`` to the ``sam3agent`` subcommands; return its parser."""
    parser = commands.add_parser("batch", help="run the agent over a JSONL list of (image, query) pairs "
                                               "(resumable, concurrent)",
                                 description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pairs", type=Path, metavar="PAIRS.jsonl",
                        help='one {"id"?, "image", "query"} JSON object per line')
    add_run_arguments(parser, overlays_help="write RUN_DIR/overlays/<id>.jpg: the answer drawn on the image")
    parser.set_defaults(func=cmd_batch)
    return parser


def _error(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)


def _show_progress(args: argparse.Namespace) -> bool:
    """The bar shows on a terminal or with ``-v``, unless ``--no-progress``."""
    if args.no_progress:
        return False
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(getattr(args, "verbose", 0)) or (bool(isatty()) if callable(isatty) else False)


def summary_lines(report: run_pairs.BatchReport) -> list[str]:
    """The summary printed at the end: counts by status, time and rate, where the files are."""
    s, progress, root = report.summary, report.progress, report.paths.root.resolve()
    counts = ", ".join(f"{k} {s['status'].get(k, 0)}" for k in STATUSES)
    before = s["n_samples"] - progress.ran
    rate = s["timing"]["this_run"]["pairs_per_second"]
    speed = f"{rate:.2f} pairs/s over the {progress.ran} run now" if rate else "nothing left to run"
    lines = [
        f"pairs    {s['n_samples']} of {s['pairs']['n_samples']} in the list: {progress.ran} run now, "
        f"{before} finished before",
        f"status   {counts}",
        f"masks    {s['n_masks']} in all; model mistakes {sum(s['failures'].values())}",
        f"time     {report.wall_seconds:.1f} s with loading; {speed}",
        f"records  {root / 'samples.jsonl'}",
        f"masks    {root / 'masks'}/<id>.png",
        f"summary  {root / 'summary.json'}",
        f"view     {root / 'index.html'}",
    ]
    if s["status"].get("failed"):
        lines.append(f"failed   {s['status']['failed']} pair(s) (reasons in samples.jsonl); rerun the same command "
                     "to retry them")
    return lines


def cmd_batch(args: argparse.Namespace) -> int:
    """``sam3agent batch``: run or resume the list; print the summary."""
    if args.out.exists() and not args.out.is_dir():
        _error(f"--out {args.out} exists and is not a folder; pass a new or existing folder")
        return EXIT_USAGE
    args.no_progress = not _show_progress(args)
    try:
        report = run_pairs.run(args)
    except EvalInputError as e:
        _error(str(e))
        return EXIT_USAGE
    except RunAborted as e:
        _error(str(e))
        return EXIT_BACKEND
    except OSError as e:
        _error(f"cannot write the run into {args.out}: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error(f"interrupted; finished pairs are kept in {args.out}; rerun the same command to resume")
        return EXIT_INTERRUPTED
    print("\n".join(summary_lines(report)))
    return EXIT_FAILED if report.summary["status"].get("failed") else EXIT_OK
