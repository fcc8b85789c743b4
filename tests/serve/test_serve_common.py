"""Image resolution, limits, error mapping and the compact answer shared by every front end."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import supervision as sv
from serve_helpers import PolicyLLM, expected_area, png

from sam3agent import Agent
from sam3agent.app.serve.common import (
    ServeError,
    ServeLimits,
    compact_answer,
    load_image,
    resolve_allowed_path,
    segment_spec,
)
from sam3core.fake import FakeEngine


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _status(excinfo: pytest.ExceptionInfo[ServeError]) -> tuple[int, str]:
    return excinfo.value.status, excinfo.value.kind


def test_data_url_base64_and_urlsafe_base64() -> None:
    limits = ServeLimits()
    data = png(32, 16)
    for spec in (f"data:image/png;base64,{_b64(data)}", _b64(data), base64.urlsafe_b64encode(data).decode()):
        handle = load_image(spec, limits)
        assert (handle.width, handle.height) == (32, 16)


def test_paths_need_an_allowed_root(root: Path) -> None:
    with pytest.raises(ServeError) as e:
        load_image(str(root / "cat.png"), ServeLimits())
    assert _status(e) == (403, "forbidden") and "--allowed-root" in e.value.message


def test_paths_inside_the_root(root: Path) -> None:
    limits = ServeLimits(allowed_roots=(root,))
    assert load_image("cat.png", limits).width == 64
    assert load_image("sub/dog.png", limits).width == 64
    assert load_image(str(root / "cat.png"), limits).width == 64
    assert load_image((root / "cat.png").as_uri(), limits).width == 64


@pytest.mark.parametrize("spec", ["../secret.png", "sub/../../secret.png", "link.png", "/etc/passwd"])
def test_traversal_and_symlinks_out_are_refused(root: Path, spec: str) -> None:
    with pytest.raises(ServeError) as e:
        load_image(spec, ServeLimits(allowed_roots=(root,)))
    assert _status(e) == (403, "forbidden")


def test_absolute_path_outside_and_missing_file(root: Path) -> None:
    roots = (root.resolve(),)
    with pytest.raises(ServeError) as e:
        resolve_allowed_path(str(root.parent / "secret.png"), roots)
    assert e.value.status == 403
    with pytest.raises(ServeError) as e:
        resolve_allowed_path("missing.png", roots)
    assert _status(e) == (404, "not_found")


def test_paths_off_for_api_fields(root: Path) -> None:
    with pytest.raises(ServeError) as e:
        load_image("cat.png", ServeLimits(allowed_roots=(root,)), allow_paths=False)
    assert _status(e) == (422, "bad_image")


def test_urls_disabled_by_default() -> None:
    with pytest.raises(ServeError) as e:
        load_image("http://127.0.0.1:9/cat.png", ServeLimits())
    assert _status(e) == (403, "forbidden") and "--allow-urls" in e.value.message
    with pytest.raises(ServeError) as e:
        load_image("ftp://example.org/cat.png", ServeLimits(allow_urls=True))
    assert e.value.status == 400


def test_url_fetch_when_enabled_reports_a_dead_host() -> None:
    with pytest.raises(ServeError) as e:
        load_image("http://127.0.0.1:9/cat.png", ServeLimits(allow_urls=True, url_timeout_s=2))
    assert _status(e) == (422, "bad_image") and "could not fetch" in e.value.message


def test_size_and_pixel_limits() -> None:
    big = png(200, 200, noise=True)
    with pytest.raises(ServeError) as e:
        load_image(_b64(big), ServeLimits(max_upload_bytes=10_000))
    assert _status(e) == (413, "payload_too_large") and "--max-upload-mb" in e.value.message
    with pytest.raises(ServeError) as e:
        load_image(_b64(png(200, 100)), ServeLimits(max_pixels=10_000))
    assert e.value.status == 413 and "200x100 = 20000 pixels" in e.value.message


@pytest.mark.parametrize("spec", [
    "data:image/png;base64," + _b64(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40),  # PNG signature, broken body
    "data:image/png;base64,@@@not base64@@@",
    _b64(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10),
])
def test_undecodable_images(spec: str) -> None:
    with pytest.raises(ServeError) as e:
        load_image(spec, ServeLimits())
    assert _status(e) == (422, "bad_image")


def test_blank_image_spec_and_plain_data_url() -> None:
    for spec in ("", "   "):
        with pytest.raises(ServeError) as e:
            load_image(spec, ServeLimits())
        assert e.value.status == 400
    with pytest.raises(ServeError) as e:
        load_image("data:text/plain,hello", ServeLimits())
    assert e.value.status == 400


def test_limits_validate_roots(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an existing directory"):
        ServeLimits(allowed_roots=(tmp_path / "nope",))


async def test_segment_and_compact_answer(agent: Agent, engine: FakeEngine) -> None:
    result = await segment_spec(agent, _b64(png()), "  the cat ", ServeLimits())
    answer = compact_answer(result)
    assert answer["status"] == "answered" and answer["count"] == 1 and answer["query"] == "the cat"
    mask = answer["masks"][0]
    assert mask["id"] == 1 and mask["score"] == pytest.approx(0.9)
    assert mask["area"] == expected_area()
    assert mask["box_xyxy"] == [16.0, 12.0, 47.0, 35.0]
    decoded = sv.rle_to_mask(mask["rle"]["counts"], (64, 48))
    assert decoded.sum() == expected_area() and decoded[24, 32] and not decoded[0, 0]
    assert "rle" not in compact_answer(result, include_rle=False)["masks"][0]
    assert len(engine.calls) == 1


async def test_no_mask_answer() -> None:
    agent = Agent(PolicyLLM(phrase="unicorn"), FakeEngine())
    answer = compact_answer(await segment_spec(agent, _b64(png()), "a unicorn", ServeLimits()))
    assert answer["status"] == "no_mask" and answer["count"] == 0 and answer["masks"] == []


async def test_timeout_and_missing_query() -> None:
    agent = Agent(PolicyLLM(latency_s=5), FakeEngine())
    with pytest.raises(ServeError) as e:
        await segment_spec(agent, _b64(png()), "cat", ServeLimits(request_timeout_s=0.2))
    assert _status(e) == (504, "timeout") and "0.2 s" in e.value.message
    with pytest.raises(ServeError) as e:
        await segment_spec(agent, _b64(png()), "  ", ServeLimits())
    assert e.value.status == 400


def test_answer_is_plain_json(agent: Agent) -> None:
    text = json.dumps(compact_answer(agent.run(png(), "cat")))
    assert f'"area": {expected_area()}' in text
