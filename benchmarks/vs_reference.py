"""Meta's SAM 3 Agent loop against sam3agent on identical scripted trajectories: time, encodings, files, memory.

Both sides run on the same random weights (Meta's model built from its own code with a fixed seed, as in
``benchmarks/parity.py``; converted once with ``sam3core.convert``), on the same photos (scikit-image's,
saved as PNG files), with the same two system prompts (marker texts in files) and the same scripted
replies, served over HTTP by one :class:`~sam3agent.llm.server.ScriptedOpenAIServer` with a fixed latency:

* Meta: its real ``agent_inference`` loop, its real SAM 3 service path (``client_sam3.call_sam_service`` ->
  ``sam3_inference`` -> its ``Sam3Processor``, on the CPU-patched model) and its real LLM client
  (``client_llm.send_generate_request``, openai) against the server; it writes JSON and PNG files.
* Ours: :class:`sam3agent.Agent` with ``AgentConfig.paper()`` (the same score threshold) on a
  :class:`~sam3core.engine.Sam3Engine` loaded from the converted directory, ``OpenAICompatibleLLM``.

Trajectories: one phrase (segment, examine, select) and two phrases (segment, examine, segment, examine,
select); every verification is answered Accept. The server picks each reply from the request alone (the
query names the sample, the ``Step k.`` lines already in the context give the next step), so any number of
agents can share it. The score threshold is set in a gap of the engine's raw scores (random weights score
below 0.5) so that every phrase yields masks on both sides.

Each side runs in its own subprocess, so its peak RSS is its own: a conversion step first, then Meta with
one agent (its loop needs a model per process), ours with K=1 and ours with K concurrent agents sharing one
engine. Per sample: wall and CPU seconds, image encodings (calls into each side's vision encoder), SAM 3
seconds, LLM calls, files written, whether both gave the same answer, and the our/Meta ratios. ``--inline``
runs every step in this process (no memory numbers; what the smoke test uses).

Usage::

    python benchmarks/vs_reference.py --size small --latency 0.05 [--json]
    python benchmarks/vs_reference.py --size full --bpe bpe_simple_vocab_16e6.txt.gz --latency 1 [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for _path in (HERE, ROOT, ROOT / "tests" / "reference"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import vs_reference_sides as sides  # noqa: E402  (benchmarks/ is not a package)

PHOTOS = ("astronaut", "coffee")
PHRASES = ("person", "cat")
MAIN_PROMPT = "REFERENCE MAIN PROMPT"  # the same marker texts tests/reference/meta_runner.py serves
CHECK_PROMPT = "REFERENCE CHECKING PROMPT"
ACCEPT = "The mask covers the target.\n<verdict>Accept</verdict>"


@dataclass(frozen=True)
class Sample:
    """One scripted run: a photo, a query naming the sample, and the main-loop replies in order."""

    id: str
    photo: str
    image_path: str
    query: str
    phrases: tuple[str, ...]
    replies: tuple[str, ...]


def _call(name: str, **params: object) -> str:
    return f"<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"


def make_samples(photo_paths: dict[str, Path], phrases: Sequence[str] = PHRASES) -> list[Sample]:
    """The 1-phrase and 2-phrase trajectories (with examine) on every photo."""
    out = []
    for photo, path in photo_paths.items():
        for n in (1, 2):
            calls = [c for p in phrases[:n] for c in (_call("segment_phrase", text_prompt=p),
                                                     _call("examine_each_mask"))]
            calls.append(_call("select_masks_and_return", final_answer_masks=[1]))
            replies = tuple(f"Step {k}.\nI compare the image with the query.\n{c}" for k, c in enumerate(calls, 1))
            out.append(Sample(f"{photo}-{n}p", photo, str(path), f"the {phrases[0]} in the {photo} photo ({n}-phrase "
                              "run)", tuple(phrases[:n]), replies))
    return out


class Policy:
    """The server's answer to any request of any sample (see the module docstring)."""

    def __init__(self, samples: Sequence[Sample]) -> None:
        self.samples = list(samples)
        self.steps_in = sides.import_meta_runner().steps_in  # the "Step k." reader of the differential tests

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        texts = [(m.get("role"), _text(m.get("content"))) for m in messages]
        if texts and texts[0][1].strip() == CHECK_PROMPT:
            return ACCEPT
        everything = "\n".join(t for _, t in texts)
        sample = next((s for s in self.samples if s.query in everything), None)
        if sample is None:
            raise ValueError("no scripted sample's query is in the request")
        done = self.steps_in([t for role, t in texts if role == "assistant"])
        step = max(done, default=0) + 1
        if step > len(sample.replies):
            raise ValueError(f"sample {sample.id} has no step {step}")
        return sample.replies[step - 1]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def prepare(workdir: Path, photos: Sequence[str], phrases: Sequence[str]) -> tuple[list[Sample], dict[str, str]]:
    """Write the photos (PNG) and the two prompt files; returns the samples and the prompt file paths."""
    from parity_photos import load_photo

    paths = {}
    for name in photos:
        paths[name] = workdir / "photos" / f"{name}.png"
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        load_photo(name).save(paths[name])
    prompts = {"main": workdir / "main_prompt.txt", "check": workdir / "check_prompt.txt"}
    prompts["main"].write_text(MAIN_PROMPT)
    prompts["check"].write_text(CHECK_PROMPT)
    return make_samples(paths, phrases), {k: str(v) for k, v in prompts.items()}


def run_step(kind: str, options: dict[str, Any], inline: bool) -> dict[str, Any]:
    """Run one step (``convert``, ``meta``, ``ours``) inline or in a fresh interpreter; returns its report."""
    if inline:  # one process for everything: its memory numbers say nothing about either side
        return {**sides.STEPS[kind](options), "peak_rss_mb": None, "loaded_rss_mb": None}
    workdir = Path(options["workdir"])
    spec, out = workdir / f"{kind}-{options.get('k', 1)}.json", workdir / f"{kind}-{options.get('k', 1)}.out.json"
    spec.write_text(json.dumps(options))
    with open(workdir / f"{kind}-{options.get('k', 1)}.log", "w") as log:
        done = subprocess.run([sys.executable, str(HERE / "vs_reference_sides.py"), kind, str(spec), str(out)],
                              stdout=log, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:  # the work folder goes away: say why here
        tail = Path(log.name).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"step {kind} failed ({done.returncode}); the end of its log:\n{tail}")
    return json.loads(out.read_text())


def run(size: str = "small", *, latency: float = 1.0, k: int = 2, photos: Sequence[str] = PHOTOS,
        phrases: Sequence[str] = PHRASES, bpe: str | None = None, seed: int = 0, inline: bool = False,
        workdir: str | None = None, meta_render: bool = True) -> dict[str, Any]:
    """Convert, then run Meta (1 agent), ours (1 agent) and ours (``k`` concurrent agents); returns the report.

    ``meta_render=False`` replaces Meta's matplotlib drawing with blank pictures (as the differential tests
    do by default): its files are still written, but its render time is not measured.
    """
    import torch
    import transformers

    from sam3agent.llm.server import ScriptedOpenAIServer

    if size == "full" and bpe is None:
        raise SystemExit("--size full needs --bpe (CLIP's bpe_simple_vocab_16e6.txt.gz): real phrases on both sides")
    with tempfile.TemporaryDirectory(prefix="vs-reference-", dir=workdir) as tmp:
        work = Path(tmp)
        samples, prompts = prepare(work, photos, phrases)
        base = {"size": size, "seed": seed, "bpe": bpe, "workdir": str(work), "prompts": prompts,
                "meta_render": meta_render, "samples": [asdict(s) for s in samples],
                "converted": str(work / "converted")}
        t0 = time.perf_counter()
        conversion = run_step("convert", base, inline)
        base["score_threshold"] = conversion["score_threshold"]
        steps: dict[str, Any] = {}
        with ScriptedOpenAIServer(Policy(samples), latency=latency, validate=False) as server:
            base["base_url"] = server.base_url
            for name, kind, agents in (("meta", "meta", 1), ("ours_k1", "ours", 1), (f"ours_k{k}", "ours", k)):
                before = len(server.requests)
                steps[name] = run_step(kind, {**base, "k": agents}, inline)
                steps[name]["server_requests"] = len(server.requests) - before
                server.requests.clear()
    return {"size": size, "latency_s": latency, "k": k, "inline": inline, "meta_render": meta_render,
            "machine": _machine(),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "sam3": "0.1.4"},
            "conversion": conversion, "steps": steps, "samples": compare(samples, steps["meta"], steps["ours_k1"]),
            "memory": memory(steps, k), "total_s": round(time.perf_counter() - t0, 1)}


def _machine() -> str:
    import os
    import platform

    return f"{platform.machine()} {os.cpu_count()} cores"


COLUMNS = ("wall_s", "cpu_s", "sam3_s", "encodings", "llm_calls", "files")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def compare(samples: Sequence[Sample], meta: dict[str, Any], ours: dict[str, Any]) -> list[dict[str, Any]]:
    """Per sample: both sides' numbers and ours / Meta."""
    rows = []
    for s in samples:
        m, o = meta["samples"][s.id], ours["samples"][s.id]
        row = {"sample": s.id, "meta": m, "ours": o, "same_answer": m["answer"] == o["answer"],
               "ratio": {key: _ratio(o[key], m[key]) for key in COLUMNS}}
        rows.append(row)
    return rows


def memory(steps: dict[str, Any], k: int) -> dict[str, Any]:
    """Peak RSS of each side's process, and per concurrent agent."""
    out = {}
    for name, agents in (("meta", 1), ("ours_k1", 1), (f"ours_k{k}", k)):
        peak = steps[name].get("peak_rss_mb")
        out[name] = {"agents": agents, "peak_rss_mb": peak, "loaded_rss_mb": steps[name].get("loaded_rss_mb"),
                     "peak_per_agent_mb": None if peak is None else round(peak / agents, 1)}
    return out


def print_report(report: dict[str, Any]) -> None:
    """The report as text."""
    conv = report["conversion"]
    print(f"vs reference, {report['size']}, LLM latency {report['latency_s']} s, {report['machine']}, "
          f"{report['versions']}; conversion {conv['summary']}, score threshold {conv['score_threshold']:.6f}")
    cols = COLUMNS
    print(f"  {'sample':14} {'side':5} " + " ".join(f"{c:>9}" for c in cols) + "  masks  same")
    for row in report["samples"]:
        for side in ("meta", "ours"):
            v = row[side]
            print(f"  {row['sample']:14} {side:5} " + " ".join(f"{v[c]:>9.4g}" for c in cols)
                  + f"  {len(v['answer']):>5}  {row['same_answer']}")
        ratios = [row["ratio"][c] for c in cols]
        print(f"  {'':14} {'ratio':5} " + " ".join(f"{'-' if r is None else format(r, '.3g'):>9}" for r in ratios))
    for name, mem in report["memory"].items():
        print(f"  memory {name}: peak {mem['peak_rss_mb']} MB ({mem['agents']} agent(s): {mem['peak_per_agent_mb']} "
              f"MB each), after loading {mem['loaded_rss_mb']} MB")
    k = report["k"]
    grouped = report["steps"][f"ours_k{k}"]
    print(f"  ours with {k} concurrent agents: {grouped['groups']} groups, wall {grouped['wall_s']} s, "
          f"encodings {grouped['encodings']}; total {report['total_s']} s")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("small", "full"), default="small")
    parser.add_argument("--latency", type=float, default=1.0, help="seconds per LLM call")
    parser.add_argument("--k", type=int, default=2, help="concurrent agents of our second run")
    parser.add_argument("--photos", nargs="+", default=list(PHOTOS), help="skimage.data photos")
    parser.add_argument("--bpe", help="CLIP's bpe_simple_vocab_16e6.txt.gz (needed with --size full)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--inline", action="store_true", help="every step in this process (no memory numbers)")
    parser.add_argument("--workdir", help="parent folder of the temporary work folder")
    parser.add_argument("--no-meta-render", action="store_true", help="blank pictures instead of Meta's drawing")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run(args.size, latency=args.latency, k=args.k, photos=args.photos, bpe=args.bpe, seed=args.seed,
                 inline=args.inline, workdir=args.workdir, meta_render=not args.no_meta_render)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
