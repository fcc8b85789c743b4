"""Record/replay of completions, keyed by the canonical request.

:class:`CachingLLM` wraps any backend. Each completion is stored as one JSON line (append-only) under
a key computed from the canonical request: the messages with images replaced by their sha256 digest
and mime type (labels, which the model never sees, are left out), the tool schemas, the sampling
settings, the request's purpose, the model name and a prompt-version string. The key is a sha256 of
canonical JSON (sorted keys, no whitespace), so it is the same in every process and Python version.

Repeated identical requests are kept apart by occurrence: the n-th time one key is asked for it is
answered by the n-th completion recorded under it, so sampled (temperature > 0) runs replay exactly.

Modes:
    ``"auto"``: replay what is recorded, call the inner backend (and record) on a miss.
    ``"replay"``: never call the inner backend; a miss raises :class:`CacheMissError`. Once the
    recorded occurrences of a key are used up, the last one is repeated.
    ``"record"``: always call the inner backend and append.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from sam3agent.llm.base import (
    LLM,
    Completion,
    LLMBackendError,
    LLMRequest,
    Message,
    TextPart,
    ToolCall,
    Usage,
)

logger = logging.getLogger(__name__)

#: Bump when the canonical form changes; old recordings then miss instead of answering wrongly.
KEY_VERSION = 1

CacheMode = Literal["auto", "replay", "record"]


class CacheMissError(LLMBackendError):
    """Replay mode found no recorded completion for a request."""


def canonical_message(message: Message) -> dict[str, Any]:
    """A JSON-ready form of ``message`` with each image replaced by its digest and mime type."""
    content: list[dict[str, Any]] = []
    for part in message.content:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        else:
            entry = {"type": "image", "sha256": part.digest, "mime": part.mime}
            if part.detail is not None:
                entry["detail"] = part.detail
            content.append(entry)
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in message.tool_calls]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    return out


def canonical_request(request: LLMRequest, *, model: str, prompt_version: str = "") -> dict[str, Any]:
    """The JSON-ready canonical form of a request, from which the cache key is computed."""
    return {
        "key_version": KEY_VERSION,
        "model": model,
        "prompt_version": prompt_version,
        "purpose": request.purpose,
        "sampling": request.sampling.model_dump(mode="json"),
        "tools": request.tools,
        "messages": [canonical_message(m) for m in request.messages],
    }


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, unicode kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def request_key(request: LLMRequest, *, model: str, prompt_version: str = "") -> str:
    """The sha256 hex key of a request (stable across processes and machines)."""
    canonical = canonical_json(canonical_request(request, model=model, prompt_version=prompt_version))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def completion_to_json(completion: Completion) -> dict[str, Any]:
    """A JSON-ready form of a completion."""
    return asdict(completion)


def completion_from_json(data: dict[str, Any]) -> Completion:
    """The inverse of :func:`completion_to_json`."""
    return Completion(
        text=data["text"],
        tool_calls=[ToolCall(**c) for c in data.get("tool_calls", [])],
        usage=Usage(**data.get("usage", {})),
        attempts=data.get("attempts", 1),
        model=data.get("model", ""),
        finish_reason=data.get("finish_reason"),
    )


def _describe(request: LLMRequest) -> str:
    last = request.messages[-1] if request.messages else None
    text = (last.plain_text if last else "")[:80]
    images = ", ".join(img.summary() for img in request.images)
    return f"{len(request.messages)} messages ({request.purpose}), images [{images}], last text {text!r}"


class CachingLLM:
    """A backend wrapper that records completions to a JSONL file and replays them.

    Args:
        inner: The backend to call on a miss; may be ``None`` in ``"replay"`` mode.
        path: The JSONL file (created on the first recording; parent folders too).
        mode: ``"auto"``, ``"replay"`` or ``"record"`` (see the module docstring).
        prompt_version: Part of every key: bump it when the prompts change so old recordings miss.
        model: Model name used in keys; defaults to the inner backend's ``model`` attribute, else its
            ``name``. Name it explicitly to replay recordings made against another endpoint.
    """

    def __init__(
        self,
        inner: LLM | None,
        path: str | Path,
        *,
        mode: CacheMode = "auto",
        prompt_version: str = "",
        model: str | None = None,
    ) -> None:
        if mode not in ("auto", "replay", "record"):
            raise ValueError(f"mode must be 'auto', 'replay' or 'record', got {mode!r}")
        if inner is None and mode != "replay":
            raise ValueError(f"mode {mode!r} needs an inner backend to call")
        if model is None:
            if inner is None:
                raise ValueError("without an inner backend, pass model= (the model name the recording used)")
            model = str(getattr(inner, "model", None) or inner.name)
        self.inner = inner
        self.path = Path(path)
        self.mode: CacheMode = mode
        self.prompt_version = prompt_version
        self.model = model
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._records: dict[str, list[Completion]] = defaultdict(list)
        self._seen: dict[str, int] = defaultdict(int)
        self._needs_newline = False
        self._torn_at: int | None = None
        self._load()

    @property
    def name(self) -> str:
        """``cached(<inner name>)``."""
        return f"cached({self.inner.name if self.inner is not None else self.model})"

    def __len__(self) -> int:
        return sum(len(v) for v in self._records.values())

    def key(self, request: LLMRequest) -> str:
        """The cache key of ``request`` under this wrapper's model and prompt version."""
        return request_key(request, model=self.model, prompt_version=self.prompt_version)

    def _load(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        self._needs_newline = bool(raw) and not raw.endswith(b"\n")
        offset = 0
        for number, line in enumerate(lines, start=1):
            start, offset = offset, offset + len(line) + 1
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                self._records[record["key"]].append(completion_from_json(record["completion"]))
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
                if number == len(lines):
                    logger.warning("ignoring a torn last line in %s (an interrupted write)", self.path)
                    self._torn_at = start
                    continue
                raise ValueError(f"{self.path}:{number}: corrupt cache record: {e}") from e
        logger.debug("loaded %d recorded completions from %s", len(self), self.path)

    def _append(self, key: str, request: LLMRequest, completion: Completion) -> None:
        record = {
            "key": key,
            "key_version": KEY_VERSION,
            "model": self.model,
            "prompt_version": self.prompt_version,
            "purpose": request.purpose,
            "completion": completion_to_json(completion),
        }
        line = canonical_json(record) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._torn_at is not None:  # drop the fragment before writing after it
                with self.path.open("r+b") as f:
                    f.truncate(self._torn_at)
                self._torn_at = None
                self._needs_newline = False
            with self.path.open("a", encoding="utf-8") as f:
                if self._needs_newline:
                    f.write("\n")
                    self._needs_newline = False
                f.write(line)
            self._records[key].append(completion)

    def _lookup(self, key: str) -> Completion | None:
        """The completion for the next occurrence of ``key``, counting the occurrence."""
        with self._lock:
            occurrence = self._seen[key]
            self._seen[key] += 1
            recorded = self._records.get(key) or []
            if occurrence < len(recorded):
                return recorded[occurrence]
            if self.mode == "replay" and recorded:
                return recorded[-1]
            return None

    async def complete(self, request: LLMRequest) -> Completion:
        """Answer from the recording, or from the inner backend (recording the answer).

        Raises:
            CacheMissError: ``"replay"`` mode and nothing recorded for this request.
            LLMBackendError: The inner backend failed.
        """
        key = self.key(request)
        if self.mode != "record":
            found = self._lookup(key)
            if found is not None:
                self.hits += 1
                return found
        self.misses += 1
        if self.mode == "replay" or self.inner is None:
            raise CacheMissError(
                f"cache {self.path}",
                f"no recorded completion for key {key[:16]} (model {self.model!r}, prompt version "
                f"{self.prompt_version!r}; {_describe(request)}); the request differs from the recorded "
                "run: record it again with mode='auto' and a live backend",
            )
        completion = await self.inner.complete(request)
        self._append(key, request, completion)
        return completion
