"""A request body read twice: a layer that has read it hands it on to the app it calls."""

from __future__ import annotations

from starlette.types import Message, Receive


def replaying(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then the real channel's messages (a
    disconnect)."""
    given = False

    async def replaying_receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replaying_receive
