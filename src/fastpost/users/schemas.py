"""Request and response bodies of the users and auth routes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, EmailStr, Field, StringConstraints, model_validator

from fastpost.schemas import RequestModel, UTCDateTime

Username = Annotated[
    str, StringConstraints(min_length=3, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128, strip_whitespace=False)]
Bio = Annotated[str, StringConstraints(max_length=2000)]
ImageUrl = Annotated[str, StringConstraints(max_length=2048, pattern=r"^https?://\S+$")]


class RegisterIn(RequestModel):
    username: Username
    email: Annotated[EmailStr, StringConstraints(max_length=254)]
    password: Password


class LoginIn(RequestModel):
    username: Annotated[str, StringConstraints(min_length=1, max_length=254)]
    password: Annotated[
        str, StringConstraints(min_length=1, max_length=128, strip_whitespace=False)
    ]


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the token expires")


class UserSummary(BaseModel):
    """A user as embedded in other resources."""

    id: int
    username: str
    image: str | None


class UserOut(BaseModel):
    """A user's public profile."""

    id: int
    username: str
    bio: str | None
    image: str | None
    created_at: UTCDateTime


class MeOut(UserOut):
    """The caller's own profile: adds what only they may see."""

    email: str
    updated_at: UTCDateTime


class MeUpdate(RequestModel):
    username: Username | None = None
    email: Annotated[EmailStr, StringConstraints(max_length=254)] | None = None
    password: Password | None = None
    bio: Bio | None = None
    image: ImageUrl | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> MeUpdate:
        if not self.model_fields_set:
            raise ValueError("Give at least one field to change")
        for name in ("username", "email", "password"):
            if name in self.model_fields_set and getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self
