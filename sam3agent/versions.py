"""Installed versions of the distributions a run's report records (read from package metadata)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

__all__ = ["REPORTED", "package_versions"]

REPORTED = ("sam3agent", "torch", "torchvision", "transformers", "supervision", "numpy", "pycocotools",
            "opencv-python-headless", "pillow", "openai")
"""What an eval manifest and ``GET /v1/info`` record by default."""


def package_versions(names: Iterable[str] = REPORTED) -> dict[str, str | None]:
    """``{distribution: version}`` for ``names``, ``None`` where it is not installed; nothing is imported."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
