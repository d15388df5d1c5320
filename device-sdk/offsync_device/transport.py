"""The device's websocket: `websockets`' client does the handshake, pings, closing and sending;
incoming text messages go to a callback straight from the socket's read. No message queue and
no task switch per frame: in a live stream that is most of what a frame costs besides storing it
(500 connections in one process, one frame per read: ~11 µs against ~20-30 µs per frame through
`async for message in connection`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode

OnText = Callable[[bytes | bytearray | memoryview], None]  # UTF-8 JSON text, not yet validated


class TappedConnection(ClientConnection):
    """A client connection whose complete text messages (fragmented ones reassembled) are handed
    to ``on_text`` as bytes (UTF-8 left to the JSON parser) as soon as they are read; binary
    messages still queue for ``recv()``. ``on_text`` runs inside the protocol's read callback: it
    must not raise."""

    def __init__(self, *args: Any, on_text: OnText, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_text = on_text
        self._parts: list[bytes] | None = None  # a fragmented text message being reassembled

    def process_event(self, event: Any) -> None:
        if self.response is not None and isinstance(event, Frame):
            op = event.opcode
            if op is Opcode.TEXT:
                if event.fin:
                    self.on_text(event.data)
                else:
                    self._parts = [bytes(event.data)]
                return
            if op is Opcode.CONT and self._parts is not None:
                self._parts.append(bytes(event.data))
                if event.fin:
                    parts, self._parts = self._parts, None
                    self.on_text(b"".join(parts))
                return
        super().process_event(event)


def tapped(on_text: OnText) -> Callable[..., TappedConnection]:
    """A ``create_connection`` factory for ``websockets.asyncio.client.connect``."""
    return partial(TappedConnection, on_text=on_text)
