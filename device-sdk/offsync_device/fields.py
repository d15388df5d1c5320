"""Turns what a person types on the command line (``name=value``) into record fields, typed by
the entity's attribute metadata rather than guessed (pure: no store, no network).

``phone=0123`` stays the string "0123" on a string attribute; ``employees=12`` is the integer 12
on an int attribute; a decimal keeps its digits as text ("1000.00"), as the server stores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

Attributes = Mapping[str, Mapping[str, Any]]

TRUE = {"true", "yes", "y", "1", "on"}
FALSE = {"false", "no", "n", "0", "off"}


class FieldError(ValueError):
    """A ``name=value`` the entity cannot take; the message is one sentence."""


def typed(name: str, text: str, spec: Mapping[str, Any]) -> Any:
    """The value of attribute ``name`` (metadata ``spec``) typed as ``text``. ``null`` clears
    any attribute but a string one, which takes the word as written; an empty value clears too."""
    kind = spec.get("type", "string")
    if text == "" or (text == "null" and kind != "string"):
        return None
    if kind in ("string", "lookup"):
        return text
    if kind == "int":
        try:
            return int(text)
        except ValueError:
            raise FieldError(f"{name} takes a whole number, not {text!r}") from None
    if kind == "decimal":
        try:
            if not Decimal(text).is_finite():
                raise InvalidOperation
        except InvalidOperation:
            raise FieldError(f"{name} takes a number, not {text!r}") from None
        return text
    if kind == "bool":
        if text.lower() in TRUE:
            return True
        if text.lower() in FALSE:
            return False
        raise FieldError(f"{name} takes true or false, not {text!r}")
    if kind == "datetime":
        try:
            datetime.fromisoformat(text)
        except ValueError:
            raise FieldError(f"{name} takes a date-time like 2026-03-01T09:30:00+00:00, not {text!r}") from None
        return text
    if kind == "choice":
        options = spec.get("options")
        if isinstance(options, list) and options:
            for option in options:
                if str(option) == text:
                    return option
            raise FieldError(f"{name} takes one of {', '.join(str(o) for o in options)}, not {text!r}")
        return int(text) if text.lstrip("-").isdigit() else text
    return text  # a type this device does not know yet: sent as written, the server decides


def parse(entity: str, pairs: list[str], attributes: Attributes | None) -> dict[str, Any]:
    """``["name=Contoso", "employees=12"]`` → fields of ``entity``. Without metadata (never
    synced with a signed-in device) every value is a string."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise FieldError(f"expected name=value, got {pair!r}")
        if attributes is None:
            out[name] = text
            continue
        spec = attributes.get(name)
        if spec is None:
            known = ", ".join(sorted(attributes)) or "none"
            raise FieldError(f"{entity} has no attribute {name!r} (it has: {known})")
        out[name] = typed(name, text, spec)
    return out
