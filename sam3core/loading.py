"""Loading SAM 3 weights and checking the torch stack, with errors that name the fix."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/sam3"


class Sam3LoadError(RuntimeError):
    """SAM 3 could not be loaded; the message says why and what to do."""


def check_torch_stack() -> dict[str, str]:
    """Check that torch and torchvision import and form a working pair.

    Returns:
        ``{"torch": version, "torchvision": version, "transformers": version}``.

    Raises:
        Sam3LoadError: Naming the broken pair and the reinstall command. (Without this check
            transformers only says "Could not import module 'Sam3Model'".)
    """
    try:
        import torch
    except Exception as e:  # any import failure of torch is the user's environment
        raise Sam3LoadError(f"torch cannot be imported ({e}); install it: pip install torch torchvision") from e
    try:
        import torchvision
        from torchvision.ops import roi_align  # SAM 3's geometry encoder needs this operator

        roi_align(torch.zeros(1, 1, 2, 2), [torch.zeros(1, 4)], output_size=1)
    except Exception as e:  # a mismatched pair fails in many different ways
        raise Sam3LoadError(
            f"torch {torch.__version__} and torchvision do not work together ({type(e).__name__}: {e}). "
            "They must be a matching pair from the same index, e.g. "
            "`pip install --force-reinstall torch torchvision` (PyPI's builds also run on CPU); "
            "a CPU-only torch wheel does not work with PyPI's torchvision."
        ) from e
    import transformers

    return {"torch": torch.__version__, "torchvision": torchvision.__version__,
            "transformers": transformers.__version__}


def resolve_device_dtype(device: str | None, dtype: str | object | None) -> tuple[object, object]:
    """Pick ``(torch.device, torch.dtype)``: cuda + bfloat16 when available, else cpu + float32."""
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device; pass device='cpu'")
    if dtype is None:
        dt = torch.bfloat16 if dev.type == "cuda" else torch.float32
    elif isinstance(dtype, str):
        names = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
                 "fp16": torch.float16, "float32": torch.float32, "fp32": torch.float32}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
        dt = names[dtype]
    else:
        dt = dtype
    return dev, dt


def load_model_and_processor(model: str | os.PathLike[str], *, token: str | None = None,
                             revision: str | None = None, local_files_only: bool | None = None):  # type: ignore[no-untyped-def]
    """Load ``Sam3Model`` + ``Sam3Processor`` from a hub id or a local directory.

    Raises:
        Sam3LoadError: When the weights are missing, gated or unreachable, naming the fixes.
    """
    check_torch_stack()
    from transformers import Sam3Model, Sam3Processor

    source = str(model)
    path = Path(source).expanduser()
    is_local = path.exists()
    looks_like_path = source.startswith((".", "/", "~")) or source.count("/") > 1 or os.sep == "\\"
    if not is_local and looks_like_path:
        raise Sam3LoadError(f"SAM 3 directory not found: {path}. Pass a directory written by "
                            "save_pretrained, or a hub id such as 'facebook/sam3'.")
    if is_local and not (path / "config.json").exists():
        raise Sam3LoadError(f"{path} has no config.json: it is not a saved SAM 3 model. Pass the directory "
                            "that Sam3Model.save_pretrained wrote (with its processor files).")
    kwargs: dict[str, object] = {"token": token, "revision": revision}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        processor = Sam3Processor.from_pretrained(str(path) if is_local else source, **kwargs)
        net = Sam3Model.from_pretrained(str(path) if is_local else source, **kwargs)
    except (OSError, ValueError) as e:  # hub errors (gated, missing, offline) are OSError subclasses
        raise Sam3LoadError(_load_hint(source, is_local, e)) from e
    return net, processor


def _load_hint(source: str, is_local: bool, error: BaseException) -> str:
    if is_local:
        return f"could not load SAM 3 from {source}: {error}"
    return (
        f"could not load SAM 3 weights {source!r} ({type(error).__name__}: {str(error).splitlines()[0]}). "
        "The checkpoint is gated: (1) accept its licence on https://huggingface.co/" + source + " and log in "
        "with `hf auth login` (or set HF_TOKEN), with network access to the hub; or (2) download it elsewhere "
        "and pass the local directory (e.g. --sam3 /path/to/sam3 or Sam3Engine.from_pretrained('/path/to/sam3'))."
    )
