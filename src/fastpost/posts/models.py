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
from fastpost.posts.slugs import slug_default
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
    # Made from the title on insert and never changed, so links stay valid after edits.
    slug: Mapped[str] = mapped_column(String(100), default=slug_default)
    description: Mapped[str] = mapped_column(String(500), default="", server_default="")
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
        # The feed's range per followed author (migration 0007).
        Index(
            "ix_posts_author_published",
            "author_id",
            text("created_at DESC"),
            text("id DESC"),
            postgresql_where=text("status = 'published'"),
            sqlite_where=text("status = 'published'"),
        ),
        Index("ix_posts_status_created", "status", text("created_at DESC"), text("id DESC")),
        Index("ix_posts_status_likes", "status", text("likes_count DESC"), text("id DESC")),
        Index("uq_posts_slug", "slug", unique=True),
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


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)


class PostTag(Base):
    __tablename__ = "post_tags"

    post_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("posts.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(
        IdType, ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True
    )
    # The post's own created_at, copied so that a tag's posts are read newest first from
    # one index (migration 0003).
    created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # The primary key serves "tags of a post"; this serves "posts with a tag, newest first".
    __table_args__ = (
        Index("ix_post_tags_tag_created", "tag_id", text("created_at DESC"), text("post_id DESC")),
    )


class PostCount(Base):
    """How many published posts each filter matches, kept exact by database triggers.

    kind 'a' (ref_id 0): every published post; 'u': by author ref_id; 't': with tag ref_id;
    'f': liked by user ref_id. The triggers (migration 0002) run in the transaction of
    the write that changes a count, whichever code path made it (services, seed, tests),
    so a list's total is one primary-key read instead of a count(*) over the filtered set.
    """

    __tablename__ = "post_counts"

    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    ref_id: Mapped[int] = mapped_column(IdType, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
