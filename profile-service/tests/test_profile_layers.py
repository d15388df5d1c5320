"""The layers of profile-service stay apart: routes and console pages hold no SQL (the store
modules do), and the documented filter schema is pure (no database or web framework)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "profile_service"
EDGE = sorted([*PKG.glob("routes_*.py"), *(PKG / "console").glob("*.py")])
QUERY_METHODS = {"fetch", "fetchrow", "fetchval", "execute", "executemany", "copy_records_to_table"}


@pytest.mark.parametrize("module", EDGE, ids=lambda p: str(p.relative_to(PKG)))
def test_routes_and_pages_run_no_sql(module: Path) -> None:
    calls = [
        f"{module.name}:{node.lineno} .{node.func.attr}()"
        for node in ast.walk(ast.parse(module.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in QUERY_METHODS
    ]
    assert calls == [], "move the query into a store module"


def test_filter_schema_is_pure() -> None:
    tree = ast.parse((PKG / "filter_schema.py").read_text())
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in ([a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""])
    }
    assert not imported & {"asyncpg", "fastapi", "aiokafka", "starlette", "httpx"}
