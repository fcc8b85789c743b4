"""An in-process backend: a Hugging Face image-text-to-text model and its processor's chat template.

The model and processor load through ``AutoProcessor`` / ``AutoModelForImageTextToText``
``from_pretrained`` (a Hub id or a local directory). One worker thread owns the model: every request
is rendered with the processor's chat template (images decoded from the request's bytes to PIL) and
generated there, one at a time, so the event loop never blocks and many agents can share one model.

Sampling follows the request: temperature 0 is greedy decoding; otherwise temperature and top_p are
set and the seed (if any) seeds torch before generating. Settings the request does not carry (top_k,
repetition penalty) keep the model's own generation config, as vLLM does. The reply text is returned
unparsed; tool calls are left to the agent's parser.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from sam3agent.llm.base import Completion, LLMBackendError, LLMRequest, Usage
from sam3agent.llm.wire import to_hf_messages
from sam3core.loading import looks_like_path, resolve_device_dtype

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "Qwen/Qwen2.5-VL-7B-Instruct"

_HAS_ACCELERATE = importlib.util.find_spec("accelerate") is not None


class ModelLoadError(LLMBackendError):
    """The model or processor could not be loaded (missing, gated or incomplete weights)."""


def _load_hint(model_id: str, error: BaseException) -> str:
    text = str(error)
    gated = any(s in text.lower() for s in ("gated", "401", "403", "unauthorized", "restricted"))
    first_line = text.strip().splitlines()[0] if text.strip() else ""
    hint = f"could not load {model_id!r} ({type(error).__name__}: {first_line}). "
    if gated:
        hint += "The repository is gated: accept its licence on its Hugging Face page, then run "
        hint += "`huggingface-cli login` (or set HF_TOKEN). "
    else:
        hint += "If it is a Hub id, check the spelling; for a gated model run `huggingface-cli login` "
        hint += "(or set HF_TOKEN) after accepting its licence on the Hub page. "
    return hint + "Offline, pass a local directory holding config.json, the weights and the processor files."


class TransformersLLM:
    """The :class:`~sam3agent.llm.base.LLM` protocol over an in-process transformers model.

    The model loads on the first request (or at once with :meth:`from_pretrained` / :meth:`load`).

    Args:
        model_id: Hub id or local directory.
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; default CUDA when available, else CPU.
        dtype: A ``torch.dtype``, a name (``"bfloat16"``/``"bf16"``, ``"float16"``/``"fp16"``,
            ``"float32"``/``"fp32"``) or ``"auto"`` (the checkpoint's own dtype); default bfloat16 on
            CUDA, float32 on CPU (see :func:`sam3core.loading.resolve_device_dtype`).
        revision: Hub revision (branch, tag or commit).
        local_files_only: Never touch the network.
        attn_implementation: e.g. ``"sdpa"`` or ``"flash_attention_2"``.
        processor_kwargs: Extra ``AutoProcessor.from_pretrained`` arguments (e.g. ``max_pixels``).
        model_kwargs: Extra ``AutoModelForImageTextToText.from_pretrained`` arguments.
        native_tools: Pass the request's tool schemas to the chat template (``tools=``).
    """

    def __init__(
        self,
        model_id: str = DEFAULT_MODEL_ID,
        *,
        device: str | None = None,
        dtype: Any = None,
        revision: str | None = None,
        local_files_only: bool = False,
        attn_implementation: str | None = None,
        processor_kwargs: Mapping[str, Any] | None = None,
        model_kwargs: Mapping[str, Any] | None = None,
        native_tools: bool = True,
    ) -> None:
        self.model_id = str(model_id)
        self.device = device
        self.dtype = dtype
        self.revision = revision
        self.local_files_only = local_files_only
        self.attn_implementation = attn_implementation
        self.processor_kwargs = dict(processor_kwargs or {})
        self.model_kwargs = dict(model_kwargs or {})
        self.native_tools = native_tools
        self.processor: Any = None
        self.hf_model: Any = None
        self._load_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._tools_checked = False

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_MODEL_ID, **kwargs: Any) -> TransformersLLM:
        """Construct and load at once (raises :class:`ModelLoadError` here rather than on first use)."""
        llm = cls(model_id, **kwargs)
        llm.load()
        return llm

    @property
    def model(self) -> str:
        """The model id (used in cache keys)."""
        return self.model_id

    @property
    def name(self) -> str:
        """``transformers:<model_id>``."""
        return f"transformers:{self.model_id}"

    def __repr__(self) -> str:
        return f"TransformersLLM(model_id={self.model_id!r}, device={self.device!r})"

    # ----------------------------------------------------------------- loading
    def _source(self) -> str:
        """What ``from_pretrained`` gets: the hub id, or the directory with ``~`` expanded.

        Raises:
            ModelLoadError: ``model_id`` is spelled as a path (:func:`~sam3core.loading.looks_like_path`)
                and no such directory exists.
        """
        if not looks_like_path(self.model_id):
            return self.model_id
        path = Path(self.model_id).expanduser()
        if not path.is_dir():
            raise ModelLoadError(
                self.name,
                f"model directory {self.model_id!r} does not exist. Pass a directory holding "
                "config.json, the weights and the processor files, or a Hub id such as "
                f"{DEFAULT_MODEL_ID!r} (gated models need `huggingface-cli login` and their "
                "licence accepted)",
            )
        return str(path)

    def load(self) -> None:
        """Load the processor and model (idempotent, thread-safe).

        Raises:
            ModelLoadError: Weights missing, gated or incomplete, or a device/dtype that cannot be
                used; the message names the fix.
        """
        with self._load_lock:
            if self.hf_model is not None:
                return
            source = self._source()
            from transformers import AutoModelForImageTextToText, AutoProcessor

            try:
                device, dtype = resolve_device_dtype(self.device, self.dtype, allow_auto=True)
            except ValueError as e:
                raise ModelLoadError(self.name, str(e)) from e
            common: dict[str, Any] = {"revision": self.revision, "local_files_only": self.local_files_only}
            try:
                processor = AutoProcessor.from_pretrained(source, **common, **self.processor_kwargs)
                model_kwargs: dict[str, Any] = {"dtype": dtype, **self.model_kwargs}
                if _HAS_ACCELERATE:  # straight onto the device, without a full copy on the CPU first
                    model_kwargs.setdefault("device_map", str(device))
                if self.attn_implementation:
                    model_kwargs["attn_implementation"] = self.attn_implementation
                model = AutoModelForImageTextToText.from_pretrained(source, **common, **model_kwargs)
            except (OSError, ValueError) as e:
                raise ModelLoadError(self.name, _load_hint(self.model_id, e)) from e
            if "device_map" not in model_kwargs:
                model = model.to(device)
            self.processor = processor
            self.hf_model = model.eval()
            logger.info("loaded %s on %s (%s)", self.model_id, device, dtype)

    # ----------------------------------------------------------------- generation
    async def complete(self, request: LLMRequest) -> Completion:
        """Generate a reply on the worker thread.

        Raises:
            ModelLoadError: The model could not be loaded.
            LLMBackendError: Generation ran out of device memory.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="transformers-llm")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._complete_sync, request)

    def close(self) -> None:
        """Stop the worker thread (the model stays loaded)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _tools_for(self, request: LLMRequest, messages: list[dict[str, Any]]) -> list[dict] | None:
        tools = request.tools if self.native_tools else None
        if tools and not self._tools_checked:
            self._tools_checked = True
            with_tools = self.processor.apply_chat_template(messages, tools=tools, tokenize=False)
            without = self.processor.apply_chat_template(messages, tokenize=False)
            if with_tools == without:
                logger.warning(
                    "the chat template of %s ignores tools: use the text tool protocol with this model",
                    self.model_id,
                )
        return tools

    def _generation_config(self, request: LLMRequest) -> Any:
        s = request.sampling
        config = copy.deepcopy(self.hf_model.generation_config)
        config.max_new_tokens = s.max_tokens
        if s.temperature is not None:  # None: the model's own generation config decides
            config.do_sample = s.temperature > 0
            if config.do_sample:
                config.temperature = s.temperature
        if config.do_sample and s.top_p is not None:
            config.top_p = s.top_p
        return config

    def _complete_sync(self, request: LLMRequest) -> Completion:
        import torch

        self.load()
        messages = to_hf_messages(request.messages)
        inputs = self.processor.apply_chat_template(
            messages,
            tools=self._tools_for(request, messages),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
        )
        model = self.hf_model
        inputs = inputs.to(device=model.device, dtype=model.dtype)
        config = self._generation_config(request)
        if config.do_sample and request.sampling.seed is not None:
            torch.manual_seed(request.sampling.seed)
        prompt_len = int(inputs["input_ids"].shape[1])
        try:
            with torch.inference_mode():
                output = model.generate(**inputs, generation_config=config)
        except torch.OutOfMemoryError as e:
            raise LLMBackendError(self.name, f"out of device memory while generating: {e}") from e
        new_tokens = output[0, prompt_len:].tolist()
        eos = config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        stop_at = next((i for i, t in enumerate(new_tokens) if t in eos_ids), None)
        used = new_tokens if stop_at is None else new_tokens[:stop_at]
        text = self.processor.tokenizer.decode(used, skip_special_tokens=True)
        return Completion(
            text=text,
            usage=Usage(prompt_tokens=prompt_len, completion_tokens=len(used) + (stop_at is not None)),
            attempts=1,
            model=self.model_id,
            finish_reason="length" if stop_at is None else "stop",
        )
