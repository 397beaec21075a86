"""The course's Locust scenario with nothing of ours added: the behaviour exactly as the
course describes it, written for fastpost's repository.

Each simulated user waits 1 to 3 s between tasks, logs in once as `testuser` / `testpass`
(`POST /auth/login` with a JSON body) and keeps the bearer token on its session; then it
reads `GET /posts/` (weight 3), `GET /users/me` (weight 2) and publishes with `POST /posts/`
(weight 1) a post titled "Test Post N", N drawn from 1 to 1000. Locust's plain `HttpUser`,
its default failure rule (a status of 400 or more) and raw paths as names, as in the course.
`locustfile.py` is our production version of the same mix (FastHttpUser, checked bodies,
token renewal).

    locust -f loadtests/course_as_written.py --host http://127.0.0.1:8000

The demo account logs in once per simulated user: above 10 users within a minute the
per-account login budget answers 429 (FASTPOST_RATE_LIMITS__LOGIN_PER_ACCOUNT); see the
guide's load-testing page.
"""

from __future__ import annotations

import random

from locust import HttpUser, between, task


class CourseUser(HttpUser):
    wait_time = between(1, 3)

    def on_start(self) -> None:
        login = self.client.post(
            "/auth/login", json={"username": "testuser", "password": "testpass"}
        )
        self.client.headers.update({"Authorization": f"Bearer {login.json()['access_token']}"})

    @task(3)
    def get_posts(self) -> None:
        self.client.get("/posts/")

    @task(2)
    def get_user_profile(self) -> None:
        self.client.get("/users/me")

    @task(1)
    def create_post(self) -> None:
        self.client.post(
            "/posts/",
            json={
                "title": f"Test Post {random.randint(1, 1000)}",
                "content": "A post written by the course's load test.",
            },
        )
