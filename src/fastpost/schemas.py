"""Types shared by every domain's schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

from fastpost.timeutil import as_utc

# Always sent with its zone: SQLite hands timestamps back naive, PostgreSQL aware.
UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]

# Row ids are positive and below 2**53 (fastpost.ids).
Id = Annotated[int, "row id"]

TrimmedStr = Annotated[str, StringConstraints(strip_whitespace=True)]


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are a 422, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
