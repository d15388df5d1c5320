"""Routes that document themselves: a handler's docstring gives its OpenAPI summary (the first
line) and description (the rest), so a route's words stand beside its code, once."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute


class DocumentedRoute(APIRoute):
    """An ``APIRoute`` whose summary and description, when not given, come from the docstring."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        head, _, rest = inspect.cleandoc(endpoint.__doc__ or "").partition("\n")
        if kwargs.get("summary") is None and head:
            kwargs["summary"] = head.strip().removesuffix(".")
        if kwargs.get("description") is None and rest.strip():
            kwargs["description"] = " ".join(rest.split())
        super().__init__(path, endpoint, **kwargs)
