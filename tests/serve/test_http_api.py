"""The HTTP API over real HTTP: uvicorn on 127.0.0.1 (ephemeral port) in a background thread."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from PIL import Image
from serve_helpers import PolicyLLM, ServerThread, error_message, expected_area, png

from sam3agent import Agent
from sam3agent.app.serve import ServeLimits, create_app
from sam3agent.llm.openai_compat import OpenAICompatibleLLM
from sam3agent.llm.server import ScriptedOpenAIServer
from sam3core.fake import FakeEngine


@contextmanager
def serving(agent: Agent, **limits: Any) -> Iterator[httpx2.Client]:
    """A client of the API served for ``agent`` with the given limits."""
    app = create_app(agent, ServeLimits(**limits), info={"sam3": {"source": "fake"}})
    with ServerThread(app) as server, httpx2.Client(base_url=server.url, timeout=30) as client:
        yield client


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_error = error_message


def test_healthz_and_info(agent: Agent) -> None:
    with serving(agent, allowed_roots=()) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        info = client.get("/v1/info").json()
    assert info["service"] == "sam3agent" and info["versions"]["mcp"] and info["versions"]["starlette"]
    assert info["llm"]["name"] == "policy" and info["sam3"] == {"source": "fake"}
    assert info["engine"]["type"] == "FakeEngine"
    assert info["config"]["max_llm_calls"] == 40 and info["config"]["protocol"] == "text"
    assert info["limits"]["file_paths"] is False and info["limits"]["urls"] is False


def test_multipart_upload(agent: Agent, engine: FakeEngine) -> None:
    with serving(agent) as client:
        response = client.post("/v1/segment", files={"image": ("cat.png", png(), "image/png")},
                               data={"query": "the cat"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "answered" and body["query"] == "the cat"
    assert body["image"] == {"source": "cat.png", "width": 64, "height": 48, "digest": body["image"]["digest"]}
    assert len(body["detections"]) == 1 and body["detections"][0]["box_xyxy"] == [16.0, 12.0, 47.0, 35.0]
    assert "steps" not in body and "overlay_png" not in body
    assert body["totals"]["turns"] == 2 and len(engine.calls) == 1


def test_json_with_overlay_and_steps(agent: Agent) -> None:
    with serving(agent) as client:
        body = client.post("/v1/segment?steps=1", json={"image": f"data:image/png;base64,{_b64(png())}",
                                                        "query": "cat", "overlay": True}).json()
        plain = client.post("/v1/segment?overlay=1", json={"image": _b64(png()), "query": "cat"}).json()
        form = client.post("/v1/segment", files={"image": ("a.png", png(), "image/png")},
                           data={"query": "cat", "overlay": "true"}).json()
    assert body["status"] == "answered" and len(body["steps"]) == 2
    assert body["steps"][0]["call"]["name"] == "segment_phrase"
    overlay = Image.open(io.BytesIO(base64.b64decode(body["overlay_png"])))
    assert overlay.format == "PNG" and overlay.size == (64, 48)
    assert "steps" not in plain and "overlay_png" in plain and "overlay_png" in form


def test_image_path_inside_allowed_root(agent: Agent, root: Path) -> None:
    with serving(agent, allowed_roots=(root,)) as client:
        body = client.post("/v1/segment", json={"image_path": "sub/dog.png", "query": "cat"}).json()
    assert body["status"] == "answered" and body["image"]["source"] == "dog.png"


@pytest.mark.parametrize("path", ["../secret.png", "sub/../../secret.png", "link.png", "SECRET"])
def test_path_traversal_is_refused(agent: Agent, engine: FakeEngine, root: Path, path: str) -> None:
    path = str(root.parent / "secret.png") if path == "SECRET" else path
    with serving(agent, allowed_roots=(root,)) as client:
        response = client.post("/v1/segment", json={"image_path": path, "query": "cat"})
    _error(response, 403, "forbidden")
    assert engine.calls == []


def test_paths_refused_without_allowed_root(agent: Agent, root: Path) -> None:
    with serving(agent) as client:
        message = _error(client.post("/v1/segment", json={"image_path": str(root / "cat.png"), "query": "cat"}),
                         403, "forbidden")
        missing = client.post("/v1/segment", json={"image": "cat.png", "query": "cat"})
    assert "--allowed-root" in message
    _error(missing, 422, "bad_image")  # "image" never reads files


def test_missing_file_in_root(agent: Agent, root: Path) -> None:
    with serving(agent, allowed_roots=(root,)) as client:
        _error(client.post("/v1/segment", json={"image_path": "nope.png", "query": "cat"}), 404, "not_found")


def test_oversize_uploads(agent: Agent, engine: FakeEngine) -> None:
    big = png(300, 300, noise=True)  # ~270 KB
    assert len(big) > 200_000
    with serving(agent, max_upload_bytes=50_000) as client:
        multipart = client.post("/v1/segment", files={"image": ("big.png", big, "image/png")}, data={"query": "cat"})
        as_json = client.post("/v1/segment", json={"image": _b64(big), "query": "cat"})
        # Under the body limit (4/3 for base64) but the decoded image is over the image limit.
        medium = png(140, 140, noise=True)
        assert 50_000 < len(medium) < 66_000
        decoded = client.post("/v1/segment", json={"image": _b64(medium), "query": "cat"})
        after = client.get("/healthz")
    assert "--max-upload-mb" in _error(multipart, 413, "payload_too_large")
    _error(as_json, 413, "payload_too_large")
    assert "--max-upload-mb" in _error(decoded, 413, "payload_too_large")
    assert after.status_code == 200 and engine.calls == []


def test_chunked_oversize_upload(agent: Agent) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 10_000

    with serving(agent, max_upload_bytes=50_000) as client:
        response = client.post("/v1/segment", content=chunks(), headers={"content-type": "application/json"})
    _error(response, 413, "payload_too_large")


def test_pixel_limit(agent: Agent) -> None:
    with serving(agent, max_pixels=10_000) as client:
        message = _error(client.post("/v1/segment", files={"image": ("wide.png", png(200, 100), "image/png")},
                                     data={"query": "cat"}), 413, "payload_too_large")
    assert "200x100 = 20000 pixels" in message and "--max-pixels" in message


def test_bad_images(agent: Agent) -> None:
    with serving(agent) as client:
        text_file = client.post("/v1/segment", files={"image": ("cat.png", b"not an image", "image/png")},
                                data={"query": "cat"})
        truncated = client.post("/v1/segment", files={"image": ("cut.png", png()[:60], "image/png")},
                                data={"query": "cat"})
        not_base64 = client.post("/v1/segment", json={"image": "@@@", "query": "cat"})
    assert "cannot decode" in _error(text_file, 422, "bad_image")
    _error(truncated, 422, "bad_image")
    _error(not_base64, 422, "bad_image")


def test_request_errors(agent: Agent) -> None:
    with serving(agent) as client:
        bad_json = client.post("/v1/segment", content=b"{nope", headers={"content-type": "application/json"})
        no_query = client.post("/v1/segment", json={"image": _b64(png())})
        blank_query = client.post("/v1/segment", files={"image": ("a.png", png(), "image/png")}, data={"query": " "})
        no_image = client.post("/v1/segment", json={"query": "cat"})
        both = client.post("/v1/segment", json={"image": _b64(png()), "image_path": "a.png", "query": "cat"})
        unknown = client.post("/v1/segment", json={"image": _b64(png()), "query": "cat", "colour": "red"})
        bad_flag = client.post("/v1/segment?steps=maybe", json={"image": _b64(png()), "query": "cat"})
        media = client.post("/v1/segment", content=b"hello", headers={"content-type": "text/plain"})
        route = client.get("/v1/nope")
        method = client.get("/v1/segment")
    assert "not valid JSON" in _error(bad_json, 400, "bad_request")
    assert "query" in _error(no_query, 400, "bad_request")
    _error(blank_query, 400, "bad_request")
    assert "image is required" in _error(no_image, 400, "bad_request")
    _error(both, 400, "bad_request")
    assert "colour" in _error(unknown, 400, "bad_request")
    _error(bad_flag, 400, "bad_request")
    assert "multipart/form-data" in _error(media, 415, "unsupported_media_type")
    _error(route, 404, "not_found")
    _error(method, 405, "method_not_allowed")


def test_llm_backend_failure_is_502_naming_the_endpoint() -> None:
    with ScriptedOpenAIServer(["unused"]) as llm_server:
        llm_server.fail_next(5, status=500, message="model crashed")
        llm = OpenAICompatibleLLM(llm_server.base_url, "scripted", timeout=5, max_retries=0)
        with serving(Agent(llm, FakeEngine())) as client:
            response = client.post("/v1/segment", json={"image": _b64(png()), "query": "cat"})
    message = _error(response, 502, "llm_backend_error")
    assert llm_server.base_url in message


def test_request_timeout_is_504() -> None:
    agent = Agent(PolicyLLM(latency_s=10), FakeEngine())
    with serving(agent, request_timeout_s=0.3) as client:
        response = client.post("/v1/segment", json={"image": _b64(png()), "query": "cat"})
    assert response.elapsed.total_seconds() < 5
    assert "0.3 s" in _error(response, 504, "timeout")


async def test_concurrent_requests_share_one_engine(fresh_engine: Any) -> None:
    """8 concurrent requests on the tiny SAM 3: all answered, one engine, each image encoded once."""
    llm = PolicyLLM(latency_s=0.2)
    agent = Agent(llm, fresh_engine)
    images = [png(96, 64, seed=0), png(96, 64, seed=1)]
    with ServerThread(create_app(agent, ServeLimits())) as server:
        async with httpx2.AsyncClient(base_url=server.url, timeout=60) as client:
            requests = [client.post("/v1/segment", files={"image": (f"{i}.png", images[i % 2], "image/png")},
                                    data={"query": f"thing {i}"}) for i in range(8)]
            responses = await asyncio.gather(*requests)
            info = (await client.get("/v1/info")).json()
    assert [r.status_code for r in responses] == [200] * 8
    bodies = [r.json() for r in responses]
    assert sorted(b["query"] for b in bodies) == sorted(f"thing {i}" for i in range(8))
    assert all(b["status"] in ("answered", "no_mask") for b in bodies)
    assert llm.calls == 16 and llm.max_in_flight > 1  # the runs overlapped
    stats = info["engine"]["stats"]
    assert info["engine"]["type"] == "Sam3Engine"
    assert stats["vision_encoder_runs"] == 2  # two distinct images, encoded once each for all 8 requests
    assert stats["image_cache"]["hits"] >= 6
    assert fresh_engine.stats.vision_encoder_runs == 2


def test_expected_area_of_the_fake_mask(agent: Agent) -> None:
    with serving(agent) as client:
        body = client.post("/v1/segment", json={"image": _b64(png()), "query": "cat"}).json()
    import supervision as sv

    mask = sv.rle_to_mask(body["detections"][0]["rle"]["counts"], (64, 48))
    assert int(mask.sum()) == expected_area()
