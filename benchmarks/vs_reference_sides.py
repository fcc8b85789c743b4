"""The steps of ``benchmarks/vs_reference.py``, each run in its own process: convert, Meta's agent, ours.

``python benchmarks/vs_reference_sides.py KIND SPEC.json OUT.json`` runs one step with the options in
``SPEC.json`` and writes its report to ``OUT.json`` (``vs_reference.py`` does this; ``--inline`` calls the
step functions directly). Meta's model is built with ``benchmarks/parity.py``'s builders and CPU patches;
Meta's agent is driven as ``tests/reference/meta_runner.py`` drives it, but with its real SAM 3 service and
its real LLM client (nothing of Meta's is replaced except the two prompt files its wheel lacks).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import itertools
import json
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (HERE, ROOT, ROOT / "tests" / "reference"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))


def import_meta_runner() -> Any:
    """``tests/reference/meta_runner`` (it imports Meta's agent: ``sam3`` made importable, matplotlib headless)."""
    import matplotlib
    import parity

    matplotlib.use("Agg")
    parity.import_reference()
    import meta_runner

    return meta_runner


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return round(kb / 1024, 1)


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _files(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def mask_digests(masks: Any) -> list[str]:
    """A short digest per ``(H, W)`` bool mask, so answers from two processes compare exactly."""
    import numpy as np

    return [hashlib.sha1(np.packbits(np.asarray(m, bool)).tobytes()).hexdigest()[:16] for m in masks]


def build_meta(o: dict[str, Any]) -> Any:
    """Meta's model with the run's weights (seed) and tokenizer (CLIP BPE at full size, letters when small)."""
    import parity
    import parity_photos

    parity.import_reference()
    if o["size"] == "small":
        meta = parity.build_meta_small(o["seed"])
        meta.backbone.language_backbone.tokenizer = parity_photos.MetaIds(parity_photos.letter_tokenizer())
        return meta
    return parity.build_meta_full("cpu", None, o["bpe"], seed=o["seed"])


def pick_threshold(scores: Sequence[Sequence[float]], at_least: int = 3) -> float:
    """A score threshold that keeps at least ``at_least`` queries of every list, in the widest nearby gap."""
    top = min(sorted(s, reverse=True)[at_least - 1] for s in scores)
    below = sorted({x for s in scores for x in s if x <= top}, reverse=True)[:12]
    gap, threshold = max((a - b, (a + b) / 2) for a, b in itertools.pairwise(below))
    if gap < 1e-5:
        raise RuntimeError(f"no score gap wide enough near {top}: {below}")
    return float(threshold)


def convert_step(o: dict[str, Any]) -> dict[str, Any]:
    """Convert Meta's weights into ``o["converted"]``; pick the score threshold from the engine's raw scores."""
    import gc

    import parity_photos
    from transformers import Sam3ImageProcessor, Sam3Processor

    from sam3core.convert import convert_checkpoint, tokenizer_from_bpe
    from sam3core.engine import Sam3Engine

    meta = build_meta(o)
    tokenizer = parity_photos.letter_tokenizer() if o["size"] == "small" else tokenizer_from_bpe(o["bpe"])
    processor = Sam3Processor(image_processor=Sam3ImageProcessor(), tokenizer=tokenizer)
    report = convert_checkpoint(meta.state_dict(), o["converted"], processor=processor)
    del meta
    gc.collect()
    scores: dict[str, list[float]] = {}
    with Sam3Engine.from_pretrained(o["converted"], device="cpu") as engine:
        for s in o["samples"]:
            for phrase in s["phrases"]:
                det = engine.segment(s["image_path"], phrase, score_threshold=0.0, max_masks=None, dedup_iou=None,
                                     mask_upsampling="logits")
                scores[f"{s['photo']}/{phrase}"] = [float(c) for c in det.confidence]
    return {"summary": report.summary(), "score_threshold": pick_threshold(list(scores.values())),
            "top_scores": {key: v[:5] for key, v in scores.items()}}


class _Meter:
    """Counts calls and sums their seconds."""

    def __init__(self) -> None:
        self.calls, self.seconds = 0, 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - t0

        return timed


@contextlib.contextmanager
def _meta_prompt_files(agent_core: Any, prompts: dict[str, str]) -> Iterator[None]:
    """Serve the two system prompt files ``agent_inference`` opens (absent from the wheel) from ours."""
    import builtins

    folder = Path(agent_core.__file__).resolve().parent / "system_prompts"
    served = {str(folder / "system_prompt.txt"): prompts["main"],
              str(folder / "system_prompt_iterative_checking.txt"): prompts["check"]}

    def opener(file: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(file, str | os.PathLike):
            file = served.get(str(Path(os.fspath(file)).resolve()), file)
        return builtins.open(file, *args, **kwargs)

    with mock.patch.object(agent_core, "open", opener, create=True):
        yield


def meta_step(o: dict[str, Any]) -> dict[str, Any]:
    """Meta's agent loop on every sample, one after another (one model in this process)."""
    import parity

    runner = import_meta_runner()
    meta = build_meta(o)
    loaded = _rss_mb()
    from sam3.agent import agent_core, client_llm, client_sam3
    from sam3.model.sam3_image_processor import Sam3Processor

    processor = Sam3Processor(meta, device="cpu", confidence_threshold=o["score_threshold"])
    encode, model, service, render, llm = _Meter(), _Meter(), _Meter(), _Meter(), _Meter()
    generate = llm.wrap(functools.partial(client_llm.send_generate_request, server_url=o["base_url"],
                                          model="scripted", api_key="unused"))
    call_service = service.wrap(functools.partial(client_sam3.call_sam_service, processor))
    log = open(Path(o["workdir"]) / "meta-agent.log", "w")  # noqa: SIM115  (closed below)
    samples: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(log.close)
        stack.enter_context(parity.meta_cpu_patches())
        stack.enter_context(_meta_prompt_files(agent_core, o["prompts"]))
        stack.enter_context(mock.patch.object(meta.backbone, "forward_image", encode.wrap(meta.backbone.forward_image)))
        stack.enter_context(mock.patch.object(client_sam3, "sam3_inference", model.wrap(client_sam3.sam3_inference)))
        for module in (agent_core, client_sam3):
            # its matplotlib drawing, or (smoke test) the blank pictures of the differential tests' runner
            draw = module.visualize if o.get("meta_render", True) else runner._blank_pictures
            stack.enter_context(mock.patch.object(module, "visualize", render.wrap(draw)))
        stack.enter_context(contextlib.redirect_stdout(log))
        for s in o["samples"]:
            out_dir = Path(o["workdir"]) / "meta_out" / s["id"]
            for m in (encode, model, service, render, llm):
                m.calls, m.seconds = 0, 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            _, final, _ = agent_core.agent_inference(s["image_path"], s["query"], send_generate_request=generate,
                                                     call_sam_service=call_service, max_generations=100,
                                                     output_dir=str(out_dir))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            masks = runner.decode_rles(final["pred_masks"], int(final["orig_img_h"]), int(final["orig_img_w"]))
            samples[s["id"]] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "sam3_s": round(model.seconds, 2),
                                "service_s": round(service.seconds, 2), "render_s": round(render.seconds, 2),
                                "encodings": encode.calls, "llm_calls": llm.calls, "files": _files(out_dir),
                                "answer": mask_digests(masks)}
    return {"samples": samples, "loaded_rss_mb": loaded, "peak_rss_mb": _peak_mb()}


async def _ours(o: dict[str, Any]) -> dict[str, Any]:
    from sam3agent import Agent, AgentConfig
    from sam3agent.llm.openai_compat import OpenAICompatibleLLM
    from sam3core.engine import Sam3Engine

    k = int(o["k"])
    engine = Sam3Engine.from_pretrained(o["converted"], device="cpu")
    loaded = _rss_mb()
    config = AgentConfig.paper(score_threshold=o["score_threshold"], system_prompt_file=o["prompts"]["main"],
                               verify_prompt_file=o["prompts"]["check"], timeout_s=None)
    llm = OpenAICompatibleLLM(o["base_url"], "scripted", timeout=900, max_retries=0)
    samples: dict[str, Any] = {}
    # concurrent agents get different photos where there are several (same trajectory, photo after photo)
    ordered = sorted(o["samples"], key=lambda s: len(s["phrases"]))
    groups = [ordered[i : i + k] for i in range(0, len(ordered), k)]
    total_wall, total_encodings = 0.0, 0
    try:
        for n, group in enumerate(groups):
            engine.clear_cache()  # every group starts cold, like Meta's loop does every call
            before = engine.stats.vision_encoder_runs
            cwd = Path(o["workdir"]) / f"ours_k{k}_cwd" / str(n)
            cwd.mkdir(parents=True)
            t0, c0 = time.perf_counter(), time.process_time()
            with contextlib.chdir(cwd):
                results = await asyncio.gather(*(Agent(llm, engine, config).arun(s["image_path"], s["query"])
                                                 for s in group))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            encodings = engine.stats.vision_encoder_runs - before
            total_wall, total_encodings = total_wall + wall, total_encodings + encodings
            for s, r in zip(group, results, strict=True):
                t = r.totals
                samples[s["id"]] = {"wall_s": round(t.wall_seconds, 2), "cpu_s": round(cpu / len(group), 2),
                                    "sam3_s": round(t.sam_seconds, 2), "render_s": round(t.render_seconds, 2),
                                    "encodings": encodings / len(group), "llm_calls": t.turns + t.verify_calls,
                                    "files": _files(cwd), "status": r.status,
                                    "answer": mask_digests(r.detections.mask if len(r.detections) else [])}
    finally:
        engine.close()
        await llm.aclose()
    return {"samples": samples, "groups": len(groups), "wall_s": round(total_wall, 2), "encodings": total_encodings,
            "loaded_rss_mb": loaded, "peak_rss_mb": _peak_mb()}


def ours_step(o: dict[str, Any]) -> dict[str, Any]:
    """Our agent on every sample, ``o["k"]`` at a time, all sharing one engine (one model in this process)."""
    return asyncio.run(_ours(o))


STEPS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "convert": convert_step, "meta": meta_step, "ours": ours_step}


def main(argv: list[str]) -> int:
    """``KIND SPEC OUT``: run one step in this (fresh) process."""
    kind, spec, out = argv
    with contextlib.redirect_stdout(io.StringIO()) if kind == "convert" else contextlib.nullcontext():
        report = STEPS[kind](json.loads(Path(spec).read_text()))
    Path(out).write_text(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
