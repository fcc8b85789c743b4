"""Loading SAM 3 weights and checking the torch stack, with errors that name the fix.

A hub id is never left to huggingface_hub's retries (5 per file, about 23 s each, for every file
of a model) when the hub does not answer: :func:`plan_hub_access` probes it once with a short
timeout, honours ``HF_HUB_OFFLINE``, loads a cached copy without the network, and otherwise
fails at once with one message naming the fixes.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "facebook/sam3"
HUB_PROBE_TIMEOUT_S = 5.0
_TRUE = {"1", "ON", "YES", "TRUE"}


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


_DTYPE_NAMES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16",
                "float32": "float32", "fp32": "float32"}


def resolve_device_dtype(device: str | None, dtype: str | torch.dtype | None, *,
                         allow_auto: bool = False) -> tuple[torch.device, torch.dtype | str]:
    """Pick the device and dtype to run a model in: cuda + bfloat16 when CUDA is there, else cpu + float32.

    Args:
        device: ``"cuda"``, ``"cuda:1"``, ``"cpu"``...; ``None`` picks CUDA when torch sees it, else CPU.
        dtype: A ``torch.dtype``, one of the names ``bfloat16``/``bf16``, ``float16``/``fp16``,
            ``float32``/``fp32``, or ``None``: bfloat16 on CUDA, float32 elsewhere.
        allow_auto: Also accept ``"auto"`` (returned as is), which ``from_pretrained`` reads as
            "the dtype the checkpoint was saved in".

    Returns:
        ``(torch.device, torch.dtype)``, or ``(torch.device, "auto")``.

    Raises:
        ValueError: CUDA was asked for and torch sees none, or the dtype name is unknown.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device; pass device='cpu'")
    if dtype is None:
        return dev, torch.bfloat16 if dev.type == "cuda" else torch.float32
    if allow_auto and dtype == "auto":
        return dev, "auto"
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            choices = sorted(_DTYPE_NAMES) + (["auto"] if allow_auto else [])
            raise ValueError(f"unknown dtype {dtype!r}; use one of {choices}")
        return dev, getattr(torch, _DTYPE_NAMES[dtype])
    return dev, dtype


def looks_like_path(source: str | os.PathLike[str]) -> bool:
    """Whether ``source`` is spelled as a filesystem path, which no Hugging Face hub id can be.

    A hub id is ``name`` or ``owner/name``: at most one ``/``, never a leading ``.``, ``/`` or ``~``,
    no backslash, no drive letter. So ``./sam3``, ``/models/sam3``, ``~/sam3``, ``models\\sam3``,
    ``C:/models/sam3`` and ``data/models/sam3`` are paths. Only the spelling is read: ``sam3`` or
    ``models/sam3`` may be a hub id or a relative directory, and callers look on disk for those.

    Args:
        source: What the user passed for a model.

    Returns:
        ``True`` when ``source`` can only be a path.
    """
    text = os.fspath(source)
    return (text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
            or bool(PureWindowsPath(text).drive))


# ----------------------------------------------------------------------------- the hub, asked once


class HubUnavailableError(OSError):
    """A hub model cannot be fetched and is not (completely) in the local hub cache.

    Attributes:
        repo_id: The hub id.
        why: Why the hub is not used, e.g. ``"cannot reach the Hugging Face hub at URL (ConnectError: ...)"``.
    """

    def __init__(self, repo_id: str, why: str) -> None:
        super().__init__(f"{repo_id}: {why}")
        self.repo_id, self.why = repo_id, why


def hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off.

    True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set now, or was set when
    huggingface_hub was imported (which is when huggingface_hub itself reads it).
    """
    if any(os.environ.get(name, "").upper() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The local hub cache huggingface_hub reads (``HF_HUB_CACHE``, default ``$HF_HOME/hub``)."""
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def hub_cached(repo_id: str, revision: str | None = None) -> str | None:
    """The cached ``config.json`` of ``repo_id`` when its weights are cached too, else ``None``."""
    from huggingface_hub import try_to_load_from_cache

    kwargs = {"revision": revision} if revision else {}
    config = try_to_load_from_cache(repo_id, "config.json", **kwargs)
    if not isinstance(config, str):
        return None
    for weights in ("model.safetensors", "model.safetensors.index.json"):
        if isinstance(try_to_load_from_cache(repo_id, weights, **kwargs), str):
            return config
    return None


def probe_timeout() -> float:
    """Seconds :func:`probe_hub` waits: ``HF_HUB_ETAG_TIMEOUT`` when set, else ``HUB_PROBE_TIMEOUT_S``."""
    try:
        return float(os.environ["HF_HUB_ETAG_TIMEOUT"])
    except (KeyError, ValueError):
        return HUB_PROBE_TIMEOUT_S


def _transport_errors(client: object) -> tuple[type[BaseException], ...]:
    """The connection-level errors of the HTTP library behind huggingface_hub's session (httpx or httpx2)."""
    library = sys.modules.get(type(client).__module__.partition(".")[0])
    error = getattr(library, "TransportError", None)
    return (OSError, error) if isinstance(error, type) and issubclass(error, BaseException) else (OSError,)


def probe_hub(endpoint: str | None = None, *, repo_id: str | None = None, timeout: float | None = None) -> str | None:
    """Ask the hub once whether it answers: one ``HEAD`` request, a short timeout, no retries.

    huggingface_hub retries every file of a download 5 times with backoff (about 23 s a file) when
    nothing answers; this probe is how loading learns that in under a second and says so once.

    Args:
        endpoint: The hub URL (default ``HF_ENDPOINT``, i.e. ``https://huggingface.co``).
        repo_id: Ask about this model's page (any HTTP answer counts: 401 and 404 are answers too).
        timeout: Seconds to wait (default :func:`probe_timeout`).

    Returns:
        ``None`` when the hub answered; else why not, e.g. ``"ConnectError: [Errno 111] Connection refused"``.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    root = (endpoint or constants.ENDPOINT).rstrip("/")
    url = f"{root}/api/models/{repo_id}" if repo_id else root
    client = get_session()
    try:
        response = client.head(url, timeout=probe_timeout() if timeout is None else timeout)
    except _transport_errors(client) as e:  # refused, DNS, TLS, proxy, timeout: nothing usable answers
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no answer'}"
    if response.status_code >= 500:  # a proxy or the hub itself is down; downloads would be retried
        return f"it answered HTTP {response.status_code}"
    return None


class HubAccess(NamedTuple):
    """How to load a hub model (see :func:`plan_hub_access`).

    Attributes:
        local_files_only: Load from the local hub cache only, asking the hub nothing.
        why: Why the hub is not used (empty when it is).
    """

    local_files_only: bool
    why: str = ""


def plan_hub_access(repo_id: str, *, revision: str | None = None, local_files_only: bool | None = None) -> HubAccess:
    """Decide, before any download starts, whether loading ``repo_id`` may use the network.

    Args:
        repo_id: A hub id.
        revision: The revision to load (its cached copy counts).
        local_files_only: ``True``: never the network; ``False``: the hub must answer; ``None``
            (default): the hub when it answers, else the local hub cache.

    Returns:
        The :class:`HubAccess`: cache only when ``HF_HUB_OFFLINE`` is set, ``local_files_only`` is
        true, or the hub does not answer (one probe) and a copy is cached.

    Raises:
        HubUnavailableError: The hub does not answer and no copy is cached (or ``local_files_only``
            is ``False``).
    """
    if hub_offline():
        return HubAccess(True, "HF_HUB_OFFLINE is set")
    if local_files_only:
        return HubAccess(True, "local_files_only=True")
    from huggingface_hub import constants

    problem = probe_hub(repo_id=repo_id)
    if problem is None:
        return HubAccess(False)
    why = f"cannot reach the Hugging Face hub at {constants.ENDPOINT} ({problem})"
    if local_files_only is None and hub_cached(repo_id, revision) is not None:
        logger.info("%s; loading %s from the local hub cache (%s)", why, repo_id, hub_cache_dir())
        return HubAccess(True, why)
    raise HubUnavailableError(repo_id, why)


# ----------------------------------------------------------------------------- SAM 3


def load_model_and_processor(model: str | os.PathLike[str], *, token: str | None = None,
                             revision: str | None = None, local_files_only: bool | None = None):  # type: ignore[no-untyped-def]
    """Load ``Sam3Model`` + ``Sam3Processor`` from a hub id or a local directory.

    For a hub id the hub is probed once first (:func:`plan_hub_access`): when it does not answer,
    a cached copy loads without the network, and a missing one fails at once (instead of
    huggingface_hub's minutes of retries).

    Args:
        model: A hub id or a directory written by ``save_pretrained``.
        token: Hub token.
        revision: Hub revision.
        local_files_only: ``True``: never the network; ``False``: the hub must answer; ``None``:
            the hub when it answers, else the local hub cache.

    Returns:
        ``(Sam3Model, Sam3Processor)``.

    Raises:
        Sam3LoadError: When the weights are missing, gated or unreachable, naming the fixes.
    """
    check_torch_stack()
    from transformers import Sam3Model, Sam3Processor

    source = str(model)
    path = Path(source).expanduser()
    is_local = path.exists()
    if not is_local and looks_like_path(source):
        raise Sam3LoadError(f"SAM 3 directory not found: {path}. Pass a directory written by "
                            "save_pretrained, or a hub id such as 'facebook/sam3'.")
    if is_local and not (path / "config.json").exists():
        raise Sam3LoadError(f"{path} has no config.json: it is not a saved SAM 3 model. Pass the directory "
                            "that Sam3Model.save_pretrained wrote (with its processor files).")
    kwargs: dict[str, object] = {"token": token, "revision": revision}
    access = HubAccess(bool(local_files_only))
    if not is_local:
        try:
            access = plan_hub_access(source, revision=revision, local_files_only=local_files_only)
        except HubUnavailableError as e:
            raise Sam3LoadError(unavailable_hint(source, e.why)) from e
        kwargs["local_files_only"] = access.local_files_only
    elif local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    try:
        processor = Sam3Processor.from_pretrained(str(path) if is_local else source, **kwargs)
        net = Sam3Model.from_pretrained(str(path) if is_local else source, **kwargs)
    except (OSError, ValueError) as e:  # hub errors (gated, missing, offline) are OSError subclasses
        if not is_local and access.local_files_only:  # the cache lacks something and the hub is not asked
            partly = f"{type(e).__name__}: {str(e).splitlines()[0]}" if hub_cached(source, revision) else ""
            raise Sam3LoadError(unavailable_hint(source, access.why, partly=partly)) from e
        raise Sam3LoadError(_load_hint(source, is_local, e)) from e
    return net, processor


SAM3_LOCAL = "e.g. --sam3 /path/to/sam3 or Sam3Engine.from_pretrained('/path/to/sam3')"


def unavailable_hint(source: str, why: str, *, partly: str = "", local: str = SAM3_LOCAL) -> str:
    """The message of a hub model that is not fetched (``why``) and not (completely) in the local hub cache.

    Args:
        source: The hub id.
        why: :attr:`HubAccess.why` or :attr:`HubUnavailableError.why`.
        partly: What the load reported when part of the model is cached (empty: none of it is).
        local: How to pass a local directory instead (default: SAM 3's ``--sam3`` and ``from_pretrained``).

    Returns:
        One line: what is missing, why it cannot be fetched, and the fixes.
    """
    where = f"the local hub cache ({hub_cache_dir()})"
    state = f"is only partly in {where} ({partly})" if partly else f"is not in {where}"
    fix = (f"on a machine with hub access, log in with `hf auth login` (a gated model: accept its licence at "
           f"https://huggingface.co/{source} first) and run `hf download {source}`, then copy that cache here; "
           f"or pass a local directory instead ({local})")
    if why.startswith("cannot reach"):
        return (f"{why}, and {source!r} {state}. Fix: restore access to the hub (the network, a proxy in "
                f"HTTPS_PROXY, or a mirror in HF_ENDPOINT); or {fix}. With HF_HUB_OFFLINE=1 nothing tries the hub.")
    if why.startswith("local_files_only"):
        return f"{source!r} {state} and {why}, so it is not downloaded. Fix: {fix}; or drop local_files_only=True."
    return (f"{source!r} {state} and {why}, so it cannot be downloaded. Fix: {fix}; or unset HF_HUB_OFFLINE to "
            "download it with hub access.")


def _load_hint(source: str, is_local: bool, error: BaseException) -> str:
    if is_local:
        return f"could not load SAM 3 from {source}: {error}"
    return (
        f"could not load SAM 3 weights {source!r} ({type(error).__name__}: {str(error).splitlines()[0]}). "
        "The checkpoint is gated: (1) accept its licence on https://huggingface.co/" + source + " and log in "
        "with `hf auth login` (or set HF_TOKEN), with network access to the hub; or (2) download it elsewhere "
        "and pass the local directory (e.g. --sam3 /path/to/sam3 or Sam3Engine.from_pretrained('/path/to/sam3'))."
    )
