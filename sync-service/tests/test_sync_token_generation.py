"""A device token minted for a user who was since deleted and re-created with the same id is
refused (pure decision; the identity generation is in the token's ``gen`` claim)."""

from __future__ import annotations

import pytest

from offsync_shared import protocol as p
from sync_service.device_access import AccessFacts, decide

OK = AccessFacts(True, True, True, "p", 1, "gen-2")
ROWS = [
    ("same-generation", OK, "gen-2", None),
    ("token-without-generation", OK, None, None),
    ("re-created-user", OK, "gen-1", p.CLOSE_UNAUTHENTICATED),
    ("unknown-user-first", AccessFacts(False, False, False, None, None), "gen-1", p.CLOSE_FORBIDDEN),
]


@pytest.mark.parametrize(("facts", "token_gen", "code"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_generation_decides(facts: AccessFacts, token_gen: str | None, code: int | None) -> None:
    refusal = decide(facts, token_gen)
    assert (refusal.close_code if refusal else None) == code
