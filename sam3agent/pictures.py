"""The pictures one run sends the model: encoded to the run's settings, their time accounted.

The driver (:mod:`sam3agent.agent`) and the ``examine_each_mask`` transition
(:mod:`sam3agent.examine`) both draw, encode and time pictures of the current masks; these
functions work on the run's :class:`~sam3agent.state.AgentState` (its settings, current masks
and timers), so neither module needs the other. Images are ``PIL.Image`` at the original
resolution until :func:`encode_for_model` resizes them to the configured pixel budget.
"""

from __future__ import annotations

import asyncio
import time

from PIL import Image

from sam3agent.config import AgentConfig
from sam3agent.llm.base import ImagePart
from sam3agent.render import encode_image, render_marks
from sam3agent.result import Step
from sam3agent.state import AgentState, mask_ids
from sam3core.postprocess import empty_detections

__all__ = ["add_render_time", "encode_for_model", "render_current"]


def encode_for_model(config: AgentConfig, image: Image.Image, label: str, *, raw: bool = False) -> ImagePart:
    """Resize and encode an image to the configured pixel budget and format.

    Args:
        config: The run's settings (``max_image_pixels``, ``min_image_pixels``, ``image_patch``,
            the formats, ``image_quality``, ``image_detail``).
        image: The picture, any size and mode.
        label: Its description in traces.
        raw: Whether it is the raw input image (``image_format``) rather than a picture we drew
            (``render_format``).

    Returns:
        The encoded :class:`~sam3agent.llm.base.ImagePart` (see
        :func:`sam3agent.render.encode_image` for the size it gets).
    """
    return encode_image(image, max_pixels=config.max_image_pixels, min_pixels=config.min_image_pixels,
                        patch=config.image_patch, fmt=config.image_format if raw else config.render_format,
                        quality=config.image_quality, label=label, detail=config.image_detail)


def add_render_time(state: AgentState, step: Step, seconds: float) -> None:
    """Count ``seconds`` of drawing and encoding to both the step and the run."""
    step.render_seconds += seconds
    state.render_seconds += seconds


async def render_current(state: AgentState, step: Step) -> ImagePart:
    """Render and encode the current masks numbered 1..N; it becomes the image kept in context.

    The drawing runs in a worker thread; its time is added to ``step`` and ``state``, and the
    result is stored as ``state.marks_image``.

    Args:
        state: The run; its current masks (none: an empty render of the raw image) are drawn on
            its original-resolution image.
        step: The turn the time is counted to.

    Returns:
        The encoded Set-of-Marks picture.
    """
    handle = state.handle
    detections = state.detections if state.detections is not None else empty_detections(handle.height, handle.width)
    labels = mask_ids(len(detections))

    def draw() -> ImagePart:
        marks = render_marks(handle.image, detections, labels=labels)
        return encode_for_model(state.config, marks, f"marks 1-{len(labels)}")

    t0 = time.perf_counter()
    image = await asyncio.to_thread(draw)
    add_render_time(state, step, time.perf_counter() - t0)
    state.marks_image = image
    return image
