"""Semantics of custom-filter conditions: one Python evaluator and one SQL compiler that agree.

Comparisons are typed like jsonb: a leaf holds only when the attribute has a value of the
operand's JSON type; every operator (negations included) is false on a missing/null attribute,
except ``null``. User-dependent operators read bound parameters (see ``PARAMS_OF_OPERATOR``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from publish_service.rules.model import Record

MAX_DEPTH = 3

# Parameters a user-dependent operator needs, bound per user when a bucket is planned:
# user = user id, teams = user's teams, hier = user + users below, hierall = hier + their teams,
# bu = user's business unit, lang = user's language.
PARAMS_OF_OPERATOR: dict[str, tuple[str, ...]] = {
    "eq-userid": ("user",),
    "ne-userid": ("user",),
    "eq-userteams": ("teams",),
    "eq-useroruserteams": ("user", "teams"),
    "eq-useroruserhierarchy": ("hier",),
    "eq-useroruserhierarchyandteams": ("hierall",),
    "eq-businessid": ("bu",),
    "ne-businessid": ("bu",),
    "eq-userlanguage": ("lang",),
}
STATIC_OPERATORS = frozenset(
    "eq ne gt ge lt le like not-like in not-in null not-null begins-with not-begin-with ends-with not-end-with".split()
)
SYSTEM_COLUMNS = {"ownerid": "owner_id", "owningbusinessunit": "business_unit_id"}
# Datetime system attributes: compared as instants; operands are ISO 8601 strings.
DATETIME_COLUMNS = {"createdon": "created_at", "modifiedon": "modified_at"}
DATETIME_OPERATORS = frozenset("eq ne gt ge lt le in not-in null not-null".split())


def parse_instant(v: Any) -> datetime:
    if not isinstance(v, str):
        raise ConditionError("datetime operands are ISO 8601 strings")
    try:
        d = datetime.fromisoformat(v)
    except ValueError:
        raise ConditionError(f"not an ISO 8601 datetime: {v!r}") from None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


class ConditionError(ValueError):
    """A condition this compiler cannot evaluate (unknown operator, too deep, bad value)."""


def jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def params_used(cond: Mapping[str, Any], depth: int = 1) -> frozenset[str]:
    """The user-dependent parameters a condition needs; validates its shape on the way.

    ``depth`` counts and/or groups (as profile-service does): a leaf inside a third-level group
    is fine, a fourth group is not."""
    for group in ("and", "or"):
        if group in cond:
            if depth > MAX_DEPTH:
                raise ConditionError("condition groups nest at most 3 levels")
            subs = cond[group]
            if not isinstance(subs, list):
                raise ConditionError(f"{group} takes a list")
            out: frozenset[str] = frozenset()
            for c in subs:
                out |= params_used(c, depth + 1)
            return out
    op = cond.get("operator")
    if not isinstance(cond.get("attribute"), str):
        raise ConditionError("leaf needs an attribute")
    if cond["attribute"] in DATETIME_COLUMNS:
        if op not in DATETIME_OPERATORS:
            raise ConditionError(f"{op} does not apply to {cond['attribute']}")
        if op in ("in", "not-in"):
            if not isinstance(cond.get("value"), list):
                raise ConditionError(f"{op} takes a list")
            for x in cond["value"]:
                parse_instant(x)
        elif op not in ("null", "not-null"):
            parse_instant(cond.get("value"))
        return frozenset()
    if op in PARAMS_OF_OPERATOR:
        return frozenset(PARAMS_OF_OPERATOR[op])
    if op not in STATIC_OPERATORS:
        raise ConditionError(f"unknown operator {op!r}")
    if op in ("in", "not-in") and not isinstance(cond.get("value"), list):
        raise ConditionError(f"{op} takes a list")
    if op not in ("null", "not-null", "in", "not-in") and jtype(cond.get("value")) in ("null", "array", "object"):
        raise ConditionError(f"{op} takes a scalar value")
    if op in ("like", "not-like", "begins-with", "not-begin-with", "ends-with", "not-end-with") and not isinstance(
        cond.get("value"), str
    ):
        raise ConditionError(f"{op} takes a string")
    return frozenset()


# ---------------------------------------------------------------- Python evaluation


def attribute_value(record: Record, name: str) -> Any:
    if name in DATETIME_COLUMNS:
        return getattr(record, DATETIME_COLUMNS[name])
    if name in SYSTEM_COLUMNS:
        return getattr(record, SYSTEM_COLUMNS[name])
    return record.attributes.get(name)


def _eq(a: Any, v: Any) -> bool:
    return a is not None and jtype(a) == jtype(v) and a == v


@lru_cache(maxsize=1024)
def _like_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def static_leaf_holds(op: str, a: Any, v: Any) -> bool:
    """A non-user operator on attribute value ``a`` with operand ``v``."""
    if op == "null":
        return a is None
    if op == "not-null":
        return a is not None
    if a is None:
        return False
    if op == "eq":
        return _eq(a, v)
    if op == "ne":
        return not _eq(a, v)
    if op == "in":
        return any(_eq(a, x) for x in v)
    if op == "not-in":
        return not any(_eq(a, x) for x in v)
    if op in ("gt", "ge", "lt", "le"):
        t = jtype(a)
        if t != jtype(v) or t not in ("number", "string", "boolean"):
            return False
        return {"gt": a > v, "ge": a >= v, "lt": a < v, "le": a <= v}[op]
    if not isinstance(a, str):
        return False
    if op == "like":
        return _like_regex(v).fullmatch(a) is not None
    if op == "not-like":
        return _like_regex(v).fullmatch(a) is None
    if op == "begins-with":
        return a.startswith(v)
    if op == "not-begin-with":
        return not a.startswith(v)
    if op == "ends-with":
        return a.endswith(v)
    if op == "not-end-with":
        return not a.endswith(v)
    raise ConditionError(f"unknown operator {op!r}")


def user_leaf_holds(op: str, a: Any, p: Mapping[str, Any]) -> bool:
    """A user-dependent operator on attribute value ``a`` with the bound parameters ``p``."""
    if op == "eq-userlanguage":
        return jtype(a) == "number" and p.get("lang") is not None and a == p["lang"]
    if not isinstance(a, str):
        return False
    if op == "eq-userid":
        return a == p["user"]
    if op == "ne-userid":
        return a != p["user"]
    if op == "eq-userteams":
        return a in p["teams"]
    if op == "eq-useroruserteams":
        return a == p["user"] or a in p["teams"]
    if op == "eq-useroruserhierarchy":
        return a in p["hier"]
    if op == "eq-useroruserhierarchyandteams":
        return a in p["hierall"]
    if op == "eq-businessid":
        return a == p["bu"]
    if op == "ne-businessid":
        return a != p["bu"]
    raise ConditionError(f"unknown operator {op!r}")


def holds(cond: Mapping[str, Any], record: Record, params: Mapping[str, Any]) -> bool:
    if "and" in cond:
        return all(holds(c, record, params) for c in cond["and"])
    if "or" in cond:
        return any(holds(c, record, params) for c in cond["or"])
    op = cond["operator"]
    a = attribute_value(record, cond["attribute"])
    if cond["attribute"] in DATETIME_COLUMNS:
        return _instant_holds(op, a, cond.get("value"))
    if op in PARAMS_OF_OPERATOR:
        return user_leaf_holds(op, a, params)
    return static_leaf_holds(op, a, cond.get("value"))


def _instant_holds(op: str, a: datetime | None, v: Any) -> bool:
    if op == "null":
        return a is None
    if a is None:
        return False
    if op == "not-null":
        return True
    if op in ("in", "not-in"):
        hit = any(a == parse_instant(x) for x in v)
        return hit if op == "in" else not hit
    w = parse_instant(v)
    return {"eq": a == w, "ne": a != w, "gt": a > w, "ge": a >= w, "lt": a < w, "le": a <= w}[op]


# ---------------------------------------------------------------- SQL compilation


def sql_literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def sql_jsonb(v: Any) -> str:
    return sql_literal(orjson.dumps(v).decode()) + "::jsonb"


def _attr_sql(name: str, alias: str) -> str:
    if name in SYSTEM_COLUMNS:
        return f"to_jsonb({alias}.{SYSTEM_COLUMNS[name]})"
    return f"({alias}.attributes -> {sql_literal(name)})"


def to_sql(cond: Mapping[str, Any], alias: str, param: Mapping[str, str]) -> str:
    """A boolean SQL expression over the record row ``alias`` (columns of sync.record_index).

    ``param`` maps a parameter name to a SQL expression: user/bu text, teams/hier/hierall a
    jsonb array of strings, lang an int.
    """
    if "and" in cond:
        parts = [to_sql(c, alias, param) for c in cond["and"]]
        return "(" + " AND ".join(parts) + ")" if parts else "TRUE"
    if "or" in cond:
        parts = [to_sql(c, alias, param) for c in cond["or"]]
        return "(" + " OR ".join(parts) + ")" if parts else "FALSE"
    op, v = cond["operator"], cond.get("value")
    if cond["attribute"] in DATETIME_COLUMNS:
        return _instant_sql(op, f"{alias}.{DATETIME_COLUMNS[cond['attribute']]}", v)
    a = _attr_sql(cond["attribute"], alias)
    txt = f"({a} #>> '{{}}')"
    is_str = f"jsonb_typeof({a}) = 'string'"
    notnull = f"({a} IS NOT NULL AND jsonb_typeof({a}) <> 'null')"
    if op == "null":
        return f"NOT {notnull}"
    if op == "not-null":
        return notnull
    if op in PARAMS_OF_OPERATOR:
        # Plain equalities stay bare (no COALESCE) so the planner can hash-join buckets on them;
        # compiled conditions are never negated, so NULL behaves as false here too.
        if op in ("eq-userid", "eq-businessid") and cond["attribute"] in SYSTEM_COLUMNS:
            return f"{alias}.{SYSTEM_COLUMNS[cond['attribute']]} = {param['user' if op == 'eq-userid' else 'bu']}"
        if op in ("eq-userid", "eq-businessid"):
            return f"{a} = to_jsonb({param['user' if op == 'eq-userid' else 'bu']})"
        if op == "eq-userlanguage":
            e = f"jsonb_typeof({a}) = 'number' AND {a} = to_jsonb({param['lang']})"
        elif op == "eq-userid":
            e = f"{a} = to_jsonb({param['user']})"
        elif op == "ne-userid":
            e = f"{is_str} AND {a} <> to_jsonb({param['user']})"
        elif op == "eq-userteams":
            e = f"{is_str} AND {param['teams']} ? {txt}"
        elif op == "eq-useroruserteams":
            e = f"{is_str} AND ({a} = to_jsonb({param['user']}) OR {param['teams']} ? {txt})"
        elif op == "eq-useroruserhierarchy":
            e = f"{is_str} AND {param['hier']} ? {txt}"
        elif op == "eq-useroruserhierarchyandteams":
            e = f"{is_str} AND {param['hierall']} ? {txt}"
        elif op == "eq-businessid":
            e = f"{a} = to_jsonb({param['bu']})"
        else:  # ne-businessid
            e = f"{is_str} AND {a} <> to_jsonb({param['bu']})"
        return f"COALESCE({e}, false)"
    if op == "eq":
        e = f"{a} = {sql_jsonb(v)}"
    elif op == "ne":
        e = f"{notnull} AND {a} <> {sql_jsonb(v)}"
    elif op == "in":
        e = f"{a} IN ({', '.join(sql_jsonb(x) for x in v)})" if v else "FALSE"
    elif op == "not-in":
        e = f"{notnull} AND {a} NOT IN ({', '.join(sql_jsonb(x) for x in v)})" if v else notnull
    elif op in ("gt", "ge", "lt", "le"):
        cmp = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
        if isinstance(v, str):  # code-point order like Python, whatever the database collation
            e = f'{is_str} AND {txt} COLLATE "C" {cmp} {sql_literal(v)} COLLATE "C"'
        elif isinstance(v, bool):
            e = f"jsonb_typeof({a}) = 'boolean' AND {a} {cmp} {sql_jsonb(v)}"
        else:
            e = f"jsonb_typeof({a}) = 'number' AND ({a})::numeric {cmp} {sql_jsonb(v)}::numeric"
    elif op == "like":
        e = f"{is_str} AND {txt} LIKE {sql_literal(v)}"
    elif op == "not-like":
        e = f"{is_str} AND {txt} NOT LIKE {sql_literal(v)}"
    elif op == "begins-with":
        e = f"{is_str} AND left({txt}, {len(v)}) = {sql_literal(v)}"
    elif op == "not-begin-with":
        e = f"{is_str} AND left({txt}, {len(v)}) <> {sql_literal(v)}"
    elif op == "ends-with":
        e = f"{is_str} AND right({txt}, {len(v)}) = {sql_literal(v)}"
    elif op == "not-end-with":
        e = f"{is_str} AND right({txt}, {len(v)}) <> {sql_literal(v)}"
    else:
        raise ConditionError(f"unknown operator {op!r}")
    return f"COALESCE({e}, false)"


def _instant_sql(op: str, col: str, v: Any) -> str:
    def lit(x: Any) -> str:
        return sql_literal(parse_instant(x).isoformat()) + "::timestamptz"

    if op == "null":
        return f"{col} IS NULL"
    if op == "not-null":
        return f"{col} IS NOT NULL"
    if op in ("in", "not-in"):
        if not v:
            return "FALSE" if op == "in" else f"{col} IS NOT NULL"
        e = f"{col} {'IN' if op == 'in' else 'NOT IN'} ({', '.join(lit(x) for x in v)})"
        return f"COALESCE({e}, false)"
    cmp = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
    return f"COALESCE({col} {cmp} {lit(v)}, false)"
