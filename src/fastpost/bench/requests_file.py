"""The request list both generators read: one request per line, tab-separated.

    METHOD <tab> PATH <tab> AUTHORIZATION or - <tab> JSON BODY or - <tab> ROUTE

wrk reads it in lua/requests.lua, the fixed-rate generator in fixed_rate.py; both walk it
in a cycle, so a mix is written out in its proportions (weights as repeated lines). ROUTE
names the route each request is counted under in the per-route rows of a report
(`GET /posts/{id}`): the method and the path with its numbers as `{id}` and no query.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_NUMBER_SEGMENT = re.compile(r"/\d+(?=/|$)")


def route_of(method: str, path: str) -> str:
    """Name the route of `method path` for per-route figures: `GET /posts/{id}/like`."""
    return f"{method} {_NUMBER_SEGMENT.sub('/{id}', path.partition('?')[0])}"


@dataclass(frozen=True)
class HttpRequest:
    method: str
    path: str
    authorization: str | None = None
    body: str | None = None  # JSON text, on one line

    @property
    def route(self) -> str:
        return route_of(self.method, self.path)

    def encode(self, host: str) -> bytes:
        """Return the request as HTTP/1.1 bytes for a persistent connection."""
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        if self.authorization:
            lines.append(f"Authorization: {self.authorization}")
        body = (self.body or "").encode()
        if self.body is not None:
            lines.append("Content-Type: application/json")
        if self.body is not None or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def write_requests(path: Path, requests: Iterable[HttpRequest]) -> int:
    """Write `requests` to `path` in the format above; return how many."""
    count = 0
    with path.open("w") as file:
        for request in requests:
            fields = (request.method, request.path, request.authorization, request.body)
            if any(f is not None and ("\t" in f or "\n" in f) for f in fields):
                raise ValueError(f"tab or newline in {request!r}")
            file.write(
                "\t".join([*(f if f is not None else "-" for f in fields), request.route]) + "\n"
            )
            count += 1
    return count


def read_requests(path: Path) -> list[HttpRequest]:
    """Read a request list written by write_requests."""
    requests = []
    for line in path.read_text().splitlines():
        if not line:
            continue
        # The route (a fifth field) is derived again from the method and path.
        method, target, authorization, body = line.split("\t")[:4]
        requests.append(
            HttpRequest(
                method,
                target,
                None if authorization == "-" else authorization,
                None if body == "-" else body,
            )
        )
    return requests
