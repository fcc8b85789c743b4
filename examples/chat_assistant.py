"""A chat assistant that can segment things: any OpenAI-compatible chat model + the ``segment_image`` tool.

The chat model talks to the user; when it wants something located, outlined or counted it calls
``segment_image(image, query)`` (see :func:`sam3agent.as_openai_tool`). The tool's JSON answer goes
back as a ``tool`` message; the overlay follows as a user message with an image, since tool messages
are text-only on OpenAI. By default the agent's MLLM is the same endpoint and model as the chat model
(one vLLM serving Qwen2.5-VL does both); ``--llm-base-url`` and ``--chat-model`` separate them.

Example (a vLLM server on localhost:8000, SAM 3 weights available)::

    python examples/chat_assistant.py --base-url http://localhost:8000/v1 \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --image photos/kitchen.jpg \\
        --message "Outline every mug in photos/kitchen.jpg and tell me how many there are."

Without ``--message`` the user's turns are read from stdin, one per line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import mimetypes
import os
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from openai import APIError, AsyncOpenAI

from sam3agent import Agent, as_openai_tool
from sam3agent.app.embed import Handler
from sam3agent.backends import add_backend_arguments, build_config, build_engine, build_llm, llm_settings

SYSTEM = (
    "You are a helpful assistant with a segmentation tool. When the user wants something in an image "
    "found, outlined, counted or measured, call segment_image with the image's file path and a short "
    "description of what to segment. The result lists each mask's id, box, score and area in pixels; "
    "an overlay image with the numbered masks follows it. Answer the user in plain words."
)


def build_parser() -> argparse.ArgumentParser:
    """Options: the chat model, the conversation, and the agent's backend flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    chat = parser.add_argument_group("chat model (OpenAI-compatible)")
    chat.add_argument("--base-url", default=None, metavar="URL",
                      help="chat model endpoint (default: the agent's --llm-base-url); the agent's MLLM uses it too "
                           "unless --llm-base-url is given")
    chat.add_argument("--chat-model", default=None, metavar="NAME", help="chat model name (default: --model)")
    chat.add_argument("--message", action="append", default=None, metavar="TEXT",
                      help="a user turn (repeatable); without it turns are read from stdin")
    chat.add_argument("--image", action="append", default=[], metavar="PATH",
                      help="attach an image file to the first user turn (repeatable)")
    chat.add_argument("--allowed-root", action="append", default=None, metavar="DIR",
                      help="folders the tool may read images from (default: the current folder and the "
                           "folders of --image)")
    chat.add_argument("--max-tool-rounds", type=int, default=4, metavar="N",
                      help="tool-call rounds per user turn (default 4)")
    chat.add_argument("--no-rle", action="store_true", help="leave RLE masks out of the tool answer")
    add_backend_arguments(parser)
    return parser


def image_part(path: str | Path) -> dict[str, Any]:
    """An ``image_url`` message part holding the file as a data URL."""
    mime = mimetypes.guess_type(str(path))[0] or "image/png"
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{data}"}}


def user_message(text: str, images: Sequence[str]) -> dict[str, Any]:
    """A user turn; attached images are named in the text so the model can pass their paths to the tool."""
    if not images:
        return {"role": "user", "content": text}
    names = ", ".join(images)
    parts: list[dict[str, Any]] = [{"type": "text", "text": f"{text}\n(attached image file(s): {names})"}]
    return {"role": "user", "content": parts + [image_part(p) for p in images]}


async def answer_turn(client: AsyncOpenAI, model: str, messages: list[dict[str, Any]], schema: dict[str, Any],
                      handler: Handler, max_rounds: int) -> str:
    """Let the model answer the last user turn, running its tool calls; returns its final text."""
    for _ in range(max_rounds + 1):
        response = await client.chat.completions.create(model=model, messages=messages, tools=[schema])
        reply = response.choices[0].message
        calls = reply.tool_calls or []
        entry: dict[str, Any] = {"role": "assistant", "content": reply.content or ""}
        if calls:
            entry["tool_calls"] = [{"id": c.id, "type": "function",
                                    "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                   for c in calls]
        messages.append(entry)
        if not calls:
            return reply.content or ""
        overlays: list[dict[str, Any]] = []
        for call in calls:
            if call.function.name != schema["function"]["name"]:
                message = f"there is no tool {call.function.name!r}; call segment_image"
                error = {"type": "unknown_tool", "message": message}
                text = json.dumps({"status": "error", "error": error})
                messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
                continue
            answer = await handler(call.function.arguments)
            print(f"tool> segment_image {call.function.arguments} -> {answer.json.get('status')}"
                  f" ({answer.json.get('count', 0)} mask(s))", flush=True)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": answer.text})
            url = answer.overlay_data_url()
            if url is not None:
                overlays += [{"type": "text", "text": f"Overlay of segment_image call {call.id}: the numbered "
                                                      "masks of its result."},
                             {"type": "image_url", "image_url": {"url": url}}]
        if overlays:
            messages.append({"role": "user", "content": overlays})
    return "(stopped: too many tool calls in one turn)"


async def user_turns(messages: Sequence[str] | None) -> AsyncIterator[str]:
    """The ``--message`` turns, or lines read from stdin until EOF."""
    if messages is not None:
        for text in messages:
            yield text
        return
    while True:
        if sys.stdin.isatty():
            print("you> ", end="", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if not line:
            return
        if line.strip():
            yield line.strip()


async def chat(args: argparse.Namespace) -> int:
    """Build the agent and the tool, then hold the conversation."""
    openai_side = llm_settings(argparse.Namespace(**{**vars(args), "llm_local": None}))
    base_url = args.base_url or openai_side["base_url"]
    if args.llm_base_url is None:
        args.llm_base_url = base_url
    model = args.chat_model or openai_side["model"]
    config = build_config(args)
    try:
        engine = build_engine(args)
    except RuntimeError as e:
        print(f"error: cannot load SAM 3: {e}", file=sys.stderr)
        return 1
    try:
        agent = Agent(build_llm(args, prompt_version=config.prompt_version), engine, config)
        roots = args.allowed_root or [os.getcwd(), *{str(Path(p).resolve().parent) for p in args.image}]
        schema, handler = as_openai_tool(agent, allowed_roots=roots, include_rle=not args.no_rle)
        client = AsyncOpenAI(base_url=base_url, api_key=os.environ.get(openai_side["api_key_env"]) or "EMPTY",
                             timeout=args.llm_timeout, max_retries=args.llm_retries)
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
        images = list(args.image)
        async for text in user_turns(args.message):
            messages.append(user_message(text, images))
            images = []
            reply = await answer_turn(client, model, messages, schema, handler, args.max_tool_rounds)
            print(f"assistant> {reply}", flush=True)
    except APIError as e:
        print(f"error: the chat model at {base_url} failed: {e}", file=sys.stderr)
        return 1
    finally:
        engine.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    for path in args.image:
        if not Path(path).is_file():
            print(f"error: --image {path} is not a file", file=sys.stderr)
            return 2
    return asyncio.run(chat(args))


if __name__ == "__main__":
    raise SystemExit(main())
