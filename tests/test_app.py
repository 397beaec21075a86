"""The app's lifespan tunes the process for serving, and leaves no trace when it ends."""

from __future__ import annotations

import gc

from fastpost.app import GC_YOUNG_THRESHOLD, create_app
from fastpost.settings import Settings


async def test_a_serving_app_freezes_startup_and_collects_young_objects_less_often(
    settings: Settings,
) -> None:
    before = gc.get_threshold()
    app = create_app(settings.model_copy(update={"env": "production"}))
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_an_app_under_test_leaves_the_gc_as_it_is(settings: Settings) -> None:
    before = gc.get_threshold()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
