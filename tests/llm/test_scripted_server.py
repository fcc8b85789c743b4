"""The scripted OpenAI-compatible server on its own (plain stdlib HTTP clients)."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sam3agent.llm.server import ScriptedOpenAIServer

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def _post(server: ScriptedOpenAIServer, body: dict[str, Any] = BODY, timeout: float = 10) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.base_url + "/chat/completions",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_replies_in_order_and_callables_see_the_request() -> None:
    script = [
        "one",
        lambda body: f"echo {body['messages'][0]['content']}",
        {"content": "three", "finish_reason": "length"},
    ]
    with ScriptedOpenAIServer(script) as server:
        answers = [_post(server) for _ in range(4)]
    texts = [a[1]["choices"][0]["message"]["content"] for a in answers[:3]]
    assert texts == ["one", "echo hi", "three"]
    assert answers[2][1]["choices"][0]["finish_reason"] == "length"
    status, error = answers[3]
    assert status == 400 and "script exhausted" in error["error"]["message"]
    assert server.call_count == 4 and server.replies_used == 3


def test_faults_do_not_consume_replies() -> None:
    with ScriptedOpenAIServer(["a", {"status": 429, "message": "slow down"}, "b"]) as server:
        server.fail_next(2, status=502)
        statuses = [_post(server)[0] for _ in range(5)]
    assert statuses == [502, 502, 200, 429, 200]


def test_slots_queue_concurrent_requests() -> None:
    with ScriptedOpenAIServer(lambda body: "ok", latency=0.1, slots=2) as server:
        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: _post(server), range(8)))
        elapsed = time.monotonic() - start
    assert all(status == 200 for status, _ in results)
    assert server.max_in_flight == 2
    assert elapsed >= 0.38  # 8 calls through 2 slots of 0.1 s: 4 rounds


def test_many_concurrent_connections_without_slots() -> None:
    with ScriptedOpenAIServer(lambda body: "ok", latency=0.2) as server:
        start = time.monotonic()
        with ThreadPoolExecutor(24) as pool:
            results = list(pool.map(lambda _: _post(server), range(24)))
        elapsed = time.monotonic() - start
    assert all(status == 200 for status, _ in results)
    assert server.max_in_flight >= 16 and elapsed < 1.5


def test_models_endpoint_and_unknown_model() -> None:
    with ScriptedOpenAIServer(["x"], models=["a", "b"]) as server:
        with urllib.request.urlopen(server.base_url + "/models", timeout=5) as response:
            listed = [m["id"] for m in json.loads(response.read())["data"]]
        status, error = _post(server, {**BODY, "model": "c"})
    assert listed == ["a", "b"]
    assert status == 404 and "`c` does not exist" in error["error"]["message"]


def test_invalid_messages_get_400_like_a_real_server() -> None:
    body = {"model": "m", "messages": [{"role": "tool", "tool_call_id": "nope", "content": "r"}]}
    with ScriptedOpenAIServer(["x"]) as server:
        status, error = _post(server, body)
        assert _post(server, {"model": "m"})[0] == 400
    assert status == 400 and "no pending tool call" in error["error"]["message"]
    assert server.replies_used == 0


def test_stop_wakes_stalled_handlers_quickly() -> None:
    server = ScriptedOpenAIServer(["x"]).start()
    server.stall_next(1, seconds=30)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            _post(server, timeout=30)
        except OSError as e:  # stop() may close the stalled connection before a reply: expected
            errors.append(e)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    while server.call_count == 0:
        time.sleep(0.01)
    start = time.monotonic()
    server.stop()
    caller.join(timeout=5)
    assert time.monotonic() - start < 3 and not caller.is_alive()


def test_retry_after_is_sent_with_error_answers_only() -> None:
    def post(server: ScriptedOpenAIServer) -> tuple[int, str | None]:
        request = urllib.request.Request(server.base_url + "/chat/completions", data=json.dumps(BODY).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers.get("Retry-After-Ms")
        except urllib.error.HTTPError as e:
            return e.code, e.headers.get("Retry-After-Ms")

    with ScriptedOpenAIServer(["ok", {"status": 429, "message": "slow down"}], retry_after=0.25) as server:
        server.fail_next(1, status=503)
        answers = [post(server) for _ in range(3)]
    assert answers == [(503, "250"), (200, None), (429, "250")]
    with ScriptedOpenAIServer(["ok"]) as server:
        server.fail_next(1, status=503)
        assert post(server) == (503, None)
