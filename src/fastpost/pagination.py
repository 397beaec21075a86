"""Keyset (cursor) pagination and page limits.

Lists are sorted by (created_at DESC, id DESC) and a page continues strictly after the
last row of the previous one: `WHERE (created_at, id) < (:ts, :id)`. The database walks the
index from that point, so page 10,000 costs what page 1 costs; OFFSET instead reads and
discards every skipped row. OFFSET is accepted for convenience, up to MAX_OFFSET.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import ColumnElement, Integer, Select, bindparam, tuple_

from fastpost.errors import InvalidInput
from fastpost.ids import MAX_ID
from fastpost.timeutil import EPOCH, MICROSECOND, unix_micros

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
# Past this an OFFSET scan reads more rows than a page is worth; cursors have no such limit.
MAX_OFFSET = 10_000

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Cursor:
    created_at: datetime
    id: int

    def encode(self) -> str:
        micros = unix_micros(self.created_at)
        raw = f"{micros}:{self.id}".encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            micros, _, row_id = base64.urlsafe_b64decode(padded).decode().partition(":")
            created_at = EPOCH + int(micros) * MICROSECOND
            cursor = cls(created_at, int(row_id))
        except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
            cursor = None
        # An id no row can have would reach the database as an out-of-range integer (a 500
        # from the driver), so it is refused here with the other malformed cursors.
        if cursor is None or not 0 <= cursor.id <= MAX_ID:
            raise InvalidInput(
                "Invalid cursor: pass back a next_cursor exactly as a previous page returned it",
                code="invalid_cursor",
                field="cursor",
            )
        return cursor


@dataclass(frozen=True, slots=True)
class Page:
    limit: int
    cursor: Cursor | None
    offset: int

    @property
    def shape(self) -> tuple[bool, bool]:
        """What the statement must contain: (a cursor condition, an OFFSET). Statements are
        built once per shape; the values travel as bound parameters (see `params`)."""
        return self.cursor is not None, self.offset > 0

    @property
    def params(self) -> dict[str, Any]:
        # One row more than the page, so that cut_page can tell whether more follow.
        values: dict[str, Any] = {"limit": self.limit + 1, "offset": self.offset}
        if self.cursor is not None:
            values["cursor_created_at"] = self.cursor.created_at
            values["cursor_id"] = self.cursor.id
        return values


class PageParams(BaseModel):
    """The query parameters of every paginated list.

    One model rather than three separate parameters: FastAPI validates a query model in one
    pass, where separate fields are each solved and validated with bookkeeping of their own
    per request (`fastpost profile GET '/users/1/followers'` lists what the solving costs).
    """

    # Frozen: a route serves one validated value to every request that sends the same
    # query string (fastpost.routing.LeanRoute).
    model_config = ConfigDict(frozen=True)

    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Page size")
    cursor: str | None = Field(
        None, max_length=64, description="Opaque `next_cursor` from the previous page"
    )
    offset: int | None = Field(
        None, ge=0, le=MAX_OFFSET, description="Rows to skip; prefer `cursor` for deep pages"
    )

    def to_page(self) -> Page:
        if self.cursor is not None and self.offset is not None:
            raise InvalidInput(
                "Give either cursor or offset, not both", code="cursor_and_offset", field="offset"
            )
        return Page(
            self.limit, Cursor.decode(self.cursor) if self.cursor else None, self.offset or 0
        )


PageQuery = Annotated[PageParams, Query()]


def cut_page(
    rows: Sequence[R], limit: int, key: Callable[[R], Cursor]
) -> tuple[Sequence[R], str | None]:
    """Split rows fetched with LIMIT limit + 1 into the page and the cursor that follows it
    (None on the last page): the extra row answers "is there more?" without a count."""
    if len(rows) <= limit:
        return rows, None
    page = rows[:limit]
    return page, key(page[-1]).encode()


def keyset_page(
    stmt: Select[Any],
    shape: tuple[bool, bool],
    created_at: ColumnElement[Any],
    row_id: ColumnElement[Any],
) -> Select[Any]:
    """Order by (created_at, id) descending and page: after the cursor, or at the offset.
    The values are bound parameters named as in Page.params."""
    after_cursor, with_offset = shape
    if after_cursor:
        # A row-value comparison: the database enters an index on (created_at DESC, id DESC)
        # at the cursor and reads forward, so the 1,000th page costs what the first does.
        stmt = stmt.where(
            tuple_(created_at, row_id)
            < tuple_(
                bindparam("cursor_created_at", type_=created_at.type),
                bindparam("cursor_id", type_=row_id.type),
            )
        )
    stmt = stmt.order_by(created_at.desc(), row_id.desc()).limit(bindparam("limit", type_=Integer))
    if with_offset:
        stmt = stmt.offset(bindparam("offset", type_=Integer))
    return stmt
