"""``AgentConfig.mask_upsampling``: the paper preset asks the engine for Meta's binarisation order."""

from __future__ import annotations

import numpy as np
import pytest
from agent_helpers import tool

from sam3agent import Agent, AgentConfig
from sam3agent.llm.scripted import ScriptedLLM
from sam3core.fake import FakeEngine


class RecordingEngine(FakeEngine):
    """A fake engine that records the keyword arguments of every ``asegment`` call."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.options: list[dict[str, object]] = []

    async def asegment(self, image, phrases, **kwargs):  # type: ignore[no-untyped-def]
        self.options.append(dict(kwargs))
        return await super().asegment(image, phrases, **kwargs)


def test_presets() -> None:
    assert AgentConfig.paper().mask_upsampling == "logits"
    assert AgentConfig().mask_upsampling is None
    assert AgentConfig(mask_upsampling="probabilities").mask_upsampling == "probabilities"
    with pytest.raises(ValueError, match="mask_upsampling"):
        AgentConfig(mask_upsampling="meta")  # type: ignore[arg-type]


@pytest.mark.parametrize(("config", "sent"), [
    (AgentConfig.paper(), "logits"),
    (AgentConfig(mask_upsampling="probabilities"), "probabilities"),
    (AgentConfig(), None),
])
async def test_the_setting_reaches_the_engine_only_when_set(image: np.ndarray, masks: list[np.ndarray],
                                                            config: AgentConfig, sent: str | None) -> None:
    engine = RecordingEngine({"dog": masks})
    llm = ScriptedLLM([tool("segment_phrase", text_prompt="dog"), tool("select_masks_and_return",
                                                                       final_answer_masks=[1])])
    result = await Agent(llm, engine, config).arun(image, "the dog")
    assert result.status == "answered" and len(result.detections) == 1
    assert len(engine.options) == 1
    assert engine.options[0].get("mask_upsampling") == sent
    assert ("mask_upsampling" in engine.options[0]) == (sent is not None)
    assert engine.options[0]["dedup_iou"] is None  # the other per-call option of the same path


def test_recorded_config_round_trips() -> None:
    cfg = AgentConfig.paper()
    assert AgentConfig.model_validate(cfg.model_dump()).mask_upsampling == "logits"
