"""Who may read GET /metrics: anyone outside production; in production, the addresses in
`FASTPOST_SECURITY__METRICS_ALLOW` or a caller with `FASTPOST_SECURITY__METRICS_TOKEN` as
its bearer token. Everyone else gets the 404 of a path that does not exist.

The metrics name every route, their traffic, error rates and the database's pool: a map of
the service for whoever scrapes it. The client address is the one the server saw, or the
one a trusted proxy forwarded (uvicorn trusts X-Forwarded-For from 127.0.0.1 by default,
which is how ops/nginx reaches fastpost).
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request

from fastpost.errors import NotFound
from fastpost.security import token_in
from fastpost.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class MetricsAccess:
    """A dependency of the /metrics route that refuses (404) callers not allowed to read it."""

    def __init__(self, settings: Settings) -> None:
        security = settings.security
        self.anyone = settings.env != "production"
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(address, strict=False) for address in security.metrics_allow
        )
        self._token = security.metrics_token.encode() if security.metrics_token else None

    def allows(self, client_host: str | None, authorization: str) -> bool:
        if self.anyone:
            return True
        if self._token is not None:
            token = token_in(authorization, ("bearer",))
            # Compared in constant time: the token is a password.
            if token is not None and hmac.compare_digest(token.encode(), self._token):
                return True
        if client_host is None:
            return False
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:  # a unix socket's path, say
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    async def __call__(self, request: Request) -> None:
        client = request.client
        if not self.allows(
            client.host if client else None, request.headers.get("authorization", "")
        ):
            raise NotFound("Not Found")
