"""OFFSYNC_LISTEN_FD: the socket a launcher bound is served as the TCP socket it is (asyncio sets
TCP_NODELAY only on sockets it knows as TCP); a descriptor that is no socket is one plain sentence."""

from __future__ import annotations

import os
import socket

import pytest

from offsync_shared.serve import inherited_sockets
from offsync_shared.settings import CommonSettings


def test_no_descriptor_lets_uvicorn_bind() -> None:
    assert inherited_sockets(CommonSettings()) is None


def test_the_inherited_socket_keeps_its_family_and_type() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        bound.listen()
        dup = os.dup(bound.fileno())
        [sock] = inherited_sockets(CommonSettings(listen_fd=dup)) or []
        with sock:
            assert (sock.family, sock.type) == (socket.AF_INET, socket.SOCK_STREAM)
            assert sock.getsockname() == bound.getsockname()


def test_a_descriptor_that_is_not_an_open_socket_is_one_sentence() -> None:
    r, w = os.pipe()
    os.close(w)
    os.close(r)
    with pytest.raises(SystemExit, match=rf"^OFFSYNC_LISTEN_FD={r} is not an open socket: .+$"):
        inherited_sockets(CommonSettings(listen_fd=r))
