"""``sam3agent batch``: the agent over a list of (image, query) pairs, through the resumable runner.

The pairs (:mod:`evals.pairs`) are described to :func:`evals.runner.run_samples` as samples, the way
:mod:`evals.run_reasonseg` describes ReasonSeg's, so a batch has the eval runs' guarantees: the
run directory's lock, its manifest (a resume with other settings or another list is refused),
``samples.jsonl`` appended one fsynced line per finished pair, mask files written atomically before
their line, and a rerun that skips finished ids and retries failed ones.

Each line adds to the common fields (:mod:`evals.records`; ``iou`` is null, there is no ground
truth): ``image`` (as the pairs file wrote it), ``line``, ``n_masks``, ``detections`` (per answer
mask: phrase, score, box and COCO RLE, as ``result.json`` has them), ``mask_rle`` (their union, COCO
RLE) and ``mask_file`` (``masks/<id>.png``: 0 = background, ``i`` = answer mask ``i``, as
``sam3agent run``'s ``mask.png``). A pair whose image cannot be read is recorded ``failed`` with the
reason, like a pair whose LLM backend failed for good, and is retried on resume.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.errors import EvalInputError
from evals.pairs import Pair, load_pairs, pairs_identity
from evals.records import STATUSES, agent_fields, failed_fields, mask_rle
from evals.run_options import agent_config, build_manifest, run_backend, run_settings, select, write_viewer_index
from evals.rundir import RunLock, RunPaths, atomic_write_bytes, atomic_write_json, check_manifest
from evals.runner import Artifacts, SampleOutput, run_samples
from evals.summary import run_statistics, timing_statistics
from sam3agent.agent import Agent
from sam3agent.config import AgentConfig
from sam3agent.detections import detections_to_list
from sam3agent.llm.base import LLMBackendError
from sam3agent.render import mask_png
from sam3agent.result import AgentResult
from sam3core.image import jpeg_bytes

SUMMARY_SCHEMA_VERSION = 1


@dataclass
class Progress:
    """What this invocation did (a resumed run skips the pairs finished before).

    Attributes:
        ran: Pairs started in this invocation.
        run_seconds: Wall time of the runner (backend loading excluded).
    """

    ran: int = 0
    run_seconds: float = 0.0


def unusable_fields(error: ValueError) -> dict[str, Any]:
    """The outcome fields of a pair whose image could not be used: ``failed``, with the error, no cost."""
    return {"status": "failed", "turns": 0, "reason": "the image or query could not be used", "phrases": [],
            "failures": {}, "llm_calls": 0, "tokens": {"prompt": 0, "completion": 0, "total": 0}, "timings": {},
            "error": f"{type(error).__name__}: {error}"}


@dataclass
class PairTask:
    """One pair run through the agent (a :class:`~evals.runner.Sample`).

    Attributes:
        pair: The pair.
        agent: The shared agent.
        progress: Counts the pairs started.
        save_trajectories: Write ``trajectories/<id>/``.
        save_overlays: Write ``overlays/<id>.jpg`` (the answer drawn on the image).
    """

    pair: Pair
    agent: Agent
    progress: Progress
    save_trajectories: bool = False
    save_overlays: bool = False

    @property
    def id(self) -> str:
        """The pair id."""
        return self.pair.id

    async def run(self) -> SampleOutput:
        """Run the agent on the pair (raises ``LLMBackendError`` when the backend fails for good)."""
        self.progress.ran += 1
        try:
            result = await self.agent.arun(self.pair.image, self.pair.query)
        except ValueError as e:  # the image cannot be read (or is too large): this pair fails, the run goes on
            return self._nothing(unusable_fields(e))
        height, width = result.image.height, result.image.width
        record = {**self._pair_fields(), **agent_fields(result), "n_masks": len(result.detections),
                  "detections": detections_to_list(result.detections, height, width),
                  "mask_rle": mask_rle(result.mask()), "mask_file": f"masks/{self.id}.png"}
        mask = mask_png(result.detections, height, width)
        return SampleOutput(record=record, mask=mask, artifacts=self._artifacts(result))

    def failed(self, error: LLMBackendError) -> SampleOutput:
        """The record of a pair whose backend failed for good (no mask file)."""
        return self._nothing(failed_fields(error))

    def _nothing(self, outcome: dict[str, Any]) -> SampleOutput:
        return SampleOutput(record={**self._pair_fields(), **outcome, "n_masks": 0, "detections": [],
                                    "mask_rle": None, "mask_file": None})

    def _pair_fields(self) -> dict[str, Any]:
        return {"query": self.pair.query, "iou": None, "image": self.pair.image_text, "line": self.pair.line}

    def _artifacts(self, result: AgentResult) -> Artifacts | None:
        if not (self.save_trajectories or self.save_overlays):
            return None

        def write(paths: RunPaths) -> None:
            if self.save_trajectories:
                result.save(paths.trajectories / self.id)
            if self.save_overlays:
                atomic_write_bytes(paths.overlays / f"{self.id}.jpg", jpeg_bytes(result.overlay(), 85))

        return write


class StatusMetric:
    """The progress bar's figure: finished pairs by status."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def add(self, record: dict[str, Any]) -> None:
        """Count one record."""
        self._counts[record["status"]] += 1

    def postfix(self) -> str:
        """E.g. ``answered=12 no_mask=3 failed=1`` (statuses not seen yet are left out)."""
        return " ".join(f"{s}={self._counts[s]}" for s in STATUSES if self._counts[s])


@dataclass(frozen=True)
class BatchReport:
    """What a finished ``sam3agent batch`` returns.

    Attributes:
        paths: The run directory.
        summary: The ``summary.json`` object.
        progress: What this invocation ran.
        wall_seconds: Wall time of this invocation, backend loading included.
    """

    paths: RunPaths
    summary: dict[str, Any]
    progress: Progress
    wall_seconds: float


def summarize(manifest: dict[str, Any], records: Sequence[dict[str, Any]], progress: Progress) -> dict[str, Any]:
    """The ``summary.json`` object: the list, the backend, statuses, mistakes, tokens, masks and time."""
    run_rate = progress.ran / progress.run_seconds if progress.run_seconds > 0 else None
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "dataset": "pairs",
        "pairs": manifest["dataset"],
        "llm": manifest.get("llm"),
        "sam3": manifest.get("sam3"),
        "prompt_version": (manifest.get("agent") or {}).get("prompt_version"),
        **run_statistics(records),
        "n_masks": sum(int(r.get("n_masks") or 0) for r in records),
        "timing": {**timing_statistics(records), "this_run": {
            "pairs_run": progress.ran, "run_seconds": progress.run_seconds, "pairs_per_second": run_rate}},
    }


async def _execute(args: argparse.Namespace, config: AgentConfig, pairs: Sequence[Pair], paths: RunPaths,
                   manifest: dict[str, Any], progress: Progress) -> list[dict[str, Any]]:
    async with run_backend(args, config, paths, manifest) as (_, agent):
        tasks = [PairTask(p, agent, progress, args.save_trajectories, args.save_overlays) for p in pairs]
        started = time.perf_counter()
        try:
            return await run_samples(paths, tasks, metric=StatusMetric(), settings=run_settings(args))
        finally:
            progress.run_seconds = time.perf_counter() - started


def run(args: argparse.Namespace) -> BatchReport:
    """Run (or resume) ``sam3agent batch`` as the parsed flags say; write ``summary.json`` and ``index.html``.

    Raises:
        EvalInputError: A bad pairs file or flags, a locked or differently set up run directory.
        RunAborted: Too many consecutive LLM backend failures (finished pairs are kept).
    """
    started = time.perf_counter()
    source = Path(args.pairs)
    all_pairs = load_pairs(source)
    chosen = select(all_pairs, args)
    if not chosen:
        raise EvalInputError(f"the --shard / --limit selection holds no pair of {source}; use fewer shards")
    config = agent_config(args)
    manifest = build_manifest(args, config, dataset=pairs_identity(all_pairs), options={},
                              info={"pairs": str(source.resolve())})
    paths = RunPaths(Path(args.out))
    progress = Progress()
    with RunLock(paths):
        check_manifest(paths, manifest)  # refuse a mismatch before loading anything
        records = asyncio.run(_execute(args, config, chosen, paths, manifest, progress))
        summary = summarize(manifest, records, progress)
        atomic_write_json(paths.summary_json, summary)
    write_viewer_index(paths.root)
    return BatchReport(paths=paths, summary=summary, progress=progress, wall_seconds=time.perf_counter() - started)
