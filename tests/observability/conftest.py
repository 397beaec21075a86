"""Fixtures for reading what the app logs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from fastpost.logging import access, configure_logging


class LogLines:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        access.flush()  # access lines are written in batches while the app runs
        return self.stream.getvalue()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines() if line.strip()]

    def access(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r.get("event") == "request"]


@pytest.fixture
def logs(app: Any) -> Iterator[LogLines]:
    """Every JSON log line the app writes from here on (after the app has configured logging)."""
    lines = LogLines()
    configure_logging(level="INFO", json=True, stream=lines.stream)
    yield lines
    configure_logging(level="INFO", json=False)
