"""A resumable, concurrent runner: K samples in flight, one line per finished sample.

Datasets describe their work as :class:`Sample` objects (an id, ``run()`` and ``failed()``);
:func:`run_samples` does the rest:

* **resume**: ids with a finished line in ``samples.jsonl`` are skipped; ids whose line says
  ``failed`` (the LLM backend failed for good) run again, and their old line is dropped first,
  so the log keeps one line per id;
* **concurrency**: ``concurrency`` asyncio workers take samples in the given order (so samples of
  one image run together and the engine's feature cache hits) and share one engine and backend;
* **commit order**: a sample's artifacts and mask file are written (atomically) before its line
  is appended, flushed and fsynced (see :mod:`evals.rundir`);
* **backend failures**: an :class:`~sam3agent.llm.base.LLMBackendError` records the sample as
  ``failed`` (scored as an empty prediction) and the run goes on; after
  ``max_consecutive_failures`` of them in a row it stops and raises :class:`RunAborted`. Any
  other exception is a bug or bad input and propagates (finished lines stay on disk);
* **progress**: a tqdm bar on stderr with done/total, ETA and a running metric.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image
from tqdm import tqdm

from evals.records import MINIMUM_FIELDS
from evals.rundir import RECORD_SCHEMA_VERSION, RunPaths, SampleLog, atomic_write_bytes, latest_by_id, open_log
from sam3agent.llm.base import LLMBackendError
from sam3core.image import png_bytes

logger = logging.getLogger(__name__)

Artifacts = Callable[[RunPaths], None]


@dataclass
class SampleOutput:
    """What one sample produced.

    Attributes:
        record: The line's fields (at least ``query``, ``status``, ``iou``, ``turns``); the
            runner adds ``schema_version``, ``id``, ``seconds`` and ``attempt``.
        mask: Image written atomically to ``masks/<id>.png`` before the line (None: no file, and
            a stale one is removed).
        artifacts: Called with the run paths before the mask is written (trajectories, overlays).
    """

    record: dict[str, Any]
    mask: Image.Image | None = None
    artifacts: Artifacts | None = None


class Sample(Protocol):
    """One unit of work of a dataset."""

    @property
    def id(self) -> str:
        """Unique id, usable as a file name."""
        ...

    async def run(self) -> SampleOutput:
        """Run the method on the sample and score it.

        Raises:
            LLMBackendError: When the LLM backend fails for good (the runner records ``failed``).
        """
        ...

    def failed(self, error: LLMBackendError) -> SampleOutput:
        """The output of a sample whose backend failed: an empty prediction, scored."""
        ...


class ProgressMetric(Protocol):
    """A running figure shown on the progress bar."""

    def add(self, record: dict[str, Any]) -> None:
        """Count one finished record."""
        ...

    def postfix(self) -> str:
        """The figure as short text, e.g. ``gIoU=61.20``."""
        ...


class RunAborted(RuntimeError):
    """The run stopped after too many consecutive LLM backend failures."""


@dataclass(frozen=True)
class RunSettings:
    """How :func:`run_samples` runs.

    Attributes:
        concurrency: Samples in flight at once.
        max_consecutive_failures: Stop after this many backend failures in a row.
        progress: Show a progress bar on stderr.
    """

    concurrency: int = 8
    max_consecutive_failures: int = 5
    progress: bool = True


class _Committer:
    """Writes a finished sample's files, then its line; lines are appended one at a time."""

    def __init__(self, paths: RunPaths, log: SampleLog) -> None:
        self.paths, self.log = paths, log
        self._lock = threading.Lock()

    def commit(self, sample_id: str, output: SampleOutput, record: dict[str, Any]) -> None:
        if output.artifacts is not None:
            output.artifacts(self.paths)
        if output.mask is not None:
            atomic_write_bytes(self.paths.mask(sample_id), png_bytes(output.mask))
        else:  # a killed earlier attempt may have left one: no file means an empty prediction
            self.paths.mask(sample_id).unlink(missing_ok=True)
        with self._lock:
            self.log.append(record)


def _build_record(sample_id: str, output: SampleOutput, seconds: float, attempt: int) -> dict[str, Any]:
    fields = dict(output.record)
    missing = [k for k in MINIMUM_FIELDS if k not in fields and k not in ("id", "seconds")]
    if missing:
        raise RuntimeError(f"internal error: the record of {sample_id} lacks {missing}")
    head = {"schema_version": RECORD_SCHEMA_VERSION, "id": sample_id, "query": fields.pop("query"),
            "status": fields.pop("status"), "iou": fields.pop("iou"), "turns": fields.pop("turns"),
            "seconds": seconds}
    return {**head, **fields, "attempt": attempt}


class _Run:
    """The state of one :func:`run_samples` call."""

    def __init__(self, samples: Sequence[Sample], settings: RunSettings, committer: _Committer,
                 metric: ProgressMetric, attempts: dict[str, int], bar: tqdm) -> None:
        self.queue = list(samples)
        self.next = 0
        self.settings, self.committer, self.metric, self.attempts, self.bar = (
            settings, committer, metric, attempts, bar)
        self.records: dict[str, dict[str, Any]] = {}
        self.consecutive = 0
        self.last_error: LLMBackendError | None = None
        self.aborted = False

    def take(self) -> Sample | None:
        if self.aborted or self.next >= len(self.queue):
            return None
        sample = self.queue[self.next]
        self.next += 1
        return sample

    async def worker(self) -> None:
        while (sample := self.take()) is not None:
            t0 = time.perf_counter()
            try:
                output = await sample.run()
                self.consecutive = 0
            except LLMBackendError as e:
                logger.warning("sample %s failed: %s", sample.id, e)
                output = sample.failed(e)
                self.consecutive += 1
                self.last_error = e
                if self.consecutive >= self.settings.max_consecutive_failures:
                    self.aborted = True
            attempt = self.attempts.get(sample.id, 0) + 1
            record = _build_record(sample.id, output, time.perf_counter() - t0, attempt)
            await asyncio.to_thread(self.committer.commit, sample.id, output, record)
            self.records[sample.id] = record
            self.metric.add(record)
            self.bar.update(1)
            self.bar.set_postfix_str(self.metric.postfix(), refresh=False)


async def run_samples(paths: RunPaths, samples: Sequence[Sample], *, metric: ProgressMetric,
                      settings: RunSettings | None = None) -> list[dict[str, Any]]:
    """Run every sample that has no finished line yet; return the final record of every sample.

    The caller holds the run directory's lock and has checked its manifest.

    Args:
        paths: The run directory.
        samples: The selection, in scheduling order (ids unique).
        metric: The progress bar's running figure (fed the already finished records first).
        settings: Concurrency, failure limit, progress bar.

    Returns:
        One record per sample, in ``samples`` order.

    Raises:
        RunAborted: After ``max_consecutive_failures`` backend failures in a row (finished lines
            are kept; rerunning resumes).
    """
    settings = settings or RunSettings()
    if settings.concurrency < 1 or settings.max_consecutive_failures < 1:
        raise ValueError("concurrency and max_consecutive_failures must be at least 1")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError("sample ids must be unique")
    if paths.remove_stale_temporaries():
        logger.info("removed temporary files of an interrupted run in %s", paths.root)
    with open_log(paths) as log:
        existing = latest_by_id(log.load())
        selected = set(ids)
        retry = {i for i, r in existing.items() if i in selected and r["status"] == "failed"}
        attempts = {i: int(r.get("attempt", 1)) for i, r in existing.items()}
        if retry or len(existing) != _count_lines(paths):
            log.rewrite([r for i, r in existing.items() if i not in retry])
        done = {i: r for i, r in existing.items() if i in selected and i not in retry}
        todo = [s for s in samples if s.id not in done]
        for sample_id in ids:
            if sample_id in done:
                metric.add(done[sample_id])
        if done:
            logger.info("resuming: %d of %d samples already finished, %d to run (%d failed before)",
                        len(done), len(samples), len(todo), len(retry))
        with tqdm(total=len(samples), initial=len(done), unit="sample", file=sys.stderr, dynamic_ncols=True,
                  disable=not settings.progress, desc=paths.root.name) as bar:
            bar.set_postfix_str(metric.postfix(), refresh=False)
            run = _Run(todo, settings, _Committer(paths, log), metric, attempts, bar)
            async with asyncio.TaskGroup() as group:
                for _ in range(min(settings.concurrency, max(1, len(todo)))):
                    group.create_task(run.worker())
    if run.aborted:
        left = len(samples) - len(done) - len(run.records)
        raise RunAborted(
            f"stopped after {run.consecutive} consecutive LLM backend failures (last: {run.last_error}); "
            f"{len(done) + len(run.records)} of {len(samples)} samples have a line in {paths.samples}, "
            f"{left} not started. Check that the LLM server is up and serves the model, then rerun the "
            "same command to resume (failed samples are retried)"
        )
    final = {**done, **run.records}
    return [final[i] for i in ids]


def _count_lines(paths: RunPaths) -> int:
    if not paths.samples.exists():
        return 0
    return paths.samples.read_bytes().count(b"\n")
