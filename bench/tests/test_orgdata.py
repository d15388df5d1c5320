"""The benchmark's data generator is deterministic and shaped as the workloads document says."""

from __future__ import annotations

from collections import Counter

from offsync_bench.orgdata import Sizes, make_org, records

SMALL = Sizes().scaled(0.01)


def test_same_seed_same_org_and_records() -> None:
    a, b = make_org(7, SMALL), make_org(7, SMALL)
    assert a == b
    assert list(records(a)) == list(records(b))
    assert make_org(8, SMALL).users != a.users


def test_sizes_and_shapes() -> None:
    org = make_org(1, SMALL)
    recs = list(records(org))
    counts = Counter(r.entity for r in recs)
    assert counts["account"] == SMALL.accounts and counts["contact"] == SMALL.contacts
    assert len(recs) == SMALL.records
    depth = {bu["id"]: 0 for bu in org.business_units if bu["parent_id"] is None}
    for bu in org.business_units:
        if bu["parent_id"] is not None:
            depth[bu["id"]] = depth[bu["parent_id"]] + 1
    assert max(depth.values()) == 2  # three levels
    accounts = {r.id for r in recs if r.entity == "account"}
    assert all(r.attributes["parentcustomerid"] in accounts for r in recs if r.entity == "contact")
    assert all(r.owner_id is None for r in recs if r.entity == "product")


def test_ownership_is_skewed() -> None:
    org = make_org(3, Sizes().scaled(0.05))
    owners = Counter(r.owner_id for r in records(org) if r.owner_type == "user")
    top = owners.most_common(1)[0][1]
    median = sorted(owners.values())[len(owners) // 2]
    assert top > 5 * median
