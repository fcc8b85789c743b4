"""Test-only backend of ``sam3agent batch --_fake-backend batch_backend:fake_engine``.

The LLM is the real one the flags describe (``--llm-base-url`` pointed at a scripted server); only
SAM 3 is replaced, by a :class:`~sam3core.fake.FakeEngine` that finds two masks for ``target`` in any
image that is not all black (the left third, and a square in the lower right), and nothing in a
black one. So a real ``sam3agent batch`` subprocess runs in seconds without weights.
"""

from __future__ import annotations

import argparse

import numpy as np

from sam3agent.backends import build_llm
from sam3agent.config import AgentConfig
from sam3agent.llm.base import LLM
from sam3core.fake import FakeEngine
from sam3core.image import ImageHandle

PHRASE = "target"


def target_masks(handle: ImageHandle, phrase: str) -> list[np.ndarray]:
    """The two masks of a picture with content; none for an all-black one."""
    if not np.asarray(handle.image).any():
        return []
    h, w = handle.height, handle.width
    left = np.zeros((h, w), bool)
    left[:, : w // 3] = True
    square = np.zeros((h, w), bool)
    square[h // 2 :, 2 * w // 3 :] = True
    return [left, square]


def fake_engine(args: argparse.Namespace, config: AgentConfig) -> tuple[LLM, FakeEngine]:
    """The flags' LLM and the fake engine."""
    return build_llm(args, prompt_version=config.prompt_version), FakeEngine({PHRASE: target_masks})
