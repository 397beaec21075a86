"""Article slugs: readable, unique even for equal titles, and fixed once made."""

from __future__ import annotations

import re
import secrets
import unicodedata
from typing import Any

# Long enough to read, short enough for a URL; the suffix adds 9 characters.
MAX_BASE_LENGTH = 80
_NOT_WORD = re.compile(r"[^a-z0-9]+")


def slugify(title: str) -> str:
    """Lower-case ASCII words of a title joined by hyphens ("post" when none are left)."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    base = _NOT_WORD.sub("-", ascii_title.lower()).strip("-")[:MAX_BASE_LENGTH].rstrip("-")
    return base or "post"


def make_slug(title: str) -> str:
    """A slug for a new post: the title's words and 40 random bits.

    Random rather than the post's id: the id is made by the database on insert, and the
    slug must be in the same INSERT to be NOT NULL and unique. Two posts with the same
    title collide only if they also draw the same 8 characters (1 in 2**40); the unique
    index turns that into an error rather than a shared slug.
    """
    return f"{slugify(title)}-{secrets.token_hex(5)[:8]}"


def slug_default(context: Any) -> str:
    """Column default: a slug from the title being inserted."""
    return make_slug(str(context.get_current_parameters().get("title") or ""))
