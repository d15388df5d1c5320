"""An answer to a batch can reach the device twice (the gateway's copy from the topic and the stored
one for the batch the device resent after reconnecting): it is applied and counted once."""

from __future__ import annotations

from offsync_device.client import Device
from offsync_device.local_store import LocalStore
from offsync_shared import protocol as p


class FakeSocket:
    async def send(self, data: str) -> None:
        pass


def test_a_second_copy_of_an_answer_is_neither_applied_nor_counted() -> None:
    s = LocalStore()
    rid = s.create("task", {"subject": "call back"})
    batch = s.next_batch(50)
    assert batch is not None and s.awaits_answer(batch.batch_id)
    device = Device("ws://x", s, "t", device_id=s.device_id())
    answer = p.Result(batch.batch_id, (p.ChangeResult(0, "task", rid, "applied", version=1),))
    for _ in range(2):
        device._on_frame(FakeSocket(), answer, False)  # type: ignore[arg-type]
    assert device.report.batches == 1 and device.report.problems == []
    assert not s.awaits_answer(batch.batch_id) and not s.has_pending()
    assert s.server_record("task", rid) == {"version": 1, "attributes": {"subject": "call back"}}
