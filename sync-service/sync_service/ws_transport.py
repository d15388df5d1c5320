"""A lean websocket transport for uvicorn (``uvicorn.Config(ws=LeanWebSocketProtocol)``).

The gateway keeps thousands of idle devices per process, so what one open websocket costs is the
figure that matters (docs/performance.md, connections). uvicorn's own websockets protocol keeps,
per connection, the parsed upgrade request and the handshake response (headers included) for the
whole life of the socket, an ``asyncio.Queue`` and an ``asyncio.Event`` (three and one deques,
~600 B each, mostly empty) and an instance ``__dict__``. This one speaks the same ASGI websocket
interface with ``__slots__``, a plain list as the inbox and a future only while someone waits.
It answers the upgrade request uvicorn hands over itself (``ws_handshake``) and then reads frames
with a compact RFC 6455 reader (``ws_frames.FrameReader``), which holds nothing while a device is
idle: ``websockets``' sans-I/O ``ServerProtocol``, used here before, kept ~1.7 KB per connection
for the life of the socket. Behaviour the gateway relies on is unchanged: one message is handed
to the app at a time and the socket is not read while one waits (backpressure), ``send`` waits
while the kernel buffer is above its high-water mark, close handshakes and ``shutdown`` as
uvicorn does. Once the app ``attach``es a sink (the gateway does, after authentication), messages go to it
from the read callback instead, so no task per connection waits to read; the socket is then not
read while the sink refuses a message (its bounded inbox is full), until ``resume_feed``. Once
the app ``keep``s the connection, its ASGI call may return with the connection open: the app
then sends, closes and ``finish``es it from tasks it starts only when there is work.

Deliberately not supported: permessage-deflate (its zlib state alone would cost more than
everything else an idle device costs; devices send small JSON frames) and server keepalive pings
(heartbeats are protocol frames, docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Coroutine
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import unquote

from uvicorn.config import Config
from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from sync_service.ws_frames import (
    BINARY,
    CLOSE,
    PING,
    TEXT,
    Close,
    FrameReader,
    binary_frame,
    close_echo,
    close_frame,
    pong_frame,
    text_frame,
)
from sync_service.ws_handshake import Refused, Request, check, read_request, rejection, switching_protocols

log = logging.getLogger("uvicorn.error")

CLOSE_TIMEOUT_S = 10.0  # after our close frame, how long the peer has to answer it
# The scope extension under which the app finds this connection (for ``write_prebuilt``).
LEAN_EXTENSION = "offsync.lean_websocket"


class Sink(Protocol):
    """Takes the messages of an attached connection as they are read (``attach``)."""

    def feed(self, raw: str | bytes) -> bool:
        """One message; False when it cannot be taken now (the transport holds it, stops reading
        and offers it again on ``resume_feed``)."""
        ...

    def disconnected(self) -> None:
        """The peer is gone (or the connection closed): nothing more will be fed."""
        ...


class _Shared:
    """What every connection of one server has in common (one object, not one copy each)."""

    __slots__ = (
        "app",
        "loop",
        "max_size",
        "root_path",
        "asgi_version",
        "app_state",
        "connections",
        "tasks",
        "server_state",
    )

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.app = config.loaded_app
        self.loop = loop
        self.max_size = config.ws_max_size
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.app_state = app_state
        self.connections = server_state.connections
        self.tasks = server_state.tasks
        self.server_state = server_state


_shared: weakref.WeakKeyDictionary[Config, _Shared] = weakref.WeakKeyDictionary()  # one per server


class LeanWebSocketProtocol(asyncio.Protocol):
    __slots__ = (
        "_sh",
        "transport",
        "_reader",
        "_accept_key",
        "_inbox",
        "_waiter",
        "_drain",
        "_accepted",
        "_close_sent",
        "_disconnected",
        "_read_paused",
        "_close_timer",
        "_preauth",
        "_sink",
        "_held",
        "_kept",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        sh = _shared.get(config)
        if sh is None or sh.server_state is not server_state:
            sh = _shared[config] = _Shared(config, server_state, app_state, _loop or asyncio.get_event_loop())
        self._sh = sh
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._reader: FrameReader | None = None  # once the upgrade request is read
        self._accept_key: bytes | None = None  # for the handshake answer, until the app accepts
        self._inbox: list[dict[str, Any]] = []
        self._waiter: asyncio.Future[None] | None = None  # the app waits in receive()
        self._drain: asyncio.Future[None] | None = None  # set while the kernel buffer is full
        self._accepted = False
        self._close_sent = False
        self._disconnected = False
        self._read_paused = False
        self._close_timer: asyncio.TimerHandle | None = None
        # Until the app calls ``authenticated``: messages are capped at the server's (small)
        # ws_max_size and nothing after the first message is read, so an unauthenticated peer
        # can make the server hold one small message at most.
        self._preauth = True
        # Once attached, messages go straight to the sink from the read callback: no task
        # waits in ``receive`` for an idle device. ``_held``: messages it could not take yet
        # (the one it refused and any read with it), offered again on ``resume_feed``.
        self._sink: Sink | None = None
        self._held: list[str | bytes] | None = None
        # The app returned but keeps the connection (``keep``): it sends, closes and ``finish``es
        # from tasks of its own, started only when there is something to do.
        self._kept = False

    # ------------------------------------------------------------------ asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._sh.connections.add(self)  # type: ignore[arg-type]  # uvicorn's union does not name custom protocols

    def connection_lost(self, exc: Exception | None) -> None:
        self._put({"type": "websocket.disconnect", "code": 1005 if self._accepted else 1006})
        self._sh.connections.discard(self)
        self._accepted = True
        self._disconnected = True
        self._release_drain()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        if exc is None:
            self.transport.close()

    def eof_received(self) -> None:
        pass

    def pause_writing(self) -> None:
        if self._drain is None:
            self._drain = self._sh.loop.create_future()

    def resume_writing(self) -> None:
        self._release_drain()

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        if reader is None:  # uvicorn's first call: the upgrade request
            if not self._close_sent:  # (not again after a refused one)
                self._handshake(data)
            return
        for kind, value in reader.feed(data):
            if kind == TEXT or kind == BINARY:
                self._message(value)  # type: ignore[arg-type]
            elif kind == PING:
                # RFC 6455 5.5.2, also while closing (as websockets); never before the 101.
                if self._accepted and not self.transport.is_closing():
                    self.transport.write(pong_frame(value))  # type: ignore[arg-type]
            elif kind == CLOSE:
                self._peer_closed(value)  # type: ignore[arg-type]
            else:
                self._parser_failed(value)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------- events ---
    def _handshake(self, data: bytes) -> None:
        request, rest = read_request(data)
        refusal = b""  # empty: not an HTTP request head, closed unanswered (as websockets did)
        if isinstance(request, Request):
            try:
                self._accept_key = check(request)
            except Refused as refused:
                refusal = refused.response
        elif request is not None:
            refusal = request
        if self._accept_key is None or not isinstance(request, Request):
            self._accepted = self._close_sent = True
            if refusal:
                self.transport.write(refusal)
            self.transport.close()
            return
        sh = self._sh
        self._reader = FrameReader(sh.max_size)
        raw_path, _, query = request.target.partition("?")
        subprotocols: list[str] = []
        for name, value in request.headers:
            if name == b"sec-websocket-protocol":
                subprotocols.extend(t.strip() for t in value.decode("latin-1").split(","))
        scope = {
            "type": "websocket",
            "asgi": {"version": sh.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(self.transport) else "ws",
            "server": get_local_addr(self.transport),
            "client": get_remote_addr(self.transport),
            "root_path": sh.root_path,
            "path": sh.root_path + unquote(raw_path),
            "raw_path": (sh.root_path + raw_path).encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": request.headers,
            "subprotocols": subprotocols,
            "state": sh.app_state.copy(),
            "extensions": {LEAN_EXTENSION: self},
        }
        self._put({"type": "websocket.connect"})
        task = sh.loop.create_task(self._run_asgi(scope))
        task.add_done_callback(sh.tasks.discard)
        sh.tasks.add(task)
        if rest:  # frames sent with the request (uvicorn passes the request head alone)
            self.data_received(rest)

    def _message(self, raw: str | bytes) -> None:
        """A complete message (``str``: text, already checked to be UTF-8)."""
        if self._close_sent:
            return  # the app is done: keep reading only for the peer's close reply
        sink = self._sink
        if sink is not None:
            if self._held is None:
                if sink.feed(raw):
                    return
                self._held = [raw]
            else:  # more messages of the same read, behind the one the sink refused
                self._held.append(raw)
            if not self._read_paused:  # the sink is full: stop reading until it has room
                self._read_paused = True
                self.transport.pause_reading()
            return
        self._put(
            {"type": "websocket.receive", "text": raw}
            if isinstance(raw, str)
            else {"type": "websocket.receive", "bytes": raw}
        )
        if not self._read_paused:  # one message at a time: backpressure on the device
            self._read_paused = True
            self.transport.pause_reading()

    def _peer_closed(self, close: Close) -> None:
        if self._close_sent:  # the peer answered our close: the handshake is complete
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
                self.transport.close()
            return
        if not self.transport.is_closing():
            self._put({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
            if self._accepted:  # echo it (RFC 6455 5.5.1), then close: a server closes first
                self.transport.write(close_echo(close))
            self.transport.close()

    def _parser_failed(self, close: Close) -> None:
        """The peer broke the protocol: fail the connection (RFC 6455 7.1.7) with ``close``'s
        code, unless our close frame went out already (the app was told then)."""
        if not self._close_sent:
            self._put({"type": "websocket.disconnect", "code": close.code, "reason": close.reason})
            if self._accepted and not self.transport.is_closing():
                self.transport.write(close_frame(close.code, close.reason))
        self._close_sent = True
        self.transport.close()

    def shutdown(self) -> None:
        """uvicorn's shutdown: close what is open (the gateway drained its devices before)."""
        if self._close_sent:
            if self._close_timer is not None:
                self._close_timer.cancel()
                self._close_timer = None
        elif self._accepted:
            self._put({"type": "websocket.disconnect", "code": 1012})
            if not self.transport.is_closing():
                self.transport.write(close_frame(1012))
        else:
            self._reject(HTTPStatus.INTERNAL_SERVER_ERROR)
        self.transport.close()

    # ---------------------------------------------------------------------------- ASGI ---
    async def _run_asgi(self, scope: dict[str, Any]) -> None:
        try:
            await self._sh.app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            log.exception("Exception in ASGI application")
            self._reject(HTTPStatus.INTERNAL_SERVER_ERROR)
        else:
            if not self._accepted:
                log.error("ASGI callable returned without completing the websocket handshake")
                self._reject(HTTPStatus.INTERNAL_SERVER_ERROR)
            elif self._kept:
                return
        self.finish()

    def keep(self) -> None:
        """The app's ASGI call may return without ending the connection: the app now owns it
        (``send_text``, ``close``, ``spawn``) and ends it with ``finish``. An idle connection
        then costs no task and no coroutine chain (docs/performance.md, connections)."""
        self._kept = True

    def finish(self) -> None:
        """The app is done with the connection: close it (after the close handshake, if one is
        under way)."""
        if self._close_timer is None:
            self.transport.close()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Runs ``work`` for a kept connection as a task the server knows of (shutdown waits
        for it, as for the ASGI call it replaces)."""
        tasks = self._sh.tasks
        task = self._sh.loop.create_task(work)
        task.add_done_callback(tasks.discard)
        tasks.add(task)

    async def send_text(self, text: str | bytes) -> None:
        """One text message (``bytes``: already UTF-8, e.g. orjson's output, which saves a
        decode and an encode of every ops page). While the socket is open with room in its
        buffer (nearly always), it is framed here (``text_frame``: the bytes ``ServerProtocol``
        would make, without its per-frame objects) and written at once; otherwise as any ASGI
        send, which waits for room or raises as the connection's state says."""
        if self._drain is None and not (self._close_sent or self._disconnected) and self._accepted:
            if not self.transport.is_closing():
                self.transport.write(text_frame(text if isinstance(text, bytes) else text.encode()))
                return
        await self.send({"type": "websocket.send", "text": text.decode() if isinstance(text, bytes) else text})

    async def close(self, code: int, reason: str) -> None:
        """Starts the close handshake, unless the connection is closing or gone already."""
        if not (self._close_sent or self._disconnected or self.transport.is_closing()):
            await self.send({"type": "websocket.close", "code": code, "reason": reason})

    async def receive(self) -> dict[str, Any]:
        while not self._inbox:
            if self._waiter is None or self._waiter.done():  # done: a cancelled earlier wait
                self._waiter = self._sh.loop.create_future()
            await self._waiter
        message = self._inbox.pop(0)
        if self._read_paused and not self._inbox and not self._close_sent and not self._preauth:
            self._read_paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if self._drain is not None:
            await asyncio.shield(self._drain)
        if self._disconnected:
            raise ClientDisconnected()
        kind = message["type"]
        if not self._accepted:
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                self._put({"type": "websocket.disconnect", "code": 1006})
                self._accepted = self._close_sent = True
                self._reject(HTTPStatus.FORBIDDEN)
                self.transport.close()
            else:
                raise RuntimeError(f"Expected ASGI message 'websocket.accept' or 'websocket.close', but got {kind!r}.")
            return
        if self._close_sent:
            raise RuntimeError(f"Unexpected ASGI message {kind!r}, after sending 'websocket.close'.")
        if kind == "websocket.send":
            if self.transport.is_closing():  # the peer closed (or shutdown): nobody to send to
                raise ClientDisconnected()
            data = message.get("bytes")
            if data is not None:
                self.transport.write(binary_frame(data))
            else:
                self.transport.write(text_frame(message.get("text", "").encode()))
        elif kind == "websocket.close":
            if not self.transport.is_closing():
                code, reason = message.get("code", 1000), message.get("reason") or ""
                frame = close_frame(code, reason)  # raises, as websockets did, for a code never sent
                self._put({"type": "websocket.disconnect", "code": code, "reason": reason})
                self.transport.write(frame)
                self._close_sent = True
                if self._read_paused:  # read on, for the peer's close reply
                    self._read_paused = False
                    self.transport.resume_reading()
                self._close_timer = self._sh.loop.call_later(CLOSE_TIMEOUT_S, self.transport.close)
        else:
            raise RuntimeError(f"Expected ASGI message 'websocket.send' or 'websocket.close', but got {kind!r}.")

    def authenticated(self, max_size: int) -> None:
        """The peer proved who it is: accept messages up to ``max_size`` and read on."""
        self._preauth = False
        if self._reader is not None:
            self._reader.max_size = max_size
        if self._read_paused and not self._inbox and not self._close_sent:
            self._read_paused = False
            self.transport.resume_reading()

    def write_prebuilt(self, wire: bytes) -> bool:
        """Writes messages framed by ``prebuilt_text`` now, if the socket is open and its kernel
        buffer below the high-water mark; False otherwise (the caller sends the usual way, which
        waits for room). Fanout: one framing and one write per device, no task switch."""
        if self._drain is not None or self._close_sent or self._disconnected or not self._accepted:
            return False
        if self.transport.is_closing():
            return False
        self.transport.write(wire)
        return True

    def attach(self, sink: Sink) -> None:
        """From now on, hand each message to ``sink`` as it is read instead of queueing it for
        ``receive`` (which the app then no longer calls); a disconnect ends the feed."""
        self._sink = sink
        pending, self._inbox = self._inbox, []
        for message in pending:
            if message["type"] == "websocket.disconnect":
                self._put(message)
                return
            raw = message.get("text")
            if raw is None:
                raw = message.get("bytes", b"")
            if self._held is None and sink.feed(raw):
                continue
            self._held = (self._held or []) + [raw]
        self.resume_feed()

    def resume_feed(self) -> None:
        """The sink has room: offer it the held message, then read on."""
        sink = self._sink
        if sink is None:
            return
        held = self._held
        while held:
            if not sink.feed(held[0]):
                return
            held.pop(0)
        self._held = None
        if self._read_paused and not self._close_sent and not self._preauth:
            self._read_paused = False
            self.transport.resume_reading()

    def detach(self) -> None:
        """The app is done with the feed (messages still held are dropped with the socket)."""
        self._sink = self._held = None

    # ------------------------------------------------------------------------- helpers ---
    def _accept(self, message: dict[str, Any]) -> None:
        key, self._accept_key = self._accept_key, None
        assert key is not None
        headers = list(self._sh.server_state.default_headers)
        headers += [(bytes(n), bytes(v)) for n, v in message.get("headers", [])]
        if not self.transport.is_closing():
            self._accepted = True
            self.transport.write(switching_protocols(key, headers, message.get("subprotocol")))

    def _reject(self, status: HTTPStatus) -> None:
        """An HTTP error instead of the handshake answer, if that was not sent yet."""
        if self._accept_key is None or self.transport.is_closing():
            return
        self._accept_key = None
        self.transport.write(rejection(status))

    def _put(self, message: dict[str, Any]) -> None:
        sink = self._sink
        if sink is not None and message["type"] == "websocket.disconnect":
            self._sink = self._held = None
            sink.disconnected()
        self._inbox.append(message)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    def _release_drain(self) -> None:
        d = self._drain
        if d is not None:
            self._drain = None
            if not d.done():
                d.set_result(None)
