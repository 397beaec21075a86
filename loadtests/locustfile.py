"""The course's scenario: the demo user logs in, then reads the post list, their own profile
and now and then publishes a post, waiting 1 to 3 seconds between actions.

    locust -f loadtests/locustfile.py --headless -u 50 -r 10 -t 1m --host http://127.0.0.1:8000
"""

from __future__ import annotations

import itertools

from common import DEMO_PASSWORD, DEMO_USERNAME, BearerToken, expect, is_page, scaled_between
from locust import FastHttpUser, task

_post_numbers = itertools.count(1)


class BlogUser(FastHttpUser):
    """The demo account (`testuser` / `testpass`) reading and writing posts."""

    wait_time = scaled_between(1, 3)

    def on_start(self) -> None:
        """Log in with `POST /auth/login` and keep the bearer token."""
        self.token = BearerToken(self.client, DEMO_USERNAME, DEMO_PASSWORD)
        self.token.log_in()

    @task(3)
    def list_posts(self) -> None:
        """Read the newest posts as a logged-in reader (`liked_by_me` filled in)."""
        with self.client.get(
            "/posts/", headers=self.token.headers(), name="/posts/", catch_response=True
        ) as response:
            expect(response, 200, check=is_page)

    @task(2)
    def read_me(self) -> None:
        """Read the caller's own profile."""
        with self.client.get(
            "/users/me", headers=self.token.headers(), name="/users/me", catch_response=True
        ) as response:
            expect(response, 200)

    @task(1)
    def create_post(self) -> None:
        """Publish a post with a title and content."""
        number = next(_post_numbers)
        with self.client.post(
            "/posts/",
            json={
                "title": f"Load test post {number}",
                "content": f"Written by a simulated user, post {number} of this run.",
            },
            headers=self.token.headers(),
            name="/posts/",
            catch_response=True,
        ) as response:
            expect(response, 201)
