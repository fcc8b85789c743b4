"""Old import path of :mod:`sam3agent.app.embed` (the agent as a chat assistant's tool)."""

from sam3agent.app.embed import SegmentImageArgs, ToolAnswer, as_openai_tool, segment_image_spec

__all__ = ["SegmentImageArgs", "ToolAnswer", "as_openai_tool", "segment_image_spec"]
