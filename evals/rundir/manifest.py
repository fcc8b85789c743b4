"""``manifest.json``: what a run is, written once and compared when the run is resumed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from evals.errors import RunDirError
from evals.rundir.files import RunPaths, atomic_write_json, read_json_file

logger = logging.getLogger(__name__)

INFO_KEY = "info"
"""Manifest section that is recorded but never compared (paths, command line, start time)."""

_ABSENT = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else json.dumps(value)


def _diff(old: Any, new: Any, key: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new), key=str):
            _diff(old.get(k, _ABSENT), new.get(k, _ABSENT), f"{key}.{k}" if key else str(k), out)
    elif old != new:
        out.append(f"{key} ({_show(old)} -> {_show(new)})")


def manifest_diff(recorded: dict[str, Any], current: dict[str, Any],
                  ignore: Iterable[str] = (INFO_KEY,)) -> list[str]:
    """The dotted keys whose values differ between two manifests (missing on one side included).

    Args:
        recorded: The manifest found in the run directory.
        current: The manifest of the command being run.
        ignore: Top-level sections not compared.

    Returns:
        Keys in sorted order, each as ``key (recorded -> current)`` with JSON values.
    """
    skip = set(ignore)
    out: list[str] = []
    _diff({k: v for k, v in recorded.items() if k not in skip}, {k: v for k, v in current.items() if k not in skip},
          "", out)
    return out


def check_manifest(paths: RunPaths, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Check that a run directory can take a run with this manifest; write nothing.

    Returns:
        The recorded manifest when resuming, None for a new run.

    Raises:
        RunDirError: If the directory holds a manifest that differs (outside ``info``), naming
            every differing key; or samples without a manifest.
    """
    if not paths.manifest.exists():
        if paths.samples.exists():
            raise RunDirError(f"{paths.samples} exists without a manifest.json; pass a new --out")
        return None
    recorded = read_json_file(paths.manifest, "manifest")
    diffs = manifest_diff(recorded, manifest)
    if diffs:
        shown = "; ".join(diffs[:12]) + ("; ..." if len(diffs) > 12 else "")
        raise RunDirError(
            f"{paths.root} holds a run set up differently, so it cannot be resumed: {shown}. "
            "Rerun with the options it was started with, or pass a new --out"
        )
    return recorded  # type: ignore[no-any-return]


def ensure_manifest(paths: RunPaths, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest of a new run, or check that a resumed run was set up the same way.

    Returns:
        The manifest in force (the recorded one when resuming).

    Raises:
        RunDirError: As :func:`check_manifest`.
    """
    recorded = check_manifest(paths, manifest)
    if recorded is None:
        atomic_write_json(paths.manifest, manifest)
        return manifest
    logger.info("resuming the run in %s", paths.root)
    return recorded
