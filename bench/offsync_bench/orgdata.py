"""Deterministic generator of a benchmark organization: a BU tree of depth 3, teams, users with
managers, and records of six entities with skewed ownership. Same seed and sizes -> same org.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Sizes:
    """Every size a run uses (recorded in bench-results.json). Rates and per-device counts are
    what users do, so --quick keeps them and scales populations and durations instead."""

    users: int = 2000
    accounts: int = 100_000
    contacts: int = 300_000
    opportunities: int = 100_000
    tasks: int = 200_000
    products: int = 2_000
    territories: int = 200
    bus_per_level: tuple[int, int, int] = (1, 6, 4)  # root, children, grandchildren per child
    teams_per_bu: int = 3
    # Workload sizes (workloads.md).
    incremental_rate: int = 500  # record changes per second
    incremental_seconds: float = 20.0
    live_changes: int = 200
    fanout_devices: int = 1000
    # Business units the fanout devices are spread over: a change reaches devices/groups of them.
    # 4: 250 devices per change offer 25,000 deliveries/s at 100 changes/s, above issue #20's
    # 20,000/s. The measured rate (deliveries / first commit -> last arrival) always ends just under
    # the offered one by the window's tail, so the offer must clear the target with room.
    fanout_groups: int = 4
    fanout_rate: int = 100  # changes per second
    fanout_seconds: float = 10.0
    upload_devices: int = 200
    upload_changes: int = 50  # offline changes per device
    upload_conflict_share: float = 0.1
    connections: int = 10_000
    reconnect_devices: int = 2000
    reconnect_behind: int = 20  # changes each device missed

    def scaled(self, factor: float) -> Sizes:
        def s(n: int) -> int:
            return max(1, int(n * factor))

        return replace(
            self,
            users=s(self.users),
            accounts=s(self.accounts),
            contacts=s(self.contacts),
            opportunities=s(self.opportunities),
            tasks=s(self.tasks),
            products=s(self.products),
            territories=s(self.territories),
            incremental_seconds=max(2.0, self.incremental_seconds * factor),
            live_changes=max(20, s(self.live_changes)),
            fanout_devices=s(self.fanout_devices),
            fanout_seconds=max(3.0, self.fanout_seconds * factor),
            upload_devices=s(self.upload_devices),
            connections=s(self.connections),
            reconnect_devices=s(self.reconnect_devices),
        )

    def for_publish(self, users: int, records: int) -> Sizes:
        """An org of ``users`` users and about ``records`` records (the four large entities scaled
        alike, products and territories as they are): publish_20k's."""
        big = self.accounts + self.contacts + self.opportunities + self.tasks
        f = max(0.0, records - self.products - self.territories) / big

        def s(n: int) -> int:
            return max(1, round(n * f))

        return replace(
            self,
            users=users,
            accounts=s(self.accounts),
            contacts=s(self.contacts),
            opportunities=s(self.opportunities),
            tasks=s(self.tasks),
        )

    @property
    def records(self) -> int:
        return self.accounts + self.contacts + self.opportunities + self.tasks + self.products + self.territories

    @property
    def side_territories(self) -> int:
        """Territories per side business unit: enough that each fanout change writes a record of
        its own. Ops are compacted per record, so a record changed again before a lagging device
        read it would arrive once, at its newer version, and the older one count as undelivered."""
        return max(20, -(-int(self.fanout_rate * self.fanout_seconds) // self.fanout_groups))

    @property
    def side_users(self) -> int:
        """Users of the side profile that the device-fleet workloads connect as (one device each
        for fanout; several per user for connections and reconnect)."""
        return max(self.fanout_devices, self.upload_devices)


@dataclass
class Org:
    seed: int
    sizes: Sizes
    business_units: list[dict[str, Any]] = field(default_factory=list)  # {id, name, parent_id}
    teams: list[dict[str, Any]] = field(default_factory=list)  # {id, name, business_unit_id, member_ids}
    users: list[dict[str, Any]] = field(
        default_factory=list
    )  # {id, name, business_unit_id, manager_id, language, team_ids}


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def make_org(seed: int, sizes: Sizes) -> Org:
    rng = random.Random(seed)
    org = Org(seed, sizes)
    root: dict[str, Any] = {"id": _uuid(rng), "name": "Root", "parent_id": None}
    org.business_units.append(root)
    level1 = []
    for i in range(sizes.bus_per_level[1]):
        region: dict[str, Any] = {"id": _uuid(rng), "name": f"Region {i}", "parent_id": root["id"]}
        org.business_units.append(region)
        level1.append(region)
    for parent in level1:
        for j in range(sizes.bus_per_level[2]):
            org.business_units.append({"id": _uuid(rng), "name": f"{parent['name']}.{j}", "parent_id": parent["id"]})
    for bu in org.business_units:
        for t in range(sizes.teams_per_bu):
            org.teams.append(
                {"id": _uuid(rng), "name": f"{bu['name']} team {t}", "business_unit_id": bu["id"], "member_ids": []}
            )
    teams_by_bu: dict[str, list[dict[str, Any]]] = {}
    for team in org.teams:
        teams_by_bu.setdefault(team["business_unit_id"], []).append(team)
    managers_by_bu: dict[str, list[str]] = {}
    for i in range(sizes.users):
        bu = org.business_units[rng.randrange(len(org.business_units))]
        managers = managers_by_bu.setdefault(bu["id"], [])
        manager = managers[rng.randrange(len(managers))] if managers and rng.random() < 0.9 else None
        uid = _uuid(rng)
        if len(managers) < 5:
            managers.append(uid)
        team_ids = [
            t["id"] for t in rng.sample(teams_by_bu[bu["id"]], k=min(len(teams_by_bu[bu["id"]]), rng.randint(1, 2)))
        ]
        for team in org.teams:
            if team["id"] in team_ids:
                team["member_ids"].append(uid)
        org.users.append(
            {
                "id": uid,
                "name": f"User {i}",
                "business_unit_id": bu["id"],
                "manager_id": manager,
                "language": rng.choice((1033, 1036, 1031)),
                "team_ids": team_ids,
            }
        )
    return org


_WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


def _text(rng: random.Random, n_words: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n_words))


@dataclass(frozen=True)
class Record:
    entity: str
    id: str
    owner_id: str | None
    owner_type: str | None
    business_unit_id: str | None
    attributes: dict[str, Any]


def records(org: Org) -> Iterator[Record]:
    """All records of the org, parents before children (accounts before their contacts)."""
    rng = random.Random(org.seed * 7919 + 1)
    users, teams = org.users, org.teams

    # Skewed ownership: a Pareto-ish pick makes a few users own far more than the rest.
    def owner() -> tuple[str, str, str]:
        if rng.random() < 0.2:
            t = (
                teams[min(len(teams) - 1, int(rng.paretovariate(1.2)) - 1)]
                if rng.random() < 0.3
                else teams[rng.randrange(len(teams))]
            )
            return t["id"], "team", t["business_unit_id"]
        idx = min(len(users) - 1, int(rng.paretovariate(1.1)) - 1) if rng.random() < 0.3 else rng.randrange(len(users))
        u = users[idx]
        return u["id"], "user", u["business_unit_id"]

    s = org.sizes
    account_ids: list[str] = []
    for i in range(s.accounts):
        oid, otype, bu = owner()
        rid = _uuid(rng)
        account_ids.append(rid)
        yield Record(
            "account",
            rid,
            oid,
            otype,
            bu,
            {
                "name": f"Account {i} {_text(rng, 3)}",
                "accountnumber": f"AC{i:08d}",
                "revenue": round(rng.uniform(1e4, 1e7), 2),
                "description": _text(rng, rng.randint(20, 50)),
            },
        )
    for i in range(s.contacts):
        oid, otype, bu = owner()
        yield Record(
            "contact",
            _uuid(rng),
            oid,
            otype,
            bu,
            {
                "firstname": rng.choice(_WORDS).title(),
                "lastname": f"{rng.choice(_WORDS).title()}{i}",
                "emailaddress1": f"c{i}@example.com",
                "parentcustomerid": account_ids[rng.randrange(len(account_ids))],
                "description": _text(rng, rng.randint(20, 45)),
            },
        )
    for i in range(s.opportunities):
        oid, otype, bu = owner()
        yield Record(
            "opportunity",
            _uuid(rng),
            oid,
            otype,
            bu,
            {
                "name": f"Opportunity {i}",
                "estimatedvalue": round(rng.uniform(1e3, 1e6), 2),
                "parentaccountid": account_ids[rng.randrange(len(account_ids))],
                "description": _text(rng, rng.randint(20, 45)),
            },
        )
    for i in range(s.tasks):
        oid, otype, bu = owner()
        yield Record(
            "task",
            _uuid(rng),
            oid,
            otype,
            bu,
            {
                "subject": f"Task {i} {_text(rng, 3)}",
                "prioritycode": rng.randint(0, 2),
                "regardingobjectid": account_ids[rng.randrange(len(account_ids))],
                "description": _text(rng, rng.randint(20, 45)),
            },
        )
    for i in range(s.products):
        yield Record(
            "product",
            _uuid(rng),
            None,
            None,
            None,
            {"name": f"Product {i}", "productnumber": f"P{i:06d}", "description": _text(rng, 30)},
        )
    bus = org.business_units
    for i in range(s.territories):
        territory_bu = bus[rng.randrange(len(bus))]
        yield Record(
            "territory",
            _uuid(rng),
            None,
            None,
            territory_bu["id"],
            {"name": f"Territory {i}", "description": _text(rng, 30)},
        )
