"""The parent of `fastpost serve --workers N` (N > 1): uvicorn's, closing its listener first.

uvicorn's supervisor binds the listening socket and hands it to its workers; on SIGTERM each
worker stops accepting and finishes what is in flight, but the parent keeps its own copy of the
socket open until the last worker has exited. Meanwhile the kernel still completes handshakes
into the backlog that nobody will accept, and resets them when the parent exits: behind nginx a
POST sent on such a connection is a 502 that nginx must not retry (tests/test_graceful_stop.py
shows the refused connection). Closing the parent's copy first makes the port refuse at once,
so a load balancer moves new connections to the other instances while this one drains.

`uvicorn.supervisors.multiprocess.Multiprocess` is not part of uvicorn's documented API, hence the
upper bound on uvicorn in pyproject.toml and tests/test_supervisor.py, which fails loudly when the
class or the attributes used here move.
"""

from __future__ import annotations

import socket

from uvicorn.supervisors.multiprocess import Multiprocess


class Supervisor(Multiprocess):
    """uvicorn's multiprocess supervisor that stops listening as soon as it is told to stop."""

    sockets: list[socket.socket]

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()
