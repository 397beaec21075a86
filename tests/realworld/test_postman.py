"""The community's RealWorld Postman suite passes against a freshly started fastpost."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "realworld-postman.sh"
SUITE_DIR = Path(os.environ.get("FASTPOST_REALWORLD_DIR", ROOT.parent / "shared" / "realworld"))
NEWMAN_HOME = Path(
    os.environ.get(
        "NEWMAN_HOME",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fastpost" / "newman",
    )
)


def test_the_realworld_postman_suite_passes_with_no_failed_assertion() -> None:
    if not (SUITE_DIR / "Conduit.postman_collection.json").exists():
        pytest.skip(f"no Postman collection in {SUITE_DIR} (set FASTPOST_REALWORLD_DIR)")
    if not (NEWMAN_HOME / "node_modules" / ".bin" / "newman").exists() and not shutil.which("npm"):
        pytest.skip("newman is not installed and npm is not there to install it")
    result = subprocess.run(
        [str(SCRIPT), str(SUITE_DIR)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert summary.startswith("newman: requests ")
    assert "(failed 0), assertions" in summary
    assert summary.endswith("(failed 0)")
