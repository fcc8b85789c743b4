"""Smoke test of benchmarks/vs_reference.py at --size small, inline: Meta's real agent loop vs ours.

Needs Meta's ``sam3`` (a test oracle, see ``tests/oracle.py``): skipped without it, an error with
``SAM3AGENT_REQUIRE_REFERENCE=1``. Both sides run the same scripted trajectories on the same random weights,
so they must give the same answer with the same LLM calls; Meta encodes the image once per segment call
and writes files, ours encodes it once and writes none.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from bench_helpers import load_benchmark
from oracle import import_reference


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    problem = import_reference("sam3.agent.agent_core", "sam3.agent.client_sam3", "sam3.model.sam3_image")
    if problem is not None:
        if os.environ.get("SAM3AGENT_REQUIRE_REFERENCE") == "1":
            raise ImportError(f"Meta's sam3 is required (SAM3AGENT_REQUIRE_REFERENCE=1): {problem}")
        pytest.skip(f"Meta's sam3 is not importable: {problem}")
    return load_benchmark("vs_reference").run("small", latency=0.0, k=2, photos=("chelsea",), inline=True,
                                               meta_render=False)  # Meta's matplotlib drawing: most of its time


def test_same_trajectories_same_answers(report: dict[str, Any]) -> None:
    rows = {r["sample"]: r for r in report["samples"]}
    assert set(rows) == {"chelsea-1p", "chelsea-2p"}
    for name, phrases in (("chelsea-1p", 1), ("chelsea-2p", 2)):
        meta, ours = rows[name]["meta"], rows[name]["ours"]
        assert rows[name]["same_answer"] and len(ours["answer"]) >= 1, rows[name]
        # main calls: one per scripted step (2 per phrase + select); one verification per mask examined
        assert meta["llm_calls"] == ours["llm_calls"] >= 2 * phrases + 1 + phrases
        assert meta["encodings"] == phrases and ours["encodings"] == 1
        assert meta["files"] > 0 and ours["files"] == 0
        assert ours["status"] == "answered"
        assert rows[name]["ratio"]["encodings"] == pytest.approx(1 / phrases)


def test_counts_and_memory_fields(report: dict[str, Any]) -> None:
    steps = report["steps"]
    total_calls = sum(r["meta"]["llm_calls"] for r in report["samples"])
    assert steps["meta"]["server_requests"] == total_calls == steps["ours_k1"]["server_requests"]
    assert steps["ours_k2"]["groups"] == 1 and steps["ours_k2"]["encodings"] == 1  # two agents, one photo
    assert 0.0 < report["conversion"]["score_threshold"] < 0.5
    assert report["memory"]["meta"]["peak_rss_mb"] is None  # inline: no per-side memory
