"""An OpenAI chat-completions backend: vLLM servers, OpenAI, Gemini's OpenAI-compatible endpoint.

Transient failures (connection errors, timeouts, 408/409/429/5xx, or whatever a server's
``x-should-retry`` header asks for) are retried by the openai client itself, with its backoff (0.5 s
doubling up to 8 s, less up to 25 % jitter) or the server's ``Retry-After``/``Retry-After-Ms`` (up to
two minutes). The attempts each call took are read back from the client (``retries_taken`` of the raw
response; on failure, the retry count the client stamps on the last request it sent) and reported in
:attr:`~sam3agent.llm.base.Completion.attempts` or in the
:class:`~sam3agent.llm.base.LLMBackendError` that names the endpoint and the last error once they are
spent. Client errors (400/401/403/404/422) fail at once. A 200 answer whose body is not a chat
completion (truncated JSON, a proxy's HTML page, no choices) is a backend fault too, but the openai
client never retries a 200, so that one retry loop stays here; both share the ``max_retries`` budget.

One HTTP client is kept per running event loop and closed when that loop shuts down (``asyncio.run``
closes it while finishing), so one instance can serve a synchronous wrapper that runs every job in
a fresh loop without leaking connections bound to dead loops.

A limiter caps the calls in flight: ``max_concurrency=N`` shares one limit among every
:class:`OpenAICompatibleLLM` of the process that talks to the same ``base_url``; ``limiter=`` takes
any object usable as ``async with limiter:`` (an ``asyncio.Semaphore``, a
:class:`~sam3agent.llm.limiter.SharedLimiter`).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random
import weakref
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext, suppress
from typing import TYPE_CHECKING, Any, Literal

from sam3agent.llm.base import Completion, LLMBackendError, LLMRequest
from sam3agent.llm.limiter import SharedLimiter, shared_limiter
from sam3agent.llm.wire import ImageFormat, MalformedResponseError, from_openai_response, to_openai_messages

if TYPE_CHECKING:
    import openai

__all__ = ["OpenAICompatibleLLM", "SharedLimiter", "shared_limiter"]

logger = logging.getLogger(__name__)

_RETRYABLE_STATUS = frozenset({408, 409, 429})
_MALFORMED = (json.JSONDecodeError, UnicodeDecodeError, MalformedResponseError)


class OpenAICompatibleLLM:
    """The :class:`~sam3agent.llm.base.LLM` protocol over an OpenAI-compatible chat-completions API.

    Args:
        base_url: The API root, e.g. ``http://localhost:8000/v1``.
        model: Model name sent with every request.
        api_key: API key; when ``None`` it is read from ``api_key_env``, and ``"EMPTY"`` is sent when
            that is unset too (what a local vLLM server expects).
        api_key_env: Environment variable holding the key.
        timeout: Seconds before an HTTP request is abandoned (and retried); the client's default is 600.
        max_retries: Retries after the first attempt for transient failures, all kinds together.
        backoff_base: First delay in seconds before retrying a malformed 200 answer; doubles per retry,
            with jitter. (HTTP failures are retried by the openai client on its own schedule.)
        backoff_max: Cap on one such delay (also on a server's ``Retry-After`` sent with that 200).
        extra_body: Extra JSON fields for every request (vLLM options such as ``top_k``,
            ``structured_outputs``, ``chat_template_kwargs``).
        image_format: ``"auto"`` sends image bytes as given; ``"jpeg"``/``"png"`` re-encode when needed.
        max_concurrency: Calls in flight allowed for this ``base_url`` across the whole process.
        limiter: An explicit ``async with`` limiter instead of ``max_concurrency``.
        max_tokens_field: ``"max_tokens"`` (vLLM, Gemini) or ``"max_completion_tokens"``
            (newer OpenAI models).
        default_headers: Extra HTTP headers for every request.

    One HTTP client (connection pool) is kept per running event loop. It is closed when that loop
    shuts down its async generators (``asyncio.run`` and ``asyncio.Runner`` do, before closing the
    loop); :meth:`aclose` (or ``async with llm:``) closes it earlier, and is needed for loops that
    are closed by hand.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        extra_body: Mapping[str, Any] | None = None,
        image_format: ImageFormat = "auto",
        max_concurrency: int | None = None,
        limiter: AbstractAsyncContextManager[Any] | None = None,
        max_tokens_field: Literal["max_tokens", "max_completion_tokens"] = "max_tokens",
        default_headers: Mapping[str, str] | None = None,
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if image_format not in ("auto", "jpeg", "png"):
            raise ValueError(f"image_format must be 'auto', 'jpeg' or 'png', got {image_format!r}")
        if max_concurrency is not None and limiter is not None:
            raise ValueError("pass either max_concurrency or limiter, not both")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.extra_body = dict(extra_body or {})
        self.image_format: ImageFormat = image_format
        self.max_tokens_field = max_tokens_field
        self.default_headers = dict(default_headers or {})
        self._api_key = api_key or os.environ.get(api_key_env) or "EMPTY"
        if max_concurrency is not None:
            limiter = shared_limiter(self.base_url, max_concurrency)
        self._limiter = limiter
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        self._rng = random.Random()

    @property
    def name(self) -> str:
        """``<model> @ <base_url>``."""
        return f"{self.model} @ {self.base_url}"

    @property
    def endpoint(self) -> str:
        """The endpoint as named in errors."""
        return f"{self.base_url} (model {self.model})"

    def __repr__(self) -> str:
        return f"OpenAICompatibleLLM(base_url={self.base_url!r}, model={self.model!r})"

    async def _client(self) -> openai.AsyncOpenAI:
        """The client of the running event loop (HTTP connection pools cannot cross loops).

        A new client is tied to its loop's shutdown: an async generator suspended in a ``try`` whose
        ``finally`` closes the client. The loop finalizes its pending async generators while it can
        still run them (``loop.shutdown_asyncgens()``, called by ``asyncio.run``), so the connections
        are closed on the loop that opened them. Without this, the client of a finished loop is
        garbage collected later, while another loop runs, and its ``__del__`` schedules a close on
        that other loop which fails ("Task exception was never retrieved ... Event loop is closed").
        """
        import openai

        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._api_key,
                timeout=self.timeout,
                max_retries=self.max_retries,
                default_headers=self.default_headers or None,
            )
            entry = self._clients[loop] = _LoopClient(client, _close_at_shutdown(client, self.base_url))
            await anext(entry.closer)  # started here, so the running loop tracks it
        return entry.client

    async def aclose(self) -> None:
        """Close the HTTP client of the running event loop (a later call opens a new one)."""
        entry = self._clients.pop(asyncio.get_running_loop(), None)
        if entry is not None:
            await entry.closer.aclose()

    async def __aenter__(self) -> OpenAICompatibleLLM:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def request_body(self, request: LLMRequest) -> dict[str, Any]:
        """The keyword arguments of ``chat.completions.create`` for ``request`` (wire JSON + options)."""
        s = request.sampling
        body: dict[str, Any] = {
            "model": self.model,
            "messages": to_openai_messages(request.messages, self.image_format),
            self.max_tokens_field: s.max_tokens,
        }
        # a sampling field set to None is left to the server's default (SAM 3's own agent client sends none)
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.top_p is not None:
            body["top_p"] = s.top_p
        if s.seed is not None:
            body["seed"] = s.seed
        if request.tools:
            body["tools"] = request.tools
        if self.extra_body:
            body["extra_body"] = self.extra_body
        return body

    async def complete(self, request: LLMRequest) -> Completion:
        """Send one chat-completions request, retrying transient failures.

        At most ``max_retries + 1`` attempts in all: the openai client's retries of HTTP failures and
        this loop's retries of malformed 200 answers draw on the same budget.

        Raises:
            LLMBackendError: A client error (at once) or a transient one that outlived the retries.
        """
        import openai

        body = self.request_body(request)
        client = await self._client()
        attempts = 0
        while True:
            response, took = await self._send(client, body, attempts)
            attempts += took
            # The client hands back any 200 unchecked: a body that is not JSON fails only here, when
            # parsed; a non-JSON content type parses to a str; a completion without a usable choice
            # is caught by from_openai_response. The client never retries these, so this loop does.
            try:
                return from_openai_response(await _parse(response), attempts, self.model)
            except (*_MALFORMED, openai.APIResponseValidationError) as e:
                error, problem = e, f"malformed response: {_describe(e)}"
            if attempts > self.max_retries:
                raise LLMBackendError(self.endpoint, problem, attempts) from error
            delay = self._delay(attempts, error)
            logger.warning("LLM call to %s failed (%s); retry %d/%d in %.2fs", self.endpoint, problem, attempts,
                           self.max_retries, delay)
            await asyncio.sleep(delay)

    async def _send(self, client: openai.AsyncOpenAI, body: dict[str, Any], attempts: int) -> tuple[Any, int]:
        """One ``create`` call, the client retrying HTTP failures with the retries still left.

        Args:
            client: The running loop's client.
            body: The keyword arguments of ``chat.completions.create``.
            attempts: Attempts this completion already took.

        Returns:
            The raw (unparsed) response and the HTTP attempts this call took.

        Raises:
            LLMBackendError: The client gave up: an error it does not retry, or its retries are spent.
        """
        import openai

        budget = self.max_retries - attempts
        sender = client if budget == self.max_retries else client.with_options(max_retries=budget)
        try:
            async with self._limiter or nullcontext():
                response = await sender.chat.completions.with_raw_response.create(**body)
        except openai.APIStatusError as e:
            total = attempts + 1 + _retries_taken(e, budget)
            raise LLMBackendError(self.endpoint, await self._status_message(e), total) from e
        except openai.APIConnectionError as e:  # APITimeoutError included
            raise LLMBackendError(self.endpoint, _describe(e), attempts + 1 + _retries_taken(e, budget)) from e
        if response.retries_taken:
            logger.warning("LLM call to %s took %d attempts (the openai client retried transient failures)",
                           self.endpoint, response.retries_taken + 1)
        return response, 1 + response.retries_taken

    def _delay(self, attempt: int, error: BaseException) -> float:
        """Exponential backoff with jitter; a server's ``Retry-After`` wins when it is longer."""
        delay = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        delay *= 0.5 + 0.5 * self._rng.random()
        response = getattr(error, "response", None)
        if response is not None:
            with suppress(ValueError):
                delay = max(delay, min(self.backoff_max, float(response.headers.get("retry-after", ""))))
        return delay

    async def _status_message(self, error: openai.APIStatusError) -> str:
        """The server's message, plus the models it serves when it says the model was not found."""
        message = _describe(error)
        if error.status_code == 404:
            models = await self._served_models()
            if models is not None:
                message += f"; the server lists these models: {', '.join(models) or '(none)'}"
            else:
                message += "; check that base_url is the API root (for vLLM it ends with /v1)"
        return message

    async def _served_models(self) -> list[str] | None:
        """Model ids from ``GET /models``, or ``None`` when that fails (it is only a hint)."""
        import openai

        try:  # no retries: it is only a hint in an error message
            client = (await self._client()).with_options(max_retries=0)
            page = await client.models.list(timeout=min(self.timeout, 5.0))
        except openai.OpenAIError as e:
            logger.debug("could not list models at %s: %s", self.base_url, e)
            return None
        return [m.id for m in page.data]


class _LoopClient:
    """The client of one event loop and the async generator that closes it when the loop shuts down."""

    def __init__(self, client: openai.AsyncOpenAI, closer: AsyncGenerator[None, None]) -> None:
        self.client = client
        self.closer = closer


async def _close_at_shutdown(client: openai.AsyncOpenAI, base_url: str) -> AsyncGenerator[None, None]:
    """Yield once, then close ``client`` when finalized (by ``aclose`` or the loop's shutdown)."""
    try:
        yield
    finally:
        try:
            await client.close()
        except (OSError, RuntimeError) as e:  # best effort: the calls are done either way
            logger.debug("closing the HTTP client of %s failed: %s", base_url, e)


def _is_retryable_status(status: int) -> bool:
    return status in _RETRYABLE_STATUS or status >= 500


async def _parse(response: Any) -> Any:
    """The parsed body of a raw response (``parse`` may become a coroutine for async clients)."""
    parsed = response.parse()
    return await parsed if inspect.isawaitable(parsed) else parsed


def _retries_taken(error: Exception, budget: int) -> int:
    """How many times the openai client retried before it gave up with ``error``.

    The client stamps each request it sends with its retry count (``x-stainless-retry-count``) and the
    error carries the last request. Without that header: the client gives up on a failure it retries
    only once ``budget`` (the retries it was allowed) is spent, and on any other at its first sight
    (an approximation when a retried failure was followed by one it does not retry).
    """
    request = getattr(error, "request", None)
    with suppress(AttributeError, KeyError, TypeError, ValueError):
        return min(budget, int(request.headers["x-stainless-retry-count"]))
    status = getattr(error, "status_code", None)
    return budget if status is None or _is_retryable_status(status) else 0


def _describe(error: BaseException) -> str:
    """``ClassName: message`` with the status code when there is one."""
    status = getattr(error, "status_code", None)
    prefix = f"HTTP {status} " if status is not None else ""
    cause = error.__cause__
    detail = f" ({type(cause).__name__}: {cause})" if cause is not None and str(cause) else ""
    return f"{prefix}{type(error).__name__}: {error}{detail}"
