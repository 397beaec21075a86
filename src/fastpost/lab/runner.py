"""Run the chosen experiments in order on one seeded database."""

from __future__ import annotations

import importlib
import platform
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import make_url

from fastpost.lab.catalog import Experiment
from fastpost.lab.config import LabConfig
from fastpost.lab.context import Lab
from fastpost.lab.environment import lab_database
from fastpost.lab.result import ExperimentResult, LabReport


async def run_experiment(experiment: Experiment, lab: Lab) -> ExperimentResult:
    module = importlib.import_module(f"fastpost.lab.{experiment.module}")
    run: Callable[[Lab], Awaitable[ExperimentResult]] = module.run
    return await run(lab)


def _describe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


async def run_lab(
    config: LabConfig,
    experiments: list[Experiment],
    on_start: Callable[[Experiment], None] = lambda e: None,
    on_done: Callable[[ExperimentResult], None] = lambda r: None,
) -> LabReport:
    """Prepare the database (when an experiment needs it) and run each experiment."""
    environment: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "repeat": config.repeat,
        "seed_plan": asdict(config.plan),
        "redis": config.redis_url is not None,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    report = LabReport(environment)

    async def run_all(lab: Lab) -> None:
        for experiment in experiments:
            on_start(experiment)
            started = time.perf_counter()
            result = await run_experiment(experiment, lab)
            result.extra["seconds"] = round(time.perf_counter() - started, 2)
            report.experiments.append(result)
            on_done(result)

    if any(e.needs_database for e in experiments):
        async with lab_database(config) as database:
            environment |= {
                "database": _describe_url(database.url),
                "dialect": database.dialect,
                "reused_database": database.reused,
                "seed_seconds": round(database.seed_seconds, 2),
            }
            await run_all(Lab(config, database))
    else:
        await run_all(Lab(config))
    return report
