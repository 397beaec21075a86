"""Which prometheus_client multiprocess folder a `fastpost serve` gets, and who owns it.

`fastpost serve` empties its folder before starting (counters of an earlier run would add
to this one's). A second server started with the same data folder used to empty the first
one's files while it ran, and the first server's counters were gone for good. Now a server
holds an exclusive lock on its folder for as long as it runs:
- the default folder (DATA_DIR/metrics) in use: this server takes a folder of its own
  beside it, `DATA_DIR/metrics/serve-PID`, removed by a later start once its server exited;
- a folder named explicitly (FASTPOST_OBSERVABILITY__METRICS_DIR or
  PROMETHEUS_MULTIPROC_DIR) in use: this server refuses to start.

Deliberately free of prometheus_client: it must not be imported before the variable is set.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

# Not *.db or *.lock: those are the files a start removes.
OWNER_FILE = ".serving"
_SUBFOLDER_PREFIX = "serve-"
# Open for the life of the process: the lock goes when the process does, however it ends.
_held: list[IO[str]] = []


class FolderInUse(Exception):
    """An explicitly named metrics folder belongs to a server that is running."""

    def __init__(self, path: Path, pid: str) -> None:
        super().__init__(
            f"the metrics folder {path} belongs to a running fastpost serve (pid {pid or '?'}); "
            "give this one another (FASTPOST_OBSERVABILITY__METRICS_DIR)"
        )


def _try_lock(path: Path) -> IO[str] | None:
    """Lock `path`/OWNER_FILE without waiting; the open file, or None when another holds it."""
    handle = open(path / OWNER_FILE, "a+")  # noqa: SIM115 - kept open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _owner_pid(path: Path) -> str:
    try:
        return (path / OWNER_FILE).read_text().strip()
    except OSError:
        return ""


def _claim(path: Path, handle: IO[str]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _held.append(handle)
    for child in path.iterdir():
        if child.suffix in (".db", ".lock"):
            child.unlink()


def _remove_abandoned_subfolders(path: Path) -> None:
    for child in path.glob(f"{_SUBFOLDER_PREFIX}*"):
        if child.is_dir() and (handle := _try_lock(child)) is not None:
            handle.close()
            shutil.rmtree(child, ignore_errors=True)


def claim_metrics_folder(path: Path, *, explicit: bool) -> Path:
    """Empty and lock the folder this server will use, and return it (see the module)."""
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    handle = _try_lock(path)
    if handle is not None:
        if not explicit:
            _remove_abandoned_subfolders(path)
        _claim(path, handle)
        return path
    if explicit:
        raise FolderInUse(path, _owner_pid(path))
    own = path / f"{_SUBFOLDER_PREFIX}{os.getpid()}"
    own.mkdir(exist_ok=True)
    handle = _try_lock(own)
    assert handle is not None, own  # named after this process: nobody else holds it
    _claim(own, handle)
    return own
