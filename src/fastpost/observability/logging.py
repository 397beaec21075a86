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

import contextlib
import logging
import re
import sys
import traceback
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from fastpost.observability.request_stats import current_request

if TYPE_CHECKING:
    from fastpost.observability.access_log import AccessLog

REDACTED = "[redacted]"
_SENSITIVE_WORDS = ("password", "passwd", "token", "secret", "authorization", "cookie", "jwt")
# A memo of a pure function of a key's name: shared by every app of the process.
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
    access_log: AccessLog | None = None,
) -> None:
    """Set up structlog and the standard library's root logger to write to `stream`, and
    `access_log` (an app's) to write there an access line per request unless `access_lines`
    is off (or `level` is above INFO).

    Process-wide, as structlog's configuration and the root logger are: the last app built
    decides the format. The access lines are each app's own."""
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
    if access_log is not None:
        access_log.configure(level, json, stream, access_lines)


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
