"""Golden requests: what the agent sends over HTTP, byte for byte, for fixed scripted runs.

Each case runs one scripted trajectory through ``OpenAICompatibleLLM`` against the scripted
OpenAI-compatible server, captures the raw bytes of every chat-completions body the server reads
off the socket, and compares them with ``tests/agent/golden/<case>.jsonl`` (one body per line).
Two trajectories (segment_phrase -> examine_each_mask -> select_masks_and_return; and an empty
phrase, a second phrase, a refused repeat -> report_no_mask) run under both protocols and both
presets (default and ``AgentConfig.paper()``), so prompts, feedback, context pruning, the memory
line, image encoding and the wire format are all pinned.

Normalisation, and nothing else: every base64 image in a body is replaced by the SHA-256 of its
decoded bytes (images stay byte-exact, the files stay small), and the verification requests
between two main-loop requests are sorted (they run concurrently, so their arrival order is not
deterministic). Everything else is the bytes the client sent.

Regenerate after an intended change, then review the diff of ``tests/agent/golden/``::

    SAM3AGENT_UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/agent/test_golden_requests.py

A change of Pillow or zlib that encodes the same picture differently also changes the image
hashes; regenerate in that case too.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import H, W, rect

import sam3agent.llm.server as server_module
from sam3agent import Agent, AgentConfig
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3core.fake import FakeEngine

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SAM3AGENT_UPDATE_GOLDEN", "").strip() in {"1", "true", "yes"}
QUERY = "the dog by the wall"
VERIFY_SYSTEM = "You review one candidate"

Turn = tuple[str, dict[str, Any]]
TRAJECTORIES: dict[str, Sequence[Turn]] = {
    "examine_select": [
        ("segment_phrase", {"text_prompt": "dog"}),
        ("examine_each_mask", {}),  # mask 2 is rejected, so the old mask 3 becomes mask 2
        ("select_masks_and_return", {"final_answer_masks": [2]}),
    ],
    "no_mask": [
        ("segment_phrase", {"text_prompt": "unicorn"}),  # nothing found
        ("segment_phrase", {"text_prompt": "cat"}),  # the memory line lists both phrases
        ("segment_phrase", {"text_prompt": "Cat"}),  # refused: already used
        ("report_no_mask", {}),
    ],
}
PRESETS = {"default": AgentConfig, "paper": AgentConfig.paper}
CASES = [(t, p, proto) for t in TRAJECTORIES for p in PRESETS for proto in ("text", "native")]


def golden_image() -> np.ndarray:
    """An 80x60 RGB picture of smooth gradients and flat shapes (compresses well, renders the same)."""
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([(x * 3) % 256, (y * 4) % 256, ((x + y) * 2) % 256], axis=-1).astype(np.uint8)
    img[10:30, 15:35] = (200, 40, 40)
    img[35:55, 50:75] = (30, 160, 60)
    return img


def golden_engine() -> FakeEngine:
    """'dog' -> three masks (0.9, 0.85, 0.8), 'cat' -> one, anything else -> nothing."""
    l_shape = rect(30, 55, 40, 48) | rect(47, 55, 40, 75)
    masks = [rect(5, 20, 5, 30), l_shape, rect(25, 40, 5, 20)]
    return FakeEngine({"dog": masks, "cat": [masks[2]]})


class RecordingHandler(server_module._Handler):
    """The scripted server's handler, keeping the raw bytes of every POST body it reads."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        owner = self.server.owner
        with owner._lock:
            owner.raw_bodies.append(raw)  # type: ignore[attr-defined]
        socket_file, self.rfile = self.rfile, io.BytesIO(raw)
        try:
            super().do_POST()
        finally:
            self.rfile = socket_file


def policy(turns: Sequence[Turn], protocol: str):  # type: ignore[no-untyped-def]
    """Scripted replies: the trajectory's calls in order; verification rejects mask 2 only."""
    queue: Iterator[Turn] = iter(turns)
    count = 0

    def reply(body: dict[str, Any]) -> str | dict[str, Any]:
        nonlocal count
        if body["messages"][0]["content"].startswith(VERIFY_SYSTEM):
            text = json.dumps(body["messages"][-1]["content"])
            verdict = "Reject" if "Candidate: mask 2." in text else "Accept"
            return f"The mask covers one object.\n<verdict>{verdict}</verdict>"
        name, params = next(queue)
        count += 1
        if protocol == "native":
            return {"content": f"Step {count}: calling {name}.",
                    "tool_calls": [{"id": f"call_{count}", "name": name, "arguments": params}]}
        return f"Step {count}: calling {name}.\n<tool>{json.dumps({'name': name, 'parameters': params})}</tool>"

    return reply


_DATA_URL = re.compile(rb"data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)")


def normalise(raw: bytes) -> bytes:
    """``raw`` with each base64 image replaced by the SHA-256 of its decoded bytes (nothing else changes)."""
    import base64

    def digest(match: re.Match[bytes]) -> bytes:
        data = base64.b64decode(match.group(2), validate=True)
        return b"data:" + match.group(1) + b";sha256," + hashlib.sha256(data).hexdigest().encode()

    return _DATA_URL.sub(digest, raw)


def order_verifications(bodies: Sequence[bytes]) -> list[bytes]:
    """Sort each run of verification requests (sent concurrently) between main-loop requests."""
    out: list[bytes] = []
    batch: list[bytes] = []
    for body in bodies:
        if json.loads(body)["messages"][0]["content"].startswith(VERIFY_SYSTEM):
            batch.append(body)
            continue
        out.extend(sorted(batch))
        batch = []
        out.append(body)
    return [*out, *sorted(batch)]


def run_case(trajectory: str, preset: str, protocol: str, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Run one scripted case over real HTTP; the normalised raw request bodies, in order."""
    monkeypatch.setattr(server_module, "_Handler", RecordingHandler)
    config = PRESETS[preset](protocol=protocol)
    server = ScriptedOpenAIServer(policy(TRAJECTORIES[trajectory], protocol))
    server.raw_bodies = []  # type: ignore[attr-defined]
    with server:
        llm = OpenAICompatibleLLM(server.base_url, "scripted", timeout=30, max_retries=0)
        result = Agent(llm, golden_engine(), config).run(golden_image(), QUERY)
    assert result.status == ("answered" if trajectory == "examine_select" else "no_mask"), result.reason
    raw: list[bytes] = server.raw_bodies  # type: ignore[attr-defined]
    assert len(raw) == len(server.requests)
    for body, parsed in zip(raw, server.requests, strict=True):
        assert json.loads(body) == parsed  # the recorded bytes are what the server answered
        assert b"\n" not in body  # one body per golden line
    return order_verifications([normalise(b) for b in raw])


def golden_path(trajectory: str, preset: str, protocol: str) -> Path:
    """``tests/agent/golden/<trajectory>-<preset>-<protocol>.jsonl``."""
    return GOLDEN / f"{trajectory}-{preset}-{protocol}.jsonl"


def first_difference(expected: bytes, got: bytes) -> str:
    """Where two bodies first differ, with some context of each."""
    at = next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b), min(len(expected), len(got)))
    lo = max(0, at - 80)
    return (f"first difference at byte {at}:\n  golden: {expected[lo:at + 80]!r}\n"
            f"  now:    {got[lo:at + 80]!r}")


@pytest.mark.parametrize(("trajectory", "preset", "protocol"), CASES)
def test_requests_match_golden(trajectory: str, preset: str, protocol: str,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    bodies = run_case(trajectory, preset, protocol, monkeypatch)
    path = golden_path(trajectory, preset, protocol)
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(b"".join(b + b"\n" for b in bodies))
        return
    assert path.is_file(), f"no golden file {path}; generate it with SAM3AGENT_UPDATE_GOLDEN=1"
    expected = path.read_bytes().split(b"\n")[:-1]
    assert len(bodies) == len(expected), f"{len(bodies)} requests sent, the golden run sent {len(expected)}"
    for i, (want, got) in enumerate(zip(expected, bodies, strict=True)):
        want, got = canonical(want), canonical(got)
        assert got == want, f"request {i + 1} of {path.name} changed; {first_difference(want, got)}"


def canonical(body: bytes) -> bytes:
    """``body`` re-serialised compactly with sorted keys, non-ASCII unescaped.

    The openai client's own JSON encoding differs between its releases (the top-level key order: 1.60
    writes ``messages`` first, 3.x ``model``), and CI runs this test on the oldest release we allow too;
    every key and every value (list order included) still has to match.
    """
    return json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def test_wire_bytes_are_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two identical runs send identical bytes (so a golden comparison can only fail on a real change)."""
    first = run_case("examine_select", "default", "native", monkeypatch)
    second = run_case("examine_select", "default", "native", monkeypatch)
    assert first == second


def test_normalisation_keeps_every_other_byte() -> None:
    import base64

    png = base64.b64encode(b"\x89PNG fake bytes").decode()
    raw = ('{"a":"x","url":"data:image/png;base64,' + png + '","b":"\\u00e9é"}').encode()
    out = normalise(raw)
    digest = hashlib.sha256(b"\x89PNG fake bytes").hexdigest()
    assert out == ('{"a":"x","url":"data:image/png;sha256,' + digest + '","b":"\\u00e9é"}').encode()
    # a changed image changes the normalised body
    other = raw.replace(png.encode(), base64.b64encode(b"\x89PNG fake byteZ"))
    assert normalise(other) != out
