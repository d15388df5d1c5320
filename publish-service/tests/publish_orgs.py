"""Hypothesis strategies for small generated orgs, records and profiles (shared by the rules and
integration tests)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from publish_service.rules.buckets import ProfileItem
from publish_service.rules.model import DEPTHS, OrgModel, Record, Role, Team, User

BUS = {"root": None, "b1": "root", "b2": "b1", "b3": "root"}
USERS = ["u1", "u2", "u3", "u4"]
TEAMS = ["t1", "t2"]
OWNERSHIP = {"account": "user_or_team", "contact": "user_or_team", "product": "organization", "territory": "business"}
NAMES = ["ab", "abc", "b", "ba", "c%", "x_y"]
STATIC_OPS = [
    "eq",
    "ne",
    "gt",
    "ge",
    "lt",
    "le",
    "like",
    "not-like",
    "in",
    "not-in",
    "null",
    "not-null",
    "begins-with",
    "not-begin-with",
    "ends-with",
    "not-end-with",
]
USER_OPS = [
    "eq-userid",
    "ne-userid",
    "eq-userteams",
    "eq-useroruserteams",
    "eq-useroruserhierarchy",
    "eq-useroruserhierarchyandteams",
    "eq-businessid",
    "ne-businessid",
]


@st.composite
def orgs(draw: Any) -> OrgModel:
    roles = {}
    for rid in ("r1", "r2", "r3"):
        # biased toward readable depths so that most generated users actually hold records
        privs = {
            e: {"read": draw(st.sampled_from([*DEPTHS, "organization", "business_unit"]))}
            for e in OWNERSHIP
            if draw(st.integers(0, 3))
        }
        roles[rid] = Role(rid, privs, read_offline_profile=draw(st.booleans()) or rid == "r1")
    users = {}
    for i, u in enumerate(USERS):
        mgr = draw(st.sampled_from([None, *USERS[:i]])) if i else None
        users[u] = User(
            u,
            draw(st.sampled_from(list(BUS))),
            manager_id=mgr,
            language=draw(st.sampled_from([1033, 1036, None])),
            enabled=draw(st.integers(0, 4)) > 0 or i == 0,
            role_ids=tuple(draw(st.lists(st.sampled_from(list(roles)), min_size=1, max_size=2, unique=True))),
        )
    teams = {
        t: Team(
            t,
            draw(st.sampled_from(list(BUS))),
            tuple(draw(st.lists(st.sampled_from(USERS), max_size=3, unique=True))),
            tuple(draw(st.lists(st.sampled_from(list(roles)), max_size=1))),
        )
        for t in TEAMS
    }
    return OrgModel(users=users, teams=teams, bu_parent=dict(BUS), roles=roles, ownership=dict(OWNERSHIP))


def attr_values() -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), st.sampled_from(NAMES), st.integers(-2, 3), st.booleans())


@st.composite
def records(draw: Any, n_max: int = 14) -> list[Record]:
    out = []
    ids = {e: [f"{e[0]}{i}" for i in range(4)] for e in OWNERSHIP}
    for entity in OWNERSHIP:
        for rid in draw(st.lists(st.sampled_from(ids[entity]), max_size=n_max // 3, unique=True)):
            out.append(record_for(draw, entity, rid, ids, 1))
    return out


def record_for(draw: Any, entity: str, rid: str, ids: dict[str, list[str]], version: int) -> Record:
    owned = OWNERSHIP[entity] == "user_or_team"
    owner_type = draw(st.sampled_from(["user", "team"])) if owned else None
    owner = draw(st.sampled_from(USERS if owner_type == "user" else TEAMS)) if owned else None
    attrs = {
        "name": draw(attr_values()),
        "n": draw(attr_values()),
        "ref": draw(st.sampled_from([None, *USERS, *TEAMS, *BUS])),
        "lang": draw(st.sampled_from([None, 1033, 1036])),
        "parent": draw(st.sampled_from([None, *ids["account"]])),
        "acct": draw(st.sampled_from([None, *ids["account"], *ids["contact"]])),
    }
    attrs = {k: v for k, v in attrs.items() if v is not None or draw(st.booleans())}
    return Record(
        entity,
        rid,
        version,
        owner,
        owner_type,
        draw(st.sampled_from([None, *BUS])),
        attrs,
        deleted=draw(st.booleans()) and draw(st.booleans()),
    )


def leaf(draw: Any) -> dict[str, Any]:
    if draw(st.booleans()):
        return {
            "attribute": draw(st.sampled_from(["ref", "ownerid", "owningbusinessunit"])),
            "operator": draw(st.sampled_from(USER_OPS)),
        }
    if draw(st.integers(0, 5)) == 0:
        return {"attribute": "lang", "operator": "eq-userlanguage"}
    op = draw(st.sampled_from(STATIC_OPS))
    attr = draw(st.sampled_from(["name", "n", "ref", "ownerid", "missing"]))
    if op in ("null", "not-null"):
        return {"attribute": attr, "operator": op}
    if op in ("in", "not-in"):
        return {
            "attribute": attr,
            "operator": op,
            "value": draw(st.lists(st.one_of(st.sampled_from(NAMES), st.integers(-2, 3), st.booleans()), max_size=3)),
        }
    if op in ("like", "not-like", "begins-with", "not-begin-with", "ends-with", "not-end-with"):
        return {
            "attribute": attr,
            "operator": op,
            "value": draw(st.sampled_from(["a%", "%b", "_b%", "a", "", "c\\%", "x_y", "u1"])),
        }
    return {
        "attribute": attr,
        "operator": op,
        "value": draw(st.one_of(st.sampled_from(NAMES), st.integers(-2, 3), st.booleans())),
    }


@st.composite
def conditions(draw: Any, depth: int = 1) -> dict[str, Any]:
    if depth < 3 and draw(st.integers(0, 2)) == 0:
        group = draw(st.sampled_from(["and", "or"]))
        return {group: [draw(conditions(depth + 1)) for _ in range(draw(st.integers(0, 3)))]}
    return leaf(draw)


@st.composite
def filters(draw: Any, entity: str) -> dict[str, Any]:
    own = OWNERSHIP[entity]
    kinds = ["related", "all", "custom"] + (["other"] if own in ("user_or_team", "business") else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "other":
        if own == "business":
            return {"kind": "other", "user": False, "team": False, "business_unit": True}
        return {
            "kind": "other",
            "user": draw(st.booleans()),
            "team": draw(st.booleans()),
            "business_unit": draw(st.booleans()),
        }
    if kind == "custom":
        return {"kind": "custom", "condition": draw(conditions())}
    return {"kind": kind}


@st.composite
def profiles(draw: Any) -> list[ProfileItem]:
    entities = draw(st.lists(st.sampled_from(list(OWNERSHIP)), min_size=1, max_size=4, unique=True))
    items = []
    for e in entities:
        rels = []
        for other in entities:
            if other != e and draw(st.integers(0, 2)) == 0:
                rels.append(
                    {
                        "entity": other,
                        "attribute": draw(st.sampled_from(["parent", "acct"])),
                        "side": draw(st.sampled_from(["self", "related"])),
                    }
                )
        items.append(ProfileItem(e, draw(filters(e)), tuple(rels)))
    return items
