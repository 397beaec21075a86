"""OpenTelemetry tracing, from the optional extra: `pip install fastpost[otel]`.

Without the extra nothing here is imported and requests pay nothing. With it, and with
somewhere to send spans (`OTEL_EXPORTER_OTLP_ENDPOINT`), `FASTPOST_OBSERVABILITY__TRACING=auto`
(the default) turns on the following; `on` turns it on with the host's tracer provider (or
OTLP's defaults), `off` keeps it off:
- a server span per request (the FastAPI instrumentation, pure ASGI);
- a client span per SQL statement, made from the timings the app's statement recorder
  already takes (fastpost.observability.statements),
  so that both ways to the database are covered: SQLAlchemy and the lean asyncpg reads;
- spans for Redis commands and outgoing httpx calls, when those instrumentations are
  installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import time
from typing import Any

from fastpost.observability.logging import redact_text
from fastpost.observability.statements import StatementRecorder


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def tracing_wanted(mode: str) -> bool:
    """Whether to trace: `on`, `off`, or `auto` (the extra installed and an exporter set)."""
    if mode == "off" or not _installed("opentelemetry.instrumentation.fastapi"):
        return False
    return mode == "on" or bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def _provider() -> Any:
    """The host's tracer provider, or one exporting by OTLP over HTTP."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if not isinstance(provider, trace.ProxyTracerProvider):
        return provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "fastpost"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


_SECRET_HEADERS = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    ".*token.*",
    ".*secret.*",
    ".*password.*",
    ".*api-key.*",
]


def mask_credentials(span: Any, scope: dict[str, Any]) -> None:
    """Mask credentials in the server span's attributes (the URL, its path and query string)
    as the logs mask them (fastpost.observability.logging.redact_text): the instrumentation
    records the URL as it came, `?access_token=...` included."""
    if not span.is_recording():
        return
    for key, value in dict(getattr(span, "attributes", None) or {}).items():
        if isinstance(value, str) and (masked := redact_text(value)) != value:
            span.set_attribute(key, masked)
    name = getattr(span, "name", None)
    if isinstance(name, str) and (masked := redact_text(name)) != name:
        span.update_name(masked)


def install_tracing(app: Any, dialect: str, statements: StatementRecorder) -> None:
    """Instrument the app, its SQL statements (those `statements` records), Redis and
    httpx."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.trace import SpanKind

    provider = _provider()
    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=provider,
        excluded_urls="/metrics",
        server_request_hook=mask_credentials,
        # Headers are recorded only where OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_* asks;
        # these are masked even then.
        http_capture_headers_sanitize_fields=_SECRET_HEADERS,
    )
    tracer = provider.get_tracer("fastpost.db")

    def statement_span(statement: str, seconds: float, parameters: Any) -> None:
        end = time.time_ns()
        operation = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "SQL"
        span = tracer.start_span(
            f"{operation} {dialect}",
            kind=SpanKind.CLIENT,
            start_time=end - int(seconds * 1e9),
            attributes={"db.system": dialect, "db.statement": statement},
        )
        span.end(end_time=end)

    statements.hooks.append(statement_span)
    for module, name in (
        ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
        ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    ):
        if _installed(module):
            instrumentor = getattr(importlib.import_module(module), name)()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=provider)
