"""Agent settings: budgets, protocol, image budget, sampling and segmentation thresholds.

Everything that changes the agent's behaviour lives in one frozen :class:`AgentConfig` so a run
can be reproduced from its recorded settings (``AgentResult.to_dict()["config"]``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, model_validator

from sam3agent.llm.base import SamplingConfig

logger = logging.getLogger(__name__)
Protocol = Literal["text", "native"]

_PRESETS: dict[str, dict[str, object]] = {
    "default": {},
    # The reference agent's generation budget (REFERENCE.md §1).
    "paper": {"max_llm_calls": 100},
}


class AgentConfig(BaseModel):
    """Settings of one :class:`sam3agent.Agent`.

    Attributes:
        protocol: ``"text"`` (a ``<tool>{...}</tool>`` block in the reply; works with every model)
            or ``"native"`` (OpenAI ``tools`` / ``tool_calls``).
        max_llm_calls: Main-loop LLM calls allowed per run (verification calls not included).
            Reaching it ends the run with status ``budget_exhausted``.
        max_verifications: At most this many masks are checked by one ``examine_each_mask``; the
            rest are kept unchecked and the model is told so.
        verify_concurrency: Verification requests in flight at once within one run.
        timeout_s: Wall-clock limit of one run in seconds (``None``: no limit). Reaching it ends the
            run with status ``budget_exhausted``.
        max_image_pixels: Pixel budget of every image sent to the model (aspect kept).
        min_image_pixels: Smallest pixel count an image is scaled up to.
        image_patch: The model's vision patch size; sent images have sides that are multiples of it.
        image_format: Encoding of images sent to the model.
        image_quality: JPEG quality of sent images.
        sampling: Sampling settings of main-loop calls.
        verify_sampling: Sampling settings of verification calls (``None``: same as ``sampling``).
        score_threshold: SAM 3 score threshold of ``segment_phrase``.
        mask_threshold: SAM 3 mask binarisation threshold of ``segment_phrase``.
        max_masks: At most this many masks are kept per ``segment_phrase``.
        prompt_dir: A folder of prompt templates replacing the shipped ones (``None``: shipped).

    ``prompt_version`` (a hash of the templates in use) is derived, not set: it appears in
    ``model_dump()`` and is accepted but ignored on input, with a warning when a recorded
    version differs from the templates now in use.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Protocol = "text"
    max_llm_calls: int = Field(40, ge=1)
    max_verifications: int = Field(20, ge=1)
    verify_concurrency: int = Field(8, ge=1)
    timeout_s: float | None = Field(600.0, gt=0)
    max_image_pixels: int = Field(1280 * 28 * 28, ge=28 * 28)
    min_image_pixels: int = Field(256 * 28 * 28, ge=1)
    image_patch: int = Field(28, ge=1)
    image_format: Literal["jpeg", "png"] = "jpeg"
    image_quality: int = Field(90, ge=1, le=100)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    verify_sampling: SamplingConfig | None = None
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    mask_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_masks: int = Field(100, ge=1)
    prompt_dir: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_recorded_version(cls, data: object) -> object:
        if isinstance(data, dict) and "prompt_version" in data:
            data = dict(data)
            recorded = data.pop("prompt_version")
            from sam3agent.prompts import load_prompts

            current = load_prompts(data.get("prompt_dir")).version
            if recorded != current:
                logger.warning("config recorded with prompt version %s; the templates in use are %s",
                               recorded, current)
        return data

    @model_validator(mode="after")
    def _check_pixels(self) -> AgentConfig:
        if self.min_image_pixels > self.max_image_pixels:
            raise ValueError(
                f"min_image_pixels ({self.min_image_pixels}) exceeds max_image_pixels "
                f"({self.max_image_pixels}); lower min_image_pixels or raise max_image_pixels"
            )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prompt_version(self) -> str:
        """A short hash of the prompt templates in use (recorded in results and cache keys)."""
        from sam3agent.prompts import load_prompts

        return load_prompts(self.prompt_dir).version

    @property
    def effective_verify_sampling(self) -> SamplingConfig:
        """The sampling settings verification calls use."""
        return self.verify_sampling or self.sampling

    @classmethod
    def preset(cls, name: str, **overrides: object) -> AgentConfig:
        """A named preset, optionally with fields overridden.

        Args:
            name: ``"default"`` or ``"paper"`` (the reference's budget of 100 LLM calls).
            **overrides: Fields to set on top of the preset.

        Raises:
            ValueError: If the preset name is unknown.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown AgentConfig preset {name!r}; choose one of {sorted(_PRESETS)}")
        return cls.model_validate({**_PRESETS[name], **overrides})

    @classmethod
    def paper(cls, **overrides: object) -> AgentConfig:
        """The ``paper`` preset (``max_llm_calls=100``)."""
        return cls.preset("paper", **overrides)
