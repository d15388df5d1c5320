"""Ports for test and bench servers come from below the kernel's ephemeral range, so no outgoing
connection's local port can take one between the pick and the server's bind."""

from __future__ import annotations

import socket

from offsync_stack.embedded import _ephemeral_floor, free_port


def test_ports_are_free_below_the_ephemeral_range_and_differ() -> None:
    lo = _ephemeral_floor()
    ports = [free_port() for _ in range(20)]
    assert all(1024 < port < lo for port in ports)
    assert len(set(ports)) > 10  # random picks, not one port handed out again and again
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[0]))  # still free
