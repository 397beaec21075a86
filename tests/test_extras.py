"""Commands that need an extra say which, in one line, instead of dying with a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import environment


def _fastpost_without(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`fastpost ARGS` in a Python where `module` cannot be imported, as on a plain install."""
    hide = (
        f"import sys, importlib.util as u; sys.modules[{module!r}] = None; find = u.find_spec; "
        f"u.find_spec = lambda name, *a: None if name == {module!r} else find(name, *a); "
        "sys.argv[0] = 'fastpost'; from fastpost.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", hide, *args],
        env=environment(cwd), cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("command", "module"), [("lab", "requests"), ("bench", "psutil"), ("lab", "matplotlib")]
)
def test_a_command_missing_its_extra_names_it_in_one_line(
    tmp_path: Path, command: str, module: str
) -> None:
    result = _fastpost_without(module, command, cwd=tmp_path)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    assert f"`fastpost {command}` needs the bench extra" in output
    assert module in output
    assert ".[bench]" in output
