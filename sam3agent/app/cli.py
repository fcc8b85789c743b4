"""The ``sam3agent`` command line: ``run``, ``batch``, ``eval``, ``serve``, ``doctor``, ``selftest``.

``sam3agent run IMAGE QUERY`` segments what the query describes and writes the result (overlay,
mask, JSON with COCO RLE masks, the trajectory as JSON and HTML) into a new folder under
``./sam3agent-runs/`` (or ``--out DIR``). ``batch PAIRS.jsonl --out DIR`` runs a list of pairs,
resumably (:mod:`sam3agent.app.batch`, with exit codes of its own). Backend flags and their
environment defaults are those of :mod:`sam3agent.backends`. ``eval`` and ``serve`` hand their
arguments to ``python -m evals`` and :mod:`sam3agent.serve`. ``doctor`` checks the environment;
``selftest`` runs the whole pipeline offline on a tiny random SAM 3 and a scripted model.

Exit codes:
    0: success (``run``: the model answered, with masks or with "no mask"; all checks passed).
    1: the run ended without an answer (a budget ran out), or a check / self-test stage failed.
    2: usage or input error (bad flags, unreadable image, empty query, SAM 3 weights missing).
    3: the LLM backend is unreachable, or failed after its retries.

Only this module prints; the library logs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam3agent import backends as bo

if TYPE_CHECKING:
    from sam3agent.app.doctor import Check
    from sam3agent.app.selftest import StageResult
    from sam3agent.config import AgentConfig
    from sam3agent.result import AgentResult

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BACKEND = 0, 1, 2, 3
RUNS_ROOT = Path("sam3agent-runs")
_DELEGATED = ("eval", "serve")
_EPILOG = """exit codes: 0 ok; 1 run ended without an answer / a check failed; 2 usage or input error;
3 LLM backend unreachable or failing. Run `sam3agent selftest` first, then `sam3agent doctor`."""


def _error(message: str) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)


def _warn(message: str) -> None:
    print(f"warning: {' '.join(message.split())}", file=sys.stderr)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``-v`` after the command too (``sam3agent run IMAGE QUERY -v``); counted with the one before it."""
    parser.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more logging (-vv for debug) and weight-loading progress bars")


def package_version() -> str:
    """The installed version of sam3agent (``"unknown"`` when it is not installed, e.g. run from a checkout)."""
    from importlib import metadata

    try:
        return metadata.version("sam3agent")
    except metadata.PackageNotFoundError:
        return "unknown"


def out_dir_problem(out: Path | None) -> str | None:
    """Why ``--out DIR`` cannot become a folder to write into (``None``: it can), checked before any work.

    Args:
        out: The ``--out`` value (``None``: not given).

    Returns:
        The error message naming the problem and the fix, or ``None``.
    """
    if out is None:
        return None
    path = out.expanduser()
    if path.exists():
        return None if path.is_dir() else f"--out {out} exists and is not a folder; pass a new or existing folder"
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"--out {out} cannot be created: {ancestor} is not a folder; pass a path under a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"--out {out} cannot be created: {ancestor} is not writable; pass a folder you can write to"
    return None


def build_parser() -> argparse.ArgumentParser:
    """The ``sam3agent`` parser (``eval`` and ``serve`` are listed here but dispatched before parsing)."""
    parser = argparse.ArgumentParser(
        prog="sam3agent", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_EPILOG,
        description="A multimodal LLM that segments what it can reason about, with SAM 3 as its tool.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-vv for debug) and weight-loading progress bars (shown anyway on a "
                             "terminal)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the version of sam3agent and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser(
        "run", help="segment what QUERY describes in IMAGE", epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the agent on one image and save overlay.png, mask.png, result.json (COCO RLE),\n"
                    "trajectory.json and trajectory.html into a new folder (printed as an absolute path).")
    run.add_argument("image", type=Path, help="the image file (JPEG, PNG, WebP, TIFF, BMP)")
    run.add_argument("query", help="what to segment, e.g. 'the mug the person is holding'")
    run.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help=f"write the result here (default: a new folder under ./{RUNS_ROOT}/)")
    bo.add_backend_arguments(run)
    _add_verbose(run)
    run.set_defaults(func=cmd_run)
    from sam3agent.app.batch import add_batch_command  # `batch` is built on the evals' runner

    _add_verbose(add_batch_command(commands))
    commands.add_parser("eval", add_help=False, help="evaluate on a dataset: `sam3agent eval --help` "
                                                      "(same as python -m evals)")
    commands.add_parser("serve", add_help=False, help="serve the agent over MCP or HTTP: `sam3agent serve --help`")
    doctor = commands.add_parser("doctor", help="check the environment and the backends, with fixes",
                                 description="Check Python, torch/torchvision, the GPU, the SAM 3 weights and the "
                                             "LLM endpoint (the same flags as `run`). Downloads nothing.")
    bo.add_backend_arguments(doctor)
    _add_verbose(doctor)
    doctor.set_defaults(func=cmd_doctor)
    selftest = commands.add_parser("selftest", help="the whole pipeline offline in seconds (run this first)",
                                   description="Tiny random SAM 3 + a scripted model served over loopback HTTP: "
                                               "proves the installation works (not that answers are right).")
    selftest.add_argument("--device", default="cpu", help="device of the tiny SAM 3 (default cpu)")
    selftest.add_argument("--out", type=Path, default=None, metavar="DIR",
                          help="keep the self-test's saved run (with trajectory.html) here")
    selftest.set_defaults(func=cmd_selftest)
    return parser


# ----------------------------------------------------------------------------- run


def new_run_dir(root: Path = RUNS_ROOT) -> Path:
    """Create and return a new, uniquely named folder under ``root`` (absolute path).

    Names are ``YYYYmmdd-HHMMSS-<6 hex>``; the folder is created atomically, so concurrent runs
    never share one.
    """
    root.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while True:
        path = root / f"{stamp}-{secrets.token_hex(3)}"
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path.resolve()


def _preflight(settings: dict[str, Any]) -> str | None:
    """The error line when nothing answers at the LLM endpoint (checked before SAM 3 loads).

    A model the endpoint does not list gets the warning ``doctor`` gives (:func:`~sam3agent.app.doctor.unlisted_model`)
    and the run goes on: a server that refuses the name then answers 404, reported with its models.
    """
    from sam3agent.app.doctor import model_served, probe_endpoint, unlisted_model, vllm_command

    base_url, model = settings["base_url"], settings["model"]
    probe = probe_endpoint(base_url, api_key=os.environ.get(settings["api_key_env"]), timeout=10.0)
    if not probe.reachable:
        return (f"nothing answers at {base_url} ({probe.error}); start vLLM with `{vllm_command(model, base_url)}` "
                "or pass --llm-base-url the URL of a running server (check with `sam3agent doctor`)")
    if probe.models is not None and not model_served(model, probe.models):
        detail, fix = unlisted_model(model, probe.models, subject=base_url)
        _warn(f"{detail}. Fix: {fix}. Continuing.")
    return None


async def _arun(llm: Any, engine: Any, config: AgentConfig, image: Any, query: str) -> AgentResult:
    from sam3agent.agent import Agent

    try:
        return await Agent(llm, engine, config).arun(image, query)
    finally:
        close = getattr(llm, "aclose", None)
        if close is not None:
            await close()


def _agent_run(args: argparse.Namespace, config: AgentConfig, image: Any) -> AgentResult | int:
    """Load SAM 3 and the LLM, run; an exit code instead of a result when it cannot."""
    from sam3agent.llm.base import LLMBackendError
    from sam3agent.llm.transformers_local import ModelLoadError
    from sam3core.loading import Sam3LoadError

    try:
        engine = bo.build_engine(args)
    except (Sam3LoadError, ValueError) as e:
        _error(str(e))
        return EXIT_USAGE
    try:
        llm = bo.build_llm(args, prompt_version=config.prompt_version)
        return asyncio.run(_arun(llm, engine, config, image, args.query))
    except ModelLoadError as e:
        _error(str(e))
        return EXIT_USAGE
    except LLMBackendError as e:
        last = str(e.last_error).splitlines()[0] if str(e.last_error) else type(e.last_error).__name__
        _error(f"the LLM backend {e.endpoint} failed after {e.attempts} attempt(s): {last} "
               "(check it with `sam3agent doctor`)")
        return EXIT_BACKEND
    finally:
        engine.close()


def _summary(result: AgentResult, out: Path) -> list[str]:
    t = result.totals
    phrases = [str(s.call["parameters"].get("text_prompt")) for s in result.steps
               if s.call and s.call.get("name") == "segment_phrase" and s.failure is None]
    scores = [] if result.detections.confidence is None else [f"{c:.2f}" for c in result.detections.confidence]
    masks = f"{len(result.detections)}" + (f" (scores {', '.join(scores)})" if scores else "")
    mistakes = sum(t.failures.values())
    return [
        f"status   {result.status}: {result.reason}",
        f"masks    {masks}",
        f"phrases  {', '.join(repr(p) for p in phrases) or 'none'}",
        f"turns    {t.turns} (+{t.verify_calls} verification calls" + (f", {mistakes} model mistakes)" if mistakes
                                                                      else ")"),
        f"seconds  {t.wall_seconds:.1f} (LLM {t.llm_seconds:.1f}, SAM 3 {t.sam_seconds:.1f})",
        f"saved    {out}",
        f"view     {out / 'trajectory.html'}",
    ]


def cmd_run(args: argparse.Namespace) -> int:
    """``sam3agent run``: run the agent once and save the result."""
    from sam3core.image import prepare_image

    if not args.query.strip():
        _error("QUERY is empty: describe what to segment, e.g. 'the red cup'")
        return EXIT_USAGE
    from sam3agent.agent import check_query

    try:
        check_query(args.query)  # e.g. a lone surrogate from a command line that is not UTF-8
    except ValueError as e:
        _error(str(e))
        return EXIT_USAGE
    problem = out_dir_problem(args.out)
    if problem:
        _error(problem)
        return EXIT_USAGE
    try:
        image = prepare_image(args.image)
        config = bo.build_config(args)
    except ValueError as e:
        _error(str(e))
        return EXIT_USAGE
    settings = bo.llm_settings(args)
    if settings["kind"] == "openai_compatible" and not args.llm_cache:  # a cache may answer without the server
        problem = _preflight(settings)
        if problem:
            _error(problem)
            return EXIT_BACKEND
    result = _agent_run(args, config, image)
    if isinstance(result, int):
        return result
    try:
        out = args.out.expanduser().resolve() if args.out is not None else new_run_dir()
        result.save(out)
    except OSError as e:
        _error(f"cannot write the result: {e}")
        return EXIT_USAGE
    print("\n".join(_summary(result, out)))
    return EXIT_OK if result.status in ("answered", "no_mask") else EXIT_FAILED


# ----------------------------------------------------------------------------- doctor, selftest


def _print_check(check: Check) -> None:
    print(f"{check.level.upper():<5} {check.name}: {check.detail}")
    if check.fix and check.level != "ok":
        print(f"      fix: {check.fix}")


def cmd_doctor(args: argparse.Namespace) -> int:
    """``sam3agent doctor``: check everything, print each result with its fix."""
    from sam3agent.app.doctor import run_doctor

    checks = run_doctor(sam3=bo.sam3_source(args), llm=bo.llm_settings(args), timeout=min(args.llm_timeout, 10.0))
    for check in checks:
        _print_check(check)
    failed = sum(c.level == "fail" for c in checks)
    print("all checks passed" if not failed else f"{failed} check(s) failed")
    return EXIT_FAILED if failed else EXIT_OK


def _print_stage(stage: StageResult) -> None:
    word = {True: "PASS", False: "FAIL", None: "SKIP"}[stage.ok]
    timing = f" ({stage.seconds:.1f} s)" if stage.ok is not None else ""
    print(f"{word}  {stage.name}{timing}" + (f": {stage.detail}" if stage.detail else ""), flush=True)


def cmd_selftest(args: argparse.Namespace) -> int:
    """``sam3agent selftest``: the offline pipeline check."""
    from sam3agent.app.selftest import run_selftest

    problem = out_dir_problem(args.out)
    if problem:
        _error(problem)
        return EXIT_USAGE
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # transformers missing: the torch-stack stage reports it
        pass
    started = time.perf_counter()
    report = run_selftest(device=args.device, out_dir=args.out, on_stage=_print_stage)
    seconds = time.perf_counter() - started
    if report.run_dir is not None:
        print(f"saved    {report.run_dir} (open trajectory.html in a browser)")
    print(f"selftest passed in {seconds:.1f} s" if report.passed else f"selftest FAILED after {seconds:.1f} s")
    return EXIT_OK if report.passed else EXIT_FAILED


# ----------------------------------------------------------------------------- entry point


def _delegate(command: str, argv: list[str]) -> int:
    if command == "eval":
        from evals.cli import main as eval_main

        return eval_main(argv, prog="sam3agent eval")
    try:
        from sam3agent.app.serve.cli import main as serve_main
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("sam3agent.app.serve"):
            _error("`sam3agent serve` is not available in this installation (sam3agent.app.serve.cli is missing)")
        else:
            _error(f"`sam3agent serve` needs the serve extra ({e.name} is missing): pip install 'sam3agent[serve]'")
        return EXIT_USAGE
    return serve_main(argv)


def _dispatch(argv: list[str]) -> int:
    verbose = 0
    while argv and argv[0] in ("-v", "--verbose", "-vv"):
        verbose += 2 if argv.pop(0) == "-vv" else 1
    if argv and argv[0] in _DELEGATED:
        return _delegate(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    args.verbose = verbose = verbose + args.verbose  # build_engine reads it (progress bars)
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    return int(args.func(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (``--help`` and usage errors included)."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse's --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USAGE)
    except KeyboardInterrupt:
        _error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
