"""What the ``run`` commands share: their flags, shard selection, the backend, the manifest.

The LLM / SAM 3 / agent flags are :mod:`sam3agent.backends`'s, so ``python -m evals ...
run`` accepts exactly what ``sam3agent`` does. A hidden ``--_fake-backend MODULE:FUNC`` flag is
**for tests only** (not shown in ``--help``): it calls ``FUNC(args, config)``, which returns an
``(llm, engine)`` pair built in-process (a scripted LLM and a fake engine), so a real subprocess
can be run, killed and resumed without a model or a server.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import hashlib
import importlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from evals.errors import EvalInputError
from evals.rundir import RunPaths, ensure_manifest
from evals.runner import RunSettings
from sam3agent.backends import add_backend_arguments, build_config, build_engine, build_llm, llm_settings
from sam3agent.backends import positive_int as _positive
from sam3agent.backends import sam3_source as backend_sam3_source
from sam3agent.config import AgentConfig
from sam3agent.llm.base import LLM
from sam3agent.versions import REPORTED, package_versions
from sam3core.protocol import SegmentEngine

logger = logging.getLogger(__name__)

T = TypeVar("T")

PACKAGES = REPORTED
"""Distributions whose versions the manifest records."""


# ----------------------------------------------------------------------------- flags


@dataclass(frozen=True)
class Shard:
    """A deterministic slice of the work: item ``k`` of the sorted list belongs to shard ``k % count``.

    Attributes:
        index: 0-based shard index (``0 <= index < count``).
        count: Number of shards.
    """

    index: int
    count: int

    def select(self, items: Sequence[T]) -> list[T]:
        """The items of this shard, in their given order."""
        return [x for k, x in enumerate(items) if k % self.count == self.index]

    def to_dict(self) -> dict[str, int]:
        """``{"index", "count"}``."""
        return {"index": self.index, "count": self.count}


def parse_shard(text: str) -> Shard:
    """Parse ``i/N`` (0-based ``i``), e.g. ``0/4`` .. ``3/4``.

    Raises:
        argparse.ArgumentTypeError: If the text is not ``i/N`` with ``0 <= i < N``.
    """
    try:
        index_text, count_text = text.split("/")
        index, count = int(index_text), int(count_text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--shard takes i/N, e.g. 0/4 (got {text!r})") from e
    if count < 1 or not 0 <= index < count:
        raise argparse.ArgumentTypeError(f"--shard i/N needs 0 <= i < N (got {text!r}); shards are 0-based")
    return Shard(index, count)


def add_run_arguments(parser: argparse.ArgumentParser, *,
                      overlays_help: str = "write RUN_DIR/overlays/<id>.jpg: ground truth beside the prediction",
                      ) -> None:
    """The flags every ``run`` command has (output, selection, concurrency, extras, backend).

    Args:
        parser: The command's parser.
        overlays_help: What ``--save-overlays`` writes, for commands without ground truth.
    """
    run = parser.add_argument_group("run")
    run.add_argument("--out", type=Path, required=True, metavar="RUN_DIR",
                     help="run directory (created; rerunning the same command resumes it)")
    run.add_argument("--limit", type=_positive, default=None, metavar="N",
                     help="only the first N items of the (sharded) selection")
    run.add_argument("--concurrency", type=_positive, default=8, metavar="K",
                     help="samples in flight at once, sharing one SAM 3 engine (default 8)")
    run.add_argument("--shard", type=parse_shard, default=None, metavar="i/N",
                     help="run the i-th of N deterministic slices (0-based); combine with 'merge'")
    run.add_argument("--max-consecutive-failures", type=_positive, default=5, metavar="N",
                     help="stop after N LLM backend failures in a row (default 5); rerun to resume")
    run.add_argument("--save-overlays", action="store_true", help=overlays_help)
    run.add_argument("--save-trajectories", action="store_true",
                     help="write RUN_DIR/trajectories/<id>/ (images the model saw, every step)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    # For tests only, hidden from --help: MODULE:FUNC builds (llm, engine) in-process (see the module docstring).
    parser.add_argument("--_fake-backend", dest="fake_backend", default=None, help=argparse.SUPPRESS)
    add_backend_arguments(parser)


def run_settings(args: argparse.Namespace) -> RunSettings:
    """The runner settings the flags describe."""
    return RunSettings(concurrency=args.concurrency, max_consecutive_failures=args.max_consecutive_failures,
                       progress=not args.no_progress)


def select(items: Sequence[T], args: argparse.Namespace) -> list[T]:
    """Apply ``--shard`` then ``--limit`` to items already in their canonical (sorted) order."""
    chosen = args.shard.select(items) if args.shard else list(items)
    return chosen[: args.limit] if args.limit else chosen


# ----------------------------------------------------------------------------- backend


@dataclass
class Backend:
    """The LLM and the one shared engine of a run, and how the manifest names them.

    Attributes:
        llm: The planning MLLM backend.
        engine: The segmentation engine (shared by every agent).
        llm_id: Identity of the LLM for the manifest (kind and model).
        sam3_id: Identity of SAM 3 for the manifest (hub id or directory).
        info: Non-identity details (endpoint URL, key variable).
    """

    llm: LLM
    engine: SegmentEngine
    llm_id: dict[str, Any]
    sam3_id: str
    info: dict[str, Any] = field(default_factory=dict)

    async def aclose(self) -> None:
        """Release the HTTP client and stop the engine's worker (whichever exist)."""
        aclose = getattr(self.llm, "aclose", None)
        if aclose is not None:
            await aclose()
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def _load_hook(spec: str) -> Callable[[argparse.Namespace, AgentConfig], tuple[LLM, SegmentEngine]]:
    module_name, _, func_name = spec.partition(":")
    if not module_name or not func_name:
        raise EvalInputError(f"--_fake-backend takes MODULE:FUNC (got {spec!r})")
    try:
        return getattr(importlib.import_module(module_name), func_name)  # type: ignore[no-any-return]
    except (ImportError, AttributeError) as e:
        raise EvalInputError(f"--_fake-backend {spec}: {e}") from e


def backend_identity(args: argparse.Namespace) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """``(llm_id, sam3_id, info)`` as the manifest records them, without building anything."""
    if args.fake_backend:
        return {"kind": "test-hook", "model": args.fake_backend}, "test-hook", {}
    settings = llm_settings(args)
    llm_id = {"kind": settings["kind"], "model": settings["model"]}
    info = {k: v for k, v in settings.items() if k not in llm_id}
    return llm_id, backend_sam3_source(args), info


def build_backend(args: argparse.Namespace, config: AgentConfig) -> Backend:
    """Build the LLM and load SAM 3 as the flags say (or call the test hook).

    Raises:
        EvalInputError: If SAM 3 or an in-process MLLM cannot be loaded (the message names the fix).
    """
    llm_id, sam3_id, info = backend_identity(args)
    if args.fake_backend:
        llm, engine = _load_hook(args.fake_backend)(args, config)
        return Backend(llm=llm, engine=engine, llm_id=llm_id, sam3_id=sam3_id, info=info)
    from sam3agent.llm.transformers_local import ModelLoadError
    from sam3core.loading import Sam3LoadError

    try:
        llm = build_llm(args, prompt_version=config.prompt_version)
        logger.info("loading SAM 3 from %s", sam3_id)
        engine = build_engine(args)
    except (Sam3LoadError, ModelLoadError) as e:
        raise EvalInputError(str(e)) from e
    return Backend(llm=llm, engine=engine, llm_id=llm_id, sam3_id=sam3_id, info=info)


@dataclass(frozen=True)
class RunReport:
    """What a finished ``run`` (or ``merge``) returns.

    Attributes:
        paths: The run directory.
        summary: The ``summary.json`` object.
        markdown: The ``summary.md`` text.
    """

    paths: RunPaths
    summary: dict[str, Any]
    markdown: str


# ----------------------------------------------------------------------------- manifest


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def build_manifest(args: argparse.Namespace, config: AgentConfig, *, dataset: dict[str, Any],
                   options: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a run: everything in it but ``info`` must match to resume.

    Args:
        args: The parsed flags (for the backend identity and shard).
        config: The agent settings.
        dataset: Dataset identity (name, split, fingerprint, counts).
        options: Dataset-specific protocol switches.
        info: Recorded, never compared (paths).
    """
    llm_id, sam3_id, backend_info = backend_identity(args)
    return {
        "schema_version": 1,
        "dataset": dataset,
        "shard": args.shard.to_dict() if args.shard else None,
        "options": options,
        "agent": config.model_dump(mode="json"),
        "llm": llm_id,
        "sam3": sam3_id,
        "packages": package_versions(PACKAGES),
        "info": {**info, **backend_info, "command": sys.argv, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
    }


def agent_config(args: argparse.Namespace) -> AgentConfig:
    """:func:`sam3agent.backends.build_config`, with a bad setting reported as user input."""
    try:
        return build_config(args)
    except ValueError as e:
        raise EvalInputError(f"invalid agent settings: {e}") from e


def widen_default_executor(concurrency: int) -> None:
    """Give the running loop's ``to_thread`` pool room for ``concurrency`` agents.

    Image decoding, rendering and file writes run there; asyncio's default pool has only
    ``cpu_count + 4`` threads, which would serialize many agents on a small machine.
    """
    workers = max(8, 2 * concurrency + 4)
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="evals"))


@contextlib.asynccontextmanager
async def run_backend(args: argparse.Namespace, config: AgentConfig, paths: RunPaths,
                      manifest: dict[str, Any]) -> AsyncIterator[tuple[Backend, Any]]:
    """Load the run's backend and yield ``(backend, agent)``; close the backend afterwards.

    The thread pool is widened for ``args.concurrency`` agents, and a new run's manifest is written
    only once its backend has loaded (so a typo in ``--sam3`` does not fix a bad setup on disk).
    """
    from sam3agent.agent import Agent

    widen_default_executor(args.concurrency)
    backend = build_backend(args, config)
    try:
        ensure_manifest(paths, manifest)
        yield backend, Agent(backend.llm, backend.engine, config)
    finally:
        await backend.aclose()


def write_viewer_index(run_dir: Path) -> Path:
    """Write the run's HTML index (``index.html``, :func:`sam3agent.viewer.write_eval_index`)."""
    from sam3agent.viewer import write_eval_index

    path = write_eval_index(run_dir)
    logger.info("HTML index: %s", path)
    return path
