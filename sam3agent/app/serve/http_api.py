"""The agent as an HTTP API (Starlette, served by uvicorn; both come with the ``serve`` extra).

Endpoints:

- ``POST /v1/segment``: a ``multipart/form-data`` body (``image`` file, ``query``, optional
  ``overlay``) or a JSON body ``{"image": base64 or data URL, "query": ..., "overlay": bool}``; with an
  allowed root configured, ``image_path`` may name a file inside it instead. Answers
  ``AgentResult.to_dict()`` (steps only with ``?steps=1``) plus ``overlay_png`` (base64 PNG) when
  ``overlay`` is true (also ``?overlay=1``).
- ``POST /v1/segment/stream``: the same body, query flags, key and limits; answers
  ``text/event-stream``: one Server-Sent Event per agent event, then ``event: result`` (the JSON
  ``/v1/segment`` answers, plus ``mask_png``) or ``event: error`` (see :mod:`sam3agent.app.serve.sse`).
  What ``/v1/segment`` refuses before the run (body, query, image, pixel count, the time loading
  takes) is refused with the same status and JSON before the stream starts.
- ``GET /healthz``: liveness (open even when an API key is set).
- ``GET /v1/info``: versions, the LLM, the SAM 3 source, the agent config, the limits.

Both bodies are validated by one pydantic model (:class:`~sam3agent.app.serve.request_body.SegmentRequest`;
unknown JSON fields are refused). With an API key (:mod:`sam3agent.app.serve.auth`), every other request
must carry it. Every error is JSON ``{"error": {"type", "message"}}``: 400 bad JSON (also nested deeper
than :data:`~sam3agent.app.serve.request_body.MAX_JSON_DEPTH`) / an unknown field or a wrong type /
missing query / both ``image`` and ``image_path``, 401 missing or wrong API key, 403 path refused, 404 no
such file or route, 408 body not received in time, 413 body, image or pixel count over the limits, 415
unsupported content type, 422 undecodable image, 502 LLM backend failure (the endpoint named), 504 request
timeout.
All requests share one agent (and so one engine, whose worker batches concurrent SAM 3 calls).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Message

from sam3agent.app.serve.auth import ApiKeyMiddleware, check_api_key
from sam3agent.app.serve.common import (
    Deadline,
    OnEvent,
    ServeError,
    ServeLimits,
    bad_request,
    check_query,
    decode_image,
    load_and_run,
    load_image,
    load_within,
    read_image_file,
    run_within,
    segment_answer,
    server_versions,
)
from sam3agent.app.serve.request_body import (
    NO_IMAGE,
    SegmentRequest,
    parse_flag,
    parse_form_fields,
    parse_json_body,
)
from sam3agent.app.serve.sse import event_stream_response
from sam3core.image import ImageHandle

if TYPE_CHECKING:
    from sam3agent.agent import Agent
    from sam3agent.result import AgentResult

logger = logging.getLogger(__name__)

_FORM_OVERHEAD = 64 * 1024  # multipart boundaries, headers and small fields on top of the image


def create_app(agent: Agent, limits: ServeLimits, *, info: Mapping[str, Any] | None = None,
               api_key: str | None = None) -> Starlette:
    """The Starlette app of the HTTP API.

    Args:
        agent: The agent all requests share.
        limits: Upload, pixel, time and file-path limits.
        info: Extra JSON-safe facts for ``GET /v1/info`` (e.g. ``{"llm": {...}, "sam3": "facebook/sam3"}``).
        api_key: The key every request but ``GET /healthz`` must send (``Authorization: Bearer KEY`` or
            ``X-API-Key: KEY``); ``None``: no key (loopback only, see :mod:`sam3agent.app.serve.auth`).

    Returns:
        The ASGI app; serve it with uvicorn (``sam3agent serve http`` does).

    Raises:
        ValueError: If ``api_key`` is empty or not printable ASCII.
    """
    if api_key is not None:
        check_api_key(api_key)
    api = _Api(agent, limits, {**(info or {}), "auth": "api_key" if api_key is not None else "none"})
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/v1/info", api.info, methods=["GET"]),
        Route("/v1/segment", api.segment, methods=["POST"]),
        Route("/v1/segment/stream", api.segment_stream, methods=["POST"]),
    ]
    from sam3agent.app.serve.web_demo import OPEN_PATHS, demo_routes  # the live demo page at / (web_demo.py)

    routes += demo_routes()  # the page and its files are served without a key, like /healthz
    handlers: dict[Any, Callable[..., Any]] = {HTTPException: _http_error, Exception: _internal_error}
    open_paths = {"/healthz", *OPEN_PATHS}
    middleware = [] if api_key is None else [Middleware(ApiKeyMiddleware, api_key=api_key, open_paths=open_paths)]
    return Starlette(routes=routes, exception_handlers=handlers, middleware=middleware)


def error_response(error: ServeError) -> JSONResponse:
    """The JSON response of a :class:`ServeError`."""
    return JSONResponse(error.to_dict(), status_code=error.status)


def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    kinds = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
    message = f"{detail}: {request.method} {request.url.path}" if status in (404, 405) else str(detail)
    return error_response(ServeError(status, kinds.get(status, "bad_request"), message))


def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ServeError(500, "internal_error", f"internal error ({type(exc).__name__}); "
                                                            "see the server log"))


class _Api:
    """The endpoints, bound to one agent and one set of limits."""

    def __init__(self, agent: Agent, limits: ServeLimits, info: dict[str, Any]) -> None:
        self.agent = agent
        self.limits = limits
        self.extra_info = info
        # A JSON body carries the image as base64 (4/3 of its size); a form adds boundaries and fields.
        self.max_body = (limits.max_upload_bytes * 4) // 3 + _FORM_OVERHEAD

    async def healthz(self, request: Request) -> JSONResponse:
        """``GET /healthz``: ``{"status": "ok"}``."""
        return JSONResponse({"status": "ok"})

    async def info(self, request: Request) -> JSONResponse:
        """``GET /v1/info``: versions, LLM, SAM 3 source, agent config, limits and engine counters."""
        engine = self.agent.engine
        engine_info: dict[str, Any] = {"type": type(engine).__name__, "name": str(getattr(engine, "name", ""))}
        for attr in ("device", "dtype"):
            if hasattr(engine, attr):
                engine_info[attr] = str(getattr(engine, attr))
        stats = getattr(engine, "stats", None)
        if dataclasses.is_dataclass(stats) and not isinstance(stats, type):
            engine_info["stats"] = dataclasses.asdict(stats)
        payload = {
            "service": "sam3agent",
            "versions": server_versions(),
            "llm": {"name": self.agent.llm.name},
            "engine": engine_info,
            "config": self.agent.config.model_dump(mode="json"),
            "limits": self.limits.describe(),
        }
        for key, value in self.extra_info.items():
            current = payload.get(key)
            payload[key] = {**current, **value} if isinstance(current, dict) and isinstance(value, dict) else value
        return JSONResponse(payload)

    async def segment(self, request: Request) -> JSONResponse:
        """``POST /v1/segment``: run the agent on one image (see the module docs)."""
        try:
            loader, fields = await self._parse(request)
            steps, overlay = _answer_flags(request, fields)
            result = await load_and_run(self.agent, loader, fields.query, self.limits.request_timeout_s,
                                        timeout_option=self.limits.option("request_timeout"))
        except ServeError as e:
            logger.info("POST /v1/segment -> %d %s: %s", e.status, e.kind, e.message)
            return error_response(e)
        return JSONResponse(segment_answer(result, steps=steps, overlay=overlay))

    async def segment_stream(self, request: Request) -> Response:
        """``POST /v1/segment/stream``: the run as Server-Sent Events (see the module docs)."""
        try:
            loader, fields = await self._parse(request)
            steps, overlay = _answer_flags(request, fields)
            text = check_query(fields.query)
            deadline = Deadline.start(self.limits.request_timeout_s, self.limits.option("request_timeout"))
            handle = await load_within(loader, deadline)
        except ServeError as e:
            logger.info("POST /v1/segment/stream -> %d %s: %s", e.status, e.kind, e.message)
            return error_response(e)
        run = functools.partial(self._run_until, handle, text, deadline)
        return event_stream_response(run, functools.partial(segment_answer, steps=steps, overlay=overlay, mask=True))

    async def _run_until(self, handle: ImageHandle, text: str, deadline: Deadline, on_event: OnEvent) -> AgentResult:
        return await run_within(self.agent, handle, text, deadline, on_event=on_event)

    async def _parse(self, request: Request) -> tuple[Callable[[], ImageHandle], SegmentRequest]:
        """The image loader and the validated fields of a segment request."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/json", "multipart/form-data"):
            raise ServeError(415, "unsupported_media_type",
                             f"unsupported content type {kind or '(none)'!r}; send multipart/form-data (an image "
                             "file and a query field) or application/json ({\"image\": base64, \"query\": ...})")
        body = await self._read_body(request)
        if kind == "application/json":
            fields = parse_json_body(body)
            return self._loader(fields), fields
        return await self._parse_form(request, body)

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise self._body_too_large(int(declared))
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_body:
                    raise self._body_too_large(size)
                chunks.append(chunk)
        except ClientDisconnect as e:  # the client left, or the server cut it off (--body-timeout)
            raise ServeError(408, "request_timeout", "the connection closed before the request body arrived; "
                                                     "send the whole body at once") from e
        return b"".join(chunks)

    def _body_too_large(self, size: int) -> ServeError:
        return ServeError(413, "payload_too_large",
                          f"the request body is at least {size / 2**20:.2f} MB; this server accepts images up to "
                          f"{self.limits.max_upload_bytes / 2**20:.2f} MB ({self.limits.option('max_upload')})")

    async def _parse_form(self, request: Request, body: bytes) -> tuple[Callable[[], ImageHandle], SegmentRequest]:
        async def replay() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=1, max_fields=8, max_part_size=self.max_body)
        except HTTPException as e:
            raise bad_request(f"cannot parse the multipart form: {e.detail}") from e
        try:
            image = form.get("image")
            upload = image if isinstance(image, UploadFile) else None
            names = [n for n in SegmentRequest.model_fields if not (n == "image" and upload is not None)]
            fields = parse_form_fields(_texts(form, names), upload=upload is not None)
            if upload is None:
                return self._loader(fields), fields
            data = await upload.read()
        finally:
            await form.close()
        return functools.partial(decode_image, data, self.limits, upload.filename or "<upload>"), fields

    def _loader(self, fields: SegmentRequest) -> Callable[[], ImageHandle]:
        """Read ``image_path`` inside the allowed roots, or decode ``image`` (never read as a path)."""
        if fields.image_path is not None:
            return functools.partial(read_image_file, fields.image_path, self.limits)
        if fields.image is None:  # SegmentRequest refuses a body without an image; kept for the type checker
            raise bad_request(NO_IMAGE)
        return functools.partial(load_image, fields.image, self.limits, allow_paths=False)


def _answer_flags(request: Request, fields: SegmentRequest) -> tuple[bool, bool]:
    """``(steps, overlay)``: ``?steps=1``; the body's ``overlay`` or ``?overlay=1``."""
    steps = parse_flag(request.query_params.get("steps"), "steps")
    return steps, fields.overlay or parse_flag(request.query_params.get("overlay"), "overlay")


def _texts(form: FormData, names: Sequence[str]) -> dict[str, str]:
    """The form's text values of the fields ``names`` that it has (a file part there is a 400)."""
    texts = {}
    for name in names:
        value = form.get(name)
        if isinstance(value, UploadFile):
            raise bad_request(f"{name} must be a text field, not a file")
        if value is not None:
            texts[name] = value
    return texts
