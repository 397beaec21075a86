"""Request and response bodies of the posts routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints, model_validator

from fastpost.ids import MAX_ID
from fastpost.pagination import PageParams
from fastpost.posts.models import PostStatus
from fastpost.posts.tags import MAX_TAG_LENGTH, MAX_TAGS, TagName
from fastpost.schemas import RequestModel, SafeText, UTCDateTime
from fastpost.users.schemas import UserSummary

Title = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Content = Annotated[str, StringConstraints(min_length=1, max_length=50_000)]
Description = Annotated[str, StringConstraints(max_length=500)]
# Duplicates and surrounding spaces are dropped, and the names sorted (posts.tags).
Tags = Annotated[list[TagName], Field(max_length=MAX_TAGS, description="Tag names")]


class PostCreate(RequestModel):
    title: Title
    content: Content
    description: Description = ""
    status: PostStatus = PostStatus.published
    tags: Tags = Field(default_factory=list)


class PostUpdate(RequestModel):
    title: Title | None = None
    content: Content | None = None
    description: Description | None = None
    status: PostStatus | None = None
    # Omitted: the tags stay as they are; []: the post loses them all.
    tags: Tags | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> PostUpdate:
        if not self.model_fields_set:
            raise ValueError("Give at least one field to change")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class PostOut(BaseModel):
    id: int
    # Made from the title when the post is created, and kept when it is edited.
    slug: str
    title: str
    description: str
    content: str
    status: PostStatus
    likes_count: int
    # Sorted by code point, the same on every backend.
    tags: list[str]
    created_at: UTCDateTime
    updated_at: UTCDateTime
    author: UserSummary
    # None for an anonymous caller: "not liked" and "unknown" are different answers.
    liked_by_me: bool | None = None


class PostPage(BaseModel):
    items: list[PostOut]
    next_cursor: str | None


class LikeOut(BaseModel):
    post_id: int
    liked: bool
    likes_count: int


class PostListParams(PageParams):
    """Query parameters of GET /posts/."""

    author_id: int | None = Field(None, ge=1, le=MAX_ID, description="Only this author's posts")
    status: PostStatus = Field(
        PostStatus.published, description="`draft` lists the caller's own drafts"
    )
    tag: SafeText | None = Field(
        None, min_length=1, max_length=MAX_TAG_LENGTH, description="Only posts with this tag"
    )
