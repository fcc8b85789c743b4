"""Fixtures of the agent tests: a small image, hand-made masks, a fake engine."""

from __future__ import annotations

import numpy as np
import pytest
from agent_helpers import H, W, rect

from sam3core.fake import FakeEngine


@pytest.fixture
def image() -> np.ndarray:
    """An 80x60 RGB image with some structure."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    img[..., 0] = (np.arange(W) * 3).astype(np.uint8)
    return img


@pytest.fixture
def masks() -> list[np.ndarray]:
    """Three disjoint masks; the second is L-shaped (non-convex)."""
    l_shape = rect(30, 55, 40, 48) | rect(47, 55, 40, 75)
    return [rect(5, 20, 5, 30), l_shape, rect(25, 40, 5, 20)]


@pytest.fixture
def engine(masks: list[np.ndarray]) -> FakeEngine:
    """'dog' -> three masks (scores 0.9, 0.85, 0.8), 'cat' -> one, 'person' -> the first two."""
    return FakeEngine({"dog": masks, "cat": [masks[2]], "person": masks[:2]})
