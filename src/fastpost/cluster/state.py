"""The cluster's state file: every part `up` starts, written down the moment it starts.

`down` stops what this file lists and nothing else, so a part must be in it before `up` can
fail past it: a PostgreSQL node is written down (with its data folder, pid unknown) before it
starts; a process `up` spawns is written down with its pid right after the spawn.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from fastpost.cluster.topology import Kind, Part

STATE_FILE = "state.json"
SECRET_FILE = "secret_key"
VERSION = 1


@dataclass(frozen=True)
class Started:
    """A part as started: where it keeps its files and which process it is."""

    kind: Kind
    name: str
    port: int
    # The part's own folder under the state directory (a PostgreSQL data folder, say).
    directory: str
    log_file: str
    pid: int | None = None
    weight: int = 1
    backup: bool = False

    @classmethod
    def of(cls, part: Part, *, directory: Path, log_file: Path, pid: int | None = None) -> Started:
        return cls(
            part.kind,
            part.name,
            part.port,
            str(directory),
            str(log_file),
            pid,
            part.weight,
            part.backup,
        )

    @property
    def part(self) -> Part:
        return Part(self.kind, self.name, self.port, self.weight, self.backup)


class ClusterState:
    """The state file of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir.resolve()
        self.path = self.state_dir / STATE_FILE
        self.parts: list[Started] = []
        self.settings: dict[str, Any] = {}
        # Parts start and restart side by side, in threads (instances, tests): each update of
        # the list and of the file is whole, or one thread's would be lost or its rename fail.
        self._lock = threading.RLock()

    @classmethod
    def load(cls, state_dir: Path) -> ClusterState | None:
        """Return the state written in `state_dir`, or None when there is none."""
        state = cls(state_dir)
        try:
            data = json.loads(state.path.read_text())
        except FileNotFoundError:
            return None
        if data.get("version") != VERSION:
            raise ValueError(f"{state.path}: state file version {data.get('version')!r}")
        state.parts = [Started(**part) for part in data["parts"]]
        state.settings = data.get("settings", {})
        return state

    def record(self, started: Started) -> None:
        """Add or update the part named `started.name`, and write the file at once."""
        with self._lock:
            self.parts = [p for p in self.parts if p.name != started.name] + [started]
            self.save()

    def set_pid(self, name: str, pid: int | None) -> Started:
        """Write down the pid of the part `name` (already recorded)."""
        with self._lock:
            (part,) = [p for p in self.parts if p.name == name]
            updated = replace(part, pid=pid)
            self.record(updated)
            return updated

    def save(self) -> None:
        with self._lock:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            data = {
                "version": VERSION,
                "settings": self.settings,
                "parts": [asdict(part) for part in self.parts],
            }
            # Written aside and renamed: a crash mid-write never leaves half a file to `down`.
            tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}")
            tmp.write_text(json.dumps(data, indent=2) + "\n")
            os.replace(tmp, self.path)


def secret_key(state_dir: Path) -> str:
    """Return the signing key every instance of this cluster shares, made once."""
    path = state_dir / SECRET_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(48) + "\n")
    return path.read_text().strip()
