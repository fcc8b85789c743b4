"""sam3agent: a multimodal LLM that segments what it can reason about, with SAM 3 as its tool."""

from sam3agent.agent import Agent
from sam3agent.config import AgentConfig
from sam3agent.embed import as_openai_tool
from sam3agent.result import AgentResult

__all__ = ["Agent", "AgentConfig", "AgentResult", "as_openai_tool"]
