"""The posts and likes tables."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fastpost.db import Base, IdType
from fastpost.timeutil import utcnow
from fastpost.users.models import User


class PostStatus(enum.StrEnum):
    draft = "draft"
    published = "published"


class Post(Base):
    __tablename__ = "posts"

    # Made by the database from its shard's range: see fastpost.ids.
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    author_id: Mapped[int] = mapped_column(IdType, ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(String(200))
    content: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=PostStatus.published)
    # Kept exact by the like/unlike statements themselves (see posts.service), so lists and
    # "popular" never count the likes table.
    likes_count: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )
    # PostgreSQL also has a generated `search_vector` column and SQLite a `posts_fts` table,
    # both made by the migrations; they are not mapped so that no ORM load ever carries them.

    author: Mapped[User] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint("status IN ('draft', 'published')", name="ck_posts_status"),
        CheckConstraint("likes_count >= 0", name="ck_posts_likes_count"),
        # Keyset pages: (created_at, id) is the sort key, id breaks ties.
        Index("ix_posts_author_created", "author_id", text("created_at DESC"), text("id DESC")),
        Index("ix_posts_status_created", "status", text("created_at DESC"), text("id DESC")),
        Index("ix_posts_status_likes", "status", text("likes_count DESC"), text("id DESC")),
    )


class Like(Base):
    __tablename__ = "likes"

    user_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    post_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("ix_likes_post", "post_id"),)
