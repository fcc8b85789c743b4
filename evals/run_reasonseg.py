"""``python -m evals reasonseg run``: the agent over a ReasonSeg split, scored as it goes.

Each sample is one agent run on ``text[0]``; its answer (the union of the selected masks) is
written to ``RUN_DIR/masks/<id>.png`` (0 / 255), so ``python -m evals reasonseg score --data DIR
--pred RUN_DIR/masks`` scores the same predictions independently. Each ``samples.jsonl`` line adds
to the common fields (:mod:`evals.records`): ``split`` (``short``/``long``), ``intersection`` and
``union`` (pixels, ignore pixels excluded), ``iou`` (``I / (U + 1e-5)``, 1.0 when ``U == 0``) and
``mask_file``. A ``failed`` sample is scored as an empty prediction.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evals import overlays
from evals.errors import EvalInputError
from evals.reasonseg import ReasonSegAccumulator, ReasonSegSample, SampleScore, gt_mask, load_samples, score_sample
from evals.records import agent_fields, failed_fields, mask_rle
from evals.run_options import (
    RunReport,
    agent_config,
    build_manifest,
    run_backend,
    run_settings,
    select,
    write_viewer_index,
)
from evals.rundir import RunLock, RunPaths, atomic_write_bytes, check_manifest
from evals.runner import Artifacts, SampleOutput, run_samples
from evals.summary import Column, build_summary, write_summary
from sam3agent.agent import Agent
from sam3agent.config import AgentConfig
from sam3agent.llm.base import LLMBackendError
from sam3agent.result import AgentResult
from sam3core.image import jpeg_bytes

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class ReasonSegTask:
    """One ReasonSeg sample run through the agent.

    Attributes:
        sample: The sample.
        agent: The shared agent.
        save_trajectories: Write ``trajectories/<id>/``.
        save_overlays: Write ``overlays/<id>.jpg``.
    """

    sample: ReasonSegSample
    agent: Agent
    save_trajectories: bool = False
    save_overlays: bool = False

    @property
    def id(self) -> str:
        """The sample id (file stem)."""
        return self.sample.id

    async def run(self) -> SampleOutput:
        """Run the agent, score its answer (raises ``LLMBackendError`` when the backend fails)."""
        result = await self.agent.arun(str(self.sample.image_path), self.sample.query)
        pred = result.mask()
        score = await asyncio.to_thread(score_sample, self.sample, pred)
        record = {**self._score_fields(score), **agent_fields(result), "mask_rle": mask_rle(pred),
                  "mask_file": f"masks/{self.id}.png"}
        return SampleOutput(record=record, mask=_mask_image(pred), artifacts=self._artifacts(result, pred))

    def failed(self, error: LLMBackendError) -> SampleOutput:
        """An empty prediction, scored (no mask file: a missing file is an empty prediction)."""
        pred = np.zeros((self.sample.height, self.sample.width), bool)
        score = score_sample(self.sample, pred)
        return SampleOutput(record={**self._score_fields(score), **failed_fields(error), "mask_rle": None,
                                    "mask_file": None})

    def _score_fields(self, score: SampleScore) -> dict[str, Any]:
        return {"query": self.sample.query, "iou": score.iou, "split": self.sample.split,
                "intersection": score.intersection, "union": score.union}

    def _artifacts(self, result: AgentResult, pred: np.ndarray) -> Artifacts | None:
        if not (self.save_trajectories or self.save_overlays):
            return None

        def write(paths: RunPaths) -> None:
            if self.save_trajectories:
                result.save(paths.trajectories / self.id)
            if self.save_overlays:
                picture = overlays.mask_comparison(result.image.image, gt_mask(self.sample), pred)
                atomic_write_bytes(paths.overlays / f"{self.id}.jpg", jpeg_bytes(picture, 85))

        return write


def _mask_image(mask: np.ndarray) -> Image.Image:
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))


class GIoUMetric:
    """Running gIoU (mean sample IoU, failed samples counted as empty predictions)."""

    def __init__(self) -> None:
        self._ious: list[float] = []

    def add(self, record: dict[str, Any]) -> None:
        """Count one record."""
        self._ious.append(float(record["iou"]))

    def postfix(self) -> str:
        """``gIoU=xx.xx``."""
        return f"gIoU={100 * math.fsum(self._ious) / len(self._ious):.2f}" if self._ious else "gIoU=–"


# ----------------------------------------------------------------------------- identity and summary


def infer_split(data_dir: Path, requested: str | None) -> str | None:
    """``--split`` if given, else the folder name when it is ``train``/``val``/``test``."""
    if requested:
        return requested
    name = data_dir.resolve().name.lower()
    return name if name in SPLIT_NAMES else None


def dataset_identity(samples: Sequence[ReasonSegSample], split: str | None) -> dict[str, Any]:
    """Name, split, sample count and a fingerprint of every JSON's bytes and image size."""
    digest = hashlib.sha256()
    for s in samples:
        with open(s.json_path, "rb") as f:
            json_digest = hashlib.file_digest(f, "sha256").digest()
        digest.update(s.id.encode() + b"\0" + json_digest)
        digest.update(f"{s.height}x{s.width}\0".encode())
    return {"name": "reasonseg", "split": split, "n_samples": len(samples), "fingerprint": digest.hexdigest()}


def scores_from_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """gIoU / cIoU (percent) overall and per short/long, from the records' intersections and unions."""
    acc = ReasonSegAccumulator()
    for r in sorted(records, key=lambda r: r["id"]):
        acc.add(SampleScore(int(r["intersection"]), int(r["union"])), is_sentence=r["split"] == "long",
                sample_id=r["id"])
    return acc.result().to_dict(percent=True)


def _columns(scores: dict[str, Any], split: str | None) -> list[Column]:
    if split == "val":
        return [Column("gIoU val", scores["giou"], "reasonseg_val"), Column("cIoU val", scores["ciou"], None)]
    keys = ("reasonseg_test", "reasonseg_test_short", "reasonseg_test_long") if split == "test" else (None,) * 3

    def title(metric: str, part: str) -> str:
        return " ".join(w for w in (metric, split, part) if w)

    return [Column(title("gIoU", "all"), scores["giou"], keys[0]),
            Column(title("gIoU", "short"), scores["short"]["giou"], keys[1]),
            Column(title("gIoU", "long"), scores["long"]["giou"], keys[2]),
            Column(title("cIoU", "all"), scores["ciou"], None)]


def summarize(manifest: dict[str, Any], records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``summary.json`` object of a ReasonSeg run (or of merged shards)."""
    scores = scores_from_records(records)
    split = manifest["dataset"].get("split")
    coverage = {"samples": len(records), "of": manifest["dataset"]["n_samples"]}
    return build_summary(dataset="reasonseg", split=split, manifest=manifest, records=records, scores=scores,
                         columns=_columns(scores, split), extra={"coverage": coverage})


# ----------------------------------------------------------------------------- the command


async def _execute(args: argparse.Namespace, config: AgentConfig, samples: Sequence[ReasonSegSample],
                   paths: RunPaths, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    async with run_backend(args, config, paths, manifest) as (_, agent):
        tasks = [ReasonSegTask(s, agent, args.save_trajectories, args.save_overlays) for s in samples]
        return await run_samples(paths, tasks, metric=GIoUMetric(), settings=run_settings(args))


def run(args: argparse.Namespace) -> RunReport:
    """Run (or resume) ``reasonseg run`` as the parsed flags say; write the summary.

    Raises:
        EvalInputError: Bad dataset folder or flags, a locked or differently set up run directory.
        RunAborted: Too many consecutive LLM backend failures.
    """
    data = Path(args.data)
    all_samples = load_samples(data)
    split = infer_split(data, args.split)
    chosen = select(all_samples, args)
    if not chosen:
        raise EvalInputError(f"the --shard / --limit selection holds no sample of {data}; use fewer shards")
    config = agent_config(args)
    manifest = build_manifest(args, config, dataset=dataset_identity(all_samples, split), options={},
                              info={"data": str(data.resolve())})
    paths = RunPaths(Path(args.out))
    with RunLock(paths):
        check_manifest(paths, manifest)  # refuse a mismatch before loading anything
        records = asyncio.run(_execute(args, config, chosen, paths, manifest))
        summary = summarize(manifest, records)
        markdown = write_summary(paths, summary)
    write_viewer_index(paths.root)
    return RunReport(paths=paths, summary=summary, markdown=markdown)
