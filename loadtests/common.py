"""What the fastpost scenarios share: pacing, demo accounts, logging in, checking answers.

Locust puts a locustfile's folder on `sys.path` while importing it, so the scenarios beside
this file import it as `common`. It defines no runnable User, so `locust -f loadtests/`
(every scenario at once) is unaffected by it.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from locust.contrib.fasthttp import FastHttpSession, ResponseContextManager
from locust.exception import StopUser

WAIT_SCALE_VARIABLE = "FASTPOST_LOCUST_WAIT_SCALE"

# The accounts `fastpost seed` makes (src/fastpost/seed.py): copied rather than imported, so
# that the load generator can run on a machine without fastpost installed.
DEMO_USERNAME = "testuser"
DEMO_PASSWORD = "testpass"
GENERATED_PASSWORD = "password"

# Log in again this long before the token expires, so that no request goes out with a
# token that lapses on its way (FASTPOST_AUTH__TOKEN_LIFETIME_SECONDS is 3600 by default).
TOKEN_MARGIN_SECONDS = 60.0

# How many post ids and authors a simulated user remembers from the pages it has read.
MEMORY = 200

_WORD = re.compile(r"[A-Za-z]{4,}")


def wait_scale() -> float:
    """Read the factor that stretches or shrinks every wait (1 unless the variable says)."""
    raw = os.environ.get(WAIT_SCALE_VARIABLE, "1")
    try:
        scale = float(raw)
    except ValueError:
        raise SystemExit(f"{WAIT_SCALE_VARIABLE} must be a number, not {raw!r}") from None
    if scale < 0:
        raise SystemExit(f"{WAIT_SCALE_VARIABLE} must not be negative, not {raw!r}")
    return scale


def scaled_between(min_wait: float, max_wait: float) -> Callable[[Any], float]:
    """Wait a random time in [min_wait, max_wait] seconds, times the wait scale."""
    scale = wait_scale()
    low, high = min_wait * scale, max_wait * scale
    return lambda _user: random.uniform(low, high)


def password_for(username: str) -> str:
    """The demo data's password for a seeded account."""
    return DEMO_PASSWORD if username == DEMO_USERNAME else GENERATED_PASSWORD


class BearerToken:
    """A logged-in account's token, renewed by logging in again shortly before it expires."""

    def __init__(self, client: FastHttpSession, username: str, password: str) -> None:
        self.client = client
        self.username = username
        self.password = password
        self._token = ""
        self._renew_at = 0.0

    def headers(self) -> dict[str, str]:
        """The Authorization header, logging in first when there is no valid token."""
        if time.monotonic() >= self._renew_at:
            self.log_in()
        return {"Authorization": f"Bearer {self._token}"}

    def log_in(self) -> None:
        """Exchange the account's password for a token (JSON body, as the API takes)."""
        with self.client.post(
            "/auth/login",
            json={"username": self.username, "password": self.password},
            name="/auth/login",
            catch_response=True,
        ) as response:
            body = expect(response, 200, check=_is_token)
        if body is None:
            # Without a token every later request would fail too: stop this user, and let
            # the failure just reported say why.
            raise StopUser(f"cannot log in as {self.username}: see the POST /auth/login failure")
        self._token = body["access_token"]
        lifetime = float(body["expires_in"])
        self._renew_at = time.monotonic() + max(lifetime - TOKEN_MARGIN_SECONDS, 0.0)


def _is_token(body: Any) -> str | None:
    if not isinstance(body, dict) or not body.get("access_token") or "expires_in" not in body:
        return f"not a token: {str(body)[:200]}"
    return None


def expect(
    response: ResponseContextManager,
    *statuses: int,
    check: Callable[[Any], str | None] | None = None,
) -> Any:
    """Mark a response as a success when its status is one the API defines for this call and
    `check` finds nothing wrong with its JSON body; return that body (None on failure)."""
    if response.status_code not in statuses:
        # Locust groups failures by message: keep it short and free of per-request detail.
        detail = (response.text or "")[:200]
        response.failure(f"status {response.status_code}, expected {statuses}: {detail}")
        return None
    if response.status_code in (204, 304):
        response.success()
        return {}
    try:
        body = response.json()
    except ValueError:
        response.failure(f"body is not JSON: {(response.text or '')[:200]}")
        return None
    problem = check(body) if check else None
    if problem:
        response.failure(problem)
        return None
    response.success()
    return body


def is_page(body: Any) -> str | None:
    """Find what is wrong with a page of posts or users, if anything."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        return f"not a page: {str(body)[:200]}"
    if "next_cursor" not in body:
        return "page without next_cursor"
    return None


class Sightings:
    """Post ids, authors and titles a simulated user has seen, so that it picks what to open
    next from what the API showed it rather than from guessed ids."""

    def __init__(self) -> None:
        self.post_ids: deque[int] = deque(maxlen=MEMORY)
        self.author_ids: deque[int] = deque(maxlen=MEMORY)
        self.usernames: deque[str] = deque(maxlen=MEMORY)
        self.titles: deque[str] = deque(maxlen=MEMORY)

    def remember(self, posts: Iterable[dict[str, Any]]) -> None:
        """Note the posts of a page (or a search, or the popular list)."""
        for post in posts:
            self.post_ids.append(post["id"])
            self.titles.append(post["title"])
            author = post["author"]
            if author["id"] not in self.author_ids:
                self.author_ids.append(author["id"])
                self.usernames.append(author["username"])

    def post_id(self) -> int | None:
        """A post seen before, or None when none was."""
        return random.choice(self.post_ids) if self.post_ids else None

    def author_id(self, besides: int | None = None) -> int | None:
        """An author seen before (other than `besides`), or None when there is none."""
        choices = [a for a in self.author_ids if a != besides]
        return random.choice(choices) if choices else None

    def search_word(self) -> str:
        """A word from a title seen before: what someone who read it might search for."""
        words = _WORD.findall(random.choice(self.titles)) if self.titles else []
        return random.choice(words).lower() if words else "python"
