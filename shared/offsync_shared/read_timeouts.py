"""Closes HTTP connections whose client is too slow to send a request: uvicorn's h11 protocol
with a deadline for the request head and an idle limit while the body arrives.

uvicorn alone holds a half-sent request forever (a probe held 180 of them, never closed); its
keep-alive timeout only covers the wait between complete requests. The head deadline runs from
the connection's (or the request's) first byte and is not extended by more bytes, so a client
trickling one header byte at a time is cut off as surely as a silent one. The body limit is on
silence, not total time: a large import over a slow link keeps going as long as bytes flow, and
time the app spends not reading (flow control paused the socket) never counts against it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class TimedH11Protocol(H11Protocol):
    """H11Protocol plus the two read timeouts; build a configured subclass with ``with_read_timeouts``."""

    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._waiting_for: str | None = None  # "head" or "body" while a timer runs

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start("head", self.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
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

    def _expired(self) -> None:
        what, self._read_timer, self._waiting_for = self._waiting_for, None, None
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
