"""What `fastpost bench` sends: named scenarios and single routes, as request lists.

A scenario is a weighted mix written out as a request list (requests_file.py) that wrk and
the fixed-rate generator walk in a cycle. Ids come from the seeded data, read through the
API before the run; logged-in scenarios log users in first and put their tokens in the list.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastpost.bench.requests_file import HttpRequest
from fastpost.seed import DEMO_PASSWORD, DEMO_USERNAME, GENERATED_PASSWORD

if TYPE_CHECKING:  # httpx comes with the bench extra; `fastpost --help` must not need it
    import httpx

NAMED = ("health", "read", "write", "mixed")
# Single routes by name; `route:[METHOD ]PATH` takes any other. {post_id}, {user_id} and
# {slug} become ids and slugs of the seeded data.
ROUTES = {
    "post-detail": "GET /posts/{post_id}",
    "posts-list": "GET /posts/?limit=20",
    "popular": "GET /posts/popular",
    "search": "GET /posts/search?q=cache",
    "user-profile": "GET /users/{user_id}",
    "user-posts": "GET /users/{user_id}/posts",
    "user-overview": "GET /users/{user_id}/overview",
    "followers": "GET /users/{user_id}/followers",
    "feed": "GET /feed",
    "me": "GET /users/me",
    "create-post": "POST /posts/",
    "article": "GET /api/articles/{slug}",
    "tags": "GET /api/tags",
}
# Routes that answer 401 without a token.
NEEDS_LOGIN = re.compile(r"^(/users/me|/feed)(\?|$)")
# Makes the next request(s) of a mix: one, or a pair that belongs together.
Maker = Callable[[], list[HttpRequest]]
SCENARIO_HELP = (
    "health | read (anonymous: post detail, lists, profiles) | write (create post, like/"
    "unlike, follow/unfollow, logged in) | mixed (the course's Locust weights, logged in: "
    "GET /posts/ 3, GET /users/me 2, POST /posts/ 1) | a single route by name: "
    + ", ".join(ROUTES)
    + " | route:[METHOD ]PATH, e.g. 'route:/posts/{post_id}' ({post_id}, {user_id}, {slug} "
    "filled from the seeded data; non-GET routes and /users/me, /feed log in)"
)


@dataclass
class Session:
    user_id: int
    authorization: str


@dataclass
class Dataset:
    """Ids of the seeded data the scenarios point at, and logged-in users."""

    post_ids: list[int]
    user_ids: list[int]
    sessions: list[Session]
    slugs: list[str] = field(default_factory=list)  # of the same posts, for the RealWorld API


def parse_route(scenario: str) -> tuple[str, str] | None:
    """Return (method, path) for a single-route scenario, None for a named mix."""
    if scenario in ROUTES:
        spec = ROUTES[scenario]
    elif scenario.startswith("route:"):
        spec = scenario.removeprefix("route:").strip()
    elif scenario in NAMED:
        return None
    else:
        raise ValueError(f"unknown scenario {scenario!r}: {SCENARIO_HELP}")
    method, _, path = spec.partition(" ") if " " in spec else ("GET", "", spec)
    if not path.startswith("/"):
        raise ValueError(f"a route scenario needs a path starting with /: {scenario!r}")
    return method.upper(), path


def needs_login(scenario: str) -> bool:
    """Tell whether the scenario's requests carry tokens."""
    if scenario in ("write", "mixed"):
        return True
    route = parse_route(scenario)
    return route is not None and (route[0] != "GET" or bool(NEEDS_LOGIN.match(route[1])))


def discover(client: httpx.Client, *, pages: int = 5) -> tuple[list[int], list[int], list[str]]:
    """Read published post ids, their authors' ids and the posts' slugs through the API."""
    post_ids: list[int] = []
    slugs: list[str] = []
    user_ids: set[int] = set()
    cursor: str | None = None
    for _ in range(pages):
        params: dict[str, str | int] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/posts/", params=params).raise_for_status().json()
        for post in page["items"]:
            post_ids.append(post["id"])
            slugs.append(post["slug"])
            user_ids.add(post["author"]["id"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    if not post_ids:
        raise RuntimeError("the seeded database has no published posts: seed with --posts > 0")
    return post_ids, sorted(user_ids), slugs


def log_in(client: httpx.Client, user_ids: list[int], count: int) -> list[Session]:
    """Log in `count` users (testuser first, then seeded authors) and return their tokens."""
    names = [(DEMO_USERNAME, DEMO_PASSWORD)]
    for user_id in user_ids:
        if len(names) >= count:
            break
        username = client.get(f"/users/{user_id}").raise_for_status().json()["username"]
        if username != DEMO_USERNAME:
            names.append((username, GENERATED_PASSWORD))
    sessions = []
    for username, password in names[:count]:
        answer = client.post("/auth/login", json={"username": username, "password": password})
        token = answer.raise_for_status().json()["access_token"]
        authorization = f"Bearer {token}"
        me = client.get("/users/me", headers={"Authorization": authorization}).raise_for_status()
        sessions.append(Session(me.json()["id"], authorization))
    return sessions


def _post_body(n: int) -> str:
    return json.dumps(
        {
            "title": f"Benchmark post {n}",
            "content": "Written by fastpost bench to measure the write path. " * 4,
        }
    )


def build(scenario: str, data: Dataset, *, length: int = 600, seed: int = 1) -> list[HttpRequest]:
    """Return the request list of `scenario`, `length` requests long (about)."""
    rng = random.Random(seed)

    def post() -> int:
        return rng.choice(data.post_ids)

    def user() -> int:
        return rng.choice(data.user_ids)

    def get(path: Callable[[], str], *, login: bool = False) -> Maker:
        def make() -> list[HttpRequest]:
            return [HttpRequest("GET", path(), session().authorization if login else None)]

        return make

    counter = itertools.count()

    def create_post() -> list[HttpRequest]:
        return [HttpRequest("POST", "/posts/", session().authorization, _post_body(next(counter)))]

    sessions = itertools.cycle(data.sessions) if data.sessions else None

    def session() -> Session:
        if sessions is None:
            raise RuntimeError(f"scenario {scenario!r} needs logged-in users (--login-users)")
        return next(sessions)

    if scenario == "health":
        return [HttpRequest("GET", "/health")]
    if scenario == "read":
        # An anonymous visitor: mostly single posts, then lists and profiles.
        read_mix: list[tuple[int, Maker]] = [
            (4, get(lambda: f"/posts/{post()}")),
            (2, get(lambda: "/posts/?limit=20")),
            (1, get(lambda: "/posts/popular")),
            (1, get(lambda: f"/users/{user()}")),
            (1, get(lambda: f"/users/{user()}/posts")),
        ]
        return _expand(read_mix, length)
    if scenario == "write":
        # Likes and follows come in do/undo pairs by the same user: the data stays the same
        # size, and the idempotent API answers 200 to both whatever the order they land in.
        def like_pair() -> list[HttpRequest]:
            me, target = session(), post()
            return [
                HttpRequest("POST", f"/posts/{target}/like", me.authorization),
                HttpRequest("DELETE", f"/posts/{target}/like", me.authorization),
            ]

        def follow_pair() -> list[HttpRequest]:
            me = session()
            target = user()
            if target == me.user_id:  # following oneself is refused
                target = next(u for u in data.user_ids if u != me.user_id)
            return [
                HttpRequest("POST", f"/users/{target}/follow", me.authorization),
                HttpRequest("DELETE", f"/users/{target}/follow", me.authorization),
            ]

        return _expand([(1, create_post), (1, like_pair), (1, follow_pair)], length)
    if scenario == "mixed":
        mixed: list[tuple[int, Maker]] = [
            (3, get(lambda: "/posts/", login=True)),
            (2, get(lambda: "/users/me", login=True)),
            (1, create_post),
        ]
        return _expand(mixed, length)
    route = parse_route(scenario)
    assert route is not None
    method, template = route
    login = needs_login(scenario)
    requests = []
    for n in range(min(length, 200)):
        path = template.replace("{post_id}", str(post())).replace("{user_id}", str(user()))
        if "{slug}" in path:
            path = path.replace("{slug}", rng.choice(data.slugs))
        body = _post_body(n) if method in ("POST", "PUT", "PATCH") else None
        requests.append(HttpRequest(method, path, session().authorization if login else None, body))
    return requests


def _expand(mix: list[tuple[int, Maker]], length: int) -> list[HttpRequest]:
    """Call the makers in their weights exactly, evenly interleaved, for whole cycles.

    Smooth weighted round-robin (as nginx picks upstreams): each turn every maker gains its
    weight, the one with the most goes and gives back the total. Each cycle of sum(weights)
    turns calls every maker exactly `weight` times, spread out (3:2:1 gives A B A C B A), so
    any stretch of the list a generator walks holds the mix to within one cycle; random
    draws were off by several percent over a short run.
    """
    total = sum(weight for weight, _ in mix)
    credit = [0] * len(mix)
    requests: list[HttpRequest] = []
    turns = 0
    while len(requests) < length or turns % total:
        for i, (weight, _) in enumerate(mix):
            credit[i] += weight
        chosen = max(range(len(mix)), key=credit.__getitem__)
        credit[chosen] -= total
        requests.extend(mix[chosen][1]())
        turns += 1
    return requests
