"""sam3core: in-process SAM 3 concept segmentation that encodes each image once.

``import sam3core`` stays light (no torch, no transformers): :class:`Sam3Engine` is imported from
:mod:`sam3core.engine` on first access, so ``from sam3core import Sam3Engine`` works too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sam3core.image import ImageHandle, ImageInput, prepare_image
from sam3core.protocol import SegmentEngine

if TYPE_CHECKING:
    from sam3core.engine import Sam3Engine

__all__ = ["ImageHandle", "ImageInput", "Sam3Engine", "SegmentEngine", "prepare_image"]


def __getattr__(name: str) -> Any:
    """Import :class:`Sam3Engine` lazily (it pulls in the model code's dependencies)."""
    if name == "Sam3Engine":
        from sam3core.engine import Sam3Engine

        return Sam3Engine
    raise AttributeError(f"module 'sam3core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
