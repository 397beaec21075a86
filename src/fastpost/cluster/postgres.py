"""PostgreSQL servers on loopback, from the machine's own binaries: a primary and streaming
replicas, each in its own folder under a state directory.

Each node lives in `state_dir/NAME/`: `data/` (PGDATA), `postgres.log`, and the node's Unix
socket (so that nothing is written to /var/run/postgresql). The settings every node shares
(WAL for streaming, hot standby) are in `postgresql.conf`; what is a node's own (its port, its
socket folder, a replica's apply delay) is in `data/node.conf`, which `postgresql.conf`
includes last, so that a replica copied from the primary by pg_basebackup rewrites only that.

PostgreSQL refuses to run as root: when we are root (CI, containers) every command runs as
the `postgres` OS user and the node's folder belongs to it; as a normal user (a laptop) the
servers run as that user. Either way the database superuser is `postgres` and loopback
connections are trusted, so URLs carry no password.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

INSTALL_HINT = (
    "PostgreSQL's server binaries (initdb, pg_ctl, pg_basebackup) were not found. "
    "Install them with `apt-get install postgresql` (Debian, Ubuntu), then try again."
)
# Where Debian and Ubuntu install each major version's server binaries.
DEBIAN_BINARIES = Path("/usr/lib/postgresql")
OS_USER_WHEN_ROOT = "postgres"
SUPERUSER = "postgres"
NODE_CONF = "node.conf"


class PostgresMissing(RuntimeError):
    """PostgreSQL's server binaries are not installed."""


class PostgresFailed(RuntimeError):
    """A PostgreSQL command failed; the message carries its output."""


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))


def pg_bindir() -> Path:
    """The newest PostgreSQL server binaries: /usr/lib/postgresql/*/bin, or pg_config's."""
    candidates = sorted(
        (p for p in DEBIAN_BINARIES.glob("*/bin") if (p / "initdb").exists()),
        key=_version_key,
    )
    if candidates:
        return candidates[-1]
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            found = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout.strip()
            if found and (Path(found) / "initdb").exists():
                return Path(found)
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).parent
    raise PostgresMissing(INSTALL_HINT)


@dataclass(frozen=True)
class PgNode:
    name: str  # "primary", "replica-1", ...
    role: Literal["primary", "replica"]
    port: int
    data_dir: Path
    log_file: Path

    @property
    def socket_dir(self) -> Path:
        return self.data_dir.parent

    def url(self, database: str = "postgres", *, driver: str = "postgresql") -> str:
        """postgresql://postgres@127.0.0.1:PORT/DATABASE (pass driver="postgresql+asyncpg"
        for SQLAlchemy)."""
        return f"{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def pid(self) -> int | None:
        """The postmaster's pid from postmaster.pid; None when it is not running."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first_line)
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:  # alive, but another user's
            return pid
        return pid


def _as_root() -> bool:
    return os.geteuid() == 0


def _owner() -> pwd.struct_passwd | None:
    """The OS user servers run as when we are root; None when we run them as ourselves."""
    if not _as_root():
        return None
    try:
        return pwd.getpwnam(OS_USER_WHEN_ROOT)
    except KeyError:
        raise PostgresMissing(
            f"We run as root and there is no `{OS_USER_WHEN_ROOT}` OS user to run PostgreSQL "
            "as (PostgreSQL refuses root). " + INSTALL_HINT
        ) from None


def _give(path: Path) -> None:
    owner = _owner()
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def _run(
    args: Sequence[str | Path],
    *,
    cwd: Path,
    timeout: float = 120,
    check: bool = True,
    detach: bool = False,
) -> subprocess.CompletedProcess[str]:
    owner = _owner()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "PGCONNECT_TIMEOUT": "5",
    }
    extra: dict[str, Any] = {}
    if owner is not None:
        extra = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
        env["HOME"] = owner.pw_dir
    elif "HOME" in os.environ:
        env["HOME"] = os.environ["HOME"]
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=not detach,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL if detach else None,
        stderr=subprocess.DEVNULL if detach else None,
        text=True,
        timeout=timeout,
        # A server outlives the command that started it, and a Ctrl-C meant for us.
        start_new_session=True,
        **extra,
    )
    if check and result.returncode != 0:
        output = ((result.stdout or "") + (result.stderr or "")).strip()
        raise PostgresFailed(f"{Path(args[0]).name} failed ({result.returncode}): {output}")
    return result


def _node(state_dir: Path, name: str, role: Literal["primary", "replica"], port: int) -> PgNode:
    node_dir = Path(state_dir).resolve() / name
    return PgNode(name, role, port, node_dir / "data", node_dir / "postgres.log")


def _prepare_node_dir(state_dir: Path, node: PgNode) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    node_dir = node.data_dir.parent
    node_dir.mkdir(exist_ok=True)
    _give(node_dir)
    if _owner() is not None:
        # The postgres user must reach its folder through ours.
        state_dir.chmod(state_dir.stat().st_mode | 0o111)
        reachable = _run(["test", "-w", node_dir], cwd=Path("/"), check=False)
        if reachable.returncode != 0:
            raise PostgresFailed(
                f"the `{OS_USER_WHEN_ROOT}` OS user cannot write to {node_dir}: a folder above "
                "it is closed to other users; choose a state directory it can reach "
                "(for example under /tmp or the repository)"
            )


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    _give(path)


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _write_node_conf(node: PgNode, extra: Mapping[str, str] | None = None) -> None:
    lines = [
        "# This node's own settings (fastpost.cluster.postgres); included last.",
        f"port = {node.port}",
        f"unix_socket_directories = {_quote(str(node.socket_dir))}",
    ]
    lines += [f"{key} = {value}" for key, value in (extra or {}).items()]
    _write(node.data_dir / NODE_CONF, "\n".join(lines) + "\n")


# Shared by every node: replicas start with a copy of the primary's postgresql.conf.
_SHARED_CONF = """
# fastpost.cluster.postgres: a local primary with streaming replicas.
listen_addresses = '127.0.0.1'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
# A replica that was down a while catches up from the primary's WAL without a slot.
wal_keep_size = '512MB'
hot_standby = on
# Replicas tell the primary which rows their queries still read, so that replay does not
# cancel a read on a replica (at the price of some bloat held back on the primary).
hot_standby_feedback = on
logging_collector = off
include_if_exists = 'node.conf'
"""

_HBA = """# fastpost.cluster.postgres: trust on loopback only, replication included.
local   all          all                 trust
local   replication  all                 trust
host    all          all   127.0.0.1/32  trust
host    replication  all   127.0.0.1/32  trust
"""


def _locale() -> str:
    # C.UTF-8 sorts by code point like C, but knows which characters are letters (full-text
    # search, lower()); it is in glibc since 2.35 and in every Debian.
    found = subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False)
    names = {name.lower().replace("-", "") for name in found.stdout.split()}
    return "C.UTF-8" if "c.utf8" in names else "C"


def _initialised(node: PgNode) -> bool:
    return (node.data_dir / "PG_VERSION").exists()


def init_primary(
    state_dir: Path,
    *,
    port: int,
    name: str = "primary",
    settings: Mapping[str, str] | None = None,
) -> PgNode:
    """Create (initdb) and configure a primary in `state_dir/name`; do not start it.

    Idempotent: an initialised node keeps its data, and gets its port and `settings`
    (extra postgresql.conf lines, such as {"max_connections": "200"}) rewritten."""
    state_dir = Path(state_dir)
    node = _node(state_dir, name, "primary", port)
    _prepare_node_dir(state_dir, node)
    if not _initialised(node):
        bindir = pg_bindir()
        if node.data_dir.exists():  # a half-made folder from an interrupted run
            shutil.rmtree(node.data_dir)
        _run(
            [
                bindir / "initdb",
                "--pgdata",
                node.data_dir,
                "--username",
                SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                _locale(),
                # A local cluster: an OS crash in the next seconds means making it again.
                "--no-sync",
            ],
            cwd=node.data_dir.parent,
        )
        with (node.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(_SHARED_CONF)
        _write(node.data_dir / "pg_hba.conf", _HBA)
    _write_node_conf(node, settings)
    return node


def init_replica(
    primary: PgNode,
    state_dir: Path,
    *,
    port: int,
    name: str,
    apply_delay: str | None = None,
) -> PgNode:
    """Copy the running primary into `state_dir/name` as a streaming replica (pg_basebackup
    -R -X stream); do not start it. `apply_delay` ("2s") sets recovery_min_apply_delay.

    Idempotent: an initialised replica keeps its data and gets its port and delay rewritten."""
    state_dir = Path(state_dir)
    node = _node(state_dir, name, "replica", port)
    _prepare_node_dir(state_dir, node)
    if not _initialised(node):
        if node.data_dir.exists():
            shutil.rmtree(node.data_dir)
        _run(
            [
                pg_bindir() / "pg_basebackup",
                "--pgdata",
                node.data_dir,
                # application_name names the replica in the primary's pg_stat_replication.
                "--dbname",
                f"host=127.0.0.1 port={primary.port} user={SUPERUSER} application_name={name}",
                "--write-recovery-conf",
                "--wal-method",
                "stream",
                # Don't wait for the primary's next scheduled checkpoint (minutes).
                "--checkpoint",
                "fast",
                "--no-sync",
            ],
            cwd=node.data_dir.parent,
        )
    extra = {}
    if apply_delay is not None:
        extra["recovery_min_apply_delay"] = _quote(apply_delay)
    _write_node_conf(node, extra)
    return node


def _pg_ctl(node: PgNode, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return _run(
        [pg_bindir() / "pg_ctl", "--pgdata", node.data_dir, *args],
        cwd=node.data_dir.parent,
        timeout=timeout,
        check=False,
    )


def start(node: PgNode, *, timeout: float = 30) -> None:
    """Start the node (pg_ctl start -w) and wait until it accepts connections."""
    if node.pid() is not None and is_up(node):
        return
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(1, int(deadline - time.monotonic()))
        result = _pg_ctl(
            node,
            "start",
            "--wait",
            "--timeout",
            str(remaining),
            "--log",
            str(node.log_file),
            timeout=remaining + 10,
        )
        if result.returncode == 0:
            break
        # Backends of a postmaster that was just killed may still hold its shared memory
        # for a moment; the next start then succeeds.
        if time.monotonic() >= deadline:
            raise PostgresFailed(
                f"{node.name} did not start: {(result.stdout + result.stderr).strip()}\n"
                f"{_tail(node.log_file)}"
            )
        time.sleep(0.2)
    while not is_up(node):
        if time.monotonic() >= deadline:
            raise PostgresFailed(f"{node.name} does not accept connections\n{_tail(node.log_file)}")
        time.sleep(0.1)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(node: PgNode, *, mode: Literal["fast", "immediate"] = "fast") -> None:
    """Stop the node and wait until it is gone; nothing to do when it is not running."""
    if node.pid() is None:
        return
    result = _pg_ctl(node, "stop", "--wait", "--mode", mode)
    if result.returncode != 0 and node.pid() is not None:
        raise PostgresFailed(f"{node.name} did not stop: {(result.stdout + result.stderr).strip()}")


def kill(node: PgNode) -> None:
    """SIGKILL the postmaster and its backends at once, as a crash would (failure tests)."""
    pid = node.pid()
    if pid is None:
        return
    try:
        # pg_ctl starts the postmaster in a session of its own: its group is its backends.
        group = os.getpgid(pid)
        if group == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while node.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_all(node: PgNode, signum: signal.Signals) -> None:
    """Send `signum` to the postmaster, then to each of its children (backends, background
    workers): each child is the leader of a group of its own (PostgreSQL calls setsid() in
    every child), so one signal to the postmaster's group would reach none of them."""
    pid = node.pid()
    if pid is None:
        raise PostgresFailed(f"{node.name} is not running")
    os.kill(pid, signum)
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signum)


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (Linux: from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def freeze(node: PgNode) -> None:
    """SIGSTOP the postmaster and its backends, as a stuck disk or a partition looks to a
    client: connections stay open and nothing answers (failure tests; `thaw` undoes it)."""
    _signal_all(node, signal.SIGSTOP)


def thaw(node: PgNode) -> None:
    """SIGCONT what `freeze` stopped."""
    _signal_all(node, signal.SIGCONT)


def is_up(node: PgNode) -> bool:
    """Whether the node accepts connections on its port."""
    try:
        result = _run(
            [
                pg_bindir() / "pg_isready",
                "--host",
                "127.0.0.1",
                "--port",
                str(node.port),
                "--timeout",
                "2",
                "--quiet",
            ],
            cwd=Path("/"),
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _query(port: int, sql: str) -> str | None:
    try:
        result = _run(
            [
                pg_bindir() / "psql",
                "--no-psqlrc",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--username",
                SUPERUSER,
                "--dbname",
                "postgres",
                "--tuples-only",
                "--no-align",
                "--field-separator",
                "|",
                "--command",
                sql,
            ],
            cwd=Path("/"),
            check=False,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


_REPLICA_STATE = (
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
    "extract(epoch FROM now() - pg_last_xact_replay_timestamp()), "
    "(SELECT sender_port FROM pg_stat_wal_receiver)"
)


def replay_lag_seconds(node: PgNode) -> float | None:
    """How far a replica's data is behind its primary's, in seconds: 0 when it has replayed
    everything the primary has written; None for a primary or a node that is down."""
    state = _query(node.port, _REPLICA_STATE)
    if not state:
        return None
    in_recovery, replay_lsn, since_replay, sender_port = state.split("|")
    if in_recovery != "t" or not replay_lsn:
        return None
    if sender_port:
        # The primary compares the positions itself (pg_lsn), with its own measure of lag.
        primary = _query(
            int(sender_port),
            f"SELECT pg_current_wal_lsn() <= {_quote(replay_lsn)}::pg_lsn, "
            "(SELECT extract(epoch FROM replay_lag) "
            f"FROM pg_stat_replication WHERE application_name = {_quote(node.name)} LIMIT 1)",
        )
        if primary:
            caught_up, measured = primary.split("|")
            if caught_up == "t":
                return 0.0
            if measured:  # the primary's own measure: WAL flushed there until replayed here
                return float(measured)
    # Behind with the primary out of reach: the age of the last transaction replayed, an
    # upper bound (None when it has replayed none since it started).
    return max(0.0, float(since_replay)) if since_replay else None
