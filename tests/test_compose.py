"""ops/compose.yaml describes the cluster `fastpost cluster up` starts: the same parts, ports
and FASTPOST_* settings as fastpost.cluster.topology, and ops/prometheus scrapes each
instance. Docker is not needed, except for `docker compose config`, run where it exists."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from fastpost.cluster.topology import Part, instance_environment, plan

OPS = Path(__file__).resolve().parents[1] / "ops"
COMPOSE = OPS / "compose.yaml"
# What the compose file asks for from its user's environment.
REQUIRED_VARIABLES = {"FASTPOST_SECRET_KEY": "s" * 48, "POSTGRES_PASSWORD": "p4ssw0rd"}
# Services beside the topology's parts: the one-shot migration, and the monitoring.
OTHER_SERVICES = {"migrate", "prometheus", "grafana"}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _kind(name: str, service: dict[str, Any]) -> str | None:
    """The topology kind a compose service plays, from what it runs."""
    image = service.get("image", "")
    if image.startswith("nginx"):
        return "nginx"
    if image.startswith("redis"):
        return "redis"
    if image.startswith("postgres"):
        return "replica" if "replica-entrypoint.sh" in str(service.get("entrypoint")) else "primary"
    if "serve" in service.get("command", []):
        return "instance"
    return None


def _published(service: dict[str, Any]) -> set[int]:
    """The container ports a service publishes, each on the same port of 127.0.0.1."""
    ports = set()
    for mapping in service.get("ports", []):
        host, published, target = str(mapping).split(":")
        assert host == "127.0.0.1", f"{mapping}: published beyond this machine"
        assert published == target, mapping
        ports.add(int(target))
    return ports


def _listens_on(kind: str, service: dict[str, Any]) -> int:
    """The port the service's own process listens on inside its container."""
    command = service.get("command", [])
    if kind == "instance":
        return int(command[command.index("--port") + 1])
    if kind == "redis":
        return int(command[command.index("--port") + 1])
    if kind in ("primary", "replica"):
        return int(service["environment"]["PGPORT"])
    match = re.search(r"listen 127\\\.0\\\.0\\\.1:\d+;/listen (\d+);/", "\n".join(command))
    assert match, "the nginx service rewrites no listen line"
    return int(match.group(1))


def test_the_services_are_the_parts_of_the_default_cluster() -> None:
    services = _compose()["services"]
    parts = plan()

    kinds = {name: _kind(name, service) for name, service in services.items()}

    assert {name for name, kind in kinds.items() if kind is None} == OTHER_SERVICES
    assert Counter(k for k in kinds.values() if k) == Counter(p.kind for p in parts)
    assert {name: kind for name, kind in kinds.items() if kind} == {p.name: p.kind for p in parts}


def test_each_part_listens_and_is_published_on_its_port() -> None:
    services = _compose()["services"]
    for part in plan():
        service = services[part.name]
        assert _listens_on(part.kind, service) == part.port, part
        assert _published(service) == {part.port}, part


def _interpolated(value: str) -> str:
    """The value as compose makes it, with REQUIRED_VARIABLES set."""
    return re.sub(r"\$\{(\w+)[^}]*\}", lambda m: REQUIRED_VARIABLES[m.group(1)], value)


def _same_setting(name: str, ours: str, theirs: str, parts: list[Part]) -> None:
    """A compose value matches the topology's: URLs point at the part on that port, by
    its service name instead of 127.0.0.1, with the password compose adds; others equal."""
    if "://" not in theirs:
        assert ours == theirs, name
        return
    port_names = {p.port: p.name for p in parts}
    for our_url, their_url in zip(ours.split(","), theirs.split(","), strict=True):
        ours_split, their = urlsplit(our_url), urlsplit(their_url)
        port = ours_split.port
        assert port is not None, f"{name}: {our_url} names no port"
        assert ours_split.hostname == port_names[port], f"{name}: {our_url} is not that part"
        assert (their.hostname, their.port) == ("127.0.0.1", port), name
        assert (ours_split.scheme, ours_split.path) == (their.scheme, their.path), name
        assert ours_split.username == their.username, name


def test_every_instance_gets_the_settings_cluster_up_gives_its_instances() -> None:
    services = _compose()["services"]
    parts = plan()
    expected = instance_environment(parts, secret_key="from the environment")

    for part in (p for p in parts if p.kind == "instance"):
        environment = services[part.name]["environment"]
        assert set(environment) == set(expected), part.name
        for name, value in expected.items():
            if name == "FASTPOST_AUTH__SECRET_KEY":
                assert environment[name].startswith("${FASTPOST_SECRET_KEY:?"), name
                continue
            _same_setting(name, _interpolated(str(environment[name])), value, parts)


def test_instances_stop_gracefully_within_dockers_grace_period() -> None:
    services = _compose()["services"]
    for part in (p for p in plan() if p.kind == "instance"):
        service = services[part.name]
        command = service["command"]
        timeout = int(command[command.index("--graceful-timeout") + 1])
        grace = int(str(service["stop_grace_period"]).removesuffix("s"))
        # Requests in flight are cut off by fastpost before Docker's SIGKILL cuts everything.
        assert timeout < grace, part.name


def _nginx_script() -> str:
    command = _compose()["services"]["nginx"]["command"]
    assert command[:2] == ["/bin/sh", "-ec"]
    # Compose turns $$ into $ before the shell sees it.
    script: str = command[2].replace("$$", "$")
    return script


def test_nginx_in_compose_is_the_rendered_cluster_config_with_service_names(
    tmp_path: Path,
) -> None:
    script = _nginx_script()
    expressions = [
        shlex.split(line.strip().removesuffix("\\"))
        for line in script.splitlines()
        if line.strip().startswith(("sed -e", "-e"))
    ]
    sed_args = [arg for words in expressions for arg in words if arg != "sed"]
    rendered = OPS / "nginx" / "fastpost.conf"
    if shutil.which("sed") is None:
        pytest.skip("sed is not installed")

    done = subprocess.run(
        ["sed", *sed_args, str(rendered)], capture_output=True, text=True, check=True, timeout=30
    )

    config = done.stdout
    parts = plan()
    nginx = next(p for p in parts if p.kind == "nginx")
    assert re.search(rf"^\s*listen {nginx.port};$", config, re.MULTILINE)
    upstream = config.split("upstream fastpost {", 1)[1].split("}", 1)[0]
    servers = re.findall(r"^\s*server (\S+?)[ ;]", upstream, re.MULTILINE)
    assert servers == [f"{p.name}:{p.port}" for p in parts if p.kind == "instance"]
    # Looked up again through Docker's DNS: a container made anew has a new address.
    lines = [line.strip() for line in upstream.splitlines() if line.strip().startswith("server ")]
    assert all(re.match(r"server \S+ resolve[ ;]", line) for line in lines), lines
    assert "resolver 127.0.0.11 " in upstream
    assert not re.search(r"\b127\.0\.0\.1:", upstream)


def test_prometheus_scrapes_every_instance_of_the_cluster() -> None:
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == "fastpost"]
    targets = [t for group in job["static_configs"] for t in group["targets"]]

    instances = [p for p in plan() if p.kind == "instance"]
    assert targets == [f"{p.name}:{p.port}" for p in instances]
    assert {t.split(":")[0] for t in targets} <= set(_compose()["services"])


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = {v.split(":")[0]: v.split(":")[1] for v in grafana["volumes"] if v.startswith(".")}
    dashboards = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "dashboards" / "fastpost.yaml").read_text()
    )
    [provider] = dashboards["providers"]
    assert mounts["./grafana/fastpost.json"].startswith(provider["options"]["path"] + "/")
    sources = yaml.safe_load(
        (OPS / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    [source] = sources["datasources"]
    assert urlsplit(source["url"]).hostname in _compose()["services"]
    for local in mounts:
        assert (OPS / local).exists(), local


def test_every_file_the_compose_file_mounts_or_builds_from_exists() -> None:
    for name, service in _compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (OPS / source).exists(), f"{name}: {source}"
        build = service.get("build")
        if build:
            assert (OPS / build["context"] / build["dockerfile"]).is_file(), name


def _docker_compose_works() -> str | None:
    """Why `docker compose` cannot be used here, or None when it can."""
    if shutil.which("docker") is None:
        return "docker is not installed"
    version = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=30, check=False
    )
    if version.returncode != 0:
        output = (version.stderr or version.stdout).strip().splitlines()
        return f"`docker compose version` failed: {output[0] if output else version.returncode}"
    return None


def test_docker_compose_accepts_the_file() -> None:
    reason = _docker_compose_works()
    if reason:
        pytest.skip(reason)
    done = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **REQUIRED_VARIABLES},
    )
    assert done.returncode == 0, done.stderr
