"""The comments table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from fastpost.db import Base, IdType
from fastpost.timeutil import utcnow


class Comment(Base):
    __tablename__ = "comments"

    # Made by the database from its shard's range: see fastpost.ids.
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    post_id: Mapped[int] = mapped_column(IdType, ForeignKey("posts.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (Index("ix_comments_post_created", "post_id", text("created_at DESC")),)
