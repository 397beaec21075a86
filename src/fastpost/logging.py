"""structlog configuration: JSON lines in production, readable console lines in development.

Everything logged while a request is served carries its `request_id` (set on the request's
stats by the observability middleware), whether it is logged through structlog or the
standard library (`logging.getLogger(...)`, which is rendered by the same processors).
Keys that name a password, token, secret, authorization or cookie are masked, and so is
anything in a value that looks like a bearer token or a JWT: no credential reaches a log.

Exceptions are rendered to text before that masking, as plain tracebacks without local
variables in every environment (a frame's locals hold request bodies, passwords and
headers), and in JSON as one line with the traceback in its `exception` field. The server's
own loggers (uvicorn's) go through the same handler, so their lines are masked and, in
production, JSON too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
import time
import traceback
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from fastpost import served
from fastpost.request_stats import RequestStats, current_request

REDACTED = "[redacted]"
_SENSITIVE_WORDS = ("password", "passwd", "token", "secret", "authorization", "cookie", "jwt")
_sensitive_key: dict[str, bool] = {}
_CREDENTIAL = re.compile(
    r"(?i:bearer|basic)\s+[\w.~+/=-]+"
    r"|eyJ[\w-]{5,}\.[\w-]{5,}\.[\w-]*"
    r"|\$argon2\w*\$[\w$=,+/.-]+"
    # "password=..." in free text or a query string, '"password": "..."' in a body's repr:
    # the quoted value, or the rest of the field, spaces included.
    r"|(?i:password|passwd|secret|token|api_?key)[\"']?\s*[=:]\s*"
    r"(?:\"[^\"]*\"|'[^']*'|[^&,;\"\n]+)"
)


def redact_text(text: str) -> str:
    """`text` with whatever looks like a credential masked (paths, query strings, headers)."""
    # Whatever _CREDENTIAL matches holds one of these; most paths hold none, and these
    # tests cost a fraction of one search (python -m timeit on a post's path).
    if (
        "eyJ" in text
        or "=" in text
        or ":" in text
        or "$" in text
        or " " in text
        or not text.isprintable()  # other whitespace
    ):
        return _CREDENTIAL.sub(REDACTED, text)
    return text


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


def render_exception(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Replace `exc_info` by the traceback as text, without local variables, so that the
    masking that follows sees it (and a JSON line holds it as one field)."""
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    exc: BaseException | None
    if isinstance(exc_info, BaseException):
        exc = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = sys.exc_info()[1]
    if exc is not None:
        event_dict["exception"] = "".join(traceback.format_exception(exc))
        # The server logs an error that reaches it (one raised after its response had
        # started) once more: once is enough (_AlreadyLogged).
        with contextlib.suppress(AttributeError, TypeError):
            exc.__fastpost_logged__ = True  # type: ignore[attr-defined]
    return event_dict


class _AlreadyLogged(logging.Filter):
    """Drops the server's "Exception in ASGI application" line for an error that fastpost
    logged already."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not getattr(exc, "__fastpost_logged__", False)


# The server's loggers, which it gives handlers of its own (plain text, unmasked): their
# records are sent to the root logger's handler instead, fastpost's.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "granian", "granian.access")


def add_request_id(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Name the request being served, if any, in every line logged while serving it."""
    stats = current_request.get()
    if stats is not None and stats.request_id:
        event_dict.setdefault("request_id", stats.request_id.decode("latin-1"))
    return event_dict


def _orjson_dumps(event_dict: EventDict, **_: Any) -> str:
    return orjson.dumps(event_dict, default=repr).decode()


def configure_logging(
    *,
    level: str = "INFO",
    json: bool = False,
    stream: TextIO | None = None,
    access_lines: bool = True,
) -> None:
    """Set up structlog and the standard library's root logger to write to `stream`, with an
    access line per request unless `access_lines` is off (or `level` is above INFO)."""
    stream = stream or sys.stdout
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        add_request_id,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Before the masking: a traceback's text is masked like any other value.
        render_exception,
        redact,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        if json
        # Tracebacks arrive as text already (render_exception): no rich rendering of
        # every frame's local variables.
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[*shared, renderer],
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
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        if not (server_logger.handlers or server_logger.propagate):
            # The server turned its access line off (uvicorn without --access-log): leave
            # it off. Sent on to the root handler, it would be on again: uvicorn decides per
            # connection from hasHandlers(), and then builds every request's line (a fifth
            # of a cached read's CPU over HTTP, benchmarks/bench_cache.py).
            continue
        server_logger.handlers.clear()
        server_logger.propagate = True
        if not any(isinstance(f, _AlreadyLogged) for f in server_logger.filters):
            server_logger.addFilter(_AlreadyLogged())
    access.configure(level, json, stream, access_lines)


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

    Lines are made a batch at a time, as fastpost.served hands the requests on. While the
    app serves, JSON lines are written WRITE_BYTES at a time, and at least every
    FLUSH_SECONDS: containers commonly set PYTHONUNBUFFERED, which makes every write to
    stdout a system call of its own, and a write per request cost a quarter of the
    middleware's time on `GET /health` (py-spy, this machine). A crash loses at most that
    much.
    """

    FLUSH_SECONDS = 0.5
    WRITE_BYTES = 64 * 1024
    _LINE = (
        b'{"event":"request","level":"info","timestamp":"%s.%06dZ","request_id":"%s",'
        b'"method":"%s","route":%s,"path":%s,"status":%d,"duration_ms":%.2f,'
    )
    _LINE_END = b'"db_queries":%d,"db_ms":%.2f,"cache_hits":%d,"cache_misses":%d,"user_id":%s}\n'
    # The end of the line of a request that made no query, used no cache and named no user
    # (a health check, a 304, a page of the response cache): nothing to format.
    _LINE_END_NOTHING = (
        b'"db_queries":0,"db_ms":0.00,"cache_hits":0,"cache_misses":0,"user_id":null}\n'
    )

    def __init__(self) -> None:
        self.enabled = True
        self.json = False
        self.stream: TextIO = sys.stdout
        # While the app serves: JSON lines made and not written yet, up to WRITE_BYTES.
        self._holding = False
        self._unwritten: list[bytes] = []
        self._unwritten_bytes = 0
        self._second = -1
        self._prefix = b""
        # JSON-encoded route templates (a few dozen, fixed by the app).
        self._routes: dict[str, bytes] = {}

    def configure(self, level: str, json: bool, stream: TextIO, wanted: bool = True) -> None:
        self.flush()  # what was served so far goes where it was meant to
        self.enabled = wanted and logging.getLevelNamesMapping()[level] <= logging.INFO
        self.json = json
        self.stream = stream

    @property
    def to_console(self) -> bool:
        """Whether access lines are written for a person to read (not in JSON)."""
        return self.enabled and not self.json

    def flush(self) -> None:
        """Write the lines of every request served so far."""
        served.hand_on()
        self._write_unwritten()

    def _write_unwritten(self) -> None:
        if self._unwritten:
            data = b"".join(self._unwritten)
            self._unwritten, self._unwritten_bytes = [], 0
            self._write(data)

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
        """Hold lines back for a write of WRITE_BYTES from now on; return the task that
        writes them out periodically (cancel it, then call stop_batching)."""
        self._holding = True
        return asyncio.create_task(self._flush_forever())

    def stop_batching(self) -> None:
        """Write what is held back, and each batch's lines as they come from now on."""
        self._holding = False
        self.flush()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_SECONDS)
            self.flush()

    def log_served(self, batch: list[RequestStats]) -> None:
        """Log these served requests, from their records (see RequestStats)."""
        if not self.enabled:
            return
        if self.json:
            lines = self._lines(batch)
            if not self._holding:
                self._write(lines)
                return
            self._unwritten.append(lines)
            self._unwritten_bytes += len(lines)
            if self._unwritten_bytes >= self.WRITE_BYTES:
                self._write_unwritten()
            return
        log = structlog.get_logger("fastpost.access")
        for stats in batch:
            log.info(
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

    def _lines(self, batch: list[RequestStats]) -> bytes:
        """The JSON lines of these served requests.

        One loop with everything inline: a call per line cost a tenth of the line (timeit,
        this machine)."""
        # From the requests' clock (time.perf_counter) to the wall clock, read once: the
        # batch is at most FLUSH_SECONDS old.
        clock_offset = time.time() - time.perf_counter()
        template, end_template, end_nothing = self._LINE, self._LINE_END, self._LINE_END_NOTHING
        routes = self._routes
        dumps = orjson.dumps
        last_second, prefix = self._second, self._prefix
        lines = []
        for stats in batch:
            now = stats.ended + clock_offset
            second = int(now)
            if second != last_second:
                last_second = second
                prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
            route = stats.route
            route_json = routes.get(route)
            if route_json is None:
                route_json = routes[route] = dumps(route)
            path = stats.path
            lines.append(
                template
                % (
                    prefix,
                    int((now - second) * 1_000_000),
                    stats.request_id,
                    stats.method.encode(),
                    route_json,
                    # Masked like every other line (a token may sit in a path).
                    route_json if path == route else dumps(redact_text(path)),
                    stats.status,
                    stats.duration * 1000,
                )
            )
            user_id = stats.user_id
            if stats.db_queries or stats.cache_hits or stats.cache_misses or user_id is not None:
                lines.append(
                    end_template
                    % (
                        stats.db_queries,
                        stats.db_seconds * 1000,
                        stats.cache_hits,
                        stats.cache_misses,
                        b"null" if user_id is None else b"%d" % user_id,
                    )
                )
            else:
                lines.append(end_nothing)
        self._second, self._prefix = last_second, prefix
        return b"".join(lines)


access = _Access()
served.sinks.append(access.log_served)
