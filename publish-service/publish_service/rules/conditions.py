"""Semantics of custom-filter conditions: one Python evaluator and one SQL compiler that agree.

The meaning of each operator is offsync_shared.domain.operators' (``compare``): typed like jsonb
(a leaf holds only when the attribute has a value of the operand's JSON type; every operator,
negations included, is false on a missing/null attribute, except ``null``), strings compared
without regard to case (SQL: ``lower()``), ``like`` matched in linear time (SQL: LIKE over
``lower()`` with the pattern re-escaped). User-dependent operators read bound parameters
(see ``PARAMS_OF_OPERATOR``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import orjson

from offsync_shared.domain import attributes, operators
from offsync_shared.domain.operators import MAX_GROUP_LEVELS, PARAMS_OF_OPERATOR, STATIC_OPERATORS, jtype
from publish_service.rules.model import Record

MAX_DEPTH = MAX_GROUP_LEVELS
SYSTEM_COLUMNS = attributes.OWNER_ATTRIBUTES
# Datetime system attributes: compared as instants; operands are ISO 8601 strings.
DATETIME_COLUMNS = attributes.DATETIME_ATTRIBUTES
DATETIME_OPERATORS = frozenset("eq ne gt ge lt le in not-in null not-null".split())

__all__ = ["PARAMS_OF_OPERATOR", "STATIC_OPERATORS", "jtype"]


def parse_instant(v: Any) -> datetime:
    if not isinstance(v, str):
        raise ConditionError("datetime operands are ISO 8601 strings")
    try:
        return attributes.parse_instant(v)
    except attributes.InvalidValue:
        raise ConditionError(f"not an ISO 8601 datetime: {v!r}") from None


class ConditionError(ValueError):
    """A condition this compiler cannot evaluate (unknown operator, too deep, bad value)."""


def params_used(cond: Mapping[str, Any], depth: int = 1) -> frozenset[str]:
    """The user-dependent parameters a condition needs; validates its shape on the way.

    ``depth`` counts and/or groups (as profile-service does): a leaf inside a third-level group
    is fine, a fourth group is not."""
    for group in ("and", "or"):
        if group in cond:
            if depth > MAX_DEPTH:
                raise ConditionError(f"condition groups nest at most {MAX_DEPTH} levels")
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
    if not isinstance(op, str):
        raise ConditionError("leaf needs an operator")
    if op in PARAMS_OF_OPERATOR:
        return frozenset(PARAMS_OF_OPERATOR[op])
    if op not in STATIC_OPERATORS:
        raise ConditionError(f"unknown operator {op!r}")
    if op in ("in", "not-in") and not isinstance(cond.get("value"), list):
        raise ConditionError(f"{op} takes a list")
    if op not in ("null", "not-null", "in", "not-in") and jtype(cond.get("value")) in ("null", "array", "object"):
        raise ConditionError(f"{op} takes a scalar value")
    if op in operators.STRING_OPERATORS and not isinstance(cond.get("value"), str):
        raise ConditionError(f"{op} takes a string")
    return frozenset()


# ---------------------------------------------------------------- Python evaluation

Predicate = Callable[[Record, Mapping[str, Any]], bool]


def attribute_value(record: Record, name: str) -> Any:
    if name in DATETIME_COLUMNS:
        return getattr(record, DATETIME_COLUMNS[name])
    if name in SYSTEM_COLUMNS:
        return getattr(record, SYSTEM_COLUMNS[name])
    return record.attributes.get(name)


def static_leaf_holds(op: str, a: Any, v: Any) -> bool:
    """A non-user operator on attribute value ``a`` with operand ``v``."""
    if op not in STATIC_OPERATORS:
        raise ConditionError(f"unknown operator {op!r}")
    return operators.compare(op, a, v)


def user_leaf_holds(op: str, a: Any, p: Mapping[str, Any]) -> bool:
    """A user-dependent operator on attribute value ``a`` with the bound parameters ``p``."""
    if op == "eq-userlanguage":
        return jtype(a) == "number" and p.get("lang") is not None and a == p["lang"]
    if not isinstance(a, str):
        return False
    if op == "eq-userid":
        return bool(a == p["user"])
    if op == "ne-userid":
        return bool(a != p["user"])
    if op == "eq-userteams":
        return a in p["teams"]
    if op == "eq-useroruserteams":
        return a == p["user"] or a in p["teams"]
    if op == "eq-useroruserhierarchy":
        return a in p["hier"]
    if op == "eq-useroruserhierarchyandteams":
        return a in p["hierall"]
    if op == "eq-businessid":
        return bool(a == p["bu"])
    if op == "ne-businessid":
        return bool(a != p["bu"])
    raise ConditionError(f"unknown operator {op!r}")


def compile_condition(cond: Mapping[str, Any]) -> Predicate:
    """``cond`` as a predicate over (record, bound parameters), the operand work (folding, like
    patterns, instants) done once here rather than per record."""
    if "and" in cond:
        parts = [compile_condition(c) for c in cond["and"]]
        return lambda r, p: all(f(r, p) for f in parts)
    if "or" in cond:
        parts = [compile_condition(c) for c in cond["or"]]
        return lambda r, p: any(f(r, p) for f in parts)
    op, name, v = cond["operator"], cond["attribute"], cond.get("value")
    if name in DATETIME_COLUMNS:
        column = DATETIME_COLUMNS[name]
        instant = _instant_test(op, v)
        return lambda r, p: instant(getattr(r, column))
    if op in PARAMS_OF_OPERATOR:
        return lambda r, p: user_leaf_holds(op, attribute_value(r, name), p)
    if op not in STATIC_OPERATORS:
        raise ConditionError(f"unknown operator {op!r}")
    test = operators.compiled(op, v)
    if name in SYSTEM_COLUMNS:
        column = SYSTEM_COLUMNS[name]
        return lambda r, p: test(getattr(r, column))
    return lambda r, p: test(r.attributes.get(name))


def holds(cond: Mapping[str, Any], record: Record, params: Mapping[str, Any]) -> bool:
    return compile_condition(cond)(record, params)


def _instant_test(op: str, v: Any) -> Callable[[datetime | None], bool]:
    if op == "null":
        return lambda a: a is None
    if op == "not-null":
        return lambda a: a is not None
    if op in ("in", "not-in"):
        instants = frozenset(parse_instant(x) for x in v)
        if op == "in":
            return lambda a: a is not None and a in instants
        return lambda a: a is not None and a not in instants
    w = parse_instant(v)
    if op == "eq":
        return lambda a: a is not None and a == w
    if op == "ne":
        return lambda a: a is not None and a != w
    if op == "gt":
        return lambda a: a is not None and a > w
    if op == "ge":
        return lambda a: a is not None and a >= w
    if op == "lt":
        return lambda a: a is not None and a < w
    if op == "le":
        return lambda a: a is not None and a <= w
    raise ConditionError(f"{op} does not apply to a datetime")


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
    op: str = cond["operator"]
    v: Any = cond.get("value")
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
    # The string operators read the text once (``->>``, one lookup) and test the JSON type last,
    # so rows that cannot match cost one extraction and one cheap comparison.
    name = cond["attribute"]
    text = (
        f"{alias}.{SYSTEM_COLUMNS[name]}" if name in SYSTEM_COLUMNS else f"({alias}.attributes ->> {sql_literal(name)})"
    )
    low = f"lower({text})"

    def same(x: Any) -> str:
        """SQL for "the attribute equals x" as a filter sees it (strings: without regard to case;
        lower-casing keeps the length, so the length test spares most rows the lower())."""
        if isinstance(x, str):
            return f"(char_length({text}) = {len(x)} AND {low} = lower({sql_literal(x)}) AND {is_str})"
        return f"{a} = {sql_jsonb(x)}"

    if op == "eq":
        e = same(v)
    elif op == "ne":
        e = f"{notnull} AND NOT COALESCE({same(v)}, false)"
    elif op in ("in", "not-in"):
        texts = [x for x in v if isinstance(x, str)]
        others = [x for x in v if not isinstance(x, str)]
        hits = []
        if texts:
            hits.append(f"({low} IN ({', '.join(f'lower({sql_literal(x)})' for x in texts)}) AND {is_str})")
        if others:
            hits.append(f"{a} IN ({', '.join(sql_jsonb(x) for x in others)})")
        hit = "(" + " OR ".join(hits) + ")" if hits else "FALSE"
        e = hit if op == "in" else f"{notnull} AND NOT COALESCE({hit}, false)"
    elif op in ("gt", "ge", "lt", "le"):
        cmp = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
        if isinstance(v, str):  # code-point order like Python, whatever the database collation
            e = f'{low} COLLATE "C" {cmp} lower({sql_literal(v)}) COLLATE "C" AND {is_str}'
        elif isinstance(v, bool):
            e = f"jsonb_typeof({a}) = 'boolean' AND {a} {cmp} {sql_jsonb(v)}"
        else:
            e = f"jsonb_typeof({a}) = 'number' AND ({a})::numeric {cmp} {sql_jsonb(v)}::numeric"
    elif op in ("like", "not-like"):
        like = f"{low} LIKE lower({sql_literal(operators.like_sql_pattern(v))})"
        e = f"{'NOT ' if op == 'not-like' else ''}{like} AND {is_str}"
    elif op in ("begins-with", "not-begin-with", "ends-with", "not-end-with"):
        # Only the first (last) len(v) characters are lower-cased: the same under a mapping that
        # keeps lengths, and far cheaper than the whole value.
        end = f"{'left' if op in ('begins-with', 'not-begin-with') else 'right'}({text}, {len(v)})"
        cmp = "<>" if op.startswith("not-") else "="
        e = f"lower({end}) {cmp} lower({sql_literal(v)}) AND {is_str}"
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
