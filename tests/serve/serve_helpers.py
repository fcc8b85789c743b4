"""Helpers of the serve tests: a stateless scripted MLLM, a fake engine, images, a uvicorn thread.

``build_backend`` is also the ``--_test-backend serve_helpers:build_backend`` hook the server
subprocesses load (with this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from sam3agent.llm.base import Completion, LLMRequest
from sam3core.fake import FakeEngine
from sam3core.image import ImageHandle


def tool_reply(name: str, **params: object) -> str:
    """A text-protocol reply calling ``name``."""
    return f"<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"


def next_agent_reply(roles: list[str], last_text: str, phrase: str = "cat") -> str:
    """The policy both scripted MLLMs follow: segment ``phrase``; then answer mask 1, or no mask."""
    if "assistant" not in roles:
        return tool_reply("segment_phrase", text_prompt=phrase)
    if "found nothing" in last_text:
        return tool_reply("report_no_mask")
    return tool_reply("select_masks_and_return", final_answer_masks=[1])


class PolicyLLM:
    """A stateless scripted MLLM (safe for any number of concurrent runs).

    Args:
        latency_s: Seconds each call sleeps.
        phrase: The phrase it segments.

    Attributes:
        calls: Requests answered.
        max_in_flight: The most calls in progress at once.
    """

    def __init__(self, latency_s: float = 0.0, phrase: str = "cat") -> None:
        self.latency_s = latency_s
        self.phrase = phrase
        self.calls = 0
        self.max_in_flight = 0
        self._in_flight = 0

    @property
    def name(self) -> str:
        """The backend name."""
        return "policy"

    async def complete(self, request: LLMRequest) -> Completion:
        """Answer per :func:`next_agent_reply` (verification requests: accept)."""
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            self.calls += 1
            if request.purpose == "verify":
                return Completion(text="<verdict>Accept</verdict>")
            roles = [m.role for m in request.messages]
            return Completion(text=next_agent_reply(roles, request.messages[-1].plain_text, self.phrase))
        finally:
            self._in_flight -= 1


def center_mask(handle: ImageHandle, phrase: str) -> list[np.ndarray]:
    """One mask: the central quarter of the image (rows h/4..3h/4, columns w/4..3w/4)."""
    mask = np.zeros((handle.height, handle.width), bool)
    mask[handle.height // 4: 3 * handle.height // 4, handle.width // 4: 3 * handle.width // 4] = True
    return [mask]


def fake_engine() -> FakeEngine:
    """'cat' -> the central quarter of any image (score 0.9); other phrases -> nothing."""
    return FakeEngine({"cat": center_mask})


def build_backend(args: Any) -> tuple[PolicyLLM, FakeEngine]:
    """The ``--_test-backend`` hook: a policy MLLM and the fake engine."""
    return PolicyLLM(), fake_engine()


def png(width: int = 64, height: int = 48, *, noise: bool = False, seed: int = 0) -> bytes:
    """PNG bytes of a gradient (or, with ``noise``, incompressible random pixels)."""
    if noise:
        pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.zeros((height, width, 3), np.uint8)
        pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
        pixels[..., 1] = seed % 256
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def expected_area(width: int = 64, height: int = 48) -> int:
    """Pixels of :func:`center_mask` on a ``width`` x ``height`` image."""
    return (3 * height // 4 - height // 4) * (3 * width // 4 - width // 4)


class ServerThread:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (an ephemeral port) from a background thread.

    Args:
        app: The ASGI app.
        config: A ``uvicorn.Config`` to serve with instead of the plain one (it must name ``app``,
            host 127.0.0.1 and port 0).
    """

    def __init__(self, app: Any, config: Any = None) -> None:
        import uvicorn

        if config is None:
            config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)
        self.port = 0

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"


def error_message(response: Any, status: int, kind: str) -> str:
    """Check an HTTP API error response (status, JSON ``{"error": {type, message}}``); its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and body["error"]["type"] == kind
    return str(body["error"]["message"])


def wait_healthy(client: Any, tries: int = 100) -> Any:
    """``GET /healthz`` until the server answers (its socket is bound before the app starts)."""
    import httpx2

    for _ in range(tries):
        try:
            return client.get("/healthz")
        except httpx2.TransportError:
            time.sleep(0.05)
    return client.get("/healthz")
