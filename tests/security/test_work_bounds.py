"""Finding 5: the records NDJSON import split lines in quadratic time (one 60 MB line: 17-20 s
of CPU, other calls stalled up to 2.35 s), and the gateway validated a whole upload frame before
counting its changes (a 1 MiB frame of 20,500 changes: 60-150 ms of CPU). Lines are now split in
linear time and capped; the count is checked before any change is looked at (see also
shared/tests/test_device_protocol_codec.py); the per-device rate limit charges by bytes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest

from conflict_service.bulk_import import ndjson_lines
from offsync_shared import protocol as p
from offsync_shared.errors import PayloadTooLarge
from tests.security.conftest import ADMIN_HEADERS, Findings, device_token
from tests.security.wsclient import answers_ping, open_session, until

MB = 1024 * 1024


async def _drip(data: bytes, step: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]


async def _lines(data: bytes, step: int, max_line: int = 8 * MB) -> list[bytes]:
    return [line async for line in ndjson_lines(_drip(data, step), max_line)]


async def test_line_splitting_is_linear_in_the_body() -> None:
    """A 400 kB line arriving a byte at a time: the old splitter copied the pending line on every
    byte (80 G byte copies); now each byte is handled once. The bound is generous."""
    line = b'{"attributes": {"name": "' + b"x" * 400_000 + b'"}}'
    start = time.process_time()
    assert await _lines(line + b"\n" + b"{}\n", 1) == [line, b"{}"]
    assert time.process_time() - start < 5.0


@pytest.mark.parametrize("step", [1, 3, 7, 64, 4096])
async def test_line_splitting_is_exact_at_any_chunking(step: int) -> None:
    data = b'{"a": 1}\n\n{"b": 2}\r\n{"c"\n: 3}\nlast'
    assert await _lines(data, step) == data.split(b"\n")[:-1] + [b"last"]


async def test_an_overlong_line_is_refused_as_soon_as_it_is() -> None:
    with pytest.raises(PayloadTooLarge, match="line 2"):
        await _lines(b"{}\n" + b"x" * 1000, 10, max_line=100)


@pytest.mark.e2e
async def test_a_60mb_import_line_is_refused_quickly_and_other_calls_stay_fast(findings: Findings) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"attributes": {"name": "'
        for _ in range(60):
            yield b"x" * MB

    async with httpx.AsyncClient(base_url=findings.stack.records_url, headers=ADMIN_HEADERS, timeout=60) as c:
        start = time.monotonic()
        try:
            r = await c.post(
                "/v1/records/account/import", content=body(), headers={"Content-Type": "application/x-ndjson"}
            )
            assert r.status_code == 413, r.text[:300]
        except httpx.WriteError:
            pass  # the server answered and closed before the client finished sending: refused unread
        assert time.monotonic() - start < 20.0
        r = await c.get(f"/v1/records/account/{findings.account}")
        assert r.status_code == 200


@pytest.mark.e2e
async def test_an_upload_of_too_many_changes_is_refused_and_others_stay_served(findings: Findings) -> None:
    url = findings.stack.sync_ws
    attacker = await open_session(url, device_token("bob", "flood"), "flood")
    other = await open_session(url, device_token("ann", "calm"), "calm")
    try:
        changes = [{"seq": i, "op": "create", "entity": "a", "id": "x"} for i in range(20_500)]
        frame = orjson.dumps({"type": "upload", "batch_id": "flood-1", "changes": changes})
        assert len(frame) <= MB
        await attacker.send(frame.decode())
        err = await until(attacker, lambda f: isinstance(f, p.Error))
        assert (err.code, err.ref) == (p.ERR_BATCH_TOO_LARGE, "flood-1"), err
        # The frame cost bob ~60 tokens of his 100-token burst: a second one at once is rate limited.
        for _ in range(2):
            await attacker.send(frame.decode())
        limited = await until(attacker, lambda f: isinstance(f, p.Error) and f.code == p.ERR_RATE_LIMITED)
        assert limited.retry_after is not None and limited.retry_after > 0
        assert await answers_ping(other)
    finally:
        await attacker.close()
        await other.close()
