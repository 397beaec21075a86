"""Error tracking (the `sentry` extra): with FASTPOST_SENTRY_DSN set, every unhandled error is
sent to Sentry with the request's id, its route template, method and user id, and nothing
that could be a credential.

The app reports from its own 500 handler, with a client of its own, rather than through
`sentry_sdk.init` and its Starlette and FastAPI integrations: those wrap `Starlette.__call__`
in an ASGI middleware that opens a scope for every request, wrap every middleware's
`__call__` and every endpoint (to read the request, its body included), and patch the
logging module; that is work on each of the requests that end well, beside our pure ASGI
edge (fastpost.observability.edge.Edge), which answers unhandled errors itself before any outer
layer sees them. Here a request that does not fail costs nothing, and the client is the
app's, kept on `app.state` like its other sinks: two apps in one process report apart.

What an event holds: the exception and its stack (source lines, no local variables: a
frame's locals hold bodies, passwords and headers), the tags `request_id` (as sent in the
response's X-Request-ID), `route` (the template: /posts/{post_id}), `method`, the user's id
when the request was authenticated, the environment and the release. What it never holds:
headers (Authorization, cookies), query strings, bodies, the client's address. Everything
in it is masked once more before it is sent, as the logs are (fastpost.observability.logging.redact,
redact_text), since an exception's message may quote a token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

try:
    import sentry_sdk
    from sentry_sdk.types import Event, Hint
except ImportError as exc:  # named at start-up, with the fix
    raise ImportError(
        "FASTPOST_SENTRY_DSN is set but sentry-sdk is not installed: pip install 'fastpost[sentry]'"
    ) from exc
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from fastpost.observability.logging import redact, redact_text
from fastpost.observability.request_stats import current_request
from fastpost.observability.served import UNMATCHED_ROUTE

ExceptionHandler = Callable[[Request, Exception], Awaitable[Response]]

# How long shutdown waits for the events still queued to be sent.
FLUSH_SECONDS = 2.0


def scrub(event: Event, hint: Hint) -> Event:
    """Mask whatever looks like a credential anywhere in the event, by key and by value."""
    _scrub(event)
    return event


def _scrub(value: Any) -> None:
    if isinstance(value, MutableMapping):
        # Keys named like a secret are masked, values that look like one masked where they
        # are (nested mappings included); lists are walked here.
        redact(None, "error", value)
        for item in value.values():
            if isinstance(item, MutableMapping | list):
                _scrub(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                value[index] = redact_text(item)
            else:
                _scrub(item)


class ErrorReporter:
    """Sends unhandled errors to Sentry, from the app's 500 handler."""

    def __init__(self, dsn: str, *, environment: str, release: str) -> None:
        self.client = sentry_sdk.Client(
            dsn=dsn,
            environment=environment,
            release=release,
            # None of the integrations: no per-request wrapping (see above), no logging
            # hook (its breadcrumbs carry raw log messages, before our masking), no
            # excepthook or http.client patching in a process that may run several apps.
            default_integrations=False,
            include_local_variables=False,
            # Errors only: no transactions, no profiles.
            traces_sample_rate=None,
            max_request_body_size="never",
            before_send=scrub,
            # send_default_pii is left at its default, off: the sentry-sdk of constraints.txt
            # (2.76) warns that the option is deprecated when it is named at all, even as
            # False. tests/observability/test_sentry.py checks it is off.
        )

    def report(self, scope: Scope, exc: BaseException) -> None:
        """Send `exc`, raised while serving `scope`, with the request's id, route and user."""
        stats = current_request.get()
        route = scope.get("route")
        template = getattr(route, "path", None) or UNMATCHED_ROUTE
        method = str(scope.get("method", ""))
        with sentry_sdk.new_scope() as sentry_scope:
            sentry_scope.set_client(self.client)
            sentry_scope.set_tag("route", template)
            sentry_scope.set_tag("method", method)
            # Grouped and named by route, never by raw path (an id or a token in it).
            sentry_scope.set_transaction_name(f"{method} {template}")
            if stats is not None:
                sentry_scope.set_tag("request_id", stats.request_id.decode("ascii"))
                if stats.user_id is not None:
                    sentry_scope.set_user({"id": str(stats.user_id)})
            sentry_scope.capture_exception(exc)

    def flush(self) -> None:
        self.client.flush(timeout=FLUSH_SECONDS)


def install_error_reporting(app: Any, reporter: ErrorReporter) -> None:
    """Report every error that reaches the app's handler for unhandled errors, then answer
    it as that handler does. Call after the app's error handlers are installed."""
    answer: ExceptionHandler = app.exception_handlers[Exception]

    async def report_and_answer(request: Request, exc: Exception) -> Response:
        reporter.report(request.scope, exc)
        return await answer(request, exc)

    app.exception_handlers[Exception] = report_and_answer
    app.state.error_reporter = reporter
