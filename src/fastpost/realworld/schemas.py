"""Request bodies of the RealWorld API: each wrapped in its envelope ({"user": ...})."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StringConstraints, field_validator
from pydantic.config import JsonDict

from fastpost.pagination import MAX_LIMIT, MAX_OFFSET
from fastpost.posts.schemas import Content, Title
from fastpost.posts.tags import MAX_TAGS
from fastpost.schemas import SafeText, refuse_nul
from fastpost.users.schemas import Bio, Password, Username

Description = Annotated[str, StringConstraints(min_length=1, max_length=500)]
TagName = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
TagList = Annotated[list[TagName], Field(max_length=MAX_TAGS)]
CommentBody = Annotated[str, StringConstraints(min_length=1, max_length=10_000)]
Email = Annotated[EmailStr, StringConstraints(max_length=254)]
# Front ends send "" to clear an image; any other value must be a web address.
Image = Annotated[str, StringConstraints(max_length=2048, pattern=r"^(https?://\S+)?$")]


FilterName = Annotated[SafeText, StringConstraints(min_length=1, max_length=64)]


class ArticleListParams(BaseModel):
    """The query of `GET /articles`. One model rather than five parameters: FastAPI
    validates a query model in one pass (see fastpost.pagination.PageParams)."""

    tag: FilterName | None = None
    author: FilterName | None = None
    favorited: FilterName | None = None
    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class FeedParams(BaseModel):
    """The query of `GET /articles/feed`."""

    limit: int = Field(20, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class RealWorldBody(BaseModel):
    """Clients of this API send whole objects back (a user with its token, say): unknown
    fields are ignored here, unlike the native API's bodies."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        return refuse_nul(value) if isinstance(value, str) else value


def _not_null(value: object) -> object:
    """For a field the spec's schema lets a client omit but not set to null: omitted means
    "unchanged", null is refused (422, "can't be blank": see realworld.errors)."""
    if value is None:
        raise ValueError("must not be null")
    return value


def _without_null(schema: JsonDict) -> None:
    # OpenAPI shows such a field as the spec does: a string (or a list), never null, and
    # with no default (omitted means unchanged).
    schema.pop("default", None)
    options = schema.pop("anyOf", [])
    for option in options if isinstance(options, list) else []:
        if isinstance(option, dict) and option.get("type") != "null":
            schema.update(option)


def _omissible() -> Any:
    """The default of a field that may be omitted but not null (see _not_null)."""
    return Field(None, json_schema_extra=_without_null)


class NewUser(RealWorldBody):
    username: Username
    email: Email
    password: Password


class NewUserIn(RealWorldBody):
    user: NewUser


class LoginUser(RealWorldBody):
    email: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class LoginUserIn(RealWorldBody):
    user: LoginUser


class UpdateUser(RealWorldBody):
    email: Email | None = _omissible()
    username: Username | None = _omissible()
    password: Password | None = _omissible()
    # Nullable in the spec: null or "" clears them.
    bio: Bio | None = None
    image: Image | None = None

    _present = field_validator("email", "username", "password", mode="before")(_not_null)


class UpdateUserIn(RealWorldBody):
    user: UpdateUser


class NewArticle(RealWorldBody):
    title: Title
    description: Description
    body: Content
    tagList: TagList = Field(default_factory=list)  # noqa: N815 (the API's name)


class NewArticleIn(RealWorldBody):
    article: NewArticle


class UpdateArticle(RealWorldBody):
    title: Title | None = _omissible()
    description: Description | None = _omissible()
    body: Content | None = _omissible()
    # Omitted: the tags stay as they are; []: the article loses them all; null: 422.
    tagList: TagList | None = _omissible()  # noqa: N815

    _present = field_validator("title", "description", "body", "tagList", mode="before")(_not_null)


class UpdateArticleIn(RealWorldBody):
    article: UpdateArticle


class NewComment(RealWorldBody):
    body: CommentBody


class NewCommentIn(RealWorldBody):
    comment: NewComment


# Response bodies: they document the routes in OpenAPI; the routes build the same shapes
# from rows and serialise them once (see fastpost.responses).


class UserOut(BaseModel):
    email: str
    token: str
    username: str
    bio: str | None
    image: str | None


class UserEnvelope(BaseModel):
    user: UserOut


class ProfileOut(BaseModel):
    username: str
    bio: str | None
    image: str | None
    following: bool


class ProfileEnvelope(BaseModel):
    profile: ProfileOut


class ArticleSummary(BaseModel):
    """An article in a list: everything but the body."""

    slug: str
    title: str
    description: str
    tagList: list[str]  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    favorited: bool
    favoritesCount: int  # noqa: N815
    author: ProfileOut


class ArticleOut(ArticleSummary):
    body: str


class ArticleEnvelope(BaseModel):
    article: ArticleOut


class ArticlesEnvelope(BaseModel):
    articles: list[ArticleSummary]
    articlesCount: int  # noqa: N815


class CommentOut(BaseModel):
    id: int
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    body: str
    author: ProfileOut


class CommentEnvelope(BaseModel):
    comment: CommentOut


class CommentsEnvelope(BaseModel):
    comments: list[CommentOut]


class TagsEnvelope(BaseModel):
    tags: list[str]


class ErrorsOut(BaseModel):
    """The API's error body: each field with its messages."""

    errors: dict[str, list[str]]


_ERROR_DESCRIPTIONS = {
    401: "Missing or invalid token",
    403: "Not the author",
    404: "No such resource",
    409: "Already taken",
    422: "Invalid input, by field",
    429: "Too many requests; see Retry-After and RateLimit",
}


def realworld_errors(*statuses: int) -> dict[int | str, dict[str, object]]:
    """For OpenAPI: what a route may answer besides its success, in the API's error shape."""
    return {s: {"model": ErrorsOut, "description": _ERROR_DESCRIPTIONS[s]} for s in statuses}
