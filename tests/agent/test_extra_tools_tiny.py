"""The opt-in tools on the tiny random SAM 3 and its tracker, built the way ``sam3agent run`` builds them.

``--tools segment_like,segment_at --sam3 DIR --sam3-tracker DIR`` goes through
:func:`sam3agent.backends.build_engine`, which wraps the engine in a ``Sam3Tracker``; one scripted
run then uses a phrase, an exemplar and a box on the same image, and the ViT runs once.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from sam3agent import Agent
from sam3agent.backends import add_backend_arguments, build_config, build_engine
from sam3agent.llm.base import LLMRequest
from sam3agent.llm.scripted import ScriptedLLM
from sam3core.testing import save_random_sam3_tracker
from sam3core.tracker import Sam3Tracker


@pytest.fixture(scope="module")
def tracker_dir(tiny_sam3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Sam3Model

    detector = Sam3Model.from_pretrained(tiny_sam3_dir)
    return save_random_sam3_tracker(tmp_path_factory.mktemp("tiny-tracker"), detector=detector)


def _finish(request: LLMRequest) -> str:
    """Select mask 1 when the last call left masks, else report none (random weights, random masks)."""
    last = request.messages[-1].plain_text
    name = "select_masks_and_return" if "made 1 mask" in last else "report_no_mask"
    params = '{"final_answer_masks": [1]}' if name == "select_masks_and_return" else "{}"
    return f'<tool>{{"name": "{name}", "parameters": {params}}}</tool>'


def test_sam3agent_run_flags_build_a_sharing_tracker(tiny_sam3_dir: Path, tracker_dir: Path) -> None:
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    args = parser.parse_args(["--sam3", str(tiny_sam3_dir), "--sam3-tracker", str(tracker_dir), "--device", "cpu",
                              "--tools", "segment_like,segment_at", "--score-threshold", "0"])
    config = build_config(args)
    engine = build_engine(args)
    try:
        assert isinstance(engine, Sam3Tracker) and engine.tracker_stats.shares_trunk
        image = np.random.RandomState(0).randint(0, 256, (90, 130, 3), dtype=np.uint8)
        llm = ScriptedLLM(['<tool>{"name": "segment_phrase", "parameters": {"text_prompt": "cat"}}</tool>',
                           '<tool>{"name": "segment_like", "parameters": {"mask_id": 1}}</tool>',
                           '<tool>{"name": "segment_at", "parameters": {"box": [100, 80, 400, 300]}}</tool>',
                           _finish])
        result = Agent(llm, engine, config).run(image, "the thing in the middle")
        assert result.status in ("answered", "no_mask") and result.failure_counts == {}
        assert [s.call["name"] for s in result.steps] == ["segment_phrase", "segment_like", "segment_at",
                                                          "select_masks_and_return" if result.status == "answered"
                                                          else "report_no_mask"]
        assert engine.stats.vision_encoder_runs == 1  # detector, exemplar and tracker on one ViT pass
        assert engine.tracker_stats.forwards == 1 and engine.tracker_stats.own_vit_runs == 0
        if result.status == "answered":
            assert result.detections.mask.shape == (1, 90, 130)
    finally:
        engine.close()


def test_segment_at_without_a_tracker_is_refused_at_load(tiny_sam3_dir: Path) -> None:
    from sam3core.loading import Sam3LoadError

    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    args = parser.parse_args(["--sam3", str(tiny_sam3_dir), "--device", "cpu", "--tools", "segment_at"])
    with pytest.raises(Sam3LoadError, match="not SAM 3's tracker"):
        build_engine(args)  # the detector-only directory holds no tracker weights
