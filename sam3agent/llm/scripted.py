"""A scripted LLM for tests, dry runs and benchmarks: it replays replies you give it.

Replies are consumed in order. Each is a string (the reply text), a :class:`Completion`, or a
callable that receives the :class:`LLMRequest` (so a test can assert on what the agent sent) and
returns a string or a Completion. Verification requests (``purpose == "verify"``) can have a
script of their own, which keeps main-loop scripts independent of how many masks get examined.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable
from typing import TypeAlias

from sam3agent.llm.base import Completion, LLMBackendError, LLMRequest

Reply: TypeAlias = "str | Completion | Callable[[LLMRequest], str | Completion]"


class ScriptExhaustedError(LLMBackendError):
    """The script has no reply left for a request (the test's script is too short)."""


class ScriptedLLM:
    """Replays scripted replies and records every request.

    Args:
        replies: Replies for main-loop requests (and verification requests too, unless
            ``verify_replies`` is given).
        verify_replies: Replies for verification requests; a single callable is used for every
            verification request.
        latency_s: Seconds each call sleeps before answering (to simulate a backend).
        name: The backend name reported in results.

    Attributes:
        requests: Every request received, in order.
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        verify_replies: Iterable[Reply] | Callable[[LLMRequest], str | Completion] | None = None,
        latency_s: float = 0.0,
        name: str = "scripted",
    ) -> None:
        self._main: deque[Reply] = deque(replies)
        self._verify_fn = verify_replies if callable(verify_replies) else None
        self._verify: deque[Reply] | None = (
            deque(verify_replies) if verify_replies is not None and not callable(verify_replies) else None
        )
        self.latency_s = latency_s
        self._name = name
        self.requests: list[LLMRequest] = []
        self._served = 0

    @property
    def name(self) -> str:
        """The backend name."""
        return self._name

    @property
    def remaining(self) -> int:
        """Main-loop replies not yet used."""
        return len(self._main)

    async def complete(self, request: LLMRequest) -> Completion:
        """Answer with the next scripted reply.

        Raises:
            ScriptExhaustedError: If the script for this kind of request is used up.
        """
        self.requests.append(request)
        reply = self._next(request)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        out = reply(request) if callable(reply) else reply
        self._served += 1
        return out if isinstance(out, Completion) else Completion(text=str(out), model=self._name)

    def _next(self, request: LLMRequest) -> Reply:
        if request.purpose == "verify" and self._verify_fn is not None:
            return self._verify_fn
        queue = self._verify if request.purpose == "verify" and self._verify is not None else self._main
        if not queue:
            which = "verify_replies" if queue is self._verify else "replies"
            last = request.messages[-1].plain_text if request.messages else ""
            raise ScriptExhaustedError(
                self._name,
                f"the script ran out ({which} used up after {self._served} replies); the {request.purpose} "
                f"request's last message was: {last[:200]!r}",
            )
        return queue.popleft()
