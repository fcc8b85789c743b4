"""``python -m evals omnilabel run``: the paper's OmniLabel protocol with sam3agent.

Work is one *pair* (image, description of its label space), id ``<image_id>_<description_id>``,
scheduled image by image (images sorted by id, then label-space order) so that concurrent pairs
share an image and SAM 3's feature cache hits. Free-form descriptions go through the agent;
category names go straight to the engine (``--categories-through-agent`` sends them through the
agent too). Boxes are COCO ``[x, y, w, h]`` with the engine's score, from the answer's masks
with inclusive pixel extents (``w = x2 - x1 + 1``), or with ``AgentConfig.box_source =
"predicted"`` SAM 3's own predicted boxes (continuous, ``w = x2 - x1``), on both routes;
``no_mask``, ``budget_exhausted`` and ``failed`` pairs emit nothing. At the end the official
prediction file ``predictions.json`` is written and scored on the images the run covered.

Each ``samples.jsonl`` line adds to the common fields (:mod:`evals.records`): ``image_id``,
``description_id``, ``route`` (``agent``/``engine``), ``boxes`` (``[{bbox, score}]``) and
``mask_file`` (an instance-id PNG); ``iou`` is null.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals import overlays
from evals.errors import EvalInputError
from evals.omnilabel import Detection, OmniLabelGT, evaluate, load_gt, load_predictions
from evals.records import agent_fields, detection_boxes, engine_fields, failed_fields, mask_rle, union_mask
from evals.run_options import (
    RunReport,
    agent_config,
    build_manifest,
    file_sha256,
    run_backend,
    run_settings,
    select,
    write_viewer_index,
)
from evals.rundir import (
    RunLock,
    RunPaths,
    atomic_write_bytes,
    atomic_write_text,
    check_manifest,
)
from evals.runner import Artifacts, SampleOutput, run_samples
from evals.summary import Column, build_summary, write_summary
from sam3agent.agent import Agent
from sam3agent.config import AgentConfig
from sam3agent.llm.base import LLMBackendError
from sam3agent.render import mask_png
from sam3agent.result import AgentResult
from sam3core.image import ImageHandle, jpeg_bytes
from sam3core.protocol import SegmentEngine

PREDICTIONS = "predictions.json"


class HandleCache:
    """Prepared images by image id, shared by concurrent pairs; keeps the most recent ``capacity``.

    Args:
        engine: Prepares (decodes, orients, fingerprints) an image.
        capacity: Images kept.
    """

    def __init__(self, engine: SegmentEngine, capacity: int) -> None:
        self.engine = engine
        self.capacity = max(1, capacity)
        self._tasks: OrderedDict[int, asyncio.Task[ImageHandle]] = OrderedDict()

    async def get(self, image_id: int, path: Path) -> ImageHandle:
        """The prepared image (decoded once while it stays in the cache).

        Raises:
            EvalInputError: If the image cannot be read.
        """
        task = self._tasks.get(image_id)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self.engine.prepare, path))
            self._tasks[image_id] = task
            while len(self._tasks) > self.capacity:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(image_id)
        try:
            return await task
        except ValueError as e:
            raise EvalInputError(f"cannot read image {path} (image id {image_id}): {e}") from e


@dataclass
class PairContext:
    """What every pair task shares.

    Attributes:
        gt: The ground truth (for overlays).
        images_dir: Folder the ``file_name`` entries are relative to.
        agent: The shared agent.
        config: The agent settings (engine thresholds for the engine route).
        handles: The prepared-image cache.
        save_trajectories: Write ``trajectories/<id>/`` for agent pairs.
        save_overlays: Write ``overlays/<id>.jpg``.
    """

    gt: OmniLabelGT
    images_dir: Path
    agent: Agent
    config: AgentConfig
    handles: HandleCache
    save_trajectories: bool = False
    save_overlays: bool = False


@dataclass
class PairTask:
    """One (image, description) pair.

    Attributes:
        image_id: The image.
        description_id: The description.
        route: ``"agent"`` or ``"engine"``.
        ctx: Shared context.
    """

    image_id: int
    description_id: int
    route: str
    ctx: PairContext

    @property
    def id(self) -> str:
        """``<image_id>_<description_id>``."""
        return f"{self.image_id}_{self.description_id}"

    @property
    def text(self) -> str:
        """The description text."""
        return self.ctx.gt.descriptions[self.description_id].text

    async def run(self) -> SampleOutput:
        """Segment the description (agent or engine) and turn the answer into scored boxes."""
        ctx = self.ctx
        handle = await ctx.handles.get(self.image_id, ctx.images_dir / ctx.gt.images[self.image_id])
        result: AgentResult | None = None
        if self.route == "agent":
            result = await ctx.agent.arun(handle, self.text)
            detections, fields = result.detections, agent_fields(result)
        else:
            cfg, t0 = ctx.config, time.perf_counter()
            detections = await ctx.agent.engine.asegment(handle, self.text, score_threshold=cfg.score_threshold,
                                                         mask_threshold=cfg.mask_threshold, max_masks=cfg.max_masks)
            fields = engine_fields(detections, self.text, time.perf_counter() - t0)
        answered = fields["status"] == "answered"
        boxes = detection_boxes(detections, box_source=ctx.config.box_source) if answered else []
        union = union_mask(detections, handle.height, handle.width)
        record = {**self._head(), **fields, "boxes": boxes, "mask_rle": mask_rle(union),
                  "mask_file": f"masks/{self.id}.png"}
        mask = mask_png(detections, handle.height, handle.width)
        return SampleOutput(record=record, mask=mask, artifacts=self._artifacts(handle, result, boxes))

    def failed(self, error: LLMBackendError) -> SampleOutput:
        """No boxes (the pair's ground truth counts as missed)."""
        return SampleOutput(record={**self._head(), **failed_fields(error), "boxes": [], "mask_rle": None,
                                    "mask_file": None})

    def _head(self) -> dict[str, Any]:
        return {"query": self.text, "iou": None, "image_id": self.image_id, "description_id": self.description_id,
                "route": self.route}

    def _artifacts(self, handle: ImageHandle, result: AgentResult | None,
                   boxes: list[dict[str, Any]]) -> Artifacts | None:
        ctx = self.ctx
        if not ((ctx.save_trajectories and result is not None) or ctx.save_overlays):
            return None

        def write(paths: RunPaths) -> None:
            if ctx.save_trajectories and result is not None:
                result.save(paths.trajectories / self.id)
            if ctx.save_overlays:
                gt_boxes = [b for b in ctx.gt.boxes.get(self.image_id, ()) if self.description_id in b.description_ids]
                picture = overlays.box_comparison(
                    handle.image, [b.bbox for b in gt_boxes if not b.iscrowd], [b.bbox for b in gt_boxes if b.iscrowd],
                    [b["bbox"] for b in boxes], [b["score"] for b in boxes])
                atomic_write_bytes(paths.overlays / f"{self.id}.jpg", jpeg_bytes(picture, 85))

        return write


class BoxCountMetric:
    """Running count of boxes emitted (and pairs answered)."""

    def __init__(self) -> None:
        self.boxes = 0
        self.answered = 0

    def add(self, record: dict[str, Any]) -> None:
        """Count one record."""
        self.boxes += len(record.get("boxes") or [])
        self.answered += record["status"] == "answered"

    def postfix(self) -> str:
        """``boxes=N answered=M``."""
        return f"boxes={self.boxes} answered={self.answered}"


# ----------------------------------------------------------------------------- scoring and summary


def subset_gt(gt: OmniLabelGT, image_ids: set[int]) -> OmniLabelGT:
    """The ground truth restricted to some images (their label spaces and boxes)."""
    return OmniLabelGT(images={k: v for k, v in gt.images.items() if k in image_ids},
                       descriptions=gt.descriptions,
                       boxes={k: v for k, v in gt.boxes.items() if k in image_ids},
                       label_spaces={k: v for k, v in gt.label_spaces.items() if k in image_ids})


def detections_in_order(gt: OmniLabelGT, records: Sequence[dict[str, Any]]) -> list[Detection]:
    """Every emitted box as a :class:`Detection`, in the ground truth's pair order, then box order.

    The order is canonical (independent of completion order), so resumed, merged and uninterrupted
    runs break score ties the same way.
    """
    by_pair = {(int(r["image_id"]), int(r["description_id"])): r for r in records}
    out: list[Detection] = []
    for image_id, description_id, _ in gt.pairs():
        record = by_pair.get((image_id, description_id))
        for box in (record or {}).get("boxes") or []:
            out.append(Detection(image_id=image_id, bbox=tuple(box["bbox"]), description_id=description_id,  # type: ignore[arg-type]
                                 score=float(box["score"])))
    return out


def score_records(gt: OmniLabelGT, records: Sequence[dict[str, Any]], paths: RunPaths) -> dict[str, Any]:
    """Write ``predictions.json`` (official format) for the records, then score it on their images.

    Returns:
        The scores as :meth:`OmniLabelScores.to_dict` gives them (percent), plus pair counts.
    """
    covered = subset_gt(gt, {int(r["image_id"]) for r in records})
    detections = detections_in_order(covered, records)
    path = paths.root / PREDICTIONS
    atomic_write_text(path, json.dumps([d.to_record() for d in detections]))
    scores = evaluate(covered, load_predictions(path))
    out = scores.to_dict(percent=True)
    out["n_pairs"] = dict(scores.n_pairs)
    return out


def summarize(manifest: dict[str, Any], records: Sequence[dict[str, Any]], gt: OmniLabelGT,
              paths: RunPaths) -> dict[str, Any]:
    """The ``summary.json`` object of an OmniLabel run (or of merged shards); writes ``predictions.json``."""
    scores = score_records(gt, records, paths)
    columns = [Column("AP descr", scores["AP_descr"], "omnilabel_descr"),
               Column("AP descr-S", scores["AP_descr_S"], "omnilabel_descr_S"),
               Column("AP descr-M", scores["AP_descr_M"], "omnilabel_descr_M"),
               Column("AP descr-L", scores["AP_descr_L"], "omnilabel_descr_L"),
               Column("AP categ", scores["AP_categ"], None),
               Column("AP", scores["AP"], None)]
    images = {int(r["image_id"]) for r in records}
    coverage = {"images": len(images), "of": manifest["dataset"]["n_images"], "pairs": len(records),
                "pairs_of": manifest["dataset"]["n_pairs"]}
    routes = {"agent": sum(r["route"] == "agent" for r in records),
              "engine": sum(r["route"] == "engine" for r in records)}
    n_boxes = sum(len(r.get("boxes") or []) for r in records)
    return build_summary(dataset="omnilabel", split=manifest["dataset"].get("split"), manifest=manifest,
                         records=records, scores=scores, columns=columns,
                         extra={"coverage": coverage, "routes": routes, "n_boxes": n_boxes})


# ----------------------------------------------------------------------------- the command


def infer_split(gt_path: Path) -> str | None:
    """``val`` or ``test`` when the ground-truth file name says so."""
    name = gt_path.name.lower()
    return "val" if "val" in name else "test" if "test" in name else None


def build_tasks(gt: OmniLabelGT, image_ids: Sequence[int], ctx: PairContext,
                categories_through_agent: bool) -> list[PairTask]:
    """The pairs of the selected images, image by image in label-space order."""
    tasks = []
    for image_id in image_ids:
        for description_id in gt.label_spaces.get(image_id, ()):
            is_category = gt.descriptions[description_id].is_category
            route = "engine" if is_category and not categories_through_agent else "agent"
            tasks.append(PairTask(image_id, description_id, route, ctx))
    return tasks


def _check_images(gt: OmniLabelGT, image_ids: Sequence[int], images_dir: Path) -> None:
    missing = [gt.images[i] for i in image_ids if not (images_dir / gt.images[i]).is_file()]
    if missing:
        raise EvalInputError(
            f"{len(missing)} image(s) of the ground truth are not under {images_dir} (e.g. {missing[0]}); pass "
            "--images DIR with the folder their file_name entries are relative to")


async def _execute(args: argparse.Namespace, config: AgentConfig, gt: OmniLabelGT, image_ids: Sequence[int],
                   paths: RunPaths, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    async with run_backend(args, config, paths, manifest) as (backend, agent):
        ctx = PairContext(gt=gt, images_dir=Path(args.images), agent=agent, config=config,
                          handles=HandleCache(backend.engine, args.concurrency + 2),
                          save_trajectories=args.save_trajectories, save_overlays=args.save_overlays)
        tasks = build_tasks(gt, image_ids, ctx, args.categories_through_agent)
        return await run_samples(paths, tasks, metric=BoxCountMetric(), settings=run_settings(args))


def run(args: argparse.Namespace) -> RunReport:
    """Run (or resume) ``omnilabel run`` as the parsed flags say; write predictions and the summary.

    ``--limit`` and ``--shard`` select images (sorted by id), never part of an image's pairs.

    Raises:
        EvalInputError: Bad ground truth, images or flags; a locked or differently set up run directory.
        RunAborted: Too many consecutive LLM backend failures.
    """
    gt_path = Path(args.gt)
    gt = load_gt(gt_path)
    all_images = [i for i in sorted(gt.images) if gt.label_spaces.get(i)]
    image_ids = select(all_images, args)
    if not image_ids:
        raise EvalInputError(f"the --shard / --limit selection holds no image of {gt_path}; use fewer shards")
    _check_images(gt, image_ids, Path(args.images))
    config = agent_config(args)
    dataset = {"name": "omnilabel", "split": infer_split(gt_path), "gt_sha256": file_sha256(gt_path),
               "n_images": len(all_images), "n_pairs": sum(len(gt.label_spaces[i]) for i in all_images)}
    manifest = build_manifest(args, config, dataset=dataset,
                              options={"categories_through_agent": bool(args.categories_through_agent)},
                              info={"gt": str(gt_path.resolve()), "images": str(Path(args.images).resolve())})
    paths = RunPaths(Path(args.out))
    with RunLock(paths):
        check_manifest(paths, manifest)  # refuse a mismatch before loading anything
        records = asyncio.run(_execute(args, config, gt, image_ids, paths, manifest))
        summary = summarize(manifest, records, gt, paths)
        markdown = write_summary(paths, summary)
    write_viewer_index(paths.root)
    return RunReport(paths=paths, summary=summary, markdown=markdown)
