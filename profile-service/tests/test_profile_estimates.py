"""Per-user estimates: the indexed lookup equals a naive scan of every group (the union of the
chosen filters counts each record once)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from profile_service.estimates import UserContext, _Groups, _item_estimate

ids = st.sampled_from(["a", "b", "c"])
group = st.fixed_dictionaries(
    {
        "owner_type": st.sampled_from(["user", "team"]),
        "owner_id": ids,
        "business_unit_id": st.sampled_from(["bu1", "bu2"]),
        "n": st.integers(1, 50),
        "bytes": st.integers(100, 5000),
    }
)
flt = st.fixed_dictionaries(
    {"kind": st.just("other"), "user": st.booleans(), "team": st.booleans(), "business_unit": st.booleans()}
)
user = st.builds(UserContext, ids, st.sampled_from(["bu1", "bu2"]), st.frozensets(ids))


def naive(f: dict[str, object], rows: list[dict[str, object]], u: UserContext) -> tuple[int, int]:
    hit = [
        r
        for r in rows
        if (f["user"] and r["owner_type"] == "user" and r["owner_id"] == u.user_id)
        or (f["team"] and r["owner_type"] == "team" and r["owner_id"] in u.team_ids)
        or (f["business_unit"] and r["business_unit_id"] == u.business_unit_id)
    ]
    return sum(int(r["n"]) for r in hit), sum(int(r["bytes"]) for r in hit)  # type: ignore[call-overload]


@given(
    st.lists(group, max_size=12, unique_by=lambda r: (r["owner_type"], r["owner_id"], r["business_unit_id"])), flt, user
)
def test_indexed_estimate_equals_naive_scan(
    rows: list[dict[str, object]], f: dict[str, object], u: UserContext
) -> None:
    n, b, exact = _item_estimate({"entity": "account", "filter": f}, _Groups.of(rows), u)
    assert (n, b) == naive(f, rows, u) and exact
