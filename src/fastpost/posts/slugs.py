"""Article slugs: readable, unique even for equal titles, and fixed once made."""

from __future__ import annotations

import re
import secrets
import unicodedata
from typing import Any

from fastpost.ids import MAX_SHARDS

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


# Sharded mode: the suffix's low 5 bits name the post's logical shard (fastpost.ids, one per
# shard number an id carries), so that a slug leads to one database (fastpost.shards.realworld
# says why this rather than a directory). 27 random bits are left: two posts with the same
# title on one logical shard collide 1 in 2**27, an error of the unique index, as above.
_SUFFIX_LENGTH = 8
_SHARD_MASK = MAX_SHARDS - 1
_HEX = frozenset("0123456789abcdef")


def sharded_suffix(logical_shard: int) -> str:
    """8 random hex characters whose low 5 bits are the logical shard."""
    suffix = (secrets.randbits(32) & ~_SHARD_MASK) | (logical_shard & _SHARD_MASK)
    return f"{suffix:08x}"


def make_sharded_slug(title: str, logical_shard: int) -> str:
    """A slug for a new post of this logical shard: make_slug's, its suffix carrying it."""
    return f"{slugify(title)}-{sharded_suffix(logical_shard)}"


def logical_shard_of_slug(slug: str) -> int | None:
    """The logical shard a make_sharded_slug slug carries (None: not such a slug)."""
    suffix = slug[-_SUFFIX_LENGTH:]
    if len(slug) <= _SUFFIX_LENGTH or slug[-_SUFFIX_LENGTH - 1] != "-" or set(suffix) - _HEX:
        return None
    return int(suffix, 16) & _SHARD_MASK


def slug_default(context: Any) -> str:
    """Column default: a slug from the title being inserted."""
    return make_slug(str(context.get_current_parameters().get("title") or ""))
