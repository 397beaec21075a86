"""Fixtures for reading what the app logs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI

from fastpost.observability.access_log import AccessLog
from fastpost.observability.logging import configure_logging


class LogLines:
    def __init__(self, access_log: AccessLog) -> None:
        self.stream = io.StringIO()
        self.access_log = access_log

    @property
    def text(self) -> str:
        self.access_log.flush()  # access lines are written in batches while the app runs
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def access(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == "request"]


@pytest.fixture
def logs(app: FastAPI) -> Iterator[LogLines]:
    """Every JSON log line the app writes from here on (after the app has configured logging)."""
    lines = LogLines(app.state.observability.access_log)
    configure_logging(level="INFO", json=True, stream=lines.stream, access_log=lines.access_log)
    yield lines
    configure_logging(level="INFO", json=False)
