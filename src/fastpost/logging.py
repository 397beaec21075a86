"""structlog configuration: JSON lines in production, readable console lines in development.

Everything logged while a request is served carries its `request_id` (set on the request's
stats by the observability middleware), whether it is logged through structlog or the
standard library (`logging.getLogger(...)`, which is rendered by the same processors).
Keys that name a password, token, secret, authorization or cookie are masked, and so is
anything in a value that looks like a bearer token or a JWT: no credential reaches a log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from fastpost.request_stats import RequestStats, current_request

REDACTED = "[redacted]"
_SENSITIVE_WORDS = ("password", "passwd", "token", "secret", "authorization", "cookie", "jwt")
_sensitive_key: dict[str, bool] = {}
_CREDENTIAL = re.compile(
    r"(?i:bearer\s+)[\w.~+/=-]+"
    r"|eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*"
    r"|\$argon2\w*\$[\w$=,+/.-]+"
    # "password=..." in free text: the rest of the field, spaces included.
    r"|(?i:password|passwd|secret|token)\s*[=:]\s*[^&,;\"\n]+"
)


def _is_sensitive(key: str) -> bool:
    sensitive = _sensitive_key.get(key)
    if sensitive is None:
        lowered = key.lower()
        sensitive = any(word in lowered for word in _SENSITIVE_WORDS)
        if len(_sensitive_key) < 1024:
            _sensitive_key[key] = sensitive
    return sensitive


def redact(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Mask credentials by key name and by the look of the value."""
    for key, value in event_dict.items():
        if _is_sensitive(key):
            event_dict[key] = REDACTED
        elif isinstance(value, str) and _CREDENTIAL.search(value):
            event_dict[key] = _CREDENTIAL.sub(REDACTED, value)
        elif isinstance(value, MutableMapping):
            redact(logger, method_name, value)
    return event_dict


def add_request_id(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Name the request being served, if any, in every line logged while serving it."""
    stats = current_request.get()
    if stats is not None and stats.request_id:
        event_dict.setdefault("request_id", stats.request_id.decode("latin-1"))
    return event_dict


def _orjson_dumps(event_dict: EventDict, **_: Any) -> str:
    return orjson.dumps(event_dict, default=repr).decode()


def configure_logging(
    *, level: str = "INFO", json: bool = False, stream: TextIO | None = None
) -> None:
    """Set up structlog and the standard library's root logger to write to `stream`."""
    stream = stream or sys.stdout
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer]
        if json
        else [*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level]),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        # Not cached: tests (and `configure_logging` again) may point the output elsewhere.
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_fastpost", False)]:
        root.removeHandler(old)
    handler._fastpost = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    access.configure(level, json, stream)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class _Access:
    """The access line: once per request, so it has a path of its own.

    A structlog `info()` with the full processor chain costs about 13 us on this machine, a
    fifth of a whole `GET /health`: the context merge (which walks every context variable of
    the request), the redaction pass and the generic renderer. The access line's fields are
    named by the middleware and safe by construction (the route template and path, never a
    body or a header; a request id that passed a strict pattern), so in JSON mode it is
    printed straight into a fixed template of the same shape as structlog's lines: 1.5 us,
    where building a dict for orjson cost 7 (both measured with timeit, this machine). Only
    the path can hold characters JSON must escape; it goes through orjson. In console mode
    the line goes through structlog as any other line.

    While the app runs, JSON lines are written in batches (`batching`): containers commonly
    set PYTHONUNBUFFERED, which makes every write to stdout a system call of its own, and a
    write per request cost a quarter of the middleware's time on `GET /health` (py-spy,
    this machine). A request only leaves its record (RequestStats); the lines are formatted
    together as their batch is written (see fastpost.middleware.Edge for why). A batch goes
    out when it holds BATCH_LINES, when the app's flusher runs (every FLUSH_SECONDS) and at
    shutdown; a crash loses at most that much.
    """

    BATCH_LINES = 256  # about 64 KiB
    FLUSH_SECONDS = 0.5
    _LINE = (
        b'{"event":"request","level":"info","timestamp":"%s.%06dZ","request_id":"%s",'
        b'"method":"%s","route":%s,"path":%s,"status":%d,"duration_ms":%.2f,'
        b'"db_queries":%d,"db_ms":%.2f,"cache_hits":%d,"cache_misses":%d,"user_id":%s}\n'
    )

    def __init__(self) -> None:
        self.enabled = True
        self.json = False
        self.stream: TextIO = sys.stdout
        self.batching = False
        # JSON lines held back for a batch (see _decide_holding): what `request` checks first.
        self._holding = False
        # Served requests whose lines are not written yet.
        self._pending: list[RequestStats] = []
        self._second = -1
        self._prefix = b""
        # JSON-encoded route templates (a few dozen, fixed by the app).
        self._routes: dict[str, bytes] = {}

    def configure(self, level: str, json: bool, stream: TextIO) -> None:
        self.flush()
        self.enabled = logging.getLevelNamesMapping()[level] <= logging.INFO
        self.json = json
        self.stream = stream
        self._decide_holding()

    def _decide_holding(self) -> None:
        self._holding = self.enabled and self.json and self.batching

    def flush(self) -> None:
        """Write the lines held back so far."""
        if self._pending:
            served, self._pending = self._pending, []
            self._write(self._lines(served))

    def _write(self, data: bytes) -> None:
        binary = getattr(self.stream, "buffer", None)  # a text stream over a file
        if binary is not None:
            self.stream.flush()  # what was written to it as text goes out first
            binary.write(data)
            binary.flush()
        else:
            self.stream.write(data.decode())
            self.stream.flush()

    def start_batching(self) -> asyncio.Task[None]:
        """Hold lines back from now on; return the task that writes them out periodically
        (cancel it, then call stop_batching)."""
        self.batching = True
        self._decide_holding()
        return asyncio.create_task(self._flush_forever())

    def stop_batching(self) -> None:
        """Write what is held back and write each line at once again."""
        self.batching = False
        self._decide_holding()
        self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_SECONDS)
            self.flush()

    def request(self, stats: RequestStats) -> None:
        """Log one served request, from its record (see RequestStats)."""
        if self._holding:
            pending = self._pending
            pending.append(stats)
            if len(pending) >= self.BATCH_LINES:
                self.flush()
        elif not self.enabled:
            return
        elif self.json:
            self._write(self._lines([stats]))
        else:
            structlog.get_logger("fastpost.access").info(
                "request",
                request_id=stats.request_id.decode("latin-1"),
                method=stats.method,
                route=stats.route,
                path=stats.path,
                status=stats.status,
                duration_ms=round(stats.duration * 1000, 2),
                db_queries=stats.db_queries,
                db_ms=round(stats.db_seconds * 1000, 2),
                cache_hits=stats.cache_hits,
                cache_misses=stats.cache_misses,
                user_id=stats.user_id,
            )

    def _lines(self, served: list[RequestStats]) -> bytes:
        """The JSON lines of these served requests.

        One loop with everything inline: a call per line cost a tenth of the line (timeit,
        this machine)."""
        # From the requests' clock (time.perf_counter) to the wall clock, read once: the
        # batch is at most FLUSH_SECONDS old.
        clock_offset = time.time() - time.perf_counter()
        template = self._LINE
        routes = self._routes
        dumps = orjson.dumps
        last_second, prefix = self._second, self._prefix
        lines = []
        for stats in served:
            now = stats.ended + clock_offset
            second = int(now)
            if second != last_second:
                last_second = second
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
            route = stats.route
            route_json = routes.get(route)
            if route_json is None:
                route_json = routes[route] = dumps(route)
            user_id = stats.user_id
            lines.append(
                template
                % (
                    prefix,
                    int((now - second) * 1_000_000),
                    stats.request_id,
                    stats.method.encode(),
                    route_json,
                    dumps(stats.path),
                    stats.status,
                    stats.duration * 1000,
                    stats.db_queries,
                    stats.db_seconds * 1000,
                    stats.cache_hits,
                    stats.cache_misses,
                    b"null" if user_id is None else b"%d" % user_id,
                )
            )
        self._second, self._prefix = last_second, prefix
        return b"".join(lines)


access = _Access()
