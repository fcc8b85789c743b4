"""Agent settings: budgets, protocol, image budget, sampling and segmentation thresholds.

Everything that changes the agent's behaviour lives in one frozen :class:`AgentConfig` so a run
can be reproduced from its recorded settings (``AgentResult.to_dict()["config"]``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    computed_field,
    field_validator,
    model_serializer,
    model_validator,
)

from sam3agent.llm.base import SamplingConfig
from sam3agent.tools import ExtraTool, canonical_extras

if TYPE_CHECKING:
    from sam3agent.prompts import Prompts

logger = logging.getLogger(__name__)
Protocol = Literal["text", "native"]

# The reference implementation of the SAM 3 Agent (Meta's sam3 package, sam3/agent/), knob by
# knob; docs/reference-parity.md gives the file and line of each behaviour. The prompts stay ours
# (``system_prompt_file`` / ``verify_prompt_file`` take the reference's own files verbatim).
_PAPER: dict[str, object] = {
    "max_llm_calls": 100,  # its max_generations
    "max_masks": None,  # its processor keeps every query above the threshold
    "overlap_iom": 0.3,
    "drop_short_rle": True,  # its test for empty masks: RLE strings of at most 4 characters
    "reexamine": "all",  # a repeat examine_each_mask re-checks every mask
    "max_verifications": None,
    "max_image_pixels": None,  # images go at their original size; the server resizes
    "image_format": "png",
    "render_format": "png",
    "image_detail": "high",
    "refused_phrase_restarts_window": True,
    "box_source": "predicted",  # its output boxes are SAM 3's predicted boxes
    "mask_upsampling": "logits",  # its processor thresholds sigmoid(bilinear(mask logits))
    "sampling": {"temperature": None, "top_p": None, "seed": None, "max_tokens": 4096},
}
_PRESETS: dict[str, dict[str, object]] = {"default": {}, "paper": _PAPER}


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
        max_image_pixels: Pixel budget of every image sent to the model (aspect kept); ``None``
            sends images at their original size (the server's processor resizes them). The
            default, 2048 Qwen2.5-VL tokens (1.6 MP), draws the mask numbers about 30 px tall
            (more than one 28 px patch) and keeps an object of 0.1% of the frame at about 40x40 px,
            while two images plus the prompt stay far below a 32k context.
        min_image_pixels: Smallest pixel count an image is scaled up to (ignored when
            ``max_image_pixels`` is ``None``).
        image_patch: The model's vision patch size; sent images have sides that are multiples of it.
        image_format: Encoding of the raw image sent to the model.
        render_format: Encoding of the pictures we draw (mask renders, close-ups). PNG by default:
            JPEG blurs thin outlines and the digits of the marks.
        image_quality: JPEG quality of sent images.
        image_detail: OpenAI's ``detail`` of every image part (``None``: not sent).
        sampling: Sampling settings of main-loop calls (a ``None`` field is left to the server).
        verify_sampling: Sampling settings of verification calls (``None``: same as ``sampling``).
        score_threshold: SAM 3 score threshold of ``segment_phrase``.
        mask_threshold: SAM 3 mask binarisation threshold of ``segment_phrase``.
        max_masks: At most this many masks are asked of the engine per ``segment_phrase``
            (``None``: no cap).
        overlap_iom: Greedy overlap removal of ``segment_phrase`` masks (see
            :mod:`sam3agent.overlap`): a mask whose intersection covers more than this share of
            the smaller mask of a higher-scoring kept one is dropped. ``None`` turns it off and
            leaves duplicate removal to the engine's own setting; otherwise the engine's is off.
        mask_upsampling: The engine's binarisation order of ``segment_phrase`` masks:
            ``"probabilities"`` thresholds ``bilinear(sigmoid(logits))`` (transformers'
            post-processing), ``"logits"`` thresholds ``sigmoid(bilinear(logits))`` (the
            reference's processor); ``None`` leaves it to the engine's own setting. The two differ
            only on pixels near mask borders.
        drop_short_rle: Drop masks whose COCO RLE string is at most 4 characters long (the
            reference's test for empty masks; it also drops a full-image mask of a tiny image)
            instead of only empty masks.
        reexamine: What a repeated ``examine_each_mask`` checks: ``"unchecked"`` masks only
            (a call with nothing new is refused), or ``"all"`` masks again.
        max_verifications: At most this many masks are checked by one ``examine_each_mask``; the
            rest are kept unchecked and the model is told so (``None``: no limit).
        refused_phrase_restarts_window: Whether a refused repeated phrase starts a new context
            window (the reference does this, so the current masks' image leaves the context; the
            masks stay selectable). Off by default: the model keeps seeing the current masks.
        box_source: Where output boxes come from in evaluation records: ``"mask"`` (the box
            around each selected mask) or ``"predicted"`` (SAM 3's own predicted box).
        prompt_dir: A folder of prompt templates replacing the shipped ones (``None``: shipped).
        system_prompt_file: A file whose text is the main-loop system prompt, verbatim (no
            placeholders are filled: a ``$`` stays a ``$``). Wins over ``prompt_dir``'s system
            templates. With the text protocol the file must describe the tools itself.
        verify_prompt_file: Likewise for the verification system prompt.
        tools: Extra tools offered to the model besides the paper's four (see
            :data:`sam3agent.tools.EXTRA_TOOLS`): ``"segment_like"`` (segmentation by example: a
            current mask's box becomes SAM 3's exemplar prompt) and ``"segment_at"`` (one object at
            pixel coordinates the model gives; the engine must segment at points and boxes, e.g. a
            :class:`sam3core.tracker.Sam3Tracker`). Empty by default and in the ``paper`` preset.
            Stored once each, in that canonical order; left out of ``model_dump()`` while empty, so
            recorded settings of runs without extra tools stay as they were.

    ``prompt_version`` (a hash of the templates in use) is derived, not set: it appears in
    ``model_dump()`` and is accepted but ignored on input, with a warning when a recorded
    version differs from the templates now in use.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    protocol: Protocol = "text"
    max_llm_calls: int = Field(40, ge=1)
    max_verifications: int | None = Field(20, ge=1)
    verify_concurrency: int = Field(8, ge=1)
    timeout_s: float | None = Field(600.0, gt=0)
    max_image_pixels: int | None = Field(2048 * 28 * 28, ge=28 * 28)
    min_image_pixels: int = Field(256 * 28 * 28, ge=1)
    image_patch: int = Field(28, ge=1)
    image_format: Literal["jpeg", "png"] = "jpeg"
    render_format: Literal["jpeg", "png"] = "png"
    image_quality: int = Field(90, ge=1, le=100)
    image_detail: Literal["auto", "low", "high"] | None = None
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    verify_sampling: SamplingConfig | None = None
    score_threshold: float = Field(0.5, ge=0.0, le=1.0)
    mask_threshold: float = Field(0.5, ge=0.0, le=1.0)
    max_masks: int | None = Field(100, ge=1)
    overlap_iom: float | None = Field(0.3, ge=0.0, le=1.0)
    mask_upsampling: Literal["probabilities", "logits"] | None = None
    drop_short_rle: bool = False
    reexamine: Literal["unchecked", "all"] = "unchecked"
    refused_phrase_restarts_window: bool = False
    box_source: Literal["mask", "predicted"] = "mask"
    prompt_dir: Path | None = None
    system_prompt_file: Path | None = None
    verify_prompt_file: Path | None = None
    tools: tuple[ExtraTool, ...] = ()

    @field_validator("tools", mode="before")
    @classmethod
    def _canonical_tools(cls, value: object) -> object:
        if isinstance(value, str):  # "segment_like,segment_at", as on a command line
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, (list, tuple, set, frozenset)):
            return canonical_extras(str(v) for v in value)
        return value

    @model_serializer(mode="wrap")
    def _dump_without_default_tools(self, handler: SerializerFunctionWrapHandler) -> dict[str, object]:
        data = handler(self)
        if not self.tools:  # settings recorded before the extra tools existed stay byte-identical
            data.pop("tools", None)
        return data

    @model_validator(mode="before")
    @classmethod
    def _drop_recorded_version(cls, data: object) -> object:
        if isinstance(data, dict) and "prompt_version" in data:
            data = dict(data)
            recorded = data.pop("prompt_version")
            from sam3agent.prompts import load_prompts

            current = load_prompts(data.get("prompt_dir"), system_file=data.get("system_prompt_file"),
                                   verify_file=data.get("verify_prompt_file"),
                                   tools=cls._canonical_tools(data.get("tools") or ())).version
            if recorded != current:
                logger.warning("config recorded with prompt version %s; the templates in use are %s",
                               recorded, current)
        return data

    @model_validator(mode="after")
    def _check_pixels(self) -> AgentConfig:
        if self.max_image_pixels is not None and self.min_image_pixels > self.max_image_pixels:
            raise ValueError(
                f"min_image_pixels ({self.min_image_pixels}) exceeds max_image_pixels "
                f"({self.max_image_pixels}); lower min_image_pixels or raise max_image_pixels"
            )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prompt_version(self) -> str:
        """A short hash of the prompts in use (recorded in results and cache keys)."""
        return self.load_prompts().version

    def load_prompts(self) -> Prompts:
        """The prompt set these settings select (templates plus any verbatim prompt files).

        Raises:
            FileNotFoundError: If a template or a prompt file is missing (the message names it).
        """
        from sam3agent.prompts import load_prompts

        return load_prompts(self.prompt_dir, system_file=self.system_prompt_file, verify_file=self.verify_prompt_file,
                            tools=self.tools)

    @property
    def effective_verify_sampling(self) -> SamplingConfig:
        """The sampling settings verification calls use."""
        return self.verify_sampling or self.sampling

    @classmethod
    def preset(cls, name: str, **overrides: object) -> AgentConfig:
        """A named preset, optionally with fields overridden.

        Args:
            name: ``"default"`` or ``"paper"`` (the reference implementation's settings, knob by
                knob: see ``docs/reference-parity.md``).
            **overrides: Fields to set on top of the preset.

        Raises:
            ValueError: If the preset name is unknown.
        """
        if name not in _PRESETS:
            raise ValueError(f"unknown AgentConfig preset {name!r}; choose one of {sorted(_PRESETS)}")
        return cls.model_validate({**_PRESETS[name], **overrides})

    @classmethod
    def paper(cls, **overrides: object) -> AgentConfig:
        """The ``paper`` preset: the reference implementation's behaviour, with our prompts."""
        return cls.preset("paper", **overrides)
