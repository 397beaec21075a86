"""Starting and stopping the cluster's own processes (nginx, redis-server, fastpost).

Each starts in a session of its own, so that its pid is also its process group: stopping the
group stops an instance's uvicorn workers with it, and a Ctrl-C in the terminal that ran
`cluster up` reaches none of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

# One way to find a free port, shared with the benchmarks' servers; re-exported here.
from fastpost.bench.servers import free_port as free_port


def spawn(
    command: Sequence[str], *, env: Mapping[str, str], log_file: Path, cwd: Path | None = None
) -> int:
    """Start `command` in its own session, its output appended to `log_file`; return its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )
    # Nobody waits on the Popen object: `up` exits and leaves the process running. Python
    # would warn at shutdown about a child still running, so drop it from its bookkeeping.
    process.returncode = 0
    return process.pid


def command_line(pid: int) -> str | None:
    """Return the command line of process `pid`, or None when there is no such process (or
    only its zombie). It may be "" for a moment while a server rewrites its title."""
    if Path("/proc/self").exists():
        try:
            state = _stat_fields(Path(f"/proc/{pid}/stat").read_text())[0]
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if state == "Z":
            return None
        return raw.replace(b"\0", b" ").decode(errors="replace").strip()
    result = subprocess.run(
        ["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or None


def _stat_fields(stat: str) -> list[str]:
    # After the command name (which may hold spaces and parentheses): state ppid pgrp ...
    return stat.rsplit(")", 1)[1].split()


def is_running(pid: int | None, marker: str) -> bool:
    """Say whether `pid` runs and is still ours: its command line contains `marker`.

    The marker guards against a pid the system has since given to another process.
    """
    if pid is None:
        return False
    command = command_line(pid)
    # "": redis-server and nginx rewrite their titles as they start; the pid is theirs.
    return command is not None and (command == "" or marker in command)


def stop_group(pid: int, *, marker: str, first: signal.Signals, timeout: float = 15) -> None:
    """Send `first` to the process group `pid`, then SIGKILL it if it outlives `timeout`.

    Does nothing when `pid` is no longer the process we started (see is_running).
    """
    if not is_running(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, first)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    while _group_alive(pid) and time.monotonic() < deadline + 5:
        _reap(pid)
        time.sleep(0.05)


def _group_alive(pgid: int) -> bool:
    """Say whether any process of group `pgid` still runs (zombies do not count: where
    pid 1 does not reap orphans, as in some containers, they linger)."""
    if not Path("/proc/self").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _, group = _stat_fields(stat)[:3]
        if int(group) == pgid and state != "Z":
            return True
    return False


def _reap(pid: int) -> None:
    # Only succeeds for our own children (tests start parts in-process); others are reaped
    # by init once they exit.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_is_free(port: int) -> bool:
    """Say whether `port` on 127.0.0.1 can be bound now."""
    with socket.socket() as sock:
        # As the servers themselves bind: a connection of yesterday in TIME_WAIT is no obstacle.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def accepts(port: int) -> bool:
    """Say whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
