"""The Locust scenarios in loadtests/, run headless for a few seconds against a real
`fastpost serve` on the demo data of `make run`.

Locust runs on gevent, which patches the standard library when imported: it only ever runs
here as a subprocess, never inside pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fastpost.cluster.processes import free_port
from tests.helpers import environment, migrate_and_seed, serve_fastpost

LOADTESTS = Path(__file__).resolve().parent.parent / "loadtests"

# Waits of 1-3 s times this: each simulated user makes dozens of requests in a few seconds,
# enough for the rarest task to come up.
WAIT_SCALE = "0.02"

# Each scenario's requests, by (method, name): every one must have been made, and no other
# name may appear (a raw path such as /posts/123 would mean a request was not named by its
# route template).
COURSE = {
    ("POST", "/auth/login"),
    ("GET", "/posts/"),
    ("GET", "/users/me"),
    ("POST", "/posts/"),
}
BROWSING = {
    ("GET", "/posts/"),
    ("GET", "/posts/?cursor={cursor}"),
    ("GET", "/posts/{post_id}"),
    ("GET", "/posts/{post_id} (If-None-Match)"),
    ("GET", "/posts/popular"),
    ("GET", "/posts/search?q={q}"),
    ("GET", "/users/{user_id}"),
    ("GET", "/users/{user_id}/posts"),
    ("GET", "/users/{user_id}/overview"),
    ("GET", "/users/{user_id}/followers"),
}
SOCIAL = {
    ("POST", "/auth/register"),
    ("POST", "/auth/login"),
    ("GET", "/users/me"),
    ("GET", "/feed"),
    ("GET", "/feed?cursor={cursor}"),
    ("GET", "/posts/"),
    ("POST", "/posts/"),
    ("GET", "/posts/{post_id}"),
    ("POST", "/posts/{post_id}/like"),
    ("DELETE", "/posts/{post_id}/like"),
    ("POST", "/users/{user_id}/follow"),
    ("DELETE", "/users/{user_id}/follow"),
    ("GET", "/users/{user_id}/friends"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """What `make run` serves: migrated SQLite, the default demo seed, one worker."""
    tmp_path = tmp_path_factory.mktemp("loadtests")
    env = environment(tmp_path)
    migrate_and_seed(env, tmp_path, "--if-empty")
    with serve_fastpost(env=env, cwd=tmp_path) as serving:
        yield serving.base


def locust(
    locustfile: str,
    host: str,
    tmp_path: Path,
    *,
    seconds: int = 8,
    wait_scale: str = WAIT_SCALE,
    users: int = 4,
) -> tuple[subprocess.CompletedProcess[str], list[dict[str, object]]]:
    """Run a scenario headless with `users` users; return the process and Locust's stats."""
    stats_base = tmp_path / "stats"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FASTPOST_")},
        "FASTPOST_LOCUST_WAIT_SCALE": wait_scale,
    }
    result = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", str(LOADTESTS / locustfile), "--host", host,
            "--headless", "-u", str(users), "-r", str(users), "-t", f"{seconds}s",
            "--only-summary",
            "--json-file", str(stats_base),
        ],
        env=env,
        # Away from the repository, so that no locust.conf or pyproject setting is picked up.
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )  # fmt: skip
    stats_file = stats_base.with_suffix(".json")
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else []
    return result, stats


@pytest.mark.parametrize(
    ("locustfile", "requests"),
    [("locustfile.py", COURSE), ("browsing.py", BROWSING), ("social.py", SOCIAL)],
    ids=["course", "browsing", "social"],
)
def test_scenario_runs_on_the_demo_data_without_failures_and_exercises_every_task(
    server: str, tmp_path: Path, locustfile: str, requests: set[tuple[str, str]]
) -> None:
    result, stats = locust(locustfile, server, tmp_path)
    # Locust's error report (on stderr) says which request failed and why.
    assert result.returncode == 0, result.stderr[-4000:]
    assert stats, result.stderr[-4000:]
    assert sum(int(str(entry["num_failures"])) for entry in stats) == 0, result.stderr[-4000:]
    made = {
        (str(entry["method"]), str(entry["name"]))
        for entry in stats
        if int(str(entry["num_requests"])) > 0
    }
    assert made == requests


def test_a_wait_scale_that_is_not_a_number_stops_locust_with_a_clear_message(
    tmp_path: Path,
) -> None:
    # Locust stops while loading the scenario, before it would connect to anything.
    unused = f"http://127.0.0.1:{free_port()}"
    result, stats = locust("browsing.py", unused, tmp_path, seconds=1, wait_scale="fast")
    assert result.returncode != 0
    assert "FASTPOST_LOCUST_WAIT_SCALE must be a number, not 'fast'" in result.stderr
    assert stats == []


def test_the_course_scenario_as_written_runs_without_failures(server: str, tmp_path: Path) -> None:
    # Its own 1-3 s waits, unscaled: 8 users for 15 s make about 60 tasks, so the rarest
    # (weight 1 in 6) comes up all but surely. 8 users: with `make run`'s rate limits (off
    # on the tests' servers) they stay within the demo account's 10 logins a minute.
    result, stats = locust("course_as_written.py", server, tmp_path, seconds=15, users=8)
    assert result.returncode == 0, result.stderr[-4000:]
    assert sum(int(str(entry["num_failures"])) for entry in stats) == 0, result.stderr[-4000:]
    made = {
        (str(entry["method"]), str(entry["name"])): int(str(entry["num_requests"]))
        for entry in stats
    }
    assert made[("POST", "/auth/login")] == 8
    assert made[("GET", "/posts/")] > made[("POST", "/posts/")] > 0
    assert made[("GET", "/users/me")] > 0
    assert set(made) == COURSE
