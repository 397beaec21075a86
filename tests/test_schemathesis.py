"""Property-based tests of the whole HTTP contract: schemathesis generates requests for every
operation of /openapi.json (from its schemas, their edges, and fuzzing), anonymously and
with a token, against a real `fastpost serve`, and checks every answer:

- no server error (5xx);
- the status is one the operation declares, the body matches the declared schema for it,
  the content type and headers are the declared ones;
- a method the path does not have is a 405 whose `Allow` lists exactly the methods the
  schema has for it; a required header left out is refused.

Bounded (a few examples per operation, a fixed seed) so that the run takes well under a
minute. A failure prints schemathesis' report, with a curl command that replays it. To
explore further by hand: the same command with `-n 100` and another `--seed`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Serving, environment, migrate_and_seed, serve_fastpost

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "unsupported_method",
        "allow_header_conformance",
        "missing_required_header",
    ]
)
MAX_EXAMPLES = 5
SEED = 1
# Schemathesis signs up and logs in by itself where it finds a registration route: off, so
# that the anonymous run is anonymous; the other run is given its token.
CONFIG = "[auth]\nauto-signup = false\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serving]:
    # Rate limits are off in this environment (tests.helpers.FAST_ENV): a fuzzer is one
    # client writing as fast as it can.
    work = tmp_path_factory.mktemp("schemathesis")
    env = environment(work)
    migrate_and_seed(
        env, work, "--users", "20", "--posts", "60", "--follows", "40", "--likes", "60"
    )
    with serve_fastpost(env=env, cwd=work) as serving:
        yield serving


def run_schemathesis(base: str, work: Path, *headers: str) -> subprocess.CompletedProcess[str]:
    config = work / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(config),
        "--no-color",
        "run",
        f"{base}/openapi.json",
        "--phases",
        "examples,coverage,fuzzing",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
    ]
    for header in headers:
        command += ["--header", header]
    return subprocess.run(
        command, cwd=work, capture_output=True, text=True, timeout=240, check=False
    )


def test_anonymous_requests_get_only_declared_answers(server: Serving, tmp_path: Path) -> None:
    result = run_schemathesis(server.base, tmp_path)
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    assert " passed" in result.stdout


def test_logged_in_requests_get_only_declared_answers(server: Serving, tmp_path: Path) -> None:
    login = httpx.post(
        f"{server.base}/auth/login", json={"username": "testuser", "password": "testpass"}
    )
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    # Bearer: the RealWorld routes take it as well as their own `Token` scheme.
    result = run_schemathesis(server.base, tmp_path, f"Authorization: Bearer {token}")
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
    assert " passed" in result.stdout
