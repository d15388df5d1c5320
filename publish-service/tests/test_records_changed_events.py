"""publish-service takes RecordsChanged (the records of one conflict-service transaction in one
event) beside the single-record RecordChanged of earlier producers, and applies a poll larger
than one transaction's worth in several, with the same result as one record at a time."""

from __future__ import annotations

import pytest
from publish_harness import harness
from test_publish_flow import ITEMS_V1, seed_org

from offsync_stack.testing import InfraEnv
from publish_service import worker

pytestmark = pytest.mark.integration


async def test_records_changed_events_in_several_transactions_match_the_reference(
    fresh_env: InfraEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker, "RECORDS_PER_TRANSACTION", 3)  # a poll of 10 records: 4 transactions
    async with harness(fresh_env) as h:
        async with h.pool.acquire() as c:
            await seed_org(c)
        await h.publish("P", 1, ITEMS_V1, ["u1", "u2", "u3"])
        await h.caught_up()
        owners = [("user", "u1"), ("user", "u2"), ("team", "t1"), ("user", "u3")]
        first = [
            await h.put_record("account", f"a{i}", owner=owners[i % 4], bu="b1", attrs={"name": f"A{i}"}, send=False)
            for i in range(8)
        ]
        contacts = [
            await h.put_record(
                "contact", "c1", owner=("user", "u1"), bu="b2", attrs={"parentcustomerid": "a1"}, send=False
            ),
            await h.put_record(
                "contact", "c2", owner=("user", "u2"), bu="b2", attrs={"parentcustomerid": "a2"}, send=False
            ),
        ]
        await h.send_changes(first + contacts)
        # A record changed again (moved to another owner) in a later transaction, and an earlier
        # producer's single-record event in the same poll.
        moved = await h.put_record(
            "account", "a1", owner=("user", "u3"), bu="b1", attrs={"name": "A1 moved"}, send=False
        )
        await h.send_changes([moved])
        await h.put_record("account", "a9", owner=("user", "u1"), bu="b1", attrs={"name": "A9"})
        await h.caught_up()
        await h.assert_matches_reference()
        sets = await h.user_sets()
        assert ("account", "a1") in sets["u3"] and ("account", "a9") in sets["u1"]
        await h.check_store_invariants()
