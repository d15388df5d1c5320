"""Signs a device in with a username and password, keeps the refresh token in the device store,
and hands out an access token renewed silently before it expires.

Every failure a person can meet (wrong password, unknown host, a server that is not Offsync, a
server that is down, a sign-in revoked) is a ``SignInError`` whose message is one sentence.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from offsync_device.local_store import LocalStore

CONFIG_PATH = "/v1/auth/config"


class SignInError(Exception):
    """Signing in or renewing failed; ``str(exc)`` is one sentence for a person."""


class SignInRequired(SignInError):
    """The sign-in ended (revoked, expired, password changed): the user must sign in again."""


@dataclass(frozen=True, slots=True)
class ServerInfo:
    api_url: str  # the admin API base, e.g. http://host:8100
    sync_url: str  # the device websocket, e.g. ws://host:8300/v1/sync


def api_base(url: str) -> str:
    """The server's base URL from what a person typed: a scheme is added if missing, any path
    dropped (people paste /docs or /v1/auth/login); ws:// and other schemes are refused."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme in ("ws", "wss"):
        raise SignInError(f"{url} is a websocket URL; sign in with the server's http:// address (the admin API)")
    if parts.scheme not in ("http", "https"):
        raise SignInError(f"{url} is not an http:// or https:// address")
    if not parts.hostname:
        raise SignInError(f"{url} has no host name")
    try:
        _ = parts.port
    except ValueError:
        raise SignInError(f"{url} has an invalid port") from None
    return urlunsplit((parts.scheme, parts.netloc, "", "", ""))


def _unreachable(url: str, exc: Exception) -> SignInError:
    host = urlsplit(url).netloc
    text = str(exc).lower()
    if any(s in text for s in ("name or service not known", "nodename nor servname", "name resolution", "getaddrinfo")):
        return SignInError(f"cannot find the server {host}: check the address")
    if isinstance(exc, httpx.TimeoutException):
        return SignInError(f"the server at {host} did not answer in time: is it running and reachable?")
    return SignInError(f"nothing answers at {host}: the server is down, or the port is wrong")


async def _call(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
    try:
        return await client.request(method, url, **kw)
    except httpx.InvalidURL:
        raise SignInError(f"{url} is not a valid address") from None
    except (httpx.TransportError, OSError) as exc:
        raise _unreachable(url, exc) from None


def _json(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def _message(resp: httpx.Response) -> str:
    body = _json(resp)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message", ""))
    return ""


async def discover(url: str, *, client: httpx.AsyncClient | None = None) -> ServerInfo:
    """What the server at ``url`` says about itself; refuses anything that is not Offsync."""
    base = api_base(url)
    async with _client(client) as c:
        resp = await _call(c, "GET", base + CONFIG_PATH)
    body = _json(resp)
    if resp.status_code != 200 or not isinstance(body, dict) or body.get("service") != "offsync":
        raise SignInError(f"{base} is not an Offsync server (or not its admin API port)")
    return ServerInfo(api_url=base, sync_url=str(body["sync_url"]))


class _client:
    """Use the caller's client, or a short-lived one."""

    def __init__(self, given: httpx.AsyncClient | None) -> None:
        self.given = given
        self.own: httpx.AsyncClient | None = None

    async def __aenter__(self) -> httpx.AsyncClient:
        if self.given is not None:
            return self.given
        self.own = httpx.AsyncClient(timeout=10)
        return self.own

    async def __aexit__(self, *exc: object) -> None:
        if self.own is not None:
            await self.own.aclose()


class Credentials:
    """The device's sign-in: a token source for ``Device`` (call it for a valid access token).

    Tokens live in the store's meta table (``api_url``, ``refresh_token``, ``access_token``,
    ``access_expires_at``), so a restarted device keeps its sign-in. The access token is renewed
    ``margin_s`` before it expires (or when the server closed the session with 4001); the new
    refresh token is stored before the new access token is used, so a crash never leaves the
    device holding only a spent refresh token.
    """

    def __init__(self, store: LocalStore, *, margin_s: float = 60.0, client: httpx.AsyncClient | None = None) -> None:
        self.store = store
        self.margin_s = margin_s
        self.client = client
        self._lock = asyncio.Lock()

    @property
    def signed_in(self) -> bool:
        return bool(self.store.meta("refresh_token"))

    async def login(self, url: str, username: str, password: str) -> ServerInfo:
        """Sign in; remembers the server and the tokens. Raises ``SignInError`` (one sentence)."""
        info = await discover(url, client=self.client)
        body = {"username": username, "password": password, "device_id": self.store.device_id(), "audience": "device"}
        async with _client(self.client) as c:
            resp = await _call(c, "POST", info.api_url + "/v1/auth/login", json=body)
        if resp.status_code == 401:
            raise SignInError("wrong username or password")
        if resp.status_code == 429:
            raise SignInError(
                f"too many failed sign-ins; try again in {resp.headers.get('Retry-After', 'a few')} seconds"
            )
        if resp.status_code != 200:
            raise SignInError(f"the server refused the sign-in: {_message(resp) or f'HTTP {resp.status_code}'}")
        self.store.set_meta("api_url", info.api_url)
        self.store.set_meta("url", info.sync_url)
        self.store.set_meta("username", username)
        self._keep(resp.json())
        return info

    def _keep(self, pair: dict[str, Any]) -> None:
        self.store.set_meta("refresh_token", pair["refresh_token"])
        self.store.set_meta("access_token", pair["access_token"])
        self.store.set_meta("access_expires_at", str(time.time() + float(pair["expires_in"])))

    def expires_at(self) -> float | None:
        """When the held access token expires (epoch seconds), if one is held."""
        at = self.store.meta("access_expires_at")
        return float(at) if at else None

    def expire(self) -> None:
        """Forget the access token (the server said it is no longer good): the next call renews."""
        self.store.set_meta("access_expires_at", "0")

    async def __call__(self) -> str:
        async with self._lock:
            token, at = self.store.meta("access_token"), self.expires_at()
            if token and at is not None and at - time.time() > self.margin_s:
                return token
            await self.renew()
            return self.store.meta("access_token") or ""

    async def renew(self) -> None:
        """Exchange the refresh token for a new pair (raises ``SignInRequired`` if the sign-in ended)."""
        refresh, api = self.store.meta("refresh_token"), self.store.meta("api_url")
        if not refresh or not api:
            raise SignInRequired("this device is not signed in: run `offsync-device login`")
        async with _client(self.client) as c:
            resp = await _call(
                c,
                "POST",
                api + "/v1/auth/refresh",
                json={"refresh_token": refresh, "device_id": self.store.device_id()},
            )
        if resp.status_code in (401, 403):
            self.store.set_meta("refresh_token", "")
            raise SignInRequired(f"your sign-in has ended ({_message(resp) or 'revoked'}); sign in again")
        if resp.status_code != 200:
            raise SignInError(f"renewing the sign-in failed: {_message(resp) or f'HTTP {resp.status_code}'}")
        self._keep(resp.json())

    async def logout(self) -> None:
        """Revoke this device's sign-in on the server (best effort) and forget the tokens."""
        refresh, api = self.store.meta("refresh_token"), self.store.meta("api_url")
        if refresh and api:
            async with _client(self.client) as c:
                try:
                    await _call(c, "POST", api + "/v1/auth/logout", json={"refresh_token": refresh})
                except SignInError:
                    pass  # offline: the refresh token is forgotten anyway and expires on its own
        self.forget()

    def forget(self) -> None:
        """Forget the tokens (the server ended this sign-in, or the user signed out)."""
        for key in ("refresh_token", "access_token", "access_expires_at"):
            self.store.set_meta(key, "")
