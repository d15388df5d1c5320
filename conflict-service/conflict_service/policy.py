"""Decides what happens to one offline or server change given the record's current server state
and the conflict policy: a closed set of outcomes, each with the record that results (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

Op = Literal["create", "update", "delete"]


class Policy(StrEnum):
    CLIENT_WINS = "client_wins"
    SERVER_WINS = "server_wins"
    FIELD_MERGE = "field_merge"


class Outcome(StrEnum):
    """Every way a change can end. Documented one by one in docs/conflicts.md."""

    APPLIED = "applied"  # no concurrent server change: applied as sent
    DUPLICATE = "duplicate"  # a create the server already has from this user with these values: no-op
    ALREADY_DELETED = "already_deleted"  # delete of a record that is already a tombstone: no-op
    NOT_FOUND = "not_found"  # update/delete of a record the server never had: rejected
    CLIENT_WINS = "client_wins"  # conflict; the change was applied over the server's
    SERVER_WINS = "server_wins"  # conflict; the change was dropped; the device gets the server record
    MERGED = "merged"  # conflict resolved field by field; see Decision.lost_fields


@dataclass(frozen=True, slots=True)
class RecordState:
    """A record as the policy sees it. ``field_versions[f]`` is the version that last wrote f."""

    version: int
    deleted: bool
    attributes: Mapping[str, Any]
    field_versions: Mapping[str, int] = field(default_factory=dict)
    created_by: str | None = None


@dataclass(frozen=True, slots=True)
class ProposedChange:
    op: Op
    fields: Mapping[str, Any]
    base_version: int | None  # None: a blind write (no conflict detection), server API only
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    conflict: bool  # a concurrent server change was detected (goes to the conflicts log)
    result: RecordState | None  # the record after the decision (None only for NOT_FOUND)
    written: bool  # result is a new version that must be stored and announced
    lost_fields: tuple[str, ...] = ()  # client fields not applied (SERVER_WINS / MERGED)
    policy: Policy | None = None  # the policy that decided a conflict

    @property
    def applied_as_sent(self) -> bool:
        """False when the device's intent did not fully make it (goes to the sync error ledger)."""
        if self.outcome in (Outcome.NOT_FOUND, Outcome.SERVER_WINS):
            return False
        return not self.lost_fields


def effective_policy(conflict_detection: bool, entity_override: str | None) -> tuple[Policy, Policy]:
    """The policy for an entity and the fallback that decides what field merge cannot:
    the org setting (detection on → server wins) unless the entity overrides it."""
    org = Policy.SERVER_WINS if conflict_detection else Policy.CLIENT_WINS
    if entity_override is None:
        return org, org
    policy = Policy(entity_override)
    return policy, (org if policy is Policy.FIELD_MERGE else policy)


def _write(server: RecordState | None, fields: Mapping[str, Any], *, delete: bool = False) -> RecordState:
    version = (server.version if server else 0) + 1
    attrs = dict(server.attributes) if server else {}
    fv = dict(server.field_versions) if server else {}
    if not delete:
        attrs.update(fields)
        for name in fields:
            fv[name] = version
    return RecordState(version, delete, attrs, fv, server.created_by if server else None)


def decide(
    server: RecordState | None, change: ProposedChange, policy: Policy, fallback: Policy | None = None
) -> Decision:
    """What happens to ``change`` given the current ``server`` record (None: never existed).

    ``fallback`` decides conflicts field merge cannot settle (fields changed on both sides,
    deletes); it must be client_wins or server_wins and defaults to server_wins.
    """
    fallback = fallback if fallback in (Policy.CLIENT_WINS, Policy.SERVER_WINS) else Policy.SERVER_WINS
    if change.op == "create":
        if server is None:
            return Decision(Outcome.APPLIED, False, _write(None, change.fields), True)
        if (
            not server.deleted
            and server.created_by is not None
            and server.created_by == change.user_id
            and all(server.attributes.get(k) == v for k, v in change.fields.items())
        ):
            return Decision(Outcome.DUPLICATE, False, server, False)
        # Someone else's record (or a changed one) under this id: a conflict against version 0.
        return _conflict(server, change.op, change.fields, 0, policy, fallback)
    if server is None:
        return Decision(Outcome.NOT_FOUND, False, None, False, tuple(change.fields))
    if change.op == "delete" and server.deleted:
        return Decision(Outcome.ALREADY_DELETED, False, server, False)
    if change.base_version is None and server.deleted:
        # A blind write (server API) never revives a tombstone: to the API it is gone.
        return Decision(Outcome.NOT_FOUND, False, None, False, tuple(change.fields))
    if change.base_version is None or change.base_version == server.version:
        return Decision(Outcome.APPLIED, False, _write(server, change.fields, delete=change.op == "delete"), True)
    return _conflict(server, change.op, change.fields, change.base_version, policy, fallback)


def _conflict(
    server: RecordState, op: Op, fields: Mapping[str, Any], base: int, policy: Policy, fallback: Policy
) -> Decision:
    delete = op == "delete"
    if policy is Policy.FIELD_MERGE and not delete and not server.deleted:
        changed_on_server = {f for f, v in server.field_versions.items() if v > base}
        overlap = tuple(sorted(f for f in fields if f in changed_on_server))
        if not overlap or fallback is Policy.CLIENT_WINS:
            return Decision(Outcome.MERGED, True, _write(server, fields), True, (), Policy.FIELD_MERGE)
        kept = {k: v for k, v in fields.items() if k not in changed_on_server}
        if not kept:
            return Decision(Outcome.SERVER_WINS, True, server, False, overlap, Policy.FIELD_MERGE)
        return Decision(Outcome.MERGED, True, _write(server, kept), True, overlap, Policy.FIELD_MERGE)
    decider = fallback if policy is Policy.FIELD_MERGE else policy
    if decider is Policy.CLIENT_WINS:
        # Client wins also over a server-side delete: the record comes back with the change.
        return Decision(Outcome.CLIENT_WINS, True, _write(server, fields, delete=delete), True, (), policy)
    return Decision(Outcome.SERVER_WINS, True, server, False, tuple(sorted(fields)) or ("*",), policy)
