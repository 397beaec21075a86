"""The edge layer's body limit, with observing on and off (its observing has tests of its
own: test_metrics.py, test_logging.py, test_state.py)."""

from __future__ import annotations

import json

import pytest
from starlette.exceptions import HTTPException
from starlette.types import Message, Receive, Scope, Send

from fastpost.observability.edge import Edge
from fastpost.security_headers import SecurityHeaders

LIMIT = 1000


async def read_body(scope: Scope, receive: Receive, send: Send) -> None:
    """An app that reads the whole body, then answers with its length."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    body = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def http_scope(headers: list[tuple[bytes, bytes]], http_version: str = "1.1") -> Scope:
    return {
        "type": "http",
        "http_version": http_version,
        "method": "POST",
        "path": "/upload",
        "headers": headers,
    }


def chunks(*sizes: int) -> Receive:
    messages = [
        {"type": "http.request", "body": b"x" * size, "more_body": i < len(sizes) - 1}
        for i, size in enumerate(sizes)
    ]

    async def receive() -> Message:
        return messages.pop(0)

    return receive


async def call(edge: Edge, scope: Scope, receive: Receive) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await edge(scope, receive, send)
    return sent


def response_headers(sent: list[Message]) -> dict[bytes, bytes]:
    return dict(sent[0]["headers"])


@pytest.mark.parametrize("observe", [True, False])
async def test_a_declared_length_over_the_limit_is_refused_unread(observe: bool) -> None:
    edge = Edge(read_body, max_body_bytes=LIMIT, observe=observe)

    async def never_read() -> Message:
        raise AssertionError("a refused body is not read")

    sent = await call(edge, http_scope([(b"content-length", b"1001")]), never_read)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["code"] == "payload_too_large"
    headers = response_headers(sent)
    # The unread body is still on the connection: it is closed rather than reused.
    assert headers[b"connection"] == b"close"
    assert headers[b"content-type"] == b"application/json"
    assert (b"x-request-id" in headers) is observe


@pytest.mark.parametrize("observe", [True, False])
async def test_a_streamed_body_is_cut_off_where_it_crosses_the_limit(observe: bool) -> None:
    edge = Edge(read_body, max_body_bytes=LIMIT, observe=observe)
    scope = http_scope([(b"transfer-encoding", b"chunked")])
    with pytest.raises(HTTPException) as refused:  # the app's 413 handler answers it
        await call(edge, scope, chunks(600, 600))
    assert refused.value.status_code == 413
    sent = await call(edge, scope, chunks(600, 400))
    assert sent[1]["body"] == b"1000"


async def test_a_body_without_any_length_header_is_counted_unless_http1_rules_it_out() -> None:
    # HTTP/1 frames a body by Content-Length or Transfer-Encoding only; HTTP/2 needs neither.
    edge = Edge(read_body, max_body_bytes=LIMIT)
    with pytest.raises(HTTPException):
        await call(edge, http_scope([], http_version="2"), chunks(800, 800))
    sent = await call(edge, http_scope([], http_version="1.1"), chunks(0))
    assert sent[1]["body"] == b"0"


async def test_observing_off_adds_only_the_security_headers() -> None:
    edge = Edge(read_body, max_body_bytes=LIMIT, observe=False)
    sent = await call(edge, http_scope([(b"content-length", b"3")]), chunks(3))
    assert sent[0]["headers"] == SecurityHeaders().default
    assert sent[1]["body"] == b"3"
