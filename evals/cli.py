"""Command line for the evals: ``python -m evals <dataset> <command> ...``.

Layout: the top-level subcommands are datasets (``reasonseg``, ``omnilabel``); each has its own
subcommands (``score``, ``run``). A new command is one ``_add_<dataset>_<command>(subparsers)``
function that declares its arguments and sets ``func`` to a ``cmd_*(args) -> int`` handler, called
from :func:`build_parser`; a dataset-independent command (``merge``) is added to the top-level
subparsers the same way.

Exit codes: 0 success, 2 bad input or usage (the message names the file and the fix, no
traceback), 3 a run stopped after too many consecutive LLM backend failures (rerun to resume),
130 interrupted. Only this module prints; the library logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from evals import omnilabel, reasonseg
from evals.errors import EvalInputError
from evals.ray_runner import add_ray_command
from evals.run_options import RunReport, add_run_arguments
from evals.runner import RunAborted

Handler = Callable[[argparse.Namespace], int]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 100:.2f}"


# ----------------------------------------------------------------------------- reasonseg


def cmd_reasonseg_score(args: argparse.Namespace) -> int:
    """Score a folder of ``<id>.png`` masks against a ReasonSeg split folder."""
    report = reasonseg.score_prediction_dir(args.data, args.pred)
    if args.json:
        print(json.dumps(report.scores.to_dict(percent=True)))
        return 0
    print(f"ReasonSeg  data={args.data}  predictions={args.pred}")
    print(f"{'split':<8}{'n':>6}{'gIoU':>9}{'cIoU':>9}")
    for name in ("all", "short", "long"):
        s: reasonseg.SplitScore = getattr(report.scores, name)
        print(f"{name:<8}{s.n:>6}{_fmt(s.giou):>9}{_fmt(s.ciou):>9}")
    if report.missing:
        print(f"missing predictions: {len(report.missing)} (scored as empty), e.g. {report.missing[0]}")
    return 0


def _add_reasonseg_score(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("score", help="score predicted masks (one <id>.png per sample)",
                            description="gIoU / cIoU (percent) overall and for short / long queries.")
    p.add_argument("--data", type=Path, required=True, metavar="DIR",
                   help="ReasonSeg split folder with <id>.jpg + <id>.json")
    p.add_argument("--pred", type=Path, required=True, metavar="DIR",
                   help="folder with one <id>.png per sample (non-zero = foreground; missing = empty)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_reasonseg_score)


def _finish_run(run: Callable[[argparse.Namespace], RunReport], args: argparse.Namespace) -> int:
    """Run a ``run``/``merge`` command: print the summary, map an abort or Ctrl-C to its exit code."""
    try:
        report = run(args)
    except RunAborted as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished samples are kept in {args.out}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    print(report.markdown, end="")
    print(f"\nsummary: {report.paths.summary_json}  samples: {report.paths.samples}")
    return 0


def cmd_reasonseg_run(args: argparse.Namespace) -> int:
    """Run the agent over a ReasonSeg split (resumable)."""
    from evals import run_reasonseg

    return _finish_run(run_reasonseg.run, args)


def _add_reasonseg_run(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run", help="run sam3agent over a split and score it (resumable, concurrent)",
        description="Run the agent on text[0] of every sample with K samples in flight sharing one SAM 3, "
                    "write RUN_DIR/samples.jsonl and masks/<id>.png as samples finish, and summary.json / "
                    "summary.md (beside the paper's Table 8) at the end. Rerun the same command to resume.")
    p.add_argument("--data", type=Path, required=True, metavar="DIR",
                   help="ReasonSeg split folder with <id>.jpg + <id>.json (e.g. ReasonSeg/val)")
    p.add_argument("--split", choices=["train", "val", "test"], default=None,
                   help="which split DIR is, for the paper comparison (default: DIR's folder name)")
    add_run_arguments(p)
    p.set_defaults(func=cmd_reasonseg_run)


# ----------------------------------------------------------------------------- omnilabel


def cmd_omnilabel_score(args: argparse.Namespace) -> int:
    """Score an official OmniLabel prediction file."""
    scores = omnilabel.score_files(args.gt, args.pred)
    if args.json:
        print(json.dumps(scores.to_dict(percent=True)))
        return 0
    print(f"OmniLabel  gt={args.gt}  predictions={args.pred}")
    print(f"{'group':<22}{'n_gt':>7}{'AP':>9}")
    print(f"{'AP = hm(descr, categ)':<22}{'':>7}{_fmt(scores.headline):>9}")
    for g in omnilabel.GROUPS:
        print(f"{g:<22}{scores.n_gt[g]:>7}{_fmt(scores.ap[g]):>9}")
    if scores.n_ignored:
        print(f"ignored detections (image or description not in its label space): {scores.n_ignored}")
    return 0


def _add_omnilabel_score(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("score", help="score an official prediction file",
                            description="Pooled AP (percent) per description group and the headline "
                                        "harmonic mean of AP descr and AP categ.")
    p.add_argument("--gt", type=Path, required=True, metavar="FILE", help="OmniLabel ground-truth JSON")
    p.add_argument("--pred", type=Path, required=True, metavar="FILE",
                   help="JSON list of {image_id, bbox: [x, y, w, h], description_ids, scores}")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=cmd_omnilabel_score)


def cmd_omnilabel_run(args: argparse.Namespace) -> int:
    """Run the paper's OmniLabel protocol with the agent (resumable)."""
    from evals import run_omnilabel

    return _finish_run(run_omnilabel.run, args)


def _add_omnilabel_run(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "run", help="run sam3agent on every (image, description) pair and score the boxes",
        description="Free-form descriptions go through the agent, category names straight to SAM 3; boxes "
                    "from the selected masks with SAM 3's scores. Writes RUN_DIR/predictions.json (official "
                    "format) and scores it. --limit / --shard select images. Rerun the same command to resume.")
    p.add_argument("--gt", type=Path, required=True, metavar="FILE", help="OmniLabel ground-truth JSON")
    p.add_argument("--images", type=Path, required=True, metavar="DIR",
                   help="folder the ground truth's file_name entries are relative to")
    p.add_argument("--categories-through-agent", action="store_true",
                   help="send category names through the agent too (default: straight to SAM 3, as the paper)")
    add_run_arguments(p)
    p.set_defaults(func=cmd_omnilabel_run)


# ----------------------------------------------------------------------------- merge


def cmd_merge(args: argparse.Namespace) -> int:
    """Merge shard run directories."""
    from evals import merge

    return _finish_run(lambda a: merge.merge(a.run_dirs, a.out, a.gt), args)


def _add_merge(top: argparse._SubParsersAction) -> None:
    p = top.add_parser("merge", help="merge --shard i/N run directories into one run and summary",
                       description="Merge the shard directories of one command (all N of them, each finished) "
                                   "into one samples.jsonl, masks/ and the summary an unsharded run would write.")
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR", help="shard run directories")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output run directory")
    p.add_argument("--gt", type=Path, default=None, metavar="FILE",
                   help="OmniLabel ground truth (default: the path recorded in the shards' manifests)")
    p.set_defaults(func=cmd_merge)


# ----------------------------------------------------------------------------- entry point


def build_parser(prog: str = "python -m evals") -> argparse.ArgumentParser:
    """The full parser: ``<dataset> <command>`` subparsers, each command setting ``func``."""
    parser = argparse.ArgumentParser(
        prog=prog, description="Score sam3agent (or any method) on ReasonSeg and OmniLabel.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    top = parser.add_subparsers(dest="group", required=True, metavar="DATASET|merge|ray")
    rs = top.add_parser("reasonseg", help="ReasonSeg: gIoU / cIoU")
    rs_commands = rs.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_reasonseg_score(rs_commands)
    _add_reasonseg_run(rs_commands)
    ol = top.add_parser("omnilabel", help="OmniLabel: AP descr / categ / S / M / L")
    ol_commands = ol.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_omnilabel_score(ol_commands)
    _add_omnilabel_run(ol_commands)
    _add_merge(top)
    add_ray_command(top, {"reasonseg": _add_reasonseg_run, "omnilabel": _add_omnilabel_run},
                    _finish_run)  # ray <dataset>: shards as Ray tasks, merged (evals/ray_runner.py)
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m evals") -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(int(args.verbose), 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    handler: Handler = args.func
    try:
        return handler(args)
    except EvalInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


