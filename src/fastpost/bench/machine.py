"""What a report says about where it was measured: the code's revision and the CPU."""

from __future__ import annotations

import contextlib
import platform
import subprocess
from pathlib import Path

from fastpost.bench.servers import ROOT


def git_revision() -> str | None:
    """Return `git describe --always --dirty` of the checkout, or None outside one."""
    with contextlib.suppress(OSError):
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        return done.stdout.strip() or None
    return None


def cpu_model() -> str:
    """Return the CPU's model name (Linux /proc/cpuinfo), or the platform's guess."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()
