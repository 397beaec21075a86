"""Types shared by every domain's schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

from fastpost.timeutil import as_utc

# Always sent with its zone: SQLite hands timestamps back naive, PostgreSQL aware.
UTCDateTime = Annotated[datetime, AfterValidator(as_utc)]


def refuse_nul(value: str) -> str:
    """Refuse text holding U+0000."""
    # PostgreSQL text cannot hold it (the driver fails the statement, a 500) and SQLite's
    # FTS5 reads it as the end of the query; no input of ours needs one, so it is refused
    # on every backend alike.
    if "\x00" in value:
        raise ValueError("must not contain NUL (U+0000) characters")
    return value


# For text that arrives outside a request body (query parameters).
SafeText = Annotated[str, AfterValidator(refuse_nul)]


class RequestModel(BaseModel):
    """Base of every request body: unknown fields are a 422, not silently dropped, and no
    text field may hold a NUL character."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return refuse_nul(value) if isinstance(value, str) else value
