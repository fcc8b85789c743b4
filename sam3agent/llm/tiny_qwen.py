"""A tiny, randomly initialised Qwen2.5-VL saved to disk, for offline tests and self-checks.

:func:`save_tiny_qwen25vl` writes a directory that loads through the real ``AutoProcessor`` /
``AutoModelForImageTextToText.from_pretrained`` path with no network: a two-layer text model and a
two-block vision tower with hidden sizes of 32-64 (about 0.2M parameters), a byte-level tokenizer built
in memory (the 256 byte symbols plus Qwen's special tokens, no merges), the Qwen2-VL image processor
capped at 64 image tokens, and a chat template of our own in Qwen's ``<|im_start|>`` format that
renders images and, when given, tools and tool calls. Its output is random text; it exists so the
whole pipeline (chat template, image processing, ``generate``) runs for real in seconds on a CPU.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Qwen2.5-VL's special tokens, in the order they get ids after the 256 byte symbols.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<tool_call>",
    "</tool_call>",
)

#: Added tokens that stay in decoded text (as in Qwen's own tokenizer).
_PLAIN_ADDED = ("<tool_call>", "</tool_call>")

#: Vocabulary size of the tiny model (256 bytes + the special tokens, rounded up to a multiple of 32).
VOCAB_SIZE = 288

#: The tiny model's chat template (Jinja). Content may be a string or a list of text/image parts;
#: tools go into the system turn; tool results are shown to the model as user turns.
CHAT_TEMPLATE = r"""
{%- macro render(content) -%}
{%- if content is string -%}{{ content }}
{%- elif content -%}
{%- for part in content -%}
{%- if part.type in ('image', 'image_url') -%}<|vision_start|><|image_pad|><|vision_end|>
{%- elif part.type == 'text' -%}{{ part.text }}
{%- else -%}{{ raise_exception('unsupported content part: ' ~ part.type) }}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- set ns = namespace(first=0) -%}
{%- if tools -%}
<|im_start|>system
{% if messages and messages[0].role == 'system' -%}
{{ render(messages[0].content) }}

{% set ns.first = 1 -%}
{%- endif -%}
You can call these functions (one JSON schema per line):
<tools>
{% for tool in tools -%}
{{ tool | tojson }}
{% endfor -%}
</tools>
To call one, write <tool_call>{"name": <function name>, "arguments": <JSON object>}</tool_call>.<|im_end|>
{% endif -%}
{%- for message in messages[ns.first:] -%}
{%- if message.role in ('system', 'user') -%}
<|im_start|>{{ message.role }}
{{ render(message.content) }}<|im_end|>
{% elif message.role == 'assistant' -%}
<|im_start|>assistant
{{ render(message.content) }}
{%- for call in message.tool_calls or [] -%}
{%- set fn = call.function if call.function is defined else call %}
<tool_call>{"name": {{ fn.name | tojson }}, "arguments": {% if fn.arguments is string -%}
{{ fn.arguments }}{% else %}{{ fn.arguments | tojson }}{% endif %}}</tool_call>
{%- endfor -%}
<|im_end|>
{% elif message.role == 'tool' -%}
<|im_start|>user
<tool_response>
{{ render(message.content) }}
</tool_response><|im_end|>
{% else -%}
{{ raise_exception('unknown role: ' ~ message.role) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}
""".strip()


def build_tokenizer() -> Any:
    """A byte-level tokenizer (no merges) with Qwen's special tokens, built in memory.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``eos = <|im_end|>`` and ``pad = <|endoftext|>``.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    for token in SPECIAL_TOKENS:  # one at a time so ids follow SPECIAL_TOKENS' order
        if token in _PLAIN_ADDED:
            backend.add_tokens([AddedToken(token, special=False, normalized=False)])
        else:
            backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
    if backend.get_vocab_size() > VOCAB_SIZE:
        raise RuntimeError(f"tiny tokenizer has {backend.get_vocab_size()} tokens, more than {VOCAB_SIZE}")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", model_max_length=4096
    )


def build_config(tokenizer: Any) -> Any:
    """The tiny ``Qwen2_5_VLConfig``, its special-token ids taken from ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import (
        Qwen2_5_VLTextConfig,
        Qwen2_5_VLVisionConfig,
    )

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = Qwen2_5_VLTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        # head_dim 16 -> 8 rotary frequencies split over (time, height, width)
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = Qwen2_5_VLVisionConfig(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        out_hidden_size=64,
        fullatt_block_indexes=[1],
        window_size=56,
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def save_tiny_qwen25vl(directory: str | Path, *, seed: int = 0, max_image_tokens: int = 64) -> Path:
    """Build a tiny random Qwen2.5-VL with its processor and save both to ``directory``.

    The same ``seed`` gives the same weights. Global RNG state is left untouched.

    Args:
        directory: Where to save (created if missing).
        seed: Weight initialisation seed.
        max_image_tokens: Image-processor cap on tokens per image (28x28 pixels each).

    Returns:
        The directory, loadable with ``AutoProcessor.from_pretrained`` and
        ``AutoModelForImageTextToText.from_pretrained`` (or :class:`~sam3agent.llm.TransformersLLM`).
    """
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = build_config(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    generation = model.generation_config
    generation.eos_token_id = config.text_config.eos_token_id
    generation.pad_token_id = config.text_config.pad_token_id
    generation.bos_token_id = config.text_config.bos_token_id
    generation.do_sample = False
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * max_image_tokens),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(),
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    logger.debug("saved a tiny Qwen2.5-VL (%d parameters) to %s", model.num_parameters(), directory)
    return directory
