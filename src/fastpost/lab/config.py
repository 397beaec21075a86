"""The lab's sizes and switches, as given on the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fastpost.seed import SeedPlan


@dataclass
class LabConfig:
    """Sizes of the seeded data and of each experiment.

    The defaults finish in about a minute on SQLite on a 2-core machine (seeding included);
    the README lists the larger sizes worth a run on a quiet machine.
    """

    database_url: str | None = None
    redis_url: str | None = None
    # Keep the database after the run, and reuse one seeded with the same plan next time.
    keep: bool = False
    # Where kept SQLite files live (and temporary ones, when not kept: a fresh folder).
    work_dir: Path = Path("data") / "lab"
    plan: SeedPlan = field(
        default_factory=lambda: SeedPlan(users=1000, posts=30_000, follows=10_000, likes=30_000)
    )
    repeat: int = 3
    # 1. N+1: posts loaded with their authors.
    n_plus_one_posts: int = 100
    # 2. The overview, read sequentially and with gather, for this many users.
    overview_users: int = 20
    # 3. Membership: container sizes.
    list_sizes: tuple[int, ...] = (100, 10_000, 1_000_000)
    # 4. Pagination: pages of page_size posts.
    pages: tuple[int, ...] = (1, 100, 1000, 10_000)
    page_size: int = 20
    # 5. Index: lookups timed per variant.
    index_lookups: int = 50
    # 6. Cache: post detail requests per variant.
    cache_requests: int = 200
    # 7. CPU-bound: password hashes run at once, with fastpost's Argon2 settings.
    hashes: int = 4
    process_workers: int = 2
    # 8. Memory: rows read, and the page / batch size of the paginated and streamed reads.
    stream_rows: int = 20_000
    stream_batch: int = 1000
    # 9. Outbound HTTP: concurrent calls to an endpoint that answers after a fixed delay.
    http_calls: int = 20
    http_delay_ms: float = 50.0
