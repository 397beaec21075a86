"""nginx in front of the instances: the configuration rendered from ops/nginx/, and the process.

nginx runs with a prefix of its own under the state directory (`nginx -p DIR -c
DIR/nginx.conf -e logs/error.log`): its pid file, logs and temporary files stay there, and
it needs no write access anywhere else.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from fastpost.cluster import processes
from fastpost.cluster.topology import Part, max_body_bytes

# ops/ sits beside src/ in a checkout; `cluster up` runs from one (see README "Scaling out").
OPS_DIR = Path(__file__).resolve().parents[3] / "ops" / "nginx"
TEMPLATE = OPS_DIR / "fastpost.conf.template"
EXAMPLE = OPS_DIR / "fastpost.conf"
CONF = "nginx.conf"
ERROR_LOG = "logs/error.log"
ACCESS_LOG = "logs/access.json"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
# Debian installs nginx in /usr/sbin, which an ordinary user's PATH often lacks.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
INSTALL_HINT = (
    "nginx (1.19.5 or newer) is not installed. Debian/Ubuntu: "
    "`sudo apt-get install nginx-light` (or `nginx`) "
    "(the service it enables can be stopped: `sudo systemctl disable --now nginx`); "
    "macOS: `brew install nginx`."
)
# The pid file's owner, as nginx writes it in its command line.
MARKER = "nginx"
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


class NginxMissing(RuntimeError):
    pass


class NginxConfigError(RuntimeError):
    pass


def nginx_binary() -> str:
    """Return the path of the nginx executable, or raise NginxMissing saying how to install it."""
    found = shutil.which("nginx", path=SEARCH_PATH)
    if found is None:
        raise NginxMissing(INSTALL_HINT)
    return found


def render(parts: Sequence[Part], *, as_root: bool = False) -> str:
    """Return nginx.conf for the cluster `parts`, from ops/nginx/fastpost.conf.template.

    `as_root`: nginx started by root runs its workers as `nobody`, who may not reach a state
    directory under a private home or /tmp; `user root;` keeps them able to write the
    temporary files of large bodies. Leave it off when nginx is started by anyone else
    (nginx ignores the directive then, with a warning).
    """
    (nginx,) = [p for p in parts if p.kind == "nginx"]
    instances = [p for p in parts if p.kind == "instance"]
    values = {
        "user": "user root;" if as_root else "",
        "port": str(nginx.port),
        "servers": "\n".join(_server_line(p) for p in instances),
        "client_max_body_size": str(max_body_bytes()),
        "tries": str(len(instances)),
    }
    return _fill(TEMPLATE.read_text(), values)


def _server_line(instance: Part) -> str:
    address = f"127.0.0.1:{instance.port}"
    if instance.backup:
        return f"        server {address} backup;"
    # One failure takes an instance out for 5 s; then one request tries it again (and goes
    # to the next instance if it fails). nginx's default is 10 s.
    return f"        server {address} weight={instance.weight} max_fails=1 fail_timeout=5s;"


def _fill(template: str, values: Mapping[str, str]) -> str:
    missing = set(_PLACEHOLDER.findall(template)) - set(values)
    if missing:
        raise KeyError(f"no value for {sorted(missing)} in {TEMPLATE}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def prepare(prefix: Path, parts: Sequence[Part]) -> Path:
    """Write nginx.conf and the folders nginx writes into under `prefix`; return the conf."""
    for name in ("logs", *(f"temp/{d}" for d in TEMP_DIRS)):
        (prefix / name).mkdir(parents=True, exist_ok=True)
    conf = prefix / CONF
    conf.write_text(render(parts, as_root=os.geteuid() == 0))
    return conf


def _command(prefix: Path, *extra: str) -> list[str]:
    prefix = prefix.resolve()
    return [nginx_binary(), "-p", f"{prefix}/", "-c", str(prefix / CONF), "-e", ERROR_LOG, *extra]


def check(prefix: Path) -> None:
    """Validate the configuration under `prefix` with `nginx -t`; raise NginxConfigError."""
    result = subprocess.run(_command(prefix, "-t"), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise NginxConfigError((result.stderr or result.stdout).strip())


def start(prefix: Path, *, log_file: Path) -> int:
    """Start nginx on the configuration under `prefix` in the foreground of its own session;
    return the master's pid."""
    # `daemon off`: the pid we get is the master's, recorded before nginx could fail.
    return processes.spawn(_command(prefix, "-g", "daemon off;"), env=os.environ, log_file=log_file)


def reload(pid: int) -> None:
    """Make nginx re-read its configuration (new workers, old ones finish their requests)."""
    if processes.is_running(pid, MARKER):
        os.kill(pid, signal.SIGHUP)


def stop(pid: int, *, timeout: float = 10) -> None:
    """Stop nginx gracefully (SIGQUIT: requests in flight finish), by force after `timeout`."""
    processes.stop_group(pid, marker=MARKER, first=signal.SIGQUIT, timeout=timeout)


if __name__ == "__main__":
    # After a change to the template: python -m fastpost.cluster.nginx
    from fastpost.cluster.topology import plan

    EXAMPLE.write_text(render(plan()))
    print(f"wrote {EXAMPLE}")
