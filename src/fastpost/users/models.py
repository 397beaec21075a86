"""The users table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from fastpost.db import Base, IdType
from fastpost.timeutil import utcnow


class User(Base):
    __tablename__ = "users"

    # Made by the database from its shard's range: see fastpost.ids.
    id: Mapped[int] = mapped_column(IdType, primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    bio: Mapped[str | None] = mapped_column(Text)
    image: Mapped[str | None] = mapped_column(String(2048))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # May ask for a profile of any request (fastpost.observability.profiling); `fastpost
    # admin grant`.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow
    )

    __table_args__ = (
        # Login and "find by email" only ever look for active accounts.
        Index(
            "ix_users_email_active",
            "email",
            postgresql_where=text("is_active"),
            sqlite_where=text("is_active"),
        ),
        # One account per name whatever its case (migration 0006): registration and login
        # look names up through it.
        Index("uq_users_username_lower", func.lower(username), unique=True),
    )
