"""``python -m evals ray``: shards as Ray tasks on a local 2-CPU cluster equal a single-process run.

Two backends:

* the runner's test hook (scripted policy + fake engine, ``--_fake-backend``), with 4 samples in
  flight per shard;
* the real path: each shard task loads the tiny random SAM 3 with ``--sam3 DIR`` and talks over
  HTTP to one of two scripted OpenAI-compatible servers (round-robin ``--llm-base-url``). One sample
  at a time and one torch thread everywhere, so no batching or thread-count rounding differs.

Equality: every ``samples.jsonl`` record and the ``summary.json``, timings aside.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evals.fixtures import make_reasonseg

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'sam3agent[ray]')")

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
HOOK = ["--_fake-backend", "evals_runner_backend:reasonseg", "--no-progress", "--overlap-iom", "off"]
TIMING_KEYS = {"seconds", "timings", "timing"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A local Ray cluster with 2 CPUs (2 workers); workers import the test hook from this folder."""
    if ray.is_initialized():
        ray.shutdown()
    path = os.pathsep.join([str(HERE), str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    try:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}})
    except Exception as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"a local Ray cluster cannot start here: {type(e).__name__}: {e}")
    yield ray
    ray.shutdown()


def _parser() -> argparse.ArgumentParser:
    from evals.cli import build_parser

    return build_parser()


def _ray_run(argv: list[str]) -> int:
    from evals.cli import main

    return main(["ray", "reasonseg", *argv])


def _single_run(argv: list[str]) -> int:
    from evals.cli import main

    return main(["reasonseg", "run", *argv])


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _records(run_dir: Path) -> list[dict[str, Any]]:
    lines = (run_dir / "samples.jsonl").read_text(encoding="utf-8").splitlines()
    return sorted((_strip(json.loads(line)) for line in lines if line.strip()), key=lambda r: r["id"])


def _summary(run_dir: Path) -> dict[str, Any]:
    return _strip(json.loads((run_dir / "summary.json").read_text(encoding="utf-8")))


def _assert_same_run(single: Path, sharded: Path, shards: int) -> None:
    assert _records(sharded) == _records(single)
    assert _summary(sharded) == _summary(single)
    for record in _records(single):
        if record.get("mask_file"):
            assert (sharded / record["mask_file"]).read_bytes() == (single / record["mask_file"]).read_bytes()
    shard_dirs = sorted((sharded / "shards").iterdir())
    assert [d.name for d in shard_dirs] == [f"{i}-of-{shards}" for i in range(shards)]
    ids = [{r["id"] for r in _records(d)} for d in shard_dirs]
    assert all(ids) and set.union(*ids) == {r["id"] for r in _records(single)}
    assert sum(len(s) for s in ids) == len(_records(single))  # each sample in exactly one shard


def test_ray_sharded_equals_single_process_with_test_hook(cluster: Any, tmp_path: Path) -> None:
    data = make_reasonseg(tmp_path / "val").root
    common = ["--data", str(data), "--concurrency", "4", *HOOK]
    assert _single_run([*common, "--out", str(tmp_path / "single")]) == 0
    assert _ray_run([*common, "--out", str(tmp_path / "ray"), "--shards", "2"]) == 0
    _assert_same_run(tmp_path / "single", tmp_path / "ray", 2)
    # a rerun resumes: every shard is complete, the merged run is unchanged
    assert _ray_run([*common, "--out", str(tmp_path / "ray"), "--shards", "2"]) == 0
    _assert_same_run(tmp_path / "single", tmp_path / "ray", 2)


def _http_policy(body: dict[str, Any]) -> str:
    """Segment ``object``; select every mask found, or report no mask when nothing was found."""
    last = body["messages"][-1]["content"]
    text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last if isinstance(p, dict))
    if len(body["messages"]) == 2:
        return '<tool>{"name": "segment_phrase", "parameters": {"text_prompt": "object"}}</tool>'
    found = re.search(r"found (\d+) mask", text)
    if found is None:
        return '<tool>{"name": "report_no_mask", "parameters": {}}</tool>'
    ids = list(range(1, int(found.group(1)) + 1))
    return f'<tool>{{"name": "select_masks_and_return", "parameters": {{"final_answer_masks": {ids}}}}}</tool>'


def test_ray_shards_load_tiny_sam3_and_round_robin_endpoints(cluster: Any, tmp_path: Path,
                                                             tiny_sam3_dir: Path) -> None:
    import torch

    from sam3agent.llm.server import ScriptedOpenAIServer

    data = make_reasonseg(tmp_path / "val").root
    common = ["--data", str(data), "--concurrency", "1", "--sam3", str(tiny_sam3_dir), "--device", "cpu",
              "--model", "scripted", "--llm-retries", "0", "--no-progress"]
    threads = torch.get_num_threads()
    with ScriptedOpenAIServer(_http_policy) as first, ScriptedOpenAIServer(_http_policy) as second:
        torch.set_num_threads(1)  # as in the Ray workers (OMP_NUM_THREADS=1 per 1-CPU task)
        try:
            assert _single_run([*common, "--llm-base-url", first.base_url, "--out", str(tmp_path / "single")]) == 0
        finally:
            torch.set_num_threads(threads)
        single_calls = first.call_count
        assert _ray_run([*common, "--llm-base-url", first.base_url, "--llm-base-url", second.base_url,
                         "--out", str(tmp_path / "ray"), "--shards", "2"]) == 0
        assert first.call_count > single_calls and second.call_count > 0  # both endpoints served shards
        assert first.call_count - single_calls + second.call_count == single_calls
    _assert_same_run(tmp_path / "single", tmp_path / "ray", 2)
    statuses = {r["status"] for r in _records(tmp_path / "ray")}
    assert statuses <= {"answered", "no_mask"}


def test_ray_rejects_shard_flag(cluster: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_reasonseg(tmp_path / "val").root
    code = _ray_run(["--data", str(data), "--out", str(tmp_path / "r"), "--shards", "2", "--shard", "0/2", *HOOK])
    assert code == 2 and "--shards N" in capsys.readouterr().err


def test_shard_on_another_node_ships_its_directory(cluster: Any, tmp_path: Path) -> None:
    from evals import merge
    from evals.ray_runner import _write_tree, run_shard, shard_args

    data = make_reasonseg(tmp_path / "val").root
    args = _parser().parse_args(["ray", "reasonseg", "--data", str(data), "--out", str(tmp_path / "remote"),
                                 "--shards", "1", *HOOK])
    ns = shard_args(args, 0, 1, None)
    assert ns.shard.index == 0 and ns.out == (tmp_path / "remote" / "shards" / "0-of-1").resolve()
    outcome = ray.get(ray.remote(run_shard).remote("reasonseg", ns, "a-node-that-is-not-this-one"))
    assert outcome.files is not None and "samples.jsonl" in outcome.files and ".lock" not in outcome.files
    assert any(name.startswith("masks/") for name in outcome.files)
    copy = tmp_path / "copy"
    _write_tree(copy, outcome.files)
    merged = merge.merge([copy], tmp_path / "merged")
    assert merged.summary["n_samples"] == 5
