"""The files of a run directory and how they are written: atomically, fsynced, then renamed."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.errors import RunDirError


@dataclass(frozen=True)
class RunPaths:
    """The files of a run directory.

    Attributes:
        root: The run directory.
    """

    root: Path

    @property
    def manifest(self) -> Path:
        """``manifest.json``."""
        return self.root / "manifest.json"

    @property
    def samples(self) -> Path:
        """``samples.jsonl``."""
        return self.root / "samples.jsonl"

    @property
    def lock(self) -> Path:
        """``.lock``."""
        return self.root / ".lock"

    @property
    def masks(self) -> Path:
        """``masks/``."""
        return self.root / "masks"

    @property
    def trajectories(self) -> Path:
        """``trajectories/``."""
        return self.root / "trajectories"

    @property
    def overlays(self) -> Path:
        """``overlays/``."""
        return self.root / "overlays"

    @property
    def summary_json(self) -> Path:
        """``summary.json``."""
        return self.root / "summary.json"

    @property
    def summary_md(self) -> Path:
        """``summary.md``."""
        return self.root / "summary.md"

    def mask(self, sample_id: str) -> Path:
        """``masks/<id>.png``."""
        return self.masks / f"{sample_id}.png"

    def remove_stale_temporaries(self) -> int:
        """Delete temporary files a killed process left behind (call with the lock held); return the count."""
        stale = [p for d in (self.root, self.masks, self.overlays) for p in d.glob(".*.tmp")]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)


# ----------------------------------------------------------------------------- atomic files


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The bytes go to a temporary file in the same folder, which is fsynced and then renamed over
    ``path`` with ``os.replace``; the folder is created if needed.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json_file(path: Path, what: str) -> Any:
    """Read a JSON file written by a run.

    Raises:
        RunDirError: If it is missing or not valid JSON.
    """
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise RunDirError(f"{what} {path} not found; is this a run directory?") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"cannot read {what} {path}: {e}") from e
