"""Environment checks behind ``sam3agent doctor``: each says what it found and, when it fails, the fix.

Checks: the Python version; the torch/torchvision pair; the CUDA device and its free memory; that the
SAM 3 weights (and an in-process MLLM's) are reachable without downloading them (a local directory,
the local hub cache, or gated hub access when online); and that the LLM endpoint answers and lists
the named model (only a warning when it does not: ``run`` then warns the same way, see
:func:`unlisted_model`). Nothing here prints or downloads weights; :func:`probe_endpoint` is also the
``run`` command's pre-flight check.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from sam3core.loading import hub_cached, hub_offline, looks_like_path

logger = logging.getLogger(__name__)

Level = Literal["ok", "warn", "fail"]
_MIN_FREE_GIB = 4.0
MIN_PYTHON = (3, 11)


@dataclass(frozen=True)
class Check:
    """The outcome of one check.

    Attributes:
        name: What was checked.
        level: ``ok``, ``warn`` (works, with a caveat) or ``fail``.
        detail: What was found.
        fix: What to do about it (empty when nothing needs doing).
    """

    name: str
    level: Level
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class EndpointProbe:
    """What ``GET /models`` at an OpenAI-compatible endpoint told.

    Attributes:
        reachable: Something answered HTTP there.
        models: The model ids it serves (``None`` when it did not list them).
        error: Why it is unreachable or did not list its models.
        status: The HTTP status of a refused listing, if any.
    """

    reachable: bool
    models: list[str] | None = None
    error: str = ""
    status: int | None = None


def vllm_command(model: str, base_url: str | None = None) -> str:
    """The ``vllm serve`` command line that serves ``model`` where ``base_url`` points."""
    port = urlsplit(base_url).port if base_url else None
    port_flag = f" --port {port}" if port and port != 8000 else ""
    return f"vllm serve {model} --limit-mm-per-prompt '{{\"image\": 3}}' --max-model-len 32768{port_flag}"


def probe_endpoint(base_url: str, *, api_key: str | None = None, timeout: float = 5.0) -> EndpointProbe:
    """Ask an OpenAI-compatible endpoint which models it serves (``GET /models``, no retries).

    Args:
        base_url: The API root, e.g. ``http://localhost:8000/v1``.
        api_key: Sent as the bearer token (``"EMPTY"`` when ``None``, as a local vLLM expects).
        timeout: Seconds to wait for an answer.

    Returns:
        The :class:`EndpointProbe`.
    """
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout, max_retries=0)
    try:
        models = [m.id for m in client.models.list().data]
    except openai.APIConnectionError as e:  # refused, DNS, timeout: nothing answers
        cause = e.__cause__ or e
        return EndpointProbe(False, error=f"{type(cause).__name__}: {cause}")
    except openai.APIStatusError as e:
        return EndpointProbe(True, error=f"HTTP {e.status_code}: {e.message}", status=e.status_code)
    finally:
        client.close()
    return EndpointProbe(True, models=models)


def model_served(model: str, models: list[str]) -> bool:
    """Whether ``model`` is among the listed ids (also as ``models/<name>``, Gemini's form)."""
    return model in models or f"models/{model}" in models


def unlisted_model(model: str, models: list[str], *, subject: str = "it") -> tuple[str, str]:
    """What ``doctor`` and ``run`` both say when the endpoint does not list ``model``: ``(detail, fix)``.

    Only a warning: gateways and aliases answer to names they do not list. A server that then
    refuses the name answers 404, which the run reports with the served models.

    Args:
        model: The ``--model`` name.
        models: The ids the endpoint lists.
        subject: How the detail names the endpoint (``run`` names its URL).
    """
    listed = ", ".join(models) or "none"
    return (f"{subject} does not list {model!r} among its models; it serves: {listed}",
            "pass --model one of those names, or serve that model there (a server that also answers to "
            "unlisted names, e.g. a gateway or an alias, still works)")


def check_python(version_info: tuple[int, ...] | None = None) -> Check:
    """Python 3.11 or newer (``version_info``: default the running interpreter's)."""
    info = tuple(version_info or sys.version_info)
    version = ".".join(str(v) for v in info[:3])
    if info[:2] < MIN_PYTHON:
        return Check("Python", "fail", f"Python {version}", "use Python 3.11 or newer (a new venv with it)")
    return Check("Python", "ok", f"Python {version} ({sys.executable})")


def check_torch() -> Check:
    """torch and torchvision import and work together (see :func:`sam3core.loading.check_torch_stack`)."""
    from sam3core.loading import Sam3LoadError, check_torch_stack

    try:
        versions = check_torch_stack()
    except Sam3LoadError as e:
        return Check("torch stack", "fail", str(e),
                     "pip install --force-reinstall torch torchvision  (a matching pair from one index)")
    return Check("torch stack", "ok", ", ".join(f"{k} {v}" for k, v in versions.items()))


def check_cuda() -> Check:
    """A CUDA device and its free memory (a warning without one: SAM 3 then runs on CPU)."""
    try:
        import torch
    except Exception as e:  # torch's own import failure is reported by check_torch
        return Check("GPU", "fail", f"torch cannot be imported ({type(e).__name__})", "see the torch stack check")
    if not torch.cuda.is_available():
        return Check("GPU", "warn", "no GPU: SAM 3 will run on CPU, slowly",
                     "fine for `sam3agent selftest`; for real use run on a machine with an NVIDIA GPU and a CUDA "
                     "build of torch (nvidia-smi must list the GPU)")
    devices, low = [], []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        gib = free / 2**30
        devices.append(f"cuda:{index} {torch.cuda.get_device_name(index)}, {gib:.1f} of {total / 2**30:.1f} GiB free")
        if gib < _MIN_FREE_GIB:
            low.append(f"cuda:{index}")
    if low:
        return Check("GPU", "warn", "; ".join(devices),
                     f"SAM 3 needs about {_MIN_FREE_GIB:g} GiB free: stop other jobs on {', '.join(low)} or pick "
                     "another device with --device cuda:N")
    return Check("GPU", "ok", "; ".join(devices))


def _check_local_dir(name: str, path: Path, flag: str) -> Check:
    fix = f"pass {flag} a directory written by save_pretrained (with config.json and *.safetensors)"
    if not path.is_dir():
        return Check(name, "fail", f"directory not found: {path}", fix)
    if not (path / "config.json").is_file():
        return Check(name, "fail", f"{path} has no config.json: it is not a saved model", fix)
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        return Check(name, "fail", f"{path} has a config.json but no weight files (*.safetensors)", fix)
    return Check(name, "ok", f"local directory {path}")


def check_weights(source: str, *, what: str = "SAM 3 weights", flag: str = "--sam3") -> Check:
    """Whether a model's weights can be loaded, without downloading them.

    Args:
        source: A local directory or a hub id.
        what: The check's name.
        flag: The command-line flag that names the source (used in fixes).

    Returns:
        ``ok`` for a complete local directory, a cached hub copy, or granted hub access when online.
    """
    name = f"{what} ({source})"
    if looks_like_path(source) or Path(source).expanduser().exists():  # an existing ``sam3`` dir wins over the hub
        return _check_local_dir(name, Path(source).expanduser(), flag)
    cached = hub_cached(source)
    if cached is not None:
        return Check(name, "ok", f"in the local hub cache ({Path(cached).parent})")
    download = (f"on a machine with hub access, accept the licence at https://huggingface.co/{source}, log in "
                f"(`hf auth login`) and run `hf download {source}`; copy that cache here, or pass {flag} a local "
                "directory")
    if hub_offline():
        return Check(name, "fail", "not in the local hub cache and the hub is offline (HF_HUB_OFFLINE is set)",
                     download)
    return _check_hub_access(name, source, flag)


def _check_hub_access(name: str, source: str, flag: str) -> Check:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    api = HfApi()
    login = (f"accept the licence at https://huggingface.co/{source}, then log in with `hf auth login` "
             "(or set HF_TOKEN)")
    try:
        info = api.model_info(source)
        if info.gated:
            api.auth_check(source)
    except GatedRepoError:
        return Check(name, "fail", "gated on the hub and this account has no access", login)
    except RepositoryNotFoundError:
        return Check(name, "fail", "no such model on the hub (or it is private and you are not logged in)",
                     f"check the name, log in with `hf auth login`, or pass {flag} a local directory")
    except Exception as e:  # network failures take many forms (DNS, proxy, TLS); report, never crash
        return Check(name, "fail", f"cannot reach the hub ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                     f"check the network, or set HF_HUB_OFFLINE=1 and pass {flag} a local directory")
    return Check(name, "ok", "not cached yet; hub access granted: the weights download on first use")


def check_endpoint(base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                   timeout: float = 5.0) -> Check:
    """The LLM endpoint answers and lists ``model`` (a warning naming the models it serves when it does not)."""
    name = f"LLM endpoint ({base_url})"
    probe = probe_endpoint(base_url, api_key=os.environ.get(api_key_env), timeout=timeout)
    if not probe.reachable:
        return Check(name, "fail", f"nothing answers at {base_url} ({probe.error})",
                     f"start vLLM with `{vllm_command(model, base_url)}` (in its own environment), or pass "
                     "--llm-base-url the URL of a running OpenAI-compatible server")
    if probe.status in (401, 403):
        return Check(name, "fail", f"it refused the API key ({probe.error})",
                     f"put the key in ${api_key_env}, or name its variable with --api-key-env")
    if probe.models is None:
        return Check(name, "warn", f"it answers but does not list its models ({probe.error})",
                     "check that --llm-base-url ends with the API root (usually /v1)")
    if not model_served(model, probe.models):
        return Check(name, "warn", *unlisted_model(model, probe.models))
    return Check(name, "ok", f"serves {', '.join(probe.models) or 'none'}")


def run_doctor(*, sam3: str, llm: dict[str, Any], timeout: float = 5.0) -> list[Check]:
    """Run every check.

    Args:
        sam3: The SAM 3 hub id or directory.
        llm: The backend settings of :func:`sam3agent.backends.llm_settings`.
        timeout: Seconds to wait for the LLM endpoint.

    Returns:
        The checks, in order.
    """
    checks = [check_python(), check_torch(), check_cuda(), check_weights(sam3)]
    if llm.get("kind") == "transformers":
        checks.append(check_weights(llm["model"], what="in-process MLLM weights", flag="--llm-local"))
    else:
        checks.append(check_endpoint(llm["base_url"], llm["model"], api_key_env=llm.get("api_key_env")
                                     or "OPENAI_API_KEY", timeout=timeout))
    for check in checks:
        logger.debug("doctor: %s %s: %s", check.level, check.name, check.detail)
    return checks
