"""Helpers of the viewer tests: scripted replies and the headless browser's flags."""

from __future__ import annotations

import json

from sam3agent.llm.base import LLMRequest

QUERY = "the red cup <script>alert(1)</script>"
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1600")


def tool(name: str, thought: str, **params: object) -> str:
    """A text-protocol reply: ``thought`` then one ``<tool>`` call."""
    return f"{thought}\n<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"


def reject_mask_2(request: LLMRequest) -> str:
    """A verification script: reject mask 2, accept the others."""
    labels = [image.label for image in request.images]
    if "mask 2 alone" in labels:
        return "That is the saucer, not the cup.\n<verdict>Reject</verdict>"
    return "Yes, the cup.\n<verdict>Accept</verdict>"
