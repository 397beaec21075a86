"""fastpost.supervisor leans on uvicorn internals: this fails loudly when they move."""

from __future__ import annotations

import inspect
import signal
import socket
from collections.abc import Iterator

import pytest
import uvicorn
from uvicorn.supervisors.multiprocess import SIGNALS, Multiprocess

from fastpost.supervisor import Supervisor


@pytest.fixture(autouse=True)
def _signal_handlers_restored() -> Iterator[None]:
    """uvicorn's supervisor takes over the process's signals when built: give them back."""
    saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_uvicorns_supervisor_still_takes_config_and_sockets_and_keeps_them() -> None:
    parameters = list(inspect.signature(Multiprocess.__init__).parameters)
    assert parameters == ["self", "config", "sockets"]
    config = uvicorn.Config("fastpost.app:create_app", factory=True, port=0, workers=2)
    with socket.socket() as sock:
        supervisor = Supervisor(config, sockets=[sock])
        assert supervisor.sockets == [sock]


def test_uvicorns_supervisor_still_dispatches_term_and_int_to_the_handlers_we_override() -> None:
    source = inspect.getsource(Multiprocess.handle_signals)
    assert 'getattr(self, f"handle_{sig_name.lower()}"' in source
    assert callable(Multiprocess.handle_term)
    assert callable(Multiprocess.handle_int)


def test_a_stopping_supervisor_closes_its_listening_socket_before_its_workers_drain() -> None:
    config = uvicorn.Config("fastpost.app:create_app", factory=True, port=0, workers=2)
    listener = socket.create_server(("127.0.0.1", 0))
    supervisor = Supervisor(config, sockets=[listener])
    supervisor.handle_term()
    assert listener.fileno() == -1
    assert supervisor.should_exit.is_set()
