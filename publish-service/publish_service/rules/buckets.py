"""Knows which buckets a user's profile selects: compiles profile items into bucket definitions
parameterized by the user's values, with security trimming folded into the parameters.

A bucket is (entity, filter atom, access atom, parameters). Users with equal parameters share a
bucket: an "all records" item for users with organization read is one bucket; with business-unit
read it becomes one bucket per BU. Related records are derived buckets: the records of an entity
reachable through one relationship from one parent bucket, along relationship paths that never
revisit an entity (so cycles terminate).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson

from offsync_shared.domain.org import Actor, Depth, Operation, scope_at
from publish_service.rules import conditions
from publish_service.rules.model import OrgModel, Record

# Columns of the parameter rows the SQL materializer joins against (see sql_family_select).
PARAM_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bucket_id", "text"),
    ("parent", "text"),
    ("f_user", "text"),
    ("f_team", "text"),
    ("f_bu", "text"),
    ("f_not_bu", "text"),
    ("a_user", "text"),
    ("a_team", "text"),
    ("a_bu", "text"),
    ("a_bus", "jsonb"),
    ("a_out", "jsonb"),
    ("c_user", "text"),
    ("c_teams", "jsonb"),
    ("c_hier", "jsonb"),
    ("c_hierall", "jsonb"),
    ("c_bu", "text"),
    ("c_lang", "int"),
)


@dataclass(frozen=True)
class ProfileItem:
    entity: str
    filter: Mapping[str, Any]
    relationships: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class BucketDef:
    id: str
    entity: str
    filter: Mapping[str, Any]  # {"k": all|owner_user|owner_team|bu|custom|rel, ...}
    access: str  # org | bu | subtree | owner_user | owner_team | owner_user_out | owner_team_out
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def derived(self) -> bool:
        return bool(self.filter["k"] == "rel")

    @property
    def family(self) -> str:
        """Buckets of one family differ only in parameters: one SQL statement materializes them."""
        return _canon({"e": self.entity, "f": self.filter, "a": self.access})

    def definition(self) -> dict[str, Any]:
        return {"entity": self.entity, "filter": dict(self.filter), "access": self.access, "params": dict(self.params)}

    @classmethod
    def from_definition(cls, bucket_id: str, d: Mapping[str, Any]) -> BucketDef:
        return cls(bucket_id, d["entity"], d["filter"], d["access"], d.get("params", {}))

    def matches(self, r: Record) -> bool:
        """Whether a record belongs to this (base) bucket. Derived buckets depend on their parent's
        content, not only on the record: see ``materialize`` and the service's derived refresh."""
        if r.deleted or r.entity != self.entity:
            return False
        if self.filter["k"] == "custom":
            holds = self._custom(r, self._custom_params)
        else:
            holds = filter_holds(self.filter, self.params, r)
        return holds and access_holds(self.access, self.params, r)

    @cached_property
    def _custom(self) -> conditions.Predicate:
        """The custom condition compiled once per bucket (the incremental path matches per change)."""
        return conditions.compile_condition(self.filter["cond"])

    @cached_property
    def _custom_params(self) -> dict[str, Any]:
        return {name[2:]: v for name, v in self.params.items() if name.startswith("c_")}


def _canon(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def make_bucket(entity: str, filt: Mapping[str, Any], access: str, params: Mapping[str, Any]) -> BucketDef:
    h = hashlib.sha1(_canon({"e": entity, "f": filt, "a": access, "p": params}).encode()).hexdigest()[:20]
    return BucketDef(f"{entity}:{filt['k']}:{h}", entity, dict(filt), access, dict(params))


def filter_holds(f: Mapping[str, Any], p: Mapping[str, Any], r: Record) -> bool:
    k = f["k"]
    if k == "all":
        return True
    if k == "owner_user":
        return r.owner_type == "user" and r.owner_id == p["f_user"]
    if k == "owner_user_not_bu":
        return r.owner_type == "user" and r.owner_id == p["f_user"] and r.business_unit_id != p["f_not_bu"]
    if k == "owner_team":
        return r.owner_type == "team" and r.owner_id == p["f_team"]
    if k == "bu":
        return bool(r.business_unit_id == p["f_bu"])
    if k == "custom":
        return conditions.holds(f["cond"], r, {name[2:]: v for name, v in p.items() if name.startswith("c_")})
    raise ValueError(f"filter {k} is not a record predicate")


def access_holds(access: str, p: Mapping[str, Any], r: Record) -> bool:
    if access == "org":
        return True
    if access == "bu":
        return bool(r.business_unit_id == p["a_bu"])
    if access == "subtree":
        return r.business_unit_id in p["a_bus"]
    if access == "owner_user":
        return r.owner_type == "user" and r.owner_id == p["a_user"]
    if access == "owner_team":
        return r.owner_type == "team" and r.owner_id == p["a_team"]
    if access == "owner_user_out":
        return r.owner_type == "user" and r.owner_id == p["a_user"] and r.business_unit_id not in p["a_out"]
    if access == "owner_team_out":
        return r.owner_type == "team" and r.owner_id == p["a_team"] and r.business_unit_id not in p["a_out"]
    raise ValueError(f"unknown access {access}")


# ---------------------------------------------------------------- planning


def access_atoms(
    org: OrgModel, user_id: str, entity: str, actor: Actor | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The user's read access on an entity (offsync_shared.domain.org's rule) as a union of atoms.

    At business_unit / parent_child depth the records of the unit (subtree) are one shared atom;
    the user's and the user's teams' own records that sit outside it are always in reach too, so
    they come as ``owner_*_out`` atoms (disjoint from the unit atom: no record twice)."""
    actor = actor or org.actor(user_id)
    depth = actor.depth(entity, Operation.READ)
    scope = scope_at(actor, depth, org.entity_ownership(entity))
    if scope.nothing:
        return []
    if scope.everything:
        return [("org", {})]
    owners: list[tuple[str, dict[str, Any]]] = [("owner_user", {"a_user": user_id})]
    owners += [("owner_team", {"a_team": t}) for t in sorted(scope.team_owners)]
    if depth is Depth.USER:
        return owners
    units = sorted(scope.business_units)
    unit = ("bu", {"a_bu": actor.business_unit_id}) if depth is Depth.BUSINESS_UNIT else ("subtree", {"a_bus": units})
    return [unit, *((f"{a}_out", {**p, "a_out": units}) for a, p in owners)]


def user_params(org: OrgModel, user_id: str, names: Iterable[str]) -> dict[str, Any]:
    user = org.users[user_id]
    out: dict[str, Any] = {}
    for n in sorted(names):
        if n == "user":
            out["c_user"] = user_id
        elif n == "teams":
            out["c_teams"] = list(org.teams_of(user_id))
        elif n in ("hier", "hierall"):
            hier = sorted({user_id, *org.below(user_id)})
            if n == "hier":
                out["c_hier"] = hier
            else:
                out["c_hierall"] = sorted({*hier, *(t for u in hier for t in org.teams_of(u))})
        elif n == "bu":
            out["c_bu"] = user.business_unit_id
        elif n == "lang":
            out["c_lang"] = user.language
    return out


def filter_atoms(org: OrgModel, user_id: str, filt: Mapping[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    kind = filt.get("kind")
    user = org.users[user_id]
    if kind == "related":
        return []
    if kind == "all":
        return [({"k": "all"}, {})]
    if kind in ("other", "user", "team", "business_unit"):
        flags = filt if kind == "other" else {kind: True}
        out: list[tuple[dict[str, Any], dict[str, Any]]] = []
        if flags.get("user") and flags.get("business_unit"):
            # The user's records mostly sit in the user's BU, which the BU atom below brings
            # anyway: leaving those out of the per-user atom keeps the union exact and writes
            # (and downloads) each such record, and every record related to it, once, not twice.
            out.append(({"k": "owner_user_not_bu"}, {"f_user": user_id, "f_not_bu": user.business_unit_id}))
        elif flags.get("user"):
            out.append(({"k": "owner_user"}, {"f_user": user_id}))
        if flags.get("team"):
            out += [({"k": "owner_team"}, {"f_team": t}) for t in org.teams_of(user_id)]
        if flags.get("business_unit"):
            out.append(({"k": "bu"}, {"f_bu": user.business_unit_id}))
        return out
    if kind == "custom":
        cond = filt["condition"]
        return [({"k": "custom", "cond": cond}, user_params(org, user_id, conditions.params_used(cond)))]
    raise conditions.ConditionError(f"unknown filter kind {kind!r}")


# Filter atoms that select only the user's or the user's teams' own records.
OWN_FILTERS = frozenset({"owner_user", "owner_user_not_bu", "owner_team"})


def _combine(entity: str, f: dict[str, Any], fp: dict[str, Any], access: str, ap: dict[str, Any]) -> BucketDef | None:
    """Intersect a filter atom with an access atom, folding the access into the parameters; None
    when the intersection is empty whatever the records."""
    k = f["k"]
    if access != "org":
        if k in ("owner_user", "owner_user_not_bu") and access in ("owner_user", "owner_team"):
            if access == "owner_team" or ap["a_user"] != fp["f_user"]:
                return None
            access, ap = "org", {}
        elif k == "owner_user_not_bu" and access == "bu" and ap["a_bu"] == fp["f_not_bu"]:
            return None
        elif k == "owner_team" and access in ("owner_user", "owner_team"):
            if access == "owner_user" or ap["a_team"] != fp["f_team"]:
                return None
            access, ap = "org", {}
        elif k == "bu" and access.endswith("_out") and fp["f_bu"] in ap["a_out"]:
            return None
        elif k == "bu" and access in ("bu", "subtree"):
            if (access == "bu" and ap["a_bu"] != fp["f_bu"]) or (access == "subtree" and fp["f_bu"] not in ap["a_bus"]):
                return None
            access, ap = "org", {}
    return make_bucket(entity, f, access, {**fp, **ap})


def plan_user(org: OrgModel, items: Sequence[ProfileItem], user_id: str) -> list[BucketDef]:
    """Every bucket the user's set is the union of (base buckets first, then derived by depth)."""
    if not org.can_use_offline(user_id):
        return []
    by_entity = {it.entity: it for it in items}
    actor = org.actor(user_id)
    access = {e: access_atoms(org, user_id, e, actor) for e in by_entity}
    out: dict[str, BucketDef] = {}
    frontier: list[BucketDef] = []
    for it in items:
        for f, fp in filter_atoms(org, user_id, it.filter):
            if f["k"] in OWN_FILTERS and access[it.entity]:
                # The user's and the user's teams' own records are in reach at every depth.
                own = make_bucket(it.entity, f, "org", fp)
                if own.id not in out:
                    out[own.id] = own
                    frontier.append(own)
                continue
            for a, ap in access[it.entity]:
                b = _combine(it.entity, f, fp, a, ap)
                if b is not None and b.id not in out:
                    out[b.id] = b
                    frontier.append(b)
    # Derived buckets, breadth first along relationship paths that never revisit an entity.
    while frontier:
        nxt: list[BucketDef] = []
        for parent in frontier:
            path = parent.params.get("path", [parent.entity])
            for it in items:
                if it.entity in path:
                    continue
                for rel in it.relationships:
                    if rel.get("entity") != parent.entity or rel.get("entity") not in by_entity:
                        continue
                    filt = {
                        "k": "rel",
                        "from": parent.entity,
                        "attribute": rel["attribute"],
                        "side": rel.get("side", "self"),
                    }
                    for a, ap in access[it.entity]:
                        b = make_bucket(it.entity, filt, a, {"parent": parent.id, "path": [*path, it.entity], **ap})
                        if b.id not in out:
                            out[b.id] = b
                            nxt.append(b)
        frontier = nxt
    return list(out.values())


def depth_of(b: BucketDef) -> int:
    return len(b.params.get("path", [b.entity])) - 1


# ---------------------------------------------------------------- in-memory materialization


def derived_holds(b: BucketDef, r: Record, parent_records: Iterable[Record]) -> bool:
    """Whether record ``r`` (of b's entity) is brought by b's relationship from the parent's records."""
    if r.deleted or not access_holds(b.access, b.params, r):
        return False
    attr = b.filter["attribute"]
    if b.filter["side"] == "self":
        target = r.attributes.get(attr)
        return isinstance(target, str) and any(p.id == target for p in parent_records)
    return any(p.attributes.get(attr) == r.id for p in parent_records)


def materialize(defs: Iterable[BucketDef], records: Iterable[Record]) -> dict[str, set[tuple[str, str]]]:
    """Bucket contents computed in plain Python (tests; the service does this set-wise in SQL)."""
    recs = list(records)
    out: dict[str, set[tuple[str, str]]] = {}
    by_key = {(r.entity, r.id): r for r in recs}
    for b in sorted(defs, key=depth_of):
        if not b.derived:
            out[b.id] = {(r.entity, r.id) for r in recs if b.matches(r)}
        else:
            parents = [by_key[k] for k in out[b.params["parent"]]]
            out[b.id] = {(r.entity, r.id) for r in recs if r.entity == b.entity and derived_holds(b, r, parents)}
    return out


# ---------------------------------------------------------------- SQL


def _filter_sql(f: Mapping[str, Any]) -> str:
    k = f["k"]
    if k == "all":
        return "TRUE"
    if k == "owner_user":
        return "r.owner_type = 'user' AND r.owner_id = nb.f_user"
    if k == "owner_user_not_bu":
        return "r.owner_type = 'user' AND r.owner_id = nb.f_user AND r.business_unit_id IS DISTINCT FROM nb.f_not_bu"
    if k == "owner_team":
        return "r.owner_type = 'team' AND r.owner_id = nb.f_team"
    if k == "bu":
        return "r.business_unit_id = nb.f_bu"
    if k == "custom":
        param = {
            "user": "nb.c_user",
            "teams": "nb.c_teams",
            "hier": "nb.c_hier",
            "hierall": "nb.c_hierall",
            "bu": "nb.c_bu",
            "lang": "nb.c_lang",
        }
        return conditions.to_sql(f["cond"], "r", param)
    if k == "rel":
        return "TRUE"
    raise ValueError(k)


def _access_sql(access: str) -> str:
    return {
        "org": "TRUE",
        "bu": "r.business_unit_id = nb.a_bu",
        "subtree": "nb.a_bus ? r.business_unit_id",
        "owner_user": "r.owner_type = 'user' AND r.owner_id = nb.a_user",
        "owner_team": "r.owner_type = 'team' AND r.owner_id = nb.a_team",
        "owner_user_out": "r.owner_type = 'user' AND r.owner_id = nb.a_user AND NOT COALESCE(nb.a_out ? r.business_unit_id, false)",
        "owner_team_out": "r.owner_type = 'team' AND r.owner_id = nb.a_team AND NOT COALESCE(nb.a_out ? r.business_unit_id, false)",
    }[access]


def param_rows(defs: Iterable[BucketDef]) -> list[dict[str, Any]]:
    """The rows ``jsonb_to_recordset`` turns into the ``nb`` relation of sql_family_select."""
    names = {c for c, _ in PARAM_COLUMNS}
    return [{"bucket_id": b.id, **{k: v for k, v in b.params.items() if k in names}} for b in defs]


def sql_family_select(
    sample: BucketDef, params_placeholder: str = "$1", restrict: str | None = None, ops: str = "sync.bucket_ops"
) -> str:
    """SELECT (bucket_id, entity, record_id, version) of every live record of every bucket of
    ``sample``'s family whose parameters are in the jsonb array ``params_placeholder``.
    Reads sync.record_index (alias r) and, for derived buckets, the parent's puts in ``ops``.
    ``restrict`` (a text[] placeholder) limits the result to those record ids."""
    cols = ", ".join(f"{c} {t}" for c, t in PARAM_COLUMNS)
    e = conditions.sql_literal(sample.entity)
    nb = f"jsonb_to_recordset({params_placeholder}::jsonb) AS nb({cols})"
    where = f"NOT r.deleted AND ({_filter_sql(sample.filter)}) AND ({_access_sql(sample.access)})"
    if restrict:
        where += f" AND r.record_id = ANY({restrict}::text[])"
    if not sample.derived:
        return f"SELECT nb.bucket_id, r.entity, r.record_id, r.version FROM {nb} JOIN sync.record_index r ON r.entity = {e} AND {where}"
    f_ent = conditions.sql_literal(sample.filter["from"])
    attr = conditions.sql_literal(sample.filter["attribute"])
    if sample.filter["side"] == "self":
        return (
            # a record's lookup names one parent record: no duplicates, no DISTINCT needed
            f"SELECT nb.bucket_id, r.entity, r.record_id, r.version FROM {nb} "
            f"JOIN {ops} p ON p.bucket_id = nb.parent AND p.op = 'put' AND p.entity = {f_ent} "
            f"JOIN sync.record_index r ON r.entity = {e} AND (r.attributes ->> {attr}) = p.record_id "
            f"AND jsonb_typeof(r.attributes -> {attr}) = 'string' AND {where}"
        )
    return (
        f"SELECT DISTINCT nb.bucket_id, r.entity, r.record_id, r.version FROM {nb} "
        f"JOIN {ops} p ON p.bucket_id = nb.parent AND p.op = 'put' AND p.entity = {f_ent} "
        f"JOIN sync.record_index f ON f.entity = {f_ent} AND f.record_id = p.record_id "
        f"JOIN sync.record_index r ON r.entity = {e} AND r.record_id = (f.attributes ->> {attr}) "
        f"AND jsonb_typeof(f.attributes -> {attr}) = 'string' AND {where}"
    )


def _link_index(entity: str, attr: str) -> tuple[str, str]:
    """The index over the lookup ``attr`` of ``entity``'s records: (name, CREATE INDEX DDL)."""
    name = "record_index_link_" + hashlib.sha1(f"{entity}\0{attr}".encode()).hexdigest()[:16]
    return name, (
        f"CREATE INDEX IF NOT EXISTS {name} ON sync.record_index ((attributes ->> {conditions.sql_literal(attr)})) "
        f"WHERE entity = {conditions.sql_literal(entity)}"
    )


def link_indexes(defs: Iterable[BucketDef]) -> dict[str, str]:
    """CREATE INDEX statements (name -> DDL) for the lookups derived buckets follow, so that both
    materialization and incremental refresh find related records by index."""
    return dict(
        _link_index(d.entity if d.filter["side"] == "self" else d.filter["from"], d.filter["attribute"])
        for d in defs
        if d.derived
    )


def item_link_indexes(items: Sequence[ProfileItem]) -> dict[str, str]:
    """The link indexes one profile's derived buckets can follow, from its items alone (before any
    user's plan): every relationship to another entity of the profile. ``link_indexes`` of the
    planned buckets is a subset of it."""
    entities = {it.entity for it in items}
    return dict(
        _link_index(it.entity if rel.get("side", "self") == "self" else rel["entity"], rel["attribute"])
        for it in items
        for rel in it.relationships
        if rel.get("entity") in entities and rel.get("entity") != it.entity
    )


def parent_index_name(entity: str) -> str:
    """Name of the index over one parent entity's puts (migration 004 computes the same name)."""
    return "bucket_ops_parent_" + hashlib.md5(entity.encode()).hexdigest()[:16]


def parent_indexes(defs: Iterable[BucketDef]) -> dict[str, str]:
    """CREATE INDEX statements (name -> DDL) over the puts of the entities derived buckets start
    from: materialization and incremental refresh find which parent buckets hold a record by it.
    Only parent entities need it, so the ops of every other entity skip one index write."""
    out: dict[str, str] = {}
    for d in defs:
        if d.derived:
            e = d.filter["from"]
            out[parent_index_name(e)] = (
                f"CREATE INDEX IF NOT EXISTS {parent_index_name(e)} ON sync.bucket_ops (record_id) "
                f"WHERE op = 'put' AND entity = {conditions.sql_literal(e)}"
            )
    return out
