"""The gateway's link to a session's socket: frames of the opening (welcome ...) are held and
written with the next frame in one write, before anything else, in order, whichever path
writes next (the session's turn or the shared read's direct write)."""

from __future__ import annotations

import asyncio

from sync_service.gateway import _Link
from sync_service.ws_frames import text_frame


class FakeLean:
    def __init__(self) -> None:
        self.room = True
        self.writes: list[bytes] = []  # what went to the socket, one entry per write
        self.sent: list[bytes] = []  # what went through send_text (which waits for room)
        self.gate: asyncio.Event | None = None

    def write_prebuilt(self, wire: bytes) -> bool:
        if not self.room:
            return False
        self.writes.append(wire)
        return True

    async def send_text(self, text: str | bytes) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.sent.append(text if isinstance(text, bytes) else text.encode())


def link() -> tuple[_Link, FakeLean]:
    lean = FakeLean()
    return _Link(None, None, lean), lean  # type: ignore[arg-type]


async def test_the_held_welcome_goes_out_with_the_next_frame_in_one_write() -> None:
    lk, lean = link()
    lk.hold(b'{"type":"welcome"}')
    lk.hold('{"type":"drop"}')
    await lk.flush(b'{"type":"ops"}')
    assert lean.writes == [
        text_frame(b'{"type":"welcome"}') + text_frame(b'{"type":"drop"}') + text_frame(b'{"type":"ops"}')
    ]
    assert lk.held is None


async def test_a_direct_write_takes_the_held_frames_first() -> None:
    lk, lean = link()
    lk.hold(b'{"type":"welcome"}')
    lean.room = False
    assert not lk.write_direct(b"LIVE")  # no room: nothing written, still held
    assert lk.held == [b'{"type":"welcome"}'] and lean.writes == []
    lean.room = True
    assert lk.write_direct(b"LIVE")
    assert lean.writes == [text_frame(b'{"type":"welcome"}') + b"LIVE"] and lk.held is None
    assert lk.write_direct(b"MORE") and lean.writes[-1] == b"MORE"


async def test_without_room_the_held_frames_are_sent_in_order_and_nothing_overtakes_them() -> None:
    lk, lean = link()
    lk.hold(b"w")
    lean.room = False
    lean.gate = asyncio.Event()
    flushing = asyncio.ensure_future(lk.flush(b"o"))
    await asyncio.sleep(0)  # the flush now waits for room
    lean.room = True
    assert not lk.write_direct(b"LIVE")  # a shared read's frames must not overtake them
    lean.gate.set()
    await flushing
    assert lean.sent == [b"w", b"o"] and lean.writes == [] and lk.held is None
    assert lk.write_direct(b"LIVE")


async def test_nothing_held_nothing_written() -> None:
    lk, lean = link()
    await lk.flush()
    assert lean.writes == [] and lean.sent == []
    assert lk.write_direct(b"x") and lean.writes == [b"x"]
