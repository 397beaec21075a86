"""Request and response bodies of the native comments routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, StringConstraints

from fastpost.schemas import RequestModel, UTCDateTime
from fastpost.users.schemas import UserSummary

# The same bound as the RealWorld API's comments, which share the table.
CommentBody = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]


class CommentCreate(RequestModel):
    body: CommentBody


class CommentOut(BaseModel):
    id: int
    post_id: int
    body: str
    created_at: UTCDateTime
    updated_at: UTCDateTime
    author: UserSummary


class CommentPage(BaseModel):
    items: list[CommentOut]
    next_cursor: str | None
