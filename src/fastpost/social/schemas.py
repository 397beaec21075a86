"""Response bodies of the social routes."""

from __future__ import annotations

from pydantic import BaseModel

from fastpost.posts.schemas import PostOut
from fastpost.users.schemas import UserOut, UserSummary


class UserPage(BaseModel):
    items: list[UserSummary]
    next_cursor: str | None


class FollowOut(BaseModel):
    user_id: int
    following: bool


class OverviewOut(BaseModel):
    user: UserOut
    latest_posts: list[PostOut]
    friends: list[UserSummary]
