"""Helpers of the offline-hub tests: a hub address where nothing answers, and huggingface_hub's retry noise."""

from __future__ import annotations

import socket

RETRY_NOISE = ("Retrying in", "thrown while requesting")
"""Fragments of huggingface_hub's retry warnings: none may appear when the hub is unreachable."""


def closed_port_url() -> str:
    """An http URL on loopback where nothing listens (a port bound, read and closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
