"""A run directory on disk: its lock, its manifest, its per-sample log and atomic file writes.

Layout of ``RUN_DIR``::

    manifest.json      what the run is (config, packages, model ids, prompt hash, dataset, shard)
    samples.jsonl      one JSON line per finished sample (appended, flushed and fsynced)
    masks/<id>.png     the predicted mask of each finished sample (written before its line)
    trajectories/<id>/ optional: AgentResult.save() of each sample
    overlays/<id>.jpg  optional: ground truth beside the prediction
    summary.json       written at the end of a run (and by ``merge``)
    summary.md
    .lock              held (fcntl.flock) by the one process working in the directory

Crash safety: a sample's files are complete before its line is appended, and a line is the last
thing written for a sample, so after a crash the log holds only finished samples, except perhaps a
torn last line, which :meth:`SampleLog.load` cuts off (the runner's log also cuts a last line that
is JSON but not a whole record; such a line elsewhere means the file is damaged).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from evals.errors import EvalInputError
from evals.records import record_problem

logger = logging.getLogger(__name__)

RECORD_SCHEMA_VERSION = 1
"""``schema_version`` of every ``samples.jsonl`` line."""

INFO_KEY = "info"
"""Manifest section that is recorded but never compared (paths, command line, start time)."""


class RunDirError(EvalInputError):
    """The run directory cannot be used as asked (locked, set up differently, corrupt)."""


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


# ----------------------------------------------------------------------------- lock


class RunLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``RUN_DIR/.lock`` for the life of a run.

    The lock belongs to the open file, so it is released when the process ends, however it ends.

    Example:
        >>> with RunLock(RunPaths(Path("runs/val"))):  # doctest: +SKIP
        ...     ...

    Raises:
        RunDirError: On entry, if another process holds the lock.
    """

    def __init__(self, paths: RunPaths) -> None:
        self.paths = paths
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"another process (pid {holder}) is working in {self.paths.root} (it holds "
                f"{self.paths.lock}); wait for it to finish, or pass a different --out"
            ) from e
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ----------------------------------------------------------------------------- manifest


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


# ----------------------------------------------------------------------------- samples.jsonl


class SampleLog:
    """``samples.jsonl``: one JSON object per line, appended and fsynced one sample at a time.

    Args:
        path: The file (created on the first append).
        complete: Require whole sample records (see :func:`~evals.records.record_problem`) rather
            than just a string ``id``; an incomplete last line is then cut off like a torn one.
    """

    def __init__(self, path: Path, *, complete: bool = False) -> None:
        self.path = path
        self.complete = complete
        self._file: Any = None

    def load(self, *, repair: bool = True) -> list[dict[str, Any]]:
        """Read every complete line; a torn last line (a crash mid-write) is cut off the file.

        Args:
            repair: Truncate a torn last line; when False, a torn last line is an error and the
                file is left as it is (for readers of another run's directory).

        Returns:
            The records in file order.

        Raises:
            RunDirError: If a line other than the last is not a sample record (see ``complete``),
                or the last one, without ``repair``.
        """
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        records: list[dict[str, Any]] = []
        offset, number = 0, 0
        while offset < len(raw):
            newline = raw.find(b"\n", offset)
            end = len(raw) if newline < 0 else newline + 1
            line, number = raw[offset:end], number + 1
            record, problem = _parse_line(line, self.complete)
            if record is None or not line.endswith(b"\n"):
                problem = problem if record is None else "it has no newline (the write was cut)"
                if end == len(raw) and repair:
                    logger.warning("%s: dropping a torn or incomplete last line (%d bytes: %s); that sample "
                                   "runs again", self.path, len(line), problem)
                    with open(self.path, "r+b") as f:
                        f.truncate(offset)
                        f.flush()
                        os.fsync(f.fileno())
                    break
                raise RunDirError(
                    f"{self.path} line {number} is not a sample record ({problem}); the file is damaged. "
                    "Move it away to start over, or remove that line to keep the others"
                )
            records.append(record)
            offset = end
        return records

    def rewrite(self, records: Sequence[dict[str, Any]]) -> None:
        """Replace the file's content with ``records`` (atomically)."""
        self.close()
        atomic_write_text(self.path, "".join(_line(r) for r in records))

    def append(self, record: dict[str, Any]) -> None:
        """Append one record as a line, then flush and fsync."""
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "ab")  # noqa: SIM115 - kept open across appends, closed by close()
        self._file.write(_line(record).encode("utf-8"))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the append handle (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def _line(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"


def _parse_line(line: bytes, complete: bool) -> tuple[dict[str, Any] | None, str]:
    """The record of one line, or ``None`` and what is wrong with it (see :class:`SampleLog`)."""
    try:
        value = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        return None, f"not JSON: {e}"
    if not isinstance(value, dict):
        return None, f"a JSON {type(value).__name__}, not an object"
    if not complete:
        return (value, "") if isinstance(value.get("id"), str) else (None, "no string id")
    problem = record_problem(value)
    return (None, problem) if problem else (value, "")


def latest_by_id(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each id (a retried sample's newest line wins)."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        out.pop(r["id"], None)
        out[r["id"]] = r
    return out


@contextlib.contextmanager
def open_log(paths: RunPaths) -> Iterator[SampleLog]:
    """A :class:`SampleLog` on ``paths.samples`` (``complete=True``) that is closed on exit."""
    log = SampleLog(paths.samples, complete=True)
    try:
        yield log
    finally:
        log.close()
