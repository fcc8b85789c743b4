"""Smoke test of benchmarks/throughput.py at a tiny setting (a few samples, tiny latency).

Timings on a shared CPU are too noisy to assert a speed-up; the test checks the report's structure,
that every sample followed its scripted trajectory, and the counts that do not depend on timing:
the reference-style mode re-encodes the image on every ``segment_phrase`` while sam3agent encodes
each image once.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from bench_helpers import load_benchmark


@pytest.fixture(scope="module")
def throughput() -> ModuleType:
    return load_benchmark("throughput")


def test_dataset_is_reasonseg_format_with_planned_trajectories(throughput: ModuleType, tmp_path: Path) -> None:
    from evals.reasonseg import gt_mask, load_samples

    plans = throughput.write_dataset(tmp_path, 12, seed=3)
    samples = load_samples(tmp_path)
    assert len(samples) == 12 and len(plans) == 12
    assert {s.query for s in samples} == set(plans)
    assert len({s.image_path.read_bytes() for s in samples}) == 12  # distinct images
    for s in samples:
        assert gt_mask(s).any()  # the target polygon rasterizes
        plan = plans[s.query]
        assert 1 <= len(plan.phrases) <= 3 and 4 <= plan.max_masks <= 8
        assert 3 <= plan.main_turns <= 6 and 1 not in plan.rejects
    again = throughput.write_dataset(tmp_path / "again", 12, seed=3)
    assert again == plans  # deterministic


def test_policy_answers_main_and_verify_requests(throughput: ModuleType) -> None:
    plan = throughput.Trajectory(phrases=("cup", "mug"), max_masks=5, mistake=True, rejects=frozenset({3}))
    policy = throughput.TrajectoryPolicy({"the red cup": plan})
    main = {"messages": [{"role": "system", "content": "sys"},
                         {"role": "user", "content": [{"type": "text", "text": "Query: the red cup\n\nSegment."}]}]}
    replies = [policy(main) for _ in range(6)]
    assert '"segment_phrase"' in replies[0] and '"cup"' in replies[0] and '"mug"' in replies[1]
    assert '"examine_each_mask"' in replies[2]
    assert "[99]" in replies[3] and "[1]" in replies[4] and replies[5] == replies[4]
    verify = {"messages": [main["messages"][0], {"role": "user", "content": [
        {"type": "text", "text": "Query: the red cup\n\nCandidate: mask 3. Does it cover"}]}]}
    assert "<verdict>Reject</verdict>" in policy(verify)
    verify["messages"][1]["content"][0]["text"] = "Query: the red cup\n\nCandidate: mask 2. Does it"
    assert "<verdict>Accept</verdict>" in policy(verify)


@pytest.mark.slow
def test_throughput_smoke(throughput: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    code = throughput.main(["--size", "tiny", "--device", "cpu", "--samples", "4", "--latency", "0.02",
                            "--concurrency", "1,4", "--seed", "1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("reference_sps", "sps", "ratio", "equal_concurrency_ratio", "device", "versions", "settings",
                "ceiling_ratio", "modes"):
        assert key in report
    assert set(report["sps"]) == set(report["ratio"]) == {"1", "4"}
    assert report["equal_concurrency"] == 4
    assert all(v > 0 for v in report["sps"].values()) and report["reference_sps"] > 0
    modes = report["modes"]
    assert [(m["name"], m["concurrency"]) for m in modes] == [
        ("reference-style", 1), ("sam3agent", 1), ("sam3agent", 4), ("reference-style", 4)]
    segment_calls = sum(int(n) * count for n, count in modes[0]["segment_calls"].items())
    assert segment_calls > 4  # seed 1 plans at least one sample with several phrases
    for m in modes:
        assert m["statuses"] == {"answered": 4} and m["plan_mismatches"] == 0
        assert m["segment_calls"] == modes[0]["segment_calls"]
        assert all(4 <= int(n) <= 8 for n in m["examined_masks"])
        if m["name"] == "reference-style":
            assert m["vision_encoder_runs"] == segment_calls  # every segment_phrase re-encodes
        else:
            assert m["vision_encoder_runs"] == 4  # one encoding per image
            assert m["vision_encoder_runs"] < modes[0]["vision_encoder_runs"]
