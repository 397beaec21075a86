"""Configuration: one pydantic-settings class, read from `FASTPOST_*` variables and `.env`.

Groups are nested and addressed with a double underscore, for example
`FASTPOST_DB__URL`, `FASTPOST_DB__POOL_SIZE`, `FASTPOST_AUTH__SECRET_KEY`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DATA_DIR = Path("data")

# Below this many characters an HMAC key is guessable by brute force; 32 url-safe
# characters carry about 190 bits.
MIN_SECRET_KEY_LENGTH = 32


class DatabaseSettings(BaseModel):
    url: str = f"sqlite+aiosqlite:///{DATA_DIR / 'fastpost.db'}"
    # Connections per worker process: pool_size for reads, write_pool_size for write
    # transactions. workers x (pool_size + write_pool_size) must stay under PostgreSQL's
    # max_connections (100 by default); `fastpost serve` checks it.
    pool_size: int = Field(default=10, ge=1, le=200)
    write_pool_size: int = Field(default=5, ge=1, le=200)
    # How long a request waits for a pooled connection before it is answered 503 (a pool
    # that stays exhausted this long means a database that is down, frozen or overwhelmed).
    pool_timeout: float = Field(default=5.0, gt=0)
    # Opening a connection (TCP and PostgreSQL's start-up): a frozen server accepts the TCP
    # connection and never answers, so only this ends the wait (asyncpg's default is 60 s).
    connect_timeout: float = Field(default=5.0, gt=0)
    # PostgreSQL: a statement of a request unanswered after this is cancelled, its connection
    # dropped and the request answered 503 (0: wait for ever). The app's pools only: the
    # CLI's migrations and seeds may run longer. A request's statements are keyed reads and
    # bounded pages, far inside it; a frozen or partitioned database never answers at all.
    statement_timeout: float = Field(default=5.0, ge=0)
    # Shard number baked into every id this database makes (see fastpost.ids).
    shard_id: int = Field(default=0, ge=0, lt=32)
    # SQLite: how long a writer waits for another process's write lock.
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    echo: bool = False
    # PostgreSQL streaming replicas that take the reads which may be slightly stale, as
    # FASTPOST_DB__REPLICA_URLS=postgresql+asyncpg://...:5434/db,postgresql+asyncpg://...
    # (see fastpost.replicas). Each worker opens pool_size connections to each of them.
    replica_urls: Annotated[list[str], NoDecode] = []
    # A replica further behind than this leaves the rotation until it catches up.
    replica_max_lag_seconds: float = Field(default=5.0, gt=0)
    # How often each worker asks every replica how far it has replayed.
    replica_check_interval_seconds: float = Field(default=0.5, gt=0)
    # Sharded mode (fastpost.shards): the PostgreSQL databases the 32 logical shards are
    # spread over, as a JSON list, FASTPOST_DB__SHARDS='["postgresql+asyncpg://...", ...]'.
    # The first is also the directory (shard map, usernames); `url` is not used then. Empty:
    # one database, `url`.
    shards: list[str] = []
    # Sharded mode: how often each instance reads the shard map, to follow a move when no
    # Redis announcement reaches it (fastpost.shards.map_watch).
    shard_map_check_seconds: float = Field(default=1.0, gt=0)

    @field_validator("replica_urls", mode="before")
    @classmethod
    def _split_replica_urls(cls, value: object) -> object:
        if isinstance(value, str):
            return [url.strip() for url in value.split(",") if url.strip()]
        return value

    @model_validator(mode="after")
    def _replicas_need_postgres(self) -> DatabaseSettings:
        if self.replica_urls and (
            self.is_sqlite or any(url.startswith("sqlite") for url in self.replica_urls)
        ):
            raise ValueError("read replicas (FASTPOST_DB__REPLICA_URLS) need PostgreSQL")
        return self

    @model_validator(mode="after")
    def _shards_need_postgres(self) -> DatabaseSettings:
        if self.shards:
            if any(not url.startswith("postgresql") for url in self.shards):
                raise ValueError(
                    "sharded mode (FASTPOST_DB__SHARDS) needs PostgreSQL: every URL must be "
                    "postgresql+asyncpg://..."
                )
            if self.replica_urls:
                raise ValueError("sharded mode does not take read replicas yet")
            if len(set(self.shards)) != len(self.shards):
                raise ValueError("FASTPOST_DB__SHARDS names a database twice")
            if len(self.shards) > 32:  # one logical shard each at most (fastpost.ids)
                raise ValueError("FASTPOST_DB__SHARDS names more than 32 databases")
        return self

    def for_shard(self, url: str) -> DatabaseSettings:
        """These settings for one database of sharded mode."""
        return self.model_copy(update={"url": url, "shards": []})

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


class AuthSettings(BaseModel):
    secret_key: str | None = None
    # Key rotation: the keys secret_key replaced, newest first, comma-separated. Tokens they
    # signed are still accepted until they expire; new tokens are signed with secret_key
    # only. Each key is named in its tokens' `kid` header (fastpost.security.key_id).
    previous_secret_keys: Annotated[list[str], NoDecode] = []
    # When secret_key replaced the previous keys (ISO 8601, with a zone): tokens they sign
    # are then accepted only if issued before it, so a leaked old key cannot mint new ones,
    # and all are gone token_lifetime_seconds later.
    rotated_at: AwareDatetime | None = None
    # The only algorithm accepted, whatever a token's header says.
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    token_lifetime_seconds: int = Field(default=3600, ge=60, le=30 * 24 * 3600)
    # Clock skew allowed between the issuing and the checking host for exp, nbf and iat.
    leeway_seconds: int = Field(default=30, ge=0, le=300)
    # Argon2id, OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1, one of its five
    # configurations of equal strength (README, "Configuration", says why this one). A stored
    # hash made with other parameters is rehashed at its owner's next login. Tests lower them.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_cost_kib: int = Field(default=19456, ge=8)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Hashes running at once per process (None: the CPUs available to it); more logins wait.
    password_hash_concurrency: int | None = Field(default=None, ge=1)
    # A login or registration that waited this long for a hashing slot gets 503 with
    # Retry-After (None: wait for ever).
    password_queue_timeout_seconds: float | None = Field(default=5.0, gt=0)

    @field_validator("previous_secret_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value


class ApiSettings(BaseModel):
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # Requests inside a worker at once; beyond it each is answered 503 with Retry-After at
    # once (fastpost.overload; /health and /metrics are exempt). 0: no bound. 256: four
    # times the benchmarks' 64 connections, so that no benchmark trips it even with all of
    # its connections on one worker, and few enough that the requests a worker does serve
    # under a flood wait in its queues for a bounded time, holding bounded memory.
    max_requests_in_flight: int = Field(default=256, ge=0)
    default_page_size: int = Field(default=20, ge=1)
    max_page_size: int = Field(default=100, ge=1)
    # How long a POST's answer is kept for retries with its Idempotency-Key (24 h).
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    # How long a key stays in flight for its first request: longer than any POST may run,
    # or a retry would run it a second time; after a crash, a retry runs once it is over.
    idempotency_lock_seconds: float = Field(default=60.0, gt=0)


class RateLimitSettings(BaseModel):
    """Per-client request budgets (fastpost.rate_limits), in the notation of the `limits`
    library: "N/second", "N/minute", "N/hour" or "N/day" (or "N per 15 minutes"), several
    joined by ";"; an empty string lifts that one."""

    # None: on in production only. A development server (`make run`) is where the course's
    # Locust scenarios (loadtests/) log fifty users in as one account within seconds; in
    # production that is exactly what the login budget must refuse. false: no limiter is
    # built and no request pays for one (the benchmarks' servers).
    enabled: bool | None = None
    # Every login attempt, per client address (each costs a password hash) ...
    login_per_ip: str = "20/minute"
    # ... and per account named (username, or email on /api/users/login): guessing one
    # account's password from many addresses.
    login_per_account: str = "10/minute"
    register_per_ip: str = "10/minute"
    # POST, PUT, PATCH and DELETE with a valid token, per user (logins and registrations
    # have their own budgets above).
    writes_per_user: str = "120/minute"
    # The reads that cost the database most and that no cache answers: search and feeds.
    expensive_reads_per_ip: str = "120/minute"
    # A Redis call slower than this counts as Redis down: the limits fall back to counters
    # in the worker's memory until Redis answers again.
    redis_timeout_seconds: float = Field(default=0.25, gt=0)

    @field_validator(
        "login_per_ip",
        "login_per_account",
        "register_per_ip",
        "writes_per_user",
        "expensive_reads_per_ip",
    )
    @classmethod
    def _parses(cls, value: str) -> str:
        if value.strip():
            from limits import parse_many

            parse_many(value)  # a ValueError names what it could not read
        return value


class CacheSettings(BaseModel):
    enabled: bool = True
    # Tier 1 (in process). Its TTL bounds how long another worker may serve a value after
    # a write whose pub/sub invalidation it missed: see fastpost.cache.
    local_ttl_seconds: float = Field(default=5.0, gt=0)
    local_max_entries: int = Field(default=10_000, ge=1)
    local_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # HTTP: how long a shared cache (a CDN, nginx) may keep an anonymous response before it
    # revalidates (s-maxage; 0: never without asking). Browsers revalidate every time
    # whatever this says (README, "HTTP caching policy"). Above 0, a reader behind such a
    # cache may see a page up to this old, the author of a write included.
    shared_max_age_seconds: int = Field(default=0, ge=0, le=3600)


class ObservabilitySettings(BaseModel):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # auto: JSON lines in production, console lines otherwise.
    log_format: Literal["auto", "json", "console"] = "auto"
    # One line per request (request_id, route, status, duration, queries, user).
    access_log: bool = True
    # A statement shape repeated more than this many times in one request is an N+1 (0: off).
    n_plus_one_threshold: int = Field(default=5, ge=0)
    # Statements slower than this are logged, with their plan on PostgreSQL (None: off).
    slow_query_ms: float | None = Field(default=None, gt=0)
    # The prometheus_client multiprocess folder `fastpost serve` prepares (default:
    # DATA_DIR/metrics).
    metrics_dir: Path | None = None
    # OpenTelemetry (the `otel` extra): auto = on when installed and an exporter is set.
    tracing: Literal["auto", "on", "off"] = "auto"
    # How often each worker folds its request and query tallies into the shared metrics.
    metrics_flush_seconds: float = Field(default=1.0, gt=0)
    # How often each worker refreshes its CPU, memory and pool gauges.
    sample_interval_seconds: float = Field(default=5.0, gt=0)
    # How often each worker checks how late its event loop runs a due timer
    # (fastpost_event_loop_lag_seconds): one timer per check, whatever the load.
    loop_lag_interval_seconds: float = Field(default=0.25, gt=0)
    # The Server-Timing header (database, cache and app time of each response): it tells
    # anyone how long the database took, so None means on outside production, off in it.
    server_timing: bool | None = None


class ServeSettings(BaseModel):
    """How `fastpost serve` tunes its worker processes (fastpost.worker)."""

    # Freeze what startup built (gc.freeze) and collect the young generation less often
    # (fastpost.worker.GC_YOUNG_THRESHOLD). Process-wide, so a worker's decision, never
    # create_app's.
    tune_gc: bool = True


class SecuritySettings(BaseModel):
    """Who may read what beyond the API itself, and the headers every response carries."""

    # Strict-Transport-Security max-age in production (0: not sent). Outside production
    # it is never sent: a browser would remember it for localhost.
    hsts_seconds: int = Field(default=31_536_000, ge=0)
    # In production, GET /metrics answers only these client addresses or networks
    # (comma-separated: 127.0.0.1,10.0.0.0/8) or a request with metrics_token as its
    # bearer token; everyone else gets 404. Outside production it answers anyone.
    metrics_allow: Annotated[list[str], NoDecode] = ["127.0.0.1", "::1"]
    metrics_token: str | None = None

    @field_validator("metrics_allow", mode="before")
    @classmethod
    def _split_addresses(cls, value: object) -> object:
        if isinstance(value, str):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    @field_validator("metrics_allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for address in value:
            ipaddress.ip_network(address, strict=False)  # a ValueError names the bad one
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FASTPOST_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
    )

    env: Literal["development", "production", "test"] = "development"
    data_dir: Path = DATA_DIR
    db: DatabaseSettings = DatabaseSettings()
    auth: AuthSettings = AuthSettings()
    api: ApiSettings = ApiSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    # Origins whose browser pages may call the API (RealWorld front ends, say), as
    # FASTPOST_CORS_ORIGINS=http://localhost:3000,http://localhost:4200; "*" for any.
    cors_origins: Annotated[list[str], NoDecode] = []
    # FASTPOST_PROFILING=1: `?profile=1` returns a pyinstrument profile of the request.
    profiling: bool = False
    # Error tracking (the `sentry` extra): unhandled errors go to this Sentry DSN, with the
    # request id, route and user id and no credential (fastpost.observability.sentry).
    # Top-level, not in the observability group: FASTPOST_SENTRY_DSN, as Sentry's own docs
    # name the variable SENTRY_DSN.
    sentry_dsn: str | None = None
    cache: CacheSettings = CacheSettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    security: SecuritySettings = SecuritySettings()
    serve: ServeSettings = ServeSettings()
    # Tier 2 of the cache; without it the cache is in-process only (FASTPOST_REDIS_URL).
    # One server (redis://host:port/db) or a Redis Cluster (redis+cluster://host:port,...):
    # see fastpost.redis_client.
    redis_url: str | None = None

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        # Refused at start-up, with the reason, rather than on the first cache miss.
        if value is not None:
            from fastpost.redis_client import parse_redis_url

            parse_redis_url(value)
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @property
    def rate_limited(self) -> bool:
        """Whether requests are counted against the budgets (fastpost.rate_limits)."""
        enabled = self.rate_limits.enabled
        return self.env == "production" if enabled is None else enabled

    @model_validator(mode="after")
    def _refuse_weak_key_in_production(self) -> Settings:
        if self.env != "production":
            return self
        key = self.auth.secret_key
        if not key:
            raise ValueError(
                "FASTPOST_AUTH__SECRET_KEY is not set. In production the token signing key "
                "must be given explicitly; generate one with: "
                "python -c 'import secrets; print(secrets.token_urlsafe(48))'"
            )
        if len(key) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"FASTPOST_AUTH__SECRET_KEY is too weak: {len(key)} characters, "
                f"at least {MIN_SECRET_KEY_LENGTH} are required in production."
            )
        if any(len(old) < MIN_SECRET_KEY_LENGTH for old in self.auth.previous_secret_keys):
            raise ValueError(
                "FASTPOST_AUTH__PREVIOUS_SECRET_KEYS holds a key shorter than "
                f"{MIN_SECRET_KEY_LENGTH} characters: tokens it signed could be forged."
            )
        return self

    @cached_property
    def secret_key(self) -> str:
        """The signing key: configured, or in development made once and kept in the data folder."""
        if self.auth.secret_key:
            return self.auth.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            # Written aside and hard-linked into place: several workers starting at once
            # all agree on whichever key won, and nobody ever reads a half-written file.
            tmp = path.with_name(f".secret_key.{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
            tmp.unlink()
        return path.read_text().strip()
