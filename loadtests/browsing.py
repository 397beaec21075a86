"""Anonymous browsing: post lists paged by cursor, post detail (and its revalidation with
the ETag), popular posts, search and user profiles, opened from what the lists showed.

    locust -f loadtests/browsing.py --headless -u 50 -r 10 -t 1m --host http://127.0.0.1:8000
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from common import MEMORY, Sightings, expect, is_page, scaled_between
from locust import FastHttpUser, task


def _is_post_list(body: Any) -> str | None:
    return None if isinstance(body, list) else f"not a list of posts: {body!r}"


class Browser(FastHttpUser):
    """A visitor who is not logged in: mostly reads lists and posts, sometimes searches or
    looks at who wrote something."""

    wait_time = scaled_between(1, 3)

    def on_start(self) -> None:
        """Land on the front page, so there are posts and authors to open."""
        self.seen = Sightings()
        self.next_cursor: str | None = None
        self.etags: dict[int, str] = {}
        self.front_page()

    @task(4)
    def front_page(self) -> None:
        """Read the newest posts (the cached first page)."""
        with self.client.get("/posts/", name="/posts/", catch_response=True) as response:
            self._read_page(expect(response, 200, check=is_page))

    @task(3)
    def next_page(self) -> None:
        """Read on: the page after the last one read, back to the front at the end."""
        if self.next_cursor is None:
            self.front_page()
            return
        with self.client.get(
            f"/posts/?cursor={quote(self.next_cursor)}",
            name="/posts/?cursor={cursor}",
            catch_response=True,
        ) as response:
            self._read_page(expect(response, 200, check=is_page))

    @task(6)
    def read_post(self) -> None:
        """Open a post seen in a list."""
        post_id = self.seen.post_id()
        if post_id is None:
            return
        with self.client.get(
            f"/posts/{post_id}", name="/posts/{post_id}", catch_response=True
        ) as response:
            if expect(response, 200) is not None and (etag := response.headers.get("etag")):
                self.etags[post_id] = etag
                if len(self.etags) > MEMORY:
                    del self.etags[next(iter(self.etags))]

    @task(2)
    def revisit_post(self) -> None:
        """Open a post read before, as a browser does: with If-None-Match, so that an
        unchanged post is answered 304 without a body (200 if it was liked since)."""
        if not self.etags:
            self.read_post()
            return
        post_id = next(iter(self.etags))
        etag = self.etags.pop(post_id)
        with self.client.get(
            f"/posts/{post_id}",
            headers={"If-None-Match": etag},
            name="/posts/{post_id} (If-None-Match)",
            catch_response=True,
        ) as response:
            expect(response, 200, 304)

    @task(2)
    def popular(self) -> None:
        """Read the most liked posts."""
        with self.client.get(
            "/posts/popular", name="/posts/popular", catch_response=True
        ) as response:
            posts = expect(response, 200, check=_is_post_list)
            if posts:
                self.seen.remember(posts)

    @task(2)
    def search(self) -> None:
        """Search for a word from a title read before."""
        word = self.seen.search_word()
        with self.client.get(
            f"/posts/search?q={quote(word)}", name="/posts/search?q={q}", catch_response=True
        ) as response:
            posts = expect(response, 200, check=_is_post_list)
            if posts:
                self.seen.remember(posts)

    @task(2)
    def profile(self) -> None:
        """Look at the profile of someone whose post was listed."""
        user_id = self.seen.author_id()
        if user_id is None:
            return
        with self.client.get(
            f"/users/{user_id}", name="/users/{user_id}", catch_response=True
        ) as response:
            expect(response, 200)

    @task(2)
    def authors_posts(self) -> None:
        """Read the posts of someone whose post was listed."""
        user_id = self.seen.author_id()
        if user_id is None:
            return
        with self.client.get(
            f"/users/{user_id}/posts", name="/users/{user_id}/posts", catch_response=True
        ) as response:
            self._read_page(expect(response, 200, check=is_page), follow=False)

    @task(1)
    def overview(self) -> None:
        """Read a user's overview: profile, latest posts and friends in one response."""
        user_id = self.seen.author_id()
        if user_id is None:
            return
        with self.client.get(
            f"/users/{user_id}/overview", name="/users/{user_id}/overview", catch_response=True
        ) as response:
            expect(response, 200)

    @task(1)
    def followers(self) -> None:
        """See who follows someone whose post was listed."""
        user_id = self.seen.author_id()
        if user_id is None:
            return
        with self.client.get(
            f"/users/{user_id}/followers",
            name="/users/{user_id}/followers",
            catch_response=True,
        ) as response:
            expect(response, 200, check=is_page)

    def _read_page(self, page: Any, *, follow: bool = True) -> None:
        if not page:
            return
        self.seen.remember(page["items"])
        if follow:
            self.next_cursor = page["next_cursor"]
