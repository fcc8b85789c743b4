"""Command-line options shared by ``sam3agent run``, ``python -m evals ... run`` and the servers.

One place defines how a user names the LLM backend, SAM 3 and the agent's budgets, and how those
options become objects, so every entry point accepts the same flags with the same defaults.

Weight-loading progress bars (transformers' and huggingface_hub's) show only with ``-v`` (or
``--log-level debug``) or when stderr is a terminal, so logs and CI output stay free of them.

Defaults come from environment variables when a flag is absent:

=============================  =========================================  ================================
variable                       flag                                       default
=============================  =========================================  ================================
``SAM3AGENT_LLM_BASE_URL``     ``--llm-base-url``                         ``http://localhost:8000/v1``
``SAM3AGENT_MODEL``            ``--model``                                ``Qwen/Qwen2.5-VL-7B-Instruct``
``SAM3AGENT_API_KEY_ENV``      ``--api-key-env``                          ``OPENAI_API_KEY``
``SAM3AGENT_SAM3``             ``--sam3``                                 ``facebook/sam3``
``SAM3AGENT_DEVICE``           ``--device``                               cuda when available, else cpu
=============================  =========================================  ================================
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sam3agent.config import AgentConfig
    from sam3agent.llm.base import LLM
    from sam3core.engine import Sam3Engine
    from sam3core.tracker import Sam3Tracker

DEFAULT_BASE_URL = "http://localhost:8000/v1"
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
DEFAULT_SAM3 = "facebook/sam3"

ENV = {
    "llm_base_url": "SAM3AGENT_LLM_BASE_URL",
    "model": "SAM3AGENT_MODEL",
    "api_key_env": "SAM3AGENT_API_KEY_ENV",
    "sam3": "SAM3AGENT_SAM3",
    "device": "SAM3AGENT_DEVICE",
}


def _env(key: str, default: str | None) -> str | None:
    return os.environ.get(ENV[key]) or default


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the LLM, SAM 3 and agent option groups to ``parser``."""
    llm = parser.add_argument_group("LLM backend (an OpenAI-compatible endpoint, or --llm-local)")
    llm.add_argument("--llm-base-url", default=None, metavar="URL",
                     help=f"OpenAI-compatible endpoint, e.g. a vLLM server (env {ENV['llm_base_url']}; "
                          f"default {DEFAULT_BASE_URL})")
    llm.add_argument("--model", default=None, metavar="NAME",
                     help=f"model name served there, or the model id for --llm-local (env {ENV['model']}; "
                          f"default {DEFAULT_MODEL})")
    llm.add_argument("--api-key-env", default=None, metavar="VAR",
                     help=f"environment variable holding the API key (env {ENV['api_key_env']}; default "
                          "OPENAI_API_KEY; a local vLLM needs none)")
    llm.add_argument("--llm-local", default=None, metavar="MODEL",
                     help="run the MLLM in-process with transformers instead (hub id or local directory)")
    llm.add_argument("--llm-timeout", type=float, default=120.0, metavar="S", help="per-call timeout (default 120)")
    llm.add_argument("--llm-retries", type=int, default=3, metavar="N", help="retries of a failed call (default 3)")
    llm.add_argument("--llm-max-concurrency", type=int, default=None, metavar="N",
                     help="LLM calls in flight at once across all agents of this process")
    llm.add_argument("--llm-cache", default=None, metavar="PATH",
                     help="record/replay completions in this JSONL file (reproducible reruns)")
    llm.add_argument("--llm-cache-mode", choices=["auto", "replay", "record"], default="auto",
                     help="auto: replay hits and record misses; replay: fail on a miss")
    sam = parser.add_argument_group("SAM 3")
    sam.add_argument("--sam3", default=None, metavar="PATH_OR_ID",
                     help=f"SAM 3 weights: hub id (gated) or local directory (env {ENV['sam3']}; "
                          f"default {DEFAULT_SAM3})")
    sam.add_argument("--device", default=None, help=f"cuda or cpu (env {ENV['device']}; default: cuda if available)")
    sam.add_argument("--dtype", default=None, help="bfloat16 / float16 / float32 (default: bf16 on cuda)")
    sam.add_argument("--sam3-tracker", default=None, metavar="PATH_OR_ID",
                     help="SAM 3 tracker weights for --tools segment_at: hub id or a directory written by "
                          "Sam3TrackerModel.save_pretrained (default: the --sam3 source; facebook/sam3 holds them)")
    agent = parser.add_argument_group("agent")
    agent.add_argument("--protocol", choices=["text", "native"], default=None,
                       help="tool-call protocol: text <tool> blocks (default, any model) or native tool_calls")
    agent.add_argument("--preset", choices=["default", "paper"], default="default",
                       help="default (our best settings) or paper (the reference implementation's, knob by knob; "
                            "see docs/reference-parity.md)")
    agent.add_argument("--system-prompt", type=Path, default=None, metavar="FILE",
                       help="use this file as the main-loop system prompt, verbatim (e.g. the reference's own)")
    agent.add_argument("--verify-prompt", type=Path, default=None, metavar="FILE",
                       help="use this file as the verification system prompt, verbatim")
    agent.add_argument("--max-turns", type=int, default=None, metavar="N", help="main-loop LLM call budget")
    agent.add_argument("--temperature", type=float, default=None, help="sampling temperature (default 0)")
    agent.add_argument("--seed", type=int, default=None, help="sampling seed sent with every call (default 0)")
    agent.add_argument("--timeout", type=float, default=None, metavar="S", help="wall-clock limit of one run")
    agent.add_argument("--score-threshold", type=_unit_interval, default=None, metavar="T",
                       help="SAM 3 score threshold of segment_phrase (default 0.5)")
    agent.add_argument("--max-masks", type=positive_int, default=None, metavar="N",
                       help="keep at most N masks per phrase (default 100; paper: no cap)")
    agent.add_argument("--overlap-iom", type=_overlap, default=None, metavar="T|off",
                       help="drop a mask whose overlap covers more than T of the smaller of it and a "
                            "higher-scoring mask (default 0.3); off keeps overlapping masks")
    agent.add_argument("--tools", type=tool_list, default=None, metavar="NAME[,NAME]",
                       help="extra tools for the model, off by default: segment_like (find every object like a "
                            "current mask, SAM 3's exemplar prompt), segment_at (one object at pixel coordinates the "
                            "model gives; also loads SAM 3's tracker, see --sam3-tracker)")


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from e
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _overlap(text: str) -> float | str:
    """argparse type of ``--overlap-iom``: a number in [0, 1], or ``off``."""
    return "off" if text.strip().lower() == "off" else _unit_interval(text)


def tool_list(text: str) -> tuple[str, ...]:
    """argparse type of ``--tools``: comma-separated extra tool names (``""``: none)."""
    from sam3agent.tools import canonical_extras

    try:
        return canonical_extras(part.strip() for part in text.split(",") if part.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from e
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def build_config(args: argparse.Namespace) -> AgentConfig:
    """The :class:`AgentConfig` the options describe."""
    from sam3agent.config import AgentConfig
    from sam3agent.llm.base import SamplingConfig

    overrides: dict[str, Any] = {}
    if args.protocol:
        overrides["protocol"] = args.protocol
    if args.max_turns is not None:
        overrides["max_llm_calls"] = args.max_turns
    if args.timeout is not None:
        overrides["timeout_s"] = args.timeout
    for name in ("score_threshold", "max_masks"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if getattr(args, "tools", None):
        overrides["tools"] = args.tools
    overlap = getattr(args, "overlap_iom", None)
    if overlap is not None:
        overrides["overlap_iom"] = None if overlap == "off" else overlap
    for flag, field in (("system_prompt", "system_prompt_file"), ("verify_prompt", "verify_prompt_file")):
        if getattr(args, flag, None) is not None:
            overrides[field] = getattr(args, flag)
    sampling: dict[str, Any] = {}
    if args.temperature is not None:
        sampling["temperature"] = args.temperature
    if args.seed is not None:
        sampling["seed"] = args.seed
    config = AgentConfig.preset(args.preset, **overrides)
    if sampling:  # on top of the preset's sampling, not instead of it
        config = config.model_copy(update={"sampling": SamplingConfig(**{**config.sampling.model_dump(), **sampling})})
    try:
        config.load_prompts()  # a missing or unreadable prompt file is reported now, before loading models
    except FileNotFoundError as e:
        raise ValueError(str(e)) from e
    return config


def llm_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved backend settings (env defaults applied), JSON-safe, without secrets."""
    if args.llm_local:
        return {"kind": "transformers", "model": args.llm_local}
    return {
        "kind": "openai_compatible",
        "base_url": args.llm_base_url or _env("llm_base_url", DEFAULT_BASE_URL),
        "model": args.model or _env("model", DEFAULT_MODEL),
        "api_key_env": args.api_key_env or _env("api_key_env", "OPENAI_API_KEY"),
    }


def _is_truthy(value: str) -> bool:
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def show_progress_bars(args: argparse.Namespace) -> bool:
    """Whether weights load with progress bars: with ``-v``, ``--log-level debug``, or stderr a terminal."""
    if getattr(args, "verbose", 0) or getattr(args, "log_level", None) == "debug":
        return True
    forced = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    if forced is not None:  # the user's own setting wins over the terminal test
        return not _is_truthy(forced)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty()) if callable(isatty) else False


def configure_progress_bars(args: argparse.Namespace) -> None:
    """Switch transformers' and huggingface_hub's progress bars on or off, as :func:`show_progress_bars` says.

    The switch is process-wide, so each command sets it both ways (an earlier quiet command in the same
    process must not silence a later ``-v`` one); ``HF_HUB_DISABLE_PROGRESS_BARS=1`` keeps them off.
    """
    from transformers.utils import logging as hf_logging

    if show_progress_bars(args) and not _is_truthy(os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "")):
        hf_logging.enable_progress_bar()
    else:
        hf_logging.disable_progress_bar()  # huggingface_hub's bars (downloads) too


def build_llm(args: argparse.Namespace, *, prompt_version: str = "") -> LLM:
    """The LLM backend the options describe (wrapped in a record/replay cache with ``--llm-cache``)."""
    settings = llm_settings(args)
    llm: LLM
    if settings["kind"] == "transformers":
        from sam3agent.llm.transformers_local import TransformersLLM

        configure_progress_bars(args)
        llm = TransformersLLM(settings["model"], device=args.device or _env("device", None), dtype=args.dtype,
                              local_files_only=_local_files_only(settings["model"]))
    else:
        from sam3agent.llm.openai_compat import OpenAICompatibleLLM

        llm = OpenAICompatibleLLM(settings["base_url"], settings["model"], api_key_env=settings["api_key_env"],
                                  timeout=args.llm_timeout, max_retries=args.llm_retries,
                                  max_concurrency=args.llm_max_concurrency)
    if args.llm_cache:
        from sam3agent.llm.caching import CachingLLM

        llm = CachingLLM(llm, args.llm_cache, mode=args.llm_cache_mode, prompt_version=prompt_version)
    return llm


def _local_files_only(model: str) -> bool:
    """Whether ``--llm-local MODEL`` must load from the local hub cache (the hub probed once, see
    :func:`sam3core.loading.plan_hub_access`).

    Raises:
        ModelLoadError: The hub does not answer and the model is not cached (the message names the fix).
    """
    from sam3agent.llm.transformers_local import ModelLoadError
    from sam3core.loading import HubUnavailableError, plan_hub_access, unavailable_hint

    if model.startswith((".", "/", "~")) or model.count("/") > 1 or Path(model).expanduser().exists():
        return False  # a local directory
    try:
        return plan_hub_access(model).local_files_only
    except HubUnavailableError as e:
        raise ModelLoadError(f"transformers:{model}", unavailable_hint(
            model, e.why, local="--llm-local /path/to/model, a directory written by save_pretrained")) from e


def sam3_source(args: argparse.Namespace) -> str:
    """The SAM 3 hub id or directory the options name."""
    return args.sam3 or _env("sam3", DEFAULT_SAM3) or DEFAULT_SAM3


def build_engine(args: argparse.Namespace, **kwargs: Any) -> Sam3Engine | Sam3Tracker:
    """Load SAM 3 as the options say (raises ``Sam3LoadError`` naming the fix).

    With ``--tools segment_at`` the engine comes wrapped in a :class:`sam3core.tracker.Sam3Tracker`
    (SAM 3's tracker from ``--sam3-tracker``, default the ``--sam3`` source, sharing the engine's
    ViT trunk), which stands in for the engine everywhere and also segments at points and boxes.
    """
    from sam3core.engine import Sam3Engine

    configure_progress_bars(args)
    engine = Sam3Engine.from_pretrained(sam3_source(args), device=args.device or _env("device", None),
                                        dtype=args.dtype, **kwargs)
    if "segment_at" not in (getattr(args, "tools", None) or ()):
        return engine
    from sam3core.tracker import Sam3Tracker

    try:
        return Sam3Tracker.from_pretrained(getattr(args, "sam3_tracker", None) or sam3_source(args), engine)
    except BaseException:
        engine.close()
        raise
