"""``samples.jsonl``: one JSON line per finished sample, appended, flushed and fsynced.

A line is the last thing written for a sample, so after a crash the log holds only finished
samples, except perhaps a torn last line, which :meth:`SampleLog.load` cuts off (with
``complete=True`` it also cuts a last line that is JSON but not a whole record; such a line
elsewhere means the file is damaged).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from evals.errors import RunDirError
from evals.records import record_problem
from evals.rundir.files import RunPaths, atomic_write_text

logger = logging.getLogger(__name__)

RECORD_SCHEMA_VERSION = 1
"""``schema_version`` of every ``samples.jsonl`` line."""


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
                    self._cut(offset, len(line), problem)
                    break
                raise RunDirError(
                    f"{self.path} line {number} is not a sample record ({problem}); the file is damaged. "
                    "Move it away to start over, or remove that line to keep the others"
                )
            records.append(record)
            offset = end
        return records

    def _cut(self, offset: int, size: int, problem: str) -> None:
        """Truncate the file to its first ``offset`` bytes, dropping a last line of ``size`` bytes."""
        logger.warning("%s: dropping a torn or incomplete last line (%d bytes: %s); that sample "
                       "runs again", self.path, size, problem)
        with open(self.path, "r+b") as f:
            f.truncate(offset)
            f.flush()
            os.fsync(f.fileno())

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
