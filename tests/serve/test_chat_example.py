"""``examples/chat_assistant.py`` against the scripted OpenAI-compatible server and the tiny SAM 3.

One scripted server plays both models: requests offering the ``segment_image`` tool come from the
chat loop, the others from the agent's MLLM (text protocol).
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from serve_helpers import next_agent_reply, png

from sam3agent.llm.server import ScriptedOpenAIServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat_assistant.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chat_assistant_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content or ""


def _policy(image_arg: str):  # type: ignore[no-untyped-def]
    def reply(body: dict[str, Any]) -> str | dict[str, Any]:
        messages = body["messages"]
        if not body.get("tools"):  # the agent's MLLM
            return next_agent_reply([m["role"] for m in messages], _text(messages[-1]))
        assert [t["function"]["name"] for t in body["tools"]] == ["segment_image"]
        last = messages[-1]
        if last["role"] == "tool":
            error = json.loads(last["content"])["error"]
            return f"Sorry, that failed: {error['type']}."
        if _text(last).startswith("Overlay of segment_image"):
            answer = json.loads(next(m for m in reversed(messages) if m["role"] == "tool")["content"])
            return f"I found {answer['count']} mask(s) ({answer['status']})."
        if "thanks" in _text(last):
            return "You're welcome."
        return {"content": "", "tool_calls": [{"name": "segment_image",
                                               "arguments": {"image": image_arg, "query": "the cat"}}]}

    return reply


def _run(tmp_path: Path, tiny_sam3_dir: Path, image_arg: str, *, use_stdin: bool,
         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str, list[dict]]:
    (tmp_path / "cat.png").write_bytes(png(96, 64))
    (tmp_path.parent / "secret.png").write_bytes(png())
    monkeypatch.chdir(tmp_path)
    example = _load_example()
    with ScriptedOpenAIServer(_policy(image_arg)) as server:
        argv = ["--base-url", server.base_url, "--model", "scripted", "--sam3", str(tiny_sam3_dir),
                "--device", "cpu", "--image", "cat.png", "--llm-retries", "0"]
        if use_stdin:
            monkeypatch.setattr(sys, "stdin", io.StringIO("Outline the cat in cat.png\n\nthanks\n"))
        else:
            argv += ["--message", "Outline the cat in cat.png", "--message", "thanks"]
        code = example.main(argv)
        bodies = list(server.requests)
    return code, capsys.readouterr().out, bodies


@pytest.mark.parametrize("use_stdin", [False, True])
def test_chat_loop_calls_the_tool(tmp_path: Path, tiny_sam3_dir: Path, use_stdin: bool,
                                  capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, bodies = _run(tmp_path, tiny_sam3_dir, "cat.png", use_stdin=use_stdin, capsys=capsys,
                             monkeypatch=monkeypatch)
    assert code == 0, out
    chat = [b for b in bodies if b.get("tools")]
    agent = [b for b in bodies if not b.get("tools")]
    assert len(chat) == 3 and len(agent) == 2  # tool call, answer after the tool, second turn
    first_user = chat[0]["messages"][1]
    assert first_user["role"] == "user" and "cat.png" in _text(first_user)
    assert [p["type"] for p in first_user["content"]] == ["text", "image_url"]
    after_tool = chat[1]["messages"]
    assert [m["role"] for m in after_tool] == ["system", "user", "assistant", "tool", "user"]
    answer = json.loads(after_tool[3]["content"])
    assert answer["status"] in ("answered", "no_mask") and answer["image"] == {"width": 96, "height": 64}
    assert answer["count"] == len(answer["masks"])
    overlay = after_tool[4]["content"]
    assert overlay[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert f"assistant> I found {answer['count']} mask(s) ({answer['status']})." in out
    assert "tool> segment_image" in out and "assistant> You're welcome." in out
    assert [m["role"] for m in chat[2]["messages"]][-2:] == ["assistant", "user"]


def test_forbidden_path_goes_back_to_the_model(tmp_path: Path, tiny_sam3_dir: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, bodies = _run(tmp_path, tiny_sam3_dir, "../secret.png", use_stdin=False, capsys=capsys,
                             monkeypatch=monkeypatch)
    assert code == 0
    assert not [b for b in bodies if not b.get("tools")]  # the agent never ran
    after_tool = [b for b in bodies if b.get("tools")][1]["messages"]
    assert [m["role"] for m in after_tool][-2:] == ["assistant", "tool"]  # no overlay message
    assert "assistant> Sorry, that failed: forbidden." in out


def test_dead_chat_endpoint_exits_1(tmp_path: Path, tiny_sam3_dir: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with ScriptedOpenAIServer() as server:
        url = server.base_url
    code = _load_example().main(["--base-url", url, "--model", "m", "--sam3", str(tiny_sam3_dir), "--device", "cpu",
                                 "--llm-retries", "0", "--message", "hi"])
    assert code == 1 and url in capsys.readouterr().err
