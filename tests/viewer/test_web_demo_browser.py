"""The live demo page in a real headless Chromium.

Against the real ``create_app`` (tiny random SAM 3 + the scripted OpenAI-compatible server): the
image is picked through the file input, the query typed, Segment pressed; every event of the run
must show up (a block per model call, the numbered picture, the verdicts, the failure fed back, the
answer and overlay) and the download links must carry the union mask PNG and the masks' RLE JSON.
With an API key the page asks for it on the 401 and runs once it is entered. A fake stream checks
the hand-written Server-Sent-Events reader on awkward chunking (CRLF, comments, split UTF-8).

``SAM3AGENT_WEB_DEMO_SCREENSHOT=docs/images/web-demo.png`` also saves the finished run's screenshot
there (the docs picture), with a banner saying the weights are random.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageStat
from viewer_helpers import tool

from sam3agent import Agent, AgentConfig
from sam3agent.app.selftest import synthetic_image
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer

pytest.importorskip("uvicorn")  # the serve extra

QUERY = "the red cup <b>on the table</b>"
KEY = "web-demo-key-0123456789"
PLAN = [
    "Let me look <img src=x onerror=alert(1)> first & think.",  # no tool call: a failure, fed back
    tool("segment_phrase", "The cup is red; segment it.", text_prompt="red cup"),
    tool("examine_each_mask", "Three candidates; check each."),
    tool("select_masks_and_return", "Mask 1 is the cup.", final_answer_masks=[1]),
]
BANNER = ("Random weights: a tiny randomly initialised SAM 3 and a scripted model (tests/viewer/"
          "test_web_demo_browser.py). The masks are meaningless; this shows the page, not accuracy.")
BANNER_JS = """
const note = document.createElement('div');
note.textContent = arguments[0];
note.className = 'notice key';
document.querySelector('main').insertBefore(note, document.querySelector('header'));
window.scrollTo(0, 0);
"""


class Serving:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (an ephemeral port) from a background thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-web-demo", daemon=True)
        self.url = ""

    def __enter__(self) -> Serving:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.server.servers[0].sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Script:
    """The scripted model, restarted at each run's first call (verification: reject mask 2)."""

    def __init__(self) -> None:
        self.plan = iter(PLAN)

    def __call__(self, body: dict[str, Any]) -> str:
        last = body["messages"][-1]["content"]
        text = last if isinstance(last, str) else " ".join(p.get("text", "") for p in last)
        if "Candidate: mask" in text:
            if "Candidate: mask 2." in text:
                return "That is the saucer, not the cup.\n<verdict>Reject</verdict>"
            return "Yes, the cup.\n<verdict>Accept</verdict>"
        if not any(m["role"] == "assistant" for m in body["messages"]):
            self.plan = iter(PLAN)
        return next(self.plan)


@pytest.fixture(scope="module")
def model_server() -> Iterator[ScriptedOpenAIServer]:
    """The scripted OpenAI-compatible server."""
    with ScriptedOpenAIServer(Script()) as server:
        yield server


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    """The drawn table scene (320 x 240) as a PNG file to pick."""
    path = tmp_path / "table.png"
    synthetic_image().save(path)
    return path


def _demo(model_server: ScriptedOpenAIServer, engine: Any, api_key: str | None = None) -> Serving:
    from sam3agent.app.serve import ServeLimits, create_app

    llm = OpenAICompatibleLLM(model_server.base_url, "scripted", timeout=30, max_retries=0)
    # Exactly three masks whatever the random weights give (as in conftest.run_result)
    agent = Agent(llm, engine, AgentConfig(score_threshold=0.0, max_masks=3, overlap_iom=1.0))
    return Serving(create_app(agent, ServeLimits(), api_key=api_key))


def _submit(browser: Any, url: str, image: Path, query: str = QUERY) -> None:
    browser.get(url + "/")
    assert browser.title == "sam3agent live demo"
    browser.find_element("id", "image-input").send_keys(str(image))
    browser.find_element("id", "query").send_keys(query)
    browser.find_element("id", "run").click()


def _settled(browser: Any, timeout: float = 120) -> dict[str, Any]:
    """Wait until the run ends (a result, or a notice); the page's state."""
    from selenium.webdriver.support.ui import WebDriverWait

    done = ("return !document.getElementById('run').disabled && "
            "(!document.getElementById('download-json').hidden || !document.getElementById('notice').hidden)")
    WebDriverWait(browser, timeout, poll_frequency=0.1).until(lambda d: d.execute_script(done))
    return browser.execute_script(STATE_JS)


STATE_JS = """
const all = (s) => Array.from(document.querySelectorAll(s));
const img = (i) => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth, src: i.src.slice(0, 22)});
return {
  notice: document.getElementById('notice').hidden ? null : document.getElementById('notice').innerText,
  keyWanted: document.getElementById('api-key').classList.contains('wanted'),
  turns: all('#timeline section.turn[data-turn]').map((s) => s.dataset.turn),
  calls: all('#timeline article.call').map((c) => ({
    turn: c.closest('section').dataset.turn, purpose: c.dataset.purpose, mask: c.dataset.mask || null,
    verdict: c.dataset.verdict || null, reply: (c.querySelector('pre.reply') || {}).textContent || null,
    waiting: c.classList.contains('waiting')})),
  tools: all('#timeline .tool code').map((c) => c.textContent),
  phrases: all('#timeline .phrase').map((p) => p.textContent),
  found: all('#timeline .found > div:first-child').map((f) => f.closest('section').dataset.turn + ': ' + f.textContent),
  chips: all('#timeline .chip').length,
  failures: all('#timeline .failure').map((f) => [f.closest('section').dataset.turn, f.textContent]),
  marks: all('#timeline .marks img').map(img),
  timelineImages: all('#timeline img').length, bold: all('#timeline b, #answer b').length,
  header: (document.querySelector('#timeline h3.run') || {}).textContent || null,
  status: document.getElementById('answer-status').textContent,
  answer: document.getElementById('answer-text').textContent,
  overlay: img(document.getElementById('overlay')),
  overlayShown: !document.getElementById('overlay').hidden,
  rows: all('#masks tbody tr').map((r) => Array.from(r.cells).map((c) => c.textContent)),
  png: document.getElementById('download-png').hidden ? null : document.getElementById('download-png').href,
  json: document.getElementById('download-json').hidden ? null : document.getElementById('download-json').href,
  resources: performance.getEntriesByType('resource').map((e) => e.name),
  stored: sessionStorage.getItem('sam3agent.apiKey'),
};
"""


def _png(href: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert href.startswith(prefix)
    with Image.open(io.BytesIO(base64.b64decode(href[len(prefix):]))) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("L")) > 0


def _json(href: str) -> dict[str, Any]:
    prefix = "data:application/json;charset=utf-8,"
    assert href.startswith(prefix)
    return json.loads(urllib.parse.unquote(href[len(prefix):]))


def _check_downloads(state: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """The PNG is the union of the JSON's RLE masks, both at the image's size."""
    from sam3agent.detections import detections_from_list

    union = _png(state["png"])
    masks = _json(state["json"])
    assert masks["image"] == {"width": size[0], "height": size[1]} and masks["count"] == len(masks["masks"])
    assert union.shape == (size[1], size[0])
    for i, record in enumerate(masks["masks"], start=1):
        assert record["id"] == i and record["rle"]["size"] == [size[1], size[0]] and record["rle"]["counts"]
    decoded = detections_from_list(masks["masks"], size[1], size[0]).mask
    assert decoded is not None and decoded.any() and np.array_equal(decoded.any(axis=0), union)
    return masks


def _check_offline(state: dict[str, Any], url: str) -> None:
    outside = [name for name in state["resources"] if not name.startswith(url + "/")]
    assert not outside, f"the page requested outside resources: {outside}"
    assert any(name.endswith("/static/demo.js") for name in state["resources"])
    assert any(name.endswith("/v1/segment/stream") for name in state["resources"])


def _check_screenshot(browser: Any, tmp_path: Path) -> None:
    """A screenshot of the whole page (the window made as tall as the page, then put back)."""
    browser.execute_script(BANNER_JS, BANNER)
    size = browser.get_window_size()
    height = browser.execute_script("return document.documentElement.scrollHeight")
    shot = tmp_path / "web-demo.png"
    try:
        browser.set_window_size(size["width"], min(max(height + 160, size["height"]), 4000))
        assert browser.save_screenshot(str(shot))
    finally:
        browser.set_window_size(size["width"], size["height"])
    with Image.open(shot) as image:
        assert image.width >= 1000 and image.height >= 700
        assert ImageStat.Stat(image.convert("L")).stddev[0] > 10
        small = image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    target = os.environ.get("SAM3AGENT_WEB_DEMO_SCREENSHOT")
    if target:
        small.save(target, optimize=True)
        assert Path(target).stat().st_size < 300 * 1024, "the docs screenshot must stay under 300 KB"


def test_a_run_renders_every_event(browser: Any, model_server: ScriptedOpenAIServer, tiny_engine: Any,
                                   image_file: Path, tmp_path: Path) -> None:
    before = len(model_server.requests)
    with _demo(model_server, tiny_engine) as server:
        _submit(browser, server.url, image_file)
        state = _settled(browser)
    assert state["notice"] is None, state["notice"]
    seen = len(model_server.requests) - before
    assert len(state["calls"]) == seen == 7  # 4 plan turns + 3 verifications, each its own block
    plan = [c for c in state["calls"] if c["purpose"] == "plan"]
    assert [c["turn"] for c in plan] == ["1", "2", "3", "4"] and state["turns"] == ["1", "2", "3", "4"]
    assert [c["reply"] for c in plan] == PLAN  # as text: the <img> in reply 1 is not an element
    assert not any(c["waiting"] for c in state["calls"])
    verdicts = {c["mask"]: c["verdict"] for c in state["calls"] if c["purpose"] == "verify"}
    assert verdicts == {"1": "accept", "2": "reject", "3": "accept"}
    assert {c["turn"] for c in state["calls"] if c["purpose"] == "verify"} == {"3"}
    assert [t.split("(")[0] for t in state["tools"]] == ["segment_phrase", "examine_each_mask",
                                                          "select_masks_and_return"]
    assert state["tools"][0] == 'segment_phrase(text_prompt="red cup")'
    # two pictures: SAM 3's 3 masks of turn 2, and the 2 left once examine_each_mask removed mask 2
    assert state["phrases"] == ["red cup"] and state["found"] == ["2: SAM 3 found 3 masks for red cup",
                                                                  "3: 2 masks left after examine_each_mask"]
    assert state["chips"] == 5 and state["timelineImages"] == len(state["marks"]) == 2
    assert all(m["ok"] and m["src"].startswith("data:image/") for m in state["marks"])
    assert len(state["failures"]) == 1 and state["failures"][0][0] == "1"
    assert state["bold"] == 0  # model and user text never became HTML (the <img> of reply 1 included)
    assert state["header"] == f"Query: {QUERY}"
    assert state["status"] == "answered" and "1 mask" in state["answer"]
    assert state["overlayShown"] and state["overlay"]["ok"] and state["overlay"]["width"] == 320
    masks = _check_downloads(state, (320, 240))
    assert len(masks["masks"]) == len(state["rows"]) == 1 and masks["status"] == "answered"
    assert state["rows"][0][:2] == ["1", "red cup"]
    assert state["rows"][0][4] == str(int(_png(state["png"]).sum()))  # the area, decoded from the RLE by the page
    _check_offline(state, server.url)
    _check_screenshot(browser, tmp_path)


def test_the_page_asks_for_the_key(browser: Any, model_server: ScriptedOpenAIServer, tiny_engine: Any,
                                   image_file: Path) -> None:
    browser.get("about:blank")
    with _demo(model_server, tiny_engine, api_key=KEY) as server:
        _submit(browser, server.url, image_file)
        browser.execute_script("sessionStorage.clear()")
        state = _settled(browser)
        assert "needs an API key" in state["notice"] and state["keyWanted"] and state["calls"] == []
        key = browser.find_element("id", "api-key")
        key.send_keys("not-the-key")
        browser.find_element("id", "run").click()
        state = _settled(browser)
        assert "refused this API key" in state["notice"] and state["calls"] == []
        key.clear()
        key.send_keys(KEY)
        browser.find_element("id", "run").click()
        state = _settled(browser)
    assert state["notice"] is None, state["notice"]
    assert state["status"] == "answered" and len(state["calls"]) == 7 and state["stored"] == KEY
    _check_downloads(state, (320, 240))


def test_the_stream_reader_copes_with_awkward_chunks(browser: Any, image_file: Path) -> None:
    """CRLF and CR line ends, comments, multi-line data, a CRLF and UTF-8 split across small chunks."""
    with Serving(_fake_stream_app()) as server:
        _submit(browser, server.url, image_file, query="crème brûlée 🍮")
        state = _settled(browser, timeout=30)
        assert state["notice"] is None, state["notice"]
        assert state["header"] == "Query: crème brûlée 🍮" and state["phrases"] == ["crème brûlée 🍮"]
        assert [(c["purpose"], c["mask"], c["verdict"]) for c in state["calls"]] == [
            ("plan", None, None), ("verify", "1", "unclear"), ("plan", None, None), ("plan", None, None)]
        assert state["calls"][0]["reply"] == "line one\nline two 🍮"
        assert state["tools"] == ['segment_phrase(text_prompt="crème brûlée 🍮")']  # the multi-line event
        assert state["failures"] == [["2", "Fed back to the model (bad_mask_id): mask 9 does not exist"]]
        assert state["status"] == "answered" and state["answer"] == "Here it is. (1 mask)"
        _check_downloads(state, (320, 240))  # the size of the uploaded file, as the fake read it
        browser.find_element("id", "query").clear()
        browser.find_element("id", "query").send_keys("boom")
        browser.find_element("id", "run").click()
        state = _settled(browser, timeout=30)
    assert state["notice"] == "The run failed (llm_error): the model server is down"
    assert state["calls"] == [] and state["png"] is None and state["json"] is None


def _b64_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _fake_events(query: str, image: Image.Image) -> list[dict[str, Any]]:
    """The stream contract's events for a 3-turn run (one unclear verdict, one failure fed back)."""
    from pycocotools import mask as coco

    width, height = image.size
    mask = np.zeros((height, width), np.uint8)
    mask[height // 4: height // 2, width // 4: width // 2] = 1
    rle = coco.encode(np.asfortranarray(mask))
    box = [width / 4, height / 4, width / 2 - 1, height / 2 - 1]
    found = [{"id": 1, "score": 0.5, "box_xyxy": box}]
    marks = f"data:image/png;base64,{_b64_png(image.resize((32, 24)))}"
    events: list[dict[str, Any]] = [
        {"type": "run_started", "query": query, "image": {"width": width, "height": height}},
        {"type": "model_call_started", "turn": 1, "purpose": "plan", "mask_id": None},
        {"type": "model_call_finished", "turn": 1, "purpose": "plan", "mask_id": None, "seconds": 0.25,
         "reply": "line one\nline two 🍮"},
        {"type": "tool_call", "turn": 1, "name": "segment_phrase", "arguments": {"text_prompt": query}},
        {"type": "masks_found", "turn": 1, "tool": "segment_phrase", "phrase": query, "masks": found, "image": marks},
        {"type": "model_call_started", "turn": 1, "purpose": "verify", "mask_id": 1},
        {"type": "model_call_finished", "turn": 1, "purpose": "verify", "mask_id": 1, "seconds": 0.5, "reply": "hm"},
        {"type": "verification", "turn": 1, "mask_id": 1, "verdict": "unclear"},
        {"type": "model_call_started", "turn": 2, "purpose": "plan", "mask_id": None},
        {"type": "model_call_finished", "turn": 2, "purpose": "plan", "mask_id": None, "seconds": 0.1, "reply": "9"},
        {"type": "failure", "turn": 2, "kind": "bad_mask_id", "message": "mask 9 does not exist"},
        {"type": "model_call_started", "turn": 3, "purpose": "plan", "mask_id": None},
        {"type": "model_call_finished", "turn": 3, "purpose": "plan", "mask_id": None, "seconds": 0.1, "reply": "1"},
        {"type": "answer", "status": "answered", "final_text": "Here it is.", "count": 1},
        {"type": "result", "status": "answered", "query": query, "count": 1, "reason": "selected mask 1",
         "image": {"width": width, "height": height},
         "masks": [{"id": 1, "phrase": query, "score": 0.5, "box_xyxy": box, "area": int(mask.sum()),
                    "rle": {"size": [height, width], "counts": rle["counts"].decode("ascii")}}],
         "overlay_png": _b64_png(image), "mask_png": _b64_png(Image.fromarray(mask * 255))},
    ]
    if query == "boom":
        events[1:] = [{"type": "error", "error": {"type": "llm_error", "message": "the model server is down"}}]
    return [{**event, "seq": i, "t": 0.01 * i} for i, event in enumerate(events)]


def _awkward(events: list[dict[str, Any]]) -> bytes:
    """SSE text with \\r\\n, \\r and \\n line ends, comments, and one event's JSON over many data lines."""
    out = [": a comment first\n\n"]
    for i, event in enumerate(events):
        data = json.dumps(event, ensure_ascii=False, indent=1 if i == MULTILINE else None)
        end = ["\r\n", "\r", "\n"][i % 3]
        lines = [f"event: {event['type']}", *(f"data: {line}" for line in data.split("\n"))]
        out.append(end.join(lines) + end + end + (": keep-alive\n\n" if i % 4 == 0 else ""))
    return "".join(out).encode("utf-8")


MULTILINE = 3  # the tool_call event: its JSON spans several data lines ended by \r\n


def _chunks(body: bytes, *, awkward: bool = True) -> list[bytes]:
    """Small chunks cut inside a UTF-8 character and between the \\r and \\n of two data lines.

    A reader that took a chunk's last \\r for a whole line end would see a blank line there and
    split the multi-line event in two; the cuts are asserted, so the test means it.
    """
    if not awkward:
        return [body[i:i + 5] for i in range(0, len(body), 5)]
    crlf_in_data = [i + 1 for i in range(len(body)) if body.startswith(b"\r\ndata: ", i)
                    and body.rfind(b"\ndata: ", 0, i) > body.rfind(b"event: ", 0, i)]
    assert crlf_in_data, "no \\r\\n between two data lines"
    for size in range(5, 64):
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        split_utf8 = any(b and 0x80 <= b[0] < 0xC0 for b in chunks[1:])
        if split_utf8 and any(cut % size == 0 for cut in crlf_in_data):
            return chunks
    raise AssertionError("no chunk size splits both a data lines' CRLF and a UTF-8 character")


def _fake_stream_app() -> Any:
    """The demo's routes plus a fake ``POST /v1/segment/stream`` that follows the event contract."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    from sam3agent.app.serve.web_demo import demo_routes

    async def stream(request: Request) -> StreamingResponse:
        form = await request.form()
        upload = form["image"]
        assert not isinstance(upload, str) and form["overlay"] == "true"
        image = Image.open(io.BytesIO(await upload.read())).convert("RGB")
        query = str(form["query"])
        chunks = _chunks(_awkward(_fake_events(query, image)), awkward=query != "boom")

        async def body() -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk
                await asyncio.sleep(0.002 if len(chunk) < 64 else 0)

        return StreamingResponse(body(), media_type="text/event-stream")

    return Starlette(routes=[*demo_routes(), Route("/v1/segment/stream", stream, methods=["POST"])])
