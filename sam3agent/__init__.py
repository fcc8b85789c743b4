"""sam3agent: a multimodal LLM that segments what it can reason about, with SAM 3 as its tool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sam3agent.agent import Agent
from sam3agent.config import AgentConfig
from sam3agent.result import AgentResult

if TYPE_CHECKING:
    from sam3agent.app.embed import as_openai_tool

__all__ = ["Agent", "AgentConfig", "AgentResult", "as_openai_tool"]


def __getattr__(name: str) -> Any:
    # The chat-tool surface (and its server helpers) is imported only when it is asked for.
    if name == "as_openai_tool":
        from sam3agent.app.embed import as_openai_tool

        return as_openai_tool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
