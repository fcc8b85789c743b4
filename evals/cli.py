"""Command line for the evals: ``python -m evals <dataset> <command> ...``.

Layout: the top-level subcommands are datasets (``reasonseg``, ``omnilabel``); each has its own
subcommands (``score`` today). A new command is one ``_add_<dataset>_<command>(subparsers)``
function that declares its arguments and sets ``func`` to a ``cmd_*(args) -> int`` handler, called
from :func:`build_parser`; a dataset-independent command (e.g. ``merge``) is added to the
top-level subparsers the same way.

Exit codes: 0 success, 2 bad input or usage (the message names the file and the fix, no
traceback). Only this module prints; the library logs.
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


# ----------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    """The full parser: ``<dataset> <command>`` subparsers, each command setting ``func``."""
    parser = argparse.ArgumentParser(
        prog="python -m evals", description="Score sam3agent (or any method) on ReasonSeg and OmniLabel.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    top = parser.add_subparsers(dest="group", required=True, metavar="DATASET")
    rs = top.add_parser("reasonseg", help="ReasonSeg: gIoU / cIoU")
    rs_commands = rs.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_reasonseg_score(rs_commands)
    ol = top.add_parser("omnilabel", help="OmniLabel: AP descr / categ / S / M / L")
    ol_commands = ol.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_omnilabel_score(ol_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(int(args.verbose), 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    handler: Handler = args.func
    try:
        return handler(args)
    except EvalInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


