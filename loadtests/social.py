"""The social mix, as logged-in users: read the feed, like and unlike, follow and unfollow,
publish. Members log in as demo accounts found in the post list; newcomers sign up first.

    locust -f loadtests/social.py --headless -u 50 -r 10 -t 1m --host http://127.0.0.1:8000

Several simulated members may share an account (there are more of them than authors on a
page), so two of them can like the same post or follow the same user at once: the API makes
both idempotent (200 with the resulting state), and that is what the checks accept.
"""

from __future__ import annotations

import itertools
import random
import secrets
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from common import MEMORY, BearerToken, Sightings, expect, is_page, password_for, scaled_between
from locust import FastHttpUser, task
from locust.exception import StopUser

# A page this long gives a new member many authors to choose an account from.
DISCOVERY_PAGE = 100

_post_numbers = itertools.count(1)


def _liked(expected: bool) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        if body.get("liked") is not expected or body.get("likes_count", -1) < int(expected):
            return f"like state should be liked={expected}: {body!r}"
        return None

    return check


def _following(expected: bool) -> Callable[[Any], str | None]:
    def check(body: Any) -> str | None:
        if body.get("following") is not expected:
            return f"follow state should be following={expected}: {body!r}"
        return None

    return check


def _has_authors(body: Any) -> str | None:
    # An empty database would leave members nothing to log in as: a failure, not a quiet
    # run without users.
    return is_page(body) or (None if body["items"] else "no posts: seed the database first")


class Member(FastHttpUser):
    """A demo account that reads its feed and reacts to what it reads."""

    weight = 3
    wait_time = scaled_between(1, 3)

    def on_start(self) -> None:
        """Pick an author of a recent post as this member's account, log in, learn its id."""
        self.seen = Sightings()
        self.liked: deque[int] = deque(maxlen=MEMORY)
        self.followed: deque[int] = deque(maxlen=MEMORY)
        self.feed_cursor: str | None = None
        with self.client.get(
            f"/posts/?limit={DISCOVERY_PAGE}", name="/posts/", catch_response=True
        ) as response:
            page = expect(response, 200, check=_has_authors)
        if page is None:
            raise StopUser("no account to log in as: see the GET /posts/ failure")
        self.seen.remember(page["items"])
        self.token = self.account()
        self.token.log_in()
        with self.client.get(
            "/users/me", headers=self.token.headers(), name="/users/me", catch_response=True
        ) as response:
            me = expect(response, 200)
        if me is None:
            raise StopUser("cannot read the account's id: see the GET /users/me failure")
        self.user_id: int = me["id"]

    def account(self) -> BearerToken:
        """The account this member uses: a seeded author, with the demo data's password."""
        username = random.choice(self.seen.usernames)
        return BearerToken(self.client, username, password_for(username))

    @task(5)
    def feed(self) -> None:
        """Read the newest posts of the people followed."""
        with self.client.get(
            "/feed", headers=self.token.headers(), name="/feed", catch_response=True
        ) as response:
            self._read_feed(expect(response, 200, check=is_page))

    @task(1)
    def feed_next_page(self) -> None:
        """Scroll the feed on, back to its top at the end."""
        if self.feed_cursor is None:
            self.feed()
            return
        with self.client.get(
            f"/feed?cursor={quote(self.feed_cursor)}",
            headers=self.token.headers(),
            name="/feed?cursor={cursor}",
            catch_response=True,
        ) as response:
            self._read_feed(expect(response, 200, check=is_page))

    @task(2)
    def browse_posts(self) -> None:
        """Read the newest posts of everyone (`liked_by_me` filled in: not cached)."""
        with self.client.get(
            "/posts/", headers=self.token.headers(), name="/posts/", catch_response=True
        ) as response:
            page = expect(response, 200, check=is_page)
            if page:
                self.seen.remember(page["items"])

    @task(3)
    def read_post(self) -> None:
        """Open a post seen in the feed or a list."""
        post_id = self.seen.post_id()
        if post_id is None:
            return
        with self.client.get(
            f"/posts/{post_id}",
            headers=self.token.headers(),
            name="/posts/{post_id}",
            catch_response=True,
        ) as response:
            expect(response, 200)

    @task(2)
    def like(self) -> None:
        """Like a post seen; liking one already liked is fine (idempotent)."""
        post_id = self.seen.post_id()
        if post_id is None:
            return
        with self.client.post(
            f"/posts/{post_id}/like",
            headers=self.token.headers(),
            name="/posts/{post_id}/like",
            catch_response=True,
        ) as response:
            if expect(response, 200, check=_liked(True)) is not None:
                self.liked.append(post_id)

    @task(1)
    def unlike(self) -> None:
        """Take back a like given earlier (or, with none, unlike a post seen: a no-op)."""
        post_id = self.liked.popleft() if self.liked else self.seen.post_id()
        if post_id is None:
            return
        with self.client.delete(
            f"/posts/{post_id}/like",
            headers=self.token.headers(),
            name="/posts/{post_id}/like",
            catch_response=True,
        ) as response:
            expect(response, 200, check=_liked(False))

    @task(1)
    def follow(self) -> None:
        """Follow the author of a post seen (never oneself: the API refuses that, 422)."""
        user_id = self.seen.author_id(besides=self.user_id)
        if user_id is None:
            return
        with self.client.post(
            f"/users/{user_id}/follow",
            headers=self.token.headers(),
            name="/users/{user_id}/follow",
            catch_response=True,
        ) as response:
            if expect(response, 200, check=_following(True)) is not None:
                self.followed.append(user_id)

    @task(1)
    def unfollow(self) -> None:
        """Stop following someone followed earlier (or an author seen: maybe a no-op)."""
        user_id = (
            self.followed.popleft() if self.followed else self.seen.author_id(besides=self.user_id)
        )
        if user_id is None:
            return
        with self.client.delete(
            f"/users/{user_id}/follow",
            headers=self.token.headers(),
            name="/users/{user_id}/follow",
            catch_response=True,
        ) as response:
            expect(response, 200, check=_following(False))

    @task(1)
    def friends(self) -> None:
        """List one's friends (mutual follows)."""
        with self.client.get(
            f"/users/{self.user_id}/friends",
            headers=self.token.headers(),
            name="/users/{user_id}/friends",
            catch_response=True,
        ) as response:
            expect(response, 200, check=is_page)

    @task(1)
    def publish(self) -> None:
        """Publish a post."""
        number = next(_post_numbers)
        with self.client.post(
            "/posts/",
            json={
                "title": f"Social load test post {number}",
                "content": f"A simulated member shares post {number} of this run.",
            },
            headers=self.token.headers(),
            name="/posts/",
            catch_response=True,
        ) as response:
            expect(response, 201)

    def _read_feed(self, page: Any) -> None:
        if not page:
            return
        self.seen.remember(page["items"])
        self.feed_cursor = page["next_cursor"]


class Newcomer(Member):
    """Someone who signs up (`POST /auth/register`), then behaves like any member."""

    weight = 1

    def account(self) -> BearerToken:
        """A fresh account with a name no other simulated user can draw."""
        username = f"lt_{secrets.token_hex(8)}"
        password = secrets.token_urlsafe(12)
        with self.client.post(
            "/auth/register",
            json={"username": username, "email": f"{username}@example.com", "password": password},
            name="/auth/register",
            catch_response=True,
        ) as response:
            registered = expect(response, 201)
        if registered is None:
            raise StopUser(f"cannot register {username}: see the POST /auth/register failure")
        return BearerToken(self.client, username, password)
