"""The live demo page over real HTTP: served at / with its files, without a key, offline-only."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from importlib import resources

import httpx2
import pytest
from serve_helpers import ServerThread, error_message

from sam3agent import Agent
from sam3agent.app.serve import ServeLimits, create_app
from sam3agent.app.serve.web_demo import CONTENT_SECURITY_POLICY, OPEN_PATHS

KEY = "demo-key-0123456789abcdef"
FILES = {
    "/": "text/html; charset=utf-8",
    "/static/demo.css": "text/css; charset=utf-8",
    "/static/demo.js": "text/javascript; charset=utf-8",
    "/static/icon.svg": "image/svg+xml",
}
# Anything that names another host: a scheme, a protocol-relative //host, CSS @import.
# (The SVG's xmlns is a namespace name, never fetched; it is the one allowed.)
OUTSIDE = re.compile(r"[a-z][a-z0-9+.-]*://|(?<![:/\w])//[\w-]+\.[\w.-]+|@import", re.IGNORECASE)
SVG_NAMESPACE = 'xmlns="http://www.w3.org/2000/svg"'


def _static(name: str) -> str:
    return (resources.files("sam3agent.app.serve") / "static" / name).read_text("utf-8")


class _Links(HTMLParser):
    """Every src and href in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [(tag, value or "") for name, value in attrs if name in ("src", "href")]


@pytest.mark.parametrize("api_key", [None, KEY])
def test_page_and_files_served_without_a_key(agent: Agent, api_key: str | None) -> None:
    app = create_app(agent, ServeLimits(), api_key=api_key)
    with ServerThread(app) as server, httpx2.Client(base_url=server.url, timeout=30) as client:
        answers = {path: client.get(path) for path in FILES}
        head = client.head("/")
        info = client.get("/v1/info")
        missing = client.get("/static/nothing.js")
        posted = client.post("/")
    for path, kind in FILES.items():
        response = answers[path]
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"] == kind, path
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == _static(path.rsplit("/", 1)[-1] if path != "/" else "index.html").encode()
    assert head.status_code == 200 and head.content == b""
    assert "<title>sam3agent live demo</title>" in answers["/"].text
    assert "v1/segment/stream" in answers["/static/demo.js"].text
    if api_key is None:
        assert info.status_code == 200 and info.json()["auth"] == "none"
        error_message(missing, 404, "not_found")
    else:  # the key still guards everything else, unknown static paths included
        error_message(info, 401, "unauthorized")
        error_message(missing, 401, "unauthorized")
    error_message(posted, 405, "method_not_allowed")  # the page's paths are open, but only to GET and HEAD
    assert set(FILES) == OPEN_PATHS


def test_the_page_names_no_outside_resource() -> None:
    page = _static("index.html")
    links = _Links()
    links.feed(page)
    assert sorted(links.urls) == [("link", "static/demo.css"), ("link", "static/icon.svg"),
                                  ("script", "static/demo.js")]
    assert "<script>" not in page and " style=" not in page  # no inline script or style (the CSP refuses both)
    assert not re.search(r"<[^>]+\son[a-z]+=", page), "inline event handlers are refused by the CSP"
    for name in ("index.html", "demo.css", "demo.js", "icon.svg"):
        text = _static(name).replace(SVG_NAMESPACE, "")
        assert not OUTSIDE.findall(text), (name, OUTSIDE.findall(text))
    script = _static("demo.js")
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script
    assert "new EventSource" not in script and "getReader()" in script  # fetch + a stream reader instead


def test_the_outside_pattern_catches_urls() -> None:
    """The check above can fail: each of these would be an outside request."""
    for sample in ('<script src="https://cdn.example.com/x.js">', "url(//fonts.example.org/a.woff)",
                   "@import 'x.css';", 'fetch("http://10.0.0.1:8765/v1/segment/stream")'):
        assert OUTSIDE.search(sample), sample
    for sample in ("// a comment", 'fetch("v1/segment/stream")', "a // b.c"):
        assert not OUTSIDE.search(sample), sample
