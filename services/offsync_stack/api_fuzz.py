"""schemathesis fuzzing as plain pytest parameters: one test item per API operation.

`schema.parametrize()` makes items that pytest-xdist cannot address one by one (every item of a
function reports under the function's bare name, and a worker asked for any of them runs only
the first operation), so the parallel `make test` would fuzz one operation in eleven. Here each
operation is an ordinary parametrized item, and hypothesis drives valid and invalid cases from
the operation's own strategy, so the serial and the parallel runs fuzz the same thing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok
from schemathesis.schemas import BaseSchema


def operations(schema: BaseSchema) -> list[Any]:
    """`pytest.param((path, method))` for every operation, with ids like `POST /v1/x/{id}`."""
    params = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise result.err()  # an operation the schema cannot describe is a bug in the app's OpenAPI
        op = result.ok()
        params.append(pytest.param((op.path, op.method.upper()), id=op.label))
    return params


def fuzz(schema: BaseSchema, operation: tuple[str, str], check: Callable[[Case], None], examples: int) -> None:
    """Runs `check` on `examples` derandomized cases of each generation mode for one operation."""
    path, method = operation
    op = schema[path][method]
    cases = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

    @settings(
        max_examples=examples * 2,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    @given(case=cases)
    def run(case: Case) -> None:
        check(case)

    run()
