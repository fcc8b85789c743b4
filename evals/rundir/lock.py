"""The lock of a run directory: one process at a time works in it."""

from __future__ import annotations

import fcntl
import os
from types import TracebackType

from evals.errors import RunDirError
from evals.rundir.files import RunPaths


class RunLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``RUN_DIR/.lock`` for the life of a run.

    The lock belongs to the open file, so it is released when the process ends, however it ends.
    The holder's pid is written into the file, so a refused process can name it.

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
