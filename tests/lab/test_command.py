"""`fastpost lab` end to end: options, the table, the JSON."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from fastpost.cli import app
from fastpost.lab.catalog import EXPERIMENTS, select_experiments
from fastpost.lab.environment import async_url, database_exists
from tests.conftest import POSTGRES_URL

TINY = [
    "--users", "30", "--posts", "300", "--follows", "200", "--likes", "400",
    "--repeat", "1", "--list-sizes", "10,100", "--index-lookups", "2",
]  # fmt: skip


def test_only_chooses_experiments_by_number_or_name() -> None:
    chosen = select_experiments("3, index,cache")

    assert [e.name for e in chosen] == ["membership", "index", "cache"]
    assert select_experiments(None) == list(EXPERIMENTS)


def test_an_unknown_experiment_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown experiment"):
        select_experiments("1,nplus")


def test_lab_runs_the_chosen_experiments_and_writes_valid_json(tmp_path: Path) -> None:
    out = tmp_path / "lab.json"

    result = CliRunner().invoke(app, ["lab", "--only", "3,5", "--json", str(out), *TINY])

    assert result.exit_code == 0, result.output
    assert "3. Membership: list vs set" in result.output
    assert "5. Query without its index" in result.output
    report = json.loads(out.read_text())
    assert [e["key"] for e in report["experiments"]] == ["membership", "index"]
    assert report["environment"]["dialect"] == "sqlite"
    assert report["environment"]["seed_plan"]["posts"] == 300
    index = report["experiments"][1]
    assert {m["variant"] for m in index["measurements"]} == {
        "without ix_posts_author_created",
        "with ix_posts_author_created",
    }
    assert all(m["queries"] == 1 for m in index["measurements"])


def test_experiments_without_a_database_do_not_seed_one(tmp_path: Path) -> None:
    out = tmp_path / "lab.json"

    result = CliRunner().invoke(app, ["lab", "--only", "membership", "--json", str(out), *TINY])

    assert result.exit_code == 0, result.output
    assert "dialect" not in json.loads(out.read_text())["environment"]


def test_keep_reuses_the_database_seeded_with_the_same_sizes(tmp_path: Path) -> None:
    path = tmp_path / "kept.db"
    args = ["lab", "--only", "1", "--database-url", f"sqlite:///{path}", "--keep", *TINY]
    first = tmp_path / "first.json"
    second = tmp_path / "second.json"

    assert CliRunner().invoke(app, [*args, "--json", str(first)]).exit_code == 0
    assert CliRunner().invoke(app, [*args, "--json", str(second)]).exit_code == 0

    assert json.loads(first.read_text())["environment"]["reused_database"] is False
    assert json.loads(second.read_text())["environment"]["reused_database"] is True


@pytest.mark.skipif(POSTGRES_URL is None, reason="FASTPOST_TEST_POSTGRES_URL is not set")
def test_lab_on_postgres_makes_its_scratch_database_and_drops_it_after(tmp_path: Path) -> None:
    assert POSTGRES_URL is not None
    out = tmp_path / "lab.json"

    result = CliRunner().invoke(
        app,
        ["lab", "--only", "n_plus_one", "--database-url", POSTGRES_URL, "--json", str(out), *TINY],
    )

    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["environment"]["dialect"] == "postgresql"
    database = make_url(report["environment"]["database"]).database
    assert database is not None
    assert database.startswith("fastpost_lab_")
    assert not asyncio.run(database_exists(async_url(POSTGRES_URL), database))
    # The default 100 posts, each with a query for its author.
    assert report["experiments"][0]["measurements"][0]["queries"] == 101
