"""A list of values as one bound parameter, so that a read about "these ids" compiles once.

`column IN (:a, :b, ...)` is a different statement for each length of the list, which
defeats compiling a read once (fastpost.db refuses expanding IN lists for that reason).
On PostgreSQL the list travels as one array, `column = ANY($1::BIGINT[])`, and the planner
probes the column's index once per element. SQLite has no arrays: the list travels as one
JSON text that `json_each` unnests, `column IN (SELECT value FROM json_each(?))`, which
SQLite also answers by probing the index once per element.

Callers pass a plain Python list either way.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    any_,
    bindparam,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine


class _JsonList(TypeDecorator[list[Any]]):
    """A list bound as JSON text (SQLite's side of one_of)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value: list[Any] | None, dialect: Dialect) -> str | None:
        return None if value is None else orjson.dumps(value).decode()


def one_of(
    column: ColumnElement[Any], name: str, *, dialect: str, item_type: TypeEngine[Any]
) -> ColumnElement[bool]:
    """`column` equals one of the values of the list bound as `name`."""
    if dialect == "postgresql":
        # On PostgreSQL reads skip SQLAlchemy's bind processing (fastpost.db hands the
        # values to asyncpg as they are), and asyncpg takes a list for an array parameter.
        return column == any_(bindparam(name, type_=ARRAY(item_type)))
    values: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam(name, type_=_JsonList()))
    )
    return column.in_(values)
