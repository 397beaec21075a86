"""OpenTelemetry (the `otel` extra): a server span per request with a child span per SQL
statement, captured with the SDK's in-memory exporter."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fastpost.app import create_app
from fastpost.observability.tracing import tracing_wanted
from fastpost.settings import ObservabilitySettings, Settings
from tests.conftest import Factory, make_settings

pytest.importorskip("opentelemetry.sdk")
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)


class _Exporter(InMemorySpanExporter):
    """Keeps spans only while a test here is running: the tracer provider is process-wide
    and, once set, stays for the rest of the session."""

    active = False

    def export(self, spans: Any) -> Any:
        return super().export(spans) if self.active else SpanExportResult.SUCCESS


_EXPORTER = _Exporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    _EXPORTER.active = True
    yield _EXPORTER
    _EXPORTER.active = False
    # Redis and httpx are instrumented process-wide: undo it for the tests that follow.
    for module, name in (
        ("opentelemetry.instrumentation.redis", "RedisInstrumentor"),
        ("opentelemetry.instrumentation.httpx", "HTTPXClientInstrumentor"),
    ):
        instrumentor = getattr(importlib.import_module(module), name, None)
        if instrumentor is not None and instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().uninstrument()
    _EXPORTER.clear()


@pytest.fixture
async def traced_client(
    settings: Settings, spans: InMemorySpanExporter
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(
        make_settings(settings.db.url, observability=ObservabilitySettings(tracing="on"))
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.uninstrument_app(app)


async def test_a_request_makes_a_server_span_with_a_child_span_per_sql_statement(
    traced_client: tuple[FastAPI, httpx.AsyncClient], spans: InMemorySpanExporter
) -> None:
    app, client = traced_client
    factory = Factory(app)
    author = await factory.user()
    spans.clear()
    response = await client.get(f"/users/{author.id}/posts")
    assert response.status_code == 200
    finished = spans.get_finished_spans()
    [server] = [s for s in finished if s.kind == trace.SpanKind.SERVER]
    assert server.name == "GET /users/{user_id}/posts"
    assert server.attributes is not None
    status = server.attributes.get(
        "http.response.status_code", server.attributes.get("http.status_code")
    )
    assert status == 200
    queries = [s for s in finished if s.kind == trace.SpanKind.CLIENT and s.attributes
               and "db.statement" in s.attributes]  # fmt: skip
    assert queries
    for query in queries:
        assert query.context.trace_id == server.context.trace_id
        assert query.start_time >= server.start_time


def test_tracing_is_off_by_default_without_an_exporter_to_send_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert not tracing_wanted("auto")
    assert not tracing_wanted("off")
    assert tracing_wanted("on")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert tracing_wanted("auto")


def test_the_default_app_is_not_instrumented(app: FastAPI) -> None:
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)


async def test_server_spans_mask_credentials_in_the_path_query_string_and_headers(
    settings: Settings, spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Headers are recorded only where asked; asked here, so that masking them is shown.
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "authorization,x-api-key"
    )
    password = "Hunter2-never-traced-1a2b3c"
    app = create_app(
        make_settings(settings.db.url, observability=ObservabilitySettings(tracing="on"))
    )
    async with app.router.lifespan_context(app):
        user = await Factory(app).user()
        token = user.headers["Authorization"].removeprefix("Bearer ")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for path in (f"/posts/{token}", f"/users/password={password}", "/posts/"):
                await client.get(
                    path,
                    params={"access_token": token, "password": password},
                    headers={"Authorization": f"Bearer {token}", "X-Api-Key": password},
                )
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.uninstrument_app(app)
    servers = [s for s in spans.get_finished_spans() if s.kind == trace.SpanKind.SERVER]
    assert len(servers) == 3
    for span in spans.get_finished_spans():
        recorded = repr((span.name, dict(span.attributes or {})))
        assert token not in recorded
        assert password not in recorded
    assert any("[redacted]" in repr(dict(s.attributes or {})) for s in servers)
