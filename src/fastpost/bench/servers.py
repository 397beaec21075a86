"""Server processes for benchmarks: started pinned, waited for, measured, stopped."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# The repository root when running from a checkout (benchmarks/ lives there); servers run
# from it so that `benchmarks.*` app factories import.
ROOT = Path(__file__).resolve().parents[3]
# Importing fastpost takes a few seconds on a busy machine.
READY_TIMEOUT_SECONDS = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
UVICORN_FLAGS = ("--loop", "uvloop", "--http", "httptools", "--no-access-log")


def pin(cpus: Sequence[int] | None) -> list[str]:
    """Return the taskset prefix that pins a command to `cpus` (nothing when None)."""
    return ["taskset", "-c", ",".join(map(str, cpus))] if cpus else []


def _die_with_parent() -> None:
    # Linux only: if the benchmark is killed outright (SIGKILL, no finally), the kernel still
    # stops the servers. PR_SET_PDEATHSIG = 1 survives the exec of taskset and python.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def free_port() -> int:
    """Return a TCP port nobody listens on at the moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_env(extra_paths: Sequence[Path] = ()) -> dict[str, str]:
    """Return this environment without FASTPOST_ and BENCH_ settings, with ROOT importable."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("FASTPOST_", "BENCH_", "PROMETHEUS_MULTIPROC_DIR"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        filter(
            None,
            [str(ROOT), str(ROOT / "src"), *map(str, extra_paths), os.environ.get("PYTHONPATH")],
        )
    )
    return env


class Server:
    """A server process (uvicorn or `fastpost serve`) in its own session, pinned to cores."""

    def __init__(
        self,
        name: str,
        env: dict[str, str],
        cpus: Sequence[int] | int | None,
        log_dir: Path,
        app: str | None = None,
        *,
        workers: int = 1,
        command: Sequence[str] | None = None,
        port: int | None = None,
    ) -> None:
        """Start `app` (a uvicorn factory) with `workers` workers, or `command` as given.

        `command` may contain `{port}`, replaced by the port chosen here.
        """
        self.name = name
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{name}.log"
        if isinstance(cpus, int):
            cpus = [cpus]
        if command is None:
            if app is None:
                raise ValueError("give an app factory or a command")
            command = uvicorn_command(app, port=self.port, workers=workers)
        argv = [*pin(cpus), *(part.format(port=self.port) for part in command)]
        with self.log_path.open("ab") as log:
            # Own session: a Ctrl-C in the terminal reaches only the benchmark, which then
            # stops the servers itself, in order.
            self.process = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    def wait_ready(self, path: str) -> None:
        """Wait until `path` answers 200; fail with the server's log if it never does."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        last_error = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.base_url + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                last_error = str(exc)
            time.sleep(0.1)
        log = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not become ready ({last_error}). Its log:\n{log}")

    def pids(self) -> list[int]:
        """Return the process ids doing the serving: the workers, or the process itself."""
        children = _children(self.process.pid)
        return children or [self.process.pid]

    def cpu_seconds(self) -> float:
        """CPU time the server's processes have used so far (Linux /proc; 0 elsewhere)."""
        return sum(process_cpu_seconds(pid) for pid in {self.process.pid, *self.pids()})

    def stop(self) -> None:
        """Stop the server and its workers: SIGTERM, then SIGKILL after 10 s."""
        if self.process.poll() is None:
            # Signal the process we started, by its id (its group is its own session).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def uvicorn_command(app: str, *, port: int, workers: int = 1) -> list[str]:
    """Return the uvicorn command line every benchmark server shares."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        *UVICORN_FLAGS,
        "--log-level",
        "warning",
    ]


def _children(pid: int) -> list[int]:
    # uvicorn's supervisor starts its workers as direct children (multiprocessing, spawn),
    # beside multiprocessing's resource tracker, which serves nothing.
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    command = Path(f"/proc/{child}/cmdline").read_bytes()
                    if b"resource_tracker" not in command:
                        found.append(int(child))
    return sorted(found)


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of one process so far; 0 when it is gone or not on Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); index 0 here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def fetch(url: str, *, timeout: float = 10) -> bytes:
    """GET `url` and return the body."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Make SIGTERM and SIGHUP unwind like Ctrl-C, so that every `finally` runs."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
