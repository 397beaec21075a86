"""The security headers every response carries, made once per app and added by the edge
layer (fastpost.observability.edge.Edge) as one ready list: no per-request work but a dict
lookup.

- `X-Content-Type-Options: nosniff`: a browser never guesses HTML out of a JSON body.
- `Referrer-Policy: no-referrer`: URLs (which may hold ids and cursors) stay here.
- `Content-Security-Policy`: for the API, `default-src 'none'; frame-ancestors 'none'` (a JSON
  answer opened in a browser runs nothing and is framed by nobody). HTML pages registered
  with `protect_pages` (/docs, its OAuth2 redirect, /redoc) get a policy that allows what
  they load from fastpost itself and their own inline scripts by hash, nothing else: an
  injected script does not run, and nothing is loaded from elsewhere.
- `Strict-Transport-Security` in production only (a browser remembers it for the host, and
  localhost in development is plain HTTP).
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import re
from collections.abc import Iterable

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.routing import Route

Header = tuple[bytes, bytes]

API_POLICY = "default-src 'none'; frame-ancestors 'none'"
# For the documentation pages: Swagger UI styles its elements inline and draws icons from
# data: URLs; ReDoc runs its search in a worker made from a blob: URL. Scripts: fastpost's
# own files and the page's inline scripts, by hash.
_PAGE_POLICY = (
    "default-src 'none'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_PAGES = ("/docs", "/docs/oauth2-redirect", "/redoc")
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def script_hashes(html: bytes) -> list[str]:
    """CSP source expressions allowing each inline `<script>` of a page as it is."""
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for script in _INLINE_SCRIPT.findall(html)
    ]


class SecurityHeaders:
    """The headers to add to a response, by request path (see the module's docstring)."""

    def __init__(self, *, hsts_seconds: int = 0) -> None:
        common: list[Header] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if hsts_seconds:
            common.append(
                (b"strict-transport-security", b"max-age=%d; includeSubDomains" % hsts_seconds)
            )
        self._common = common
        self.default: list[Header] = [*common, (b"content-security-policy", API_POLICY.encode())]
        # Paths of HTML pages with a policy of their own.
        self.pages: dict[str, list[Header]] = {}

    def allow_page(self, path: str, html: bytes) -> None:
        """Give the page at `path` the documentation pages' policy, with its inline scripts."""
        hashes = "".join(" " + source for source in script_hashes(html))
        policy = _PAGE_POLICY.format(hashes=hashes).encode()
        self.pages[path] = [*self._common, (b"content-security-policy", policy)]

    def protect_pages(self, app: FastAPI, paths: Iterable[str] = DOCS_PAGES) -> None:
        """Register the HTML pages `app` serves at `paths` (those it has), rendered once here
        as the app's root path serves them, so that their inline scripts' hashes are known."""
        wanted = set(paths)
        for route in app.routes:
            if isinstance(route, Route) and route.path in wanted:
                self.allow_page(route.path, _render(route, app.root_path))


def _render(route: Route, root_path: str) -> bytes:
    """The body of a page route whose endpoint awaits nothing (FastAPI's documentation
    helpers build the HTML from their arguments alone)."""
    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": route.path,
            "root_path": root_path,
            "headers": [],
            "query_string": b"",
        }
    )
    endpoint = route.endpoint
    takes_request = bool(inspect.signature(endpoint).parameters)
    result = endpoint(request) if takes_request else endpoint()
    if inspect.iscoroutine(result):
        # Stepped once rather than run on a loop: create_app may be called with a loop
        # running (tests), and these endpoints finish without suspending.
        try:
            result.send(None)
        except StopIteration as done:
            result = done.value
        else:
            result.close()
            raise RuntimeError(f"the page at {route.path} waits on I/O; it cannot be hashed")
    assert isinstance(result, Response)
    return bytes(result.body)
