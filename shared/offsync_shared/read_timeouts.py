"""Closes HTTP connections whose client is too slow to send a request: uvicorn's h11 protocol
with a deadline for the request head and an idle limit while the body arrives.

uvicorn alone holds a half-sent request forever (a probe held 180 of them, never closed); its
keep-alive timeout only covers the wait between complete requests. The head deadline runs from
the connection's (or the request's) first byte and is not extended by more bytes, so a client
trickling one header byte at a time is cut off as surely as a silent one. The body limit is on
silence, not total time: a large import over a slow link keeps going as long as bytes flow, and
time the app spends not reading (flow control paused the socket) never counts against it.

It also closes gently: a response that ends the connection while the client is still sending
its body (a 413 refused by its Content-Length) would otherwise close a socket with unread bytes,
which the kernel answers with a reset, and the client, still writing, never reads the 413. So the
rest of the body is read and thrown away (up to ``LINGER_MAX_BYTES``, for at most ``LINGER_S``)
before the socket is closed: the client finishes sending, then reads the answer.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

LINGER_S = 5.0  # how long a closing connection keeps reading a body it will not use
LINGER_MAX_BYTES = 64 * 1024 * 1024  # and how much of it, thrown away as it arrives


class _LingeringTransport:
    """The transport as the h11 cycle sees it: its ``close`` lingers while the client is still
    sending a body (``TimedH11Protocol._linger``); everything else is the real transport's.

    It refers to its protocol weakly: the protocol (and its flow control) refer to it, and a
    strong reference back made every connection a reference cycle, freed only by a full garbage
    collection. A storm of websocket upgrades left thousands of them (h11 state, buffers, flow
    control: ~14 objects each) in the old generation, where they pinned the allocator's pools
    (docs/performance.md, connections)."""

    def __init__(self, real: asyncio.Transport, protocol: TimedH11Protocol) -> None:
        self._real = real
        self._protocol = weakref.ref(protocol)

    def close(self) -> None:
        protocol = self._protocol()
        if protocol is None or not protocol._linger():
            self._real.close()

    def is_closing(self) -> bool:
        protocol = self._protocol()
        return (protocol is not None and protocol._lingering) or self._real.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class TimedH11Protocol(H11Protocol):
    """H11Protocol plus the two read timeouts; build a configured subclass with ``with_read_timeouts``."""

    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "head" or "body" while a timer runs
        self._real_transport: asyncio.Transport | None = None
        self._lingering = False
        self._lingered = 0  # body bytes read and thrown away while lingering

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._real_transport = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        self._start("head", self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        self._lingering = False
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The websocket protocol gets the real transport: its writes are the live hot path.
        assert self._real_transport is not None
        self.transport = self._real_transport
        super().handle_websocket_upgrade(event)

    def _linger(self) -> bool:
        """Asked to close: keep reading instead when the client is still sending its body (True)."""
        if self._lingering:
            return True
        assert self._real_transport is not None
        if self._real_transport.is_closing():
            return False
        if self.conn.their_state is not h11.SEND_BODY or self.transport.get_protocol() is not self:
            return False
        self._lingering = True
        self._lingered = 0
        self._start("linger", LINGER_S)
        self.flow.resume_reading()
        return True

    def _end_linger(self) -> None:
        self._lingering = False
        self._stop()
        assert self._real_transport is not None
        self._real_transport.close()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            try:
                self.conn.receive_data(data)
                while (event := self.conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                    if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                        break
            except h11.ProtocolError:
                self._end_linger()
                return
            if self.conn.their_state is not h11.SEND_BODY or self._lingered > LINGER_MAX_BYTES:
                self._end_linger()
            return
        super().data_received(data)
        if self.transport.get_protocol() is not self:  # upgraded to a websocket: its own rules
            self._stop()
            return
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._start("body", self.body_idle_timeout_s)  # restarted by every chunk: a silence limit
        elif state is h11.IDLE:
            if self._waiting_for != "head":  # a deadline from the first byte, never extended
                self._start("head", self.header_timeout_s)
        else:
            self._stop()  # the request is in: what the app takes is not the client's doing

    def _start(self, what: str, after: float) -> None:
        self._stop()
        self._waiting_for = what
        self._read_timer = self.loop.call_later(after, self._expired)

    def _stop(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
        self._read_timer = None
        self._waiting_for = None

    def eof_received(self) -> None:
        if self._lingering:
            self._end_linger()

    def _expired(self) -> None:
        what, self._read_timer, self._waiting_for = self._waiting_for, None, None
        if what == "linger":
            self._end_linger()
            return
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        state = self.conn.their_state
        if what == "body" and state is h11.SEND_BODY and self.flow.read_paused:
            self._start("body", self.body_idle_timeout_s)  # the app is not reading: not the client's fault
            return
        if state is h11.IDLE and self.timeout_keep_alive_task is not None:
            return  # between requests with nothing sent: the keep-alive timeout owns this wait
        if state in (h11.IDLE, h11.SEND_BODY):
            log.info(
                "closing a connection that did not send its request in time",
                extra={"waiting_for": what, "client": str(self.client)},
            )
            self.transport.close()


def with_read_timeouts(header_timeout_s: float, body_idle_timeout_s: float) -> type[TimedH11Protocol]:
    """The protocol class to give uvicorn (``uvicorn.Config(http=...)``)."""
    return type(
        "ConfiguredTimedH11Protocol",
        (TimedH11Protocol,),
        {"header_timeout_s": header_timeout_s, "body_idle_timeout_s": body_idle_timeout_s},
    )
