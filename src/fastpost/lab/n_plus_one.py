"""1. N+1: posts with their authors, a query per post against one join or one batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from fastpost.lab.context import Lab
from fastpost.lab.measure import median_run
from fastpost.lab.result import ExperimentResult, Measurement
from fastpost.posts.models import Post, PostStatus
from fastpost.users.models import User

PostsWithAuthors = list[tuple[int, str]]  # (post id, author username)


def newest_posts(limit: int) -> Select[Post]:
    """The newest published posts (the first page of GET /posts/, read by its index)."""
    return (
        select(Post)
        .where(Post.status == PostStatus.published.value)
        .order_by(Post.created_at.desc(), Post.id.desc())
        .limit(limit)
    )


async def query_per_post(session: AsyncSession, limit: int) -> PostsWithAuthors:
    """The anti-pattern: the page, then one SELECT per post for its author.

    Written out because Post.author is lazy="raise" in fastpost: touching it would raise
    instead of quietly sending the query that an ORM's default lazy loading sends."""
    page = (await session.scalars(newest_posts(limit))).all()
    out: PostsWithAuthors = []
    for post in page:
        # A fresh SELECT each time, as a lazy load from a new session would (session.get
        # would answer repeated authors from the identity map and hide part of the cost).
        author = (await session.scalars(select(User).where(User.id == post.author_id))).one()
        out.append((post.id, author.username))
    return out


async def joined(session: AsyncSession, limit: int) -> PostsWithAuthors:
    """One SELECT: posts JOIN users (joinedload, the right loader for a many-to-one)."""
    stmt = newest_posts(limit).options(joinedload(Post.author))
    return [(p.id, p.author.username) for p in (await session.scalars(stmt)).all()]


async def select_in(session: AsyncSession, limit: int) -> PostsWithAuthors:
    """Two SELECTs: the page, then its authors by `IN` (selectinload)."""
    stmt = newest_posts(limit).options(selectinload(Post.author))
    return [(p.id, p.author.username) for p in (await session.scalars(stmt)).all()]


async def batch(session: AsyncSession, limit: int) -> PostsWithAuthors:
    """Two SELECTs by hand: the page, then `WHERE id IN (...)` for its distinct authors."""
    page = (await session.scalars(newest_posts(limit))).all()
    ids = {p.author_id for p in page}
    authors = await session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    names = {author_id: username for author_id, username in authors}
    return [(p.id, names[p.author_id]) for p in page]


VARIANTS: Sequence[tuple[str, Callable[[AsyncSession, int], Awaitable[PostsWithAuthors]], bool]] = (
    ("query per post (N+1)", query_per_post, False),
    ("joinedload (JOIN)", joined, True),
    ("selectinload", select_in, False),
    ("batch WHERE id IN", batch, False),
)


async def run(lab: Lab) -> ExperimentResult:
    """Load the newest posts with their authors in each of four ways; count and time each."""
    limit = lab.config.n_plus_one_posts
    result = ExperimentResult(
        key="n_plus_one",
        title="1. N+1: posts with their authors",
        why="each query is a round trip and a trip through the driver and ORM; N+1 pays it per row",
    )
    size = f"{limit} posts"
    expected: PostsWithAuthors | None = None
    for name, load, is_fix in VARIANTS:

        async def action(
            load: Callable[[AsyncSession, int], Awaitable[PostsWithAuthors]] = load,
        ) -> PostsWithAuthors:
            # A new session per run: nothing answered from an identity map filled earlier.
            async with AsyncSession(lab.db.read_engine) as session:
                return await load(session, limit)

        measured = await median_run(action, lab.repeat)
        if expected is None:
            expected = measured.value
        elif measured.value != expected:
            raise AssertionError(f"{name} loaded different posts or authors")
        result.add(
            Measurement(
                name,
                size,
                measured.seconds * 1000,
                queries=len(measured.statements),
                is_fix=is_fix,
            )
        )
    result.set_ratios()
    anti = result.variant("query per post (N+1)")
    fix = result.variant("joinedload (JOIN)")
    result.verdict = (
        f"{anti.queries} statements instead of {fix.queries}: "
        f"{(anti.ratio or 0):.1f}x the time of the join for {limit} posts"
    )
    result.verdict_params = {
        "anti_queries": anti.queries,
        "fix_queries": fix.queries,
        "ratio": anti.ratio or 0,
        "posts": limit,
    }
    return result
