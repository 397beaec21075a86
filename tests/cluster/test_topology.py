"""What `fastpost cluster up` plans to run, and the nginx configuration it renders from it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fastpost.cluster import nginx
from fastpost.cluster.topology import instance_environment, max_body_bytes, plan
from fastpost.settings import Settings


def test_the_default_cluster_is_three_instances_a_replica_and_nginx_on_8080() -> None:
    parts = plan()

    assert [(p.kind, p.name, p.port) for p in parts] == [
        ("primary", "primary", 5433),
        ("replica", "replica-1", 5434),
        ("redis", "redis", 6380),
        ("instance", "instance-1", 8001),
        ("instance", "instance-2", 8002),
        ("instance", "instance-3", 8003),
        ("nginx", "nginx", 8080),
    ]
    # As in the course's upstream block: with three instances or more, the last one waits.
    assert [p.backup for p in parts if p.kind == "instance"] == [False, False, True]


def test_weights_go_to_the_active_instances_in_order() -> None:
    parts = plan(instances=4, weights=[3, 3, 2])

    assert [(p.weight, p.backup) for p in parts if p.kind == "instance"] == [
        (3, False),
        (3, False),
        (2, False),
        (1, True),
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"instances": 3, "weights": [3, 3, 2]}, "3 weights for 2 active instance"),
        ({"instances": 2, "weights": [0, 1]}, "whole numbers from 1"),
        ({"instances": 1, "backup": True}, "at least one other instance"),
        ({"instances": 0}, "at least one instance"),
    ],
)
def test_a_plan_that_cannot_work_is_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(**arguments)  # type: ignore[arg-type]


def test_instances_are_told_where_the_primary_replicas_and_redis_are() -> None:
    env = instance_environment(plan(replicas=2), secret_key="k" * 48, data_dir=Path("/d"))

    assert env["FASTPOST_DB__URL"] == "postgresql+asyncpg://postgres@127.0.0.1:5433/fastpost"
    assert env["FASTPOST_DB__REPLICA_URLS"] == (
        "postgresql+asyncpg://postgres@127.0.0.1:5434/fastpost,"
        "postgresql+asyncpg://postgres@127.0.0.1:5435/fastpost"
    )
    assert env["FASTPOST_REDIS_URL"] == "redis://127.0.0.1:6380/0"
    assert env["FASTPOST_AUTH__SECRET_KEY"] == "k" * 48
    assert env["FASTPOST_DATA_DIR"] == "/d"


def test_instance_environment_names_other_hosts_where_told() -> None:
    env = instance_environment(hosts={"primary": "db", "replica-1": "db-replica", "redis": "cache"})

    assert env["FASTPOST_DB__URL"] == "postgresql+asyncpg://postgres@db:5433/fastpost"
    assert (
        env["FASTPOST_DB__REPLICA_URLS"] == "postgresql+asyncpg://postgres@db-replica:5434/fastpost"
    )
    assert env["FASTPOST_REDIS_URL"] == "redis://cache:6380/0"


def test_instance_environment_is_valid_fastpost_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in instance_environment(secret_key="k" * 48).items():
        monkeypatch.setenv(name, value)

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.env == "production"
    assert settings.db.url.endswith(":5433/fastpost")
    assert settings.db.replica_urls == ["postgresql+asyncpg://postgres@127.0.0.1:5434/fastpost"]
    assert settings.api.max_body_bytes == max_body_bytes()


def test_without_replicas_instances_get_no_replica_urls() -> None:
    assert "FASTPOST_DB__REPLICA_URLS" not in instance_environment(plan(replicas=0))


def test_the_example_in_ops_is_the_rendering_of_the_default_cluster() -> None:
    assert nginx.EXAMPLE.read_text() == nginx.render(plan()), (
        "regenerate it: python -m fastpost.cluster.nginx"
    )


def test_the_rendered_upstream_is_the_courses_block_with_keepalive() -> None:
    conf = nginx.render(plan(instances=4, weights=[3, 3, 2]))
    lines = [line.strip() for line in conf.splitlines()]

    assert "least_conn;" in lines
    assert "server 127.0.0.1:8001 weight=3 max_fails=1 fail_timeout=5s;" in lines
    assert "server 127.0.0.1:8003 weight=2 max_fails=1 fail_timeout=5s;" in lines
    assert "server 127.0.0.1:8004 backup;" in lines
    assert "keepalive 32;" in lines
    assert "proxy_http_version 1.1;" in lines
    assert 'proxy_set_header Connection "";' in lines
    assert "proxy_next_upstream error timeout http_502 http_503;" in lines
    assert "non_idempotent" not in conf.replace("`non_idempotent`", "")
    assert "proxy_next_upstream_tries 4;" in lines
    assert f"client_max_body_size {max_body_bytes()};" in lines
    assert "gzip_types application/json;" in lines
    assert "listen 127.0.0.1:8080;" in lines


@pytest.mark.skipif(
    shutil.which("nginx", path=nginx.SEARCH_PATH) is None, reason=nginx.INSTALL_HINT
)
def test_nginx_accepts_the_example(tmp_path: Path) -> None:
    shutil.copy(nginx.EXAMPLE, tmp_path / nginx.CONF)
    # What the README asks of someone who runs the example by hand.
    (tmp_path / "logs").mkdir()
    (tmp_path / "temp").mkdir()

    result = subprocess.run(
        [nginx.nginx_binary(), "-t", "-p", f"{tmp_path}/", "-c", str(tmp_path / nginx.CONF),
         "-e", nginx.ERROR_LOG],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


@pytest.mark.skipif(
    shutil.which("nginx", path=nginx.SEARCH_PATH) is None, reason=nginx.INSTALL_HINT
)
def test_nginx_check_reports_a_broken_configuration(tmp_path: Path) -> None:
    nginx.prepare(tmp_path, plan())
    conf = tmp_path / nginx.CONF
    conf.write_text(conf.read_text().replace("least_conn;", "least_conn"))

    with pytest.raises(nginx.NginxConfigError, match="least_conn"):
        nginx.check(tmp_path)
