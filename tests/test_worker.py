"""A `fastpost serve` worker tunes its process for serving, and leaves no trace when it stops;
an app built anywhere else (create_app) leaves the process's garbage collector alone."""

from __future__ import annotations

import gc

import pytest
from uvicorn.importer import import_from_string

from fastpost.app import create_app
from fastpost.cli import WORKER_APP
from fastpost.settings import Settings
from fastpost.worker import GC_YOUNG_THRESHOLD, create_worker_app, tune_gc_while_serving


async def test_a_serving_worker_freezes_startup_and_collects_young_objects_less_often(
    settings: Settings,
) -> None:
    before = gc.get_threshold()
    app = tune_gc_while_serving(create_app(settings.model_copy(update={"env": "production"})))
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("env", ["production", "development", "test"])
async def test_create_app_leaves_the_gc_as_it_is_in_every_environment(
    settings: Settings, env: str
) -> None:
    before = gc.get_threshold()
    app = create_app(settings.model_copy(update={"env": env}))
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0


@pytest.mark.parametrize(("tune_gc", "tuned"), [("true", True), ("false", False)])
async def test_the_worker_tunes_the_gc_unless_its_setting_says_not_to(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tune_gc: str, tuned: bool
) -> None:
    # The worker reads its settings from the environment, as `fastpost serve` passes them.
    monkeypatch.setenv("FASTPOST_ENV", "test")
    monkeypatch.setenv("FASTPOST_DB__URL", settings.db.url)
    monkeypatch.setenv("FASTPOST_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("FASTPOST_AUTH__SECRET_KEY", settings.auth.secret_key or "")
    monkeypatch.setenv("FASTPOST_SERVE__TUNE_GC", tune_gc)
    before = gc.get_threshold()
    app = create_worker_app()
    async with app.router.lifespan_context(app):
        assert (gc.get_threshold()[0] == GC_YOUNG_THRESHOLD) is tuned
        assert (gc.get_freeze_count() > 0) is tuned
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_fastpost_serve_starts_its_workers_with_the_worker_app() -> None:
    assert import_from_string(WORKER_APP) is create_worker_app
