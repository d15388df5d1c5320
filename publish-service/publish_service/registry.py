"""Knows which buckets a record change may touch: the live bucket definitions, indexed so that a
record is matched against the few candidate buckets its own values select, not all of them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from publish_service.rules.buckets import BucketDef, depth_of
from publish_service.rules.conditions import attribute_value
from publish_service.rules.model import Record

Extract = Callable[[Record], Any]

_OWNER_USER: Extract = lambda r: r.owner_id if r.owner_type == "user" else None  # noqa: E731
_OWNER_TEAM: Extract = lambda r: r.owner_id if r.owner_type == "team" else None  # noqa: E731
_BU: Extract = lambda r: r.business_unit_id  # noqa: E731
_ROUTE_BY_CUSTOM_OP = {"eq-userid": "c_user", "eq-businessid": "c_bu", "eq-userlanguage": "c_lang"}


def _route(b: BucketDef) -> tuple[str, Extract] | None:
    """A parameter every matching record must equal one of its own values, if there is one."""
    k = b.filter["k"]
    if k in ("owner_user", "owner_user_not_bu"):
        return "f_user", _OWNER_USER
    if k == "owner_team":
        return "f_team", _OWNER_TEAM
    if k == "bu":
        return "f_bu", _BU
    if b.access == "bu":
        return "a_bu", _BU
    if b.access in ("owner_user", "owner_user_out"):
        return "a_user", _OWNER_USER
    if b.access in ("owner_team", "owner_team_out"):
        return "a_team", _OWNER_TEAM
    if k == "custom":
        cond = b.filter["cond"]
        leaves = cond["and"] if "and" in cond else [cond]
        for leaf in leaves:
            param = _ROUTE_BY_CUSTOM_OP.get(leaf.get("operator", ""))
            if param and param in b.params:
                attr = leaf["attribute"]
                return param, lambda r, attr=attr: attribute_value(r, attr)
    return None


@dataclass
class _Family:
    route: tuple[str, Extract] | None
    by_value: dict[Any, list[BucketDef]] = field(default_factory=dict)
    unrouted: list[BucketDef] = field(default_factory=list)

    def add(self, b: BucketDef) -> None:
        if self.route is None:
            self.unrouted.append(b)
        else:
            self.by_value.setdefault(b.params[self.route[0]], []).append(b)

    def candidates(self, r: Record) -> Iterable[BucketDef]:
        if self.route is None:
            return self.unrouted
        v = self.route[1](r)
        if v is None or isinstance(v, (list, dict)):
            return ()
        return self.by_value.get(v, ())


class Registry:
    def __init__(self, defs: Iterable[BucketDef], generation: int = 0) -> None:
        self.generation = generation
        self.defs: dict[str, BucketDef] = {}
        self._families: dict[str, dict[str, _Family]] = {}  # entity -> family key -> family
        self.children: dict[str, list[BucketDef]] = {}  # parent bucket id -> derived buckets
        self.derived_by_entity: dict[str, list[BucketDef]] = {}
        for b in defs:
            self.defs[b.id] = b
            if b.derived:
                self.children.setdefault(b.params["parent"], []).append(b)
                self.derived_by_entity.setdefault(b.entity, []).append(b)
                continue
            fams = self._families.setdefault(b.entity, {})
            fam = fams.get(b.family)
            if fam is None:
                fam = fams[b.family] = _Family(_route(b))
            fam.add(b)

    def base_buckets_of(self, r: Record) -> set[str]:
        """Ids of the base buckets the record belongs to in its current state."""
        if r.deleted:
            return set()
        return {b.id for fam in self._families.get(r.entity, {}).values() for b in fam.candidates(r) if b.matches(r)}

    def depth(self, bucket_id: str) -> int:
        return depth_of(self.defs[bucket_id])
