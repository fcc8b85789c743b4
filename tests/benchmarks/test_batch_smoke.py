"""Smoke test of benchmarks/batch.py at a tiny setting (a few samples, a short latency).

Timings on a shared CPU are too noisy to assert a speed-up; the test checks the report's structure,
that every sample ran its scripted trajectory in both modes (5 LLM calls each), and the bounds that
do not depend on timing: at concurrency 1 at most one sample's calls are in flight (its two
verifications at once), and the batch mode wrote one record per sample.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_helpers import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("batch")


def test_items_are_distinct_pictures(bench: ModuleType, tmp_path: Path) -> None:
    items = bench.write_items(tmp_path, 5)
    assert len({path.read_bytes() for path, _ in items}) == 5 and len({q for _, q in items}) == 5


def test_flags_are_checked(bench: ModuleType) -> None:
    parser = bench.build_parser()
    assert parser.parse_args(["--concurrency", "16,1"]).concurrency == [1, 16]
    for bad in (["--concurrency", "4"], ["--modes", "arun_many,other"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_batch_benchmark_smoke(bench: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--samples", "3", "--latency", "0.05", "--concurrency", "1,4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("settings", "machine", "versions", "runs", "ratio", "ratio_bound"):
        assert key in data
    runs = {(r["mode"], r["concurrency"]): r for r in data["runs"]}
    assert set(runs) == {("arun_many", 1), ("arun_many", 4), ("batch", 1), ("batch", 4)}
    for r in runs.values():
        assert r["statuses"] == {"answered": 3} and r["llm_calls"] == 15 and r["sps"] > 0
    assert runs[("arun_many", 1)]["max_llm_calls_in_flight"] <= 2 and runs[("batch", 1)]["max_llm_calls_in_flight"] <= 2
    assert set(data["ratio"]) == {"arun_many", "batch"} and data["ratio_bound"] == 3.0
    assert all(v > 0 for v in data["ratio"].values())
