"""Oracle: every condition compiled to SQL selects in PostgreSQL exactly the records the Python
evaluator accepts (every operator on every attribute shape, plus random nested groups)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from publish_orgs import NAMES, STATIC_OPS, USER_OPS

from offsync_shared import db
from offsync_stack.testing import InfraEnv
from publish_service.rules import conditions
from publish_service.rules.model import Record

pytestmark = pytest.mark.integration

PARAMS = {
    "user": "u1",
    "teams": ["t1", "t2"],
    "hier": ["u1", "u2"],
    "hierall": ["t1", "t2", "u1", "u2"],
    "bu": "b1",
    "lang": 1033,
}
PARAM_SQL = {
    "user": "'u1'::text",
    "teams": '\'["t1", "t2"]\'::jsonb',
    "hier": '\'["u1", "u2"]\'::jsonb',
    "hierall": '\'["t1", "t2", "u1", "u2"]\'::jsonb',
    "bu": "'b1'::text",
    "lang": "1033",
}
T0 = datetime(2026, 1, 1, tzinfo=UTC)
INSTANTS = [
    "2026-01-01T00:00:00+00:00",
    "2026-01-01T00:00:00",
    "2026-01-01T01:00:00+01:00",
    "2026-01-02",
    "2025-12-31T23:59:59Z",
]
# Case variants and non-ASCII letters: string operators ignore case the same way on both sides
# (bug #14.5); like patterns with escapes and a trailing backslash.
CASES = ["Contoso", "CONTOSO Ltd", "contoso", "École", "ÉCOLE", "İstanbul", "ΟΔΟΣ", "οδος", "50%", "a\\b", "a_b"]
VALUES: list[Any] = [None, *NAMES, *CASES, "A", "u1", "t2", "b1", -1, 0, 2, 2.5, 1033, True, False, [1], {"x": 1}]
OPERANDS: list[Any] = ["ab", "b", "", "a%", "%b", "_b%", "c\\%", "x_y", "u1", 0, 2, 2.0, True, "A"]
OPERANDS += [
    "contoso",
    "con%",
    "CON",
    "%LTD",
    "c_ntoso%",
    "école",
    "ISTANBUL",
    "οδοσ",
    "50\\%",
    "a\\",
    "a\\\\b",
    "A\\_B",
]


def records() -> list[Record]:
    rnd = random.Random(5)
    out = []
    for i in range(160):
        attrs = {k: rnd.choice(VALUES) for k in ("name", "n", "ref") if rnd.random() < 0.85}
        owner = rnd.choice([None, "u1", "u2", "t1", "u9"])
        created = rnd.choice([None, T0, T0 + timedelta(days=1), T0 - timedelta(seconds=1)])
        out.append(
            Record(
                "account",
                f"r{i}",
                1,
                owner,
                "user" if owner else None,
                rnd.choice([None, "b1", "b2"]),
                attrs,
                created_at=created,
                modified_at=T0 + timedelta(hours=rnd.randint(-2, 2)),
            )
        )
    return out


def leaves() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for op, attr in itertools.product(STATIC_OPS, ["name", "n", "ref", "ownerid", "missing"]):
        if op in ("null", "not-null"):
            out.append({"attribute": attr, "operator": op})
        elif op in ("in", "not-in"):
            lists: tuple[list[Any], ...] = ([], ["ab", 2], [True, "u1", 0], ["CONTOSO", "école", 2.5])
            out += [{"attribute": attr, "operator": op, "value": v} for v in lists]
        elif op in ("like", "not-like", "begins-with", "not-begin-with", "ends-with", "not-end-with"):
            out += [{"attribute": attr, "operator": op, "value": v} for v in OPERANDS if isinstance(v, str)]
        else:
            out += [{"attribute": attr, "operator": op, "value": v} for v in OPERANDS]
    out += [
        {"attribute": a, "operator": op} for op in USER_OPS for a in ("ref", "ownerid", "owningbusinessunit", "name")
    ]
    out += [{"attribute": a, "operator": "eq-userlanguage"} for a in ("n", "name")]
    for attr, op in itertools.product(["createdon", "modifiedon"], sorted(conditions.DATETIME_OPERATORS)):
        if op in ("null", "not-null"):
            out.append({"attribute": attr, "operator": op})
        elif op in ("in", "not-in"):
            out += [{"attribute": attr, "operator": op, "value": v} for v in ([], INSTANTS[:2], INSTANTS[3:])]
        else:
            out += [{"attribute": attr, "operator": op, "value": v} for v in INSTANTS]
    return out


def nested(rnd: random.Random, pool: list[dict[str, Any]], depth: int = 1) -> dict[str, Any]:
    if depth < 3 and rnd.random() < 0.6:
        return {rnd.choice(["and", "or"]): [nested(rnd, pool, depth + 1) for _ in range(rnd.randint(0, 3))]}
    return rnd.choice(pool)


async def test_sql_compilation_agrees_with_python_evaluator(fresh_env: InfraEnv) -> None:
    recs = records()
    pool_leaves = leaves()
    rnd = random.Random(11)
    conds = pool_leaves + [nested(rnd, pool_leaves) for _ in range(300)]
    conn = await db.connect(fresh_env.pg_dsn)
    try:
        await conn.execute("""CREATE TABLE recs (entity text, record_id text, owner_id text, owner_type text,
                              business_unit_id text, attributes jsonb, deleted bool, created_at timestamptz, modified_at timestamptz)""")
        await conn.executemany(
            "INSERT INTO recs VALUES ($1, $2, $3, $4, $5, $6, false, $7, $8)",
            [
                (
                    r.entity,
                    r.id,
                    r.owner_id,
                    r.owner_type,
                    r.business_unit_id,
                    dict(r.attributes),
                    r.created_at,
                    r.modified_at,
                )
                for r in recs
            ],
        )
        mismatches = []
        for cond in conds:
            conditions.params_used(cond)
            sql = f"SELECT record_id FROM recs r WHERE {conditions.to_sql(cond, 'r', PARAM_SQL)}"
            got = {row["record_id"] for row in await conn.fetch(sql)}
            want = {r.id for r in recs if conditions.holds(cond, r, PARAMS)}
            if got != want:
                mismatches.append((cond, sorted(got ^ want)[:3]))
        assert not mismatches, mismatches[:5]
    finally:
        await conn.close()
