"""A tiny random Qwen2.5-VL, in-process through TransformersLLM, drives a whole agent run.

Its output is random text, so the run must end as ``budget_exhausted`` with every reply fed back
as a model mistake — never a crash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sam3agent import Agent, AgentConfig
from sam3agent.llm.base import SamplingConfig


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory):
    from sam3agent.llm import TransformersLLM, save_tiny_qwen25vl

    path = save_tiny_qwen25vl(tmp_path_factory.mktemp("tiny-qwen"))
    llm = TransformersLLM(str(path), device="cpu")
    yield llm
    llm.close()


@pytest.mark.parametrize("protocol", ["text", "native"])
def test_random_qwen_run_ends_budget_exhausted(tiny_qwen, tiny_engine, protocol: str) -> None:
    config = AgentConfig(protocol=protocol, max_llm_calls=3, sampling=SamplingConfig(max_tokens=24),
                         max_image_pixels=64 * 28 * 28, min_image_pixels=16 * 28 * 28)
    image = np.random.RandomState(0).randint(0, 256, (120, 160, 3), dtype=np.uint8)
    result = Agent(tiny_qwen, tiny_engine, config).run(image, "the red cup")
    assert result.status == "budget_exhausted"
    assert result.totals.llm_calls == 3
    assert len(result.steps) == 3
    assert all(s.failure for s in result.steps), [s.failure for s in result.steps]
    assert sum(result.failure_counts.values()) == 3
    assert len(result.detections) == 0
    assert result.to_dict()["status"] == "budget_exhausted"


def test_tiny_qwen_dir_loads_through_from_pretrained(tmp_path: Path) -> None:
    from sam3agent.llm import TransformersLLM, save_tiny_qwen25vl

    path = save_tiny_qwen25vl(tmp_path / "q")
    llm = TransformersLLM.from_pretrained(str(path), device="cpu")
    try:
        assert "q" in llm.name
    finally:
        llm.close()
