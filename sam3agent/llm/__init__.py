"""LLM backends behind one async protocol (:class:`~sam3agent.llm.base.LLM`).

Importing this package stays light: the backends (which pull in ``openai``, ``torch`` or
``transformers``) are imported on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sam3agent.llm.base import (
    LLM,
    Completion,
    ImagePart,
    LLMBackendError,
    LLMRequest,
    Message,
    SamplingConfig,
    TextPart,
    ToolCall,
    Usage,
)

if TYPE_CHECKING:
    from sam3agent.llm.caching import CacheMissError, CachingLLM
    from sam3agent.llm.limiter import SharedLimiter
    from sam3agent.llm.openai_compat import OpenAICompatibleLLM
    from sam3agent.llm.scripted import ScriptedLLM, ScriptExhaustedError
    from sam3agent.llm.server import ScriptedOpenAIServer
    from sam3agent.llm.tiny_qwen import save_tiny_qwen25vl
    from sam3agent.llm.transformers_local import ModelLoadError, TransformersLLM

_LAZY = {
    "OpenAICompatibleLLM": "sam3agent.llm.openai_compat",
    "SharedLimiter": "sam3agent.llm.limiter",
    "CachingLLM": "sam3agent.llm.caching",
    "CacheMissError": "sam3agent.llm.caching",
    "TransformersLLM": "sam3agent.llm.transformers_local",
    "ModelLoadError": "sam3agent.llm.transformers_local",
    "ScriptedOpenAIServer": "sam3agent.llm.server",
    "ScriptedLLM": "sam3agent.llm.scripted",
    "ScriptExhaustedError": "sam3agent.llm.scripted",
    "save_tiny_qwen25vl": "sam3agent.llm.tiny_qwen",
}

__all__ = [
    "LLM",
    "CacheMissError",
    "CachingLLM",
    "Completion",
    "ImagePart",
    "LLMBackendError",
    "LLMRequest",
    "Message",
    "ModelLoadError",
    "OpenAICompatibleLLM",
    "SamplingConfig",
    "ScriptExhaustedError",
    "ScriptedLLM",
    "ScriptedOpenAIServer",
    "SharedLimiter",
    "TextPart",
    "ToolCall",
    "TransformersLLM",
    "Usage",
    "save_tiny_qwen25vl",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
