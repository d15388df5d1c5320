"""One error hierarchy with stable codes, mapped to HTTP statuses and websocket frames in one place.

The codes are part of the public API (docs/errors.md); never rename one.
"""

from __future__ import annotations

from typing import Any


class OffsyncError(Exception):
    code: str = "internal"
    status: int = 500
    retriable: bool = False

    def __init__(self, message: str, *, field: str | None = None, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message, "retriable": self.retriable}
        if self.field is not None:
            body["field"] = self.field
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(OffsyncError):
    code, status = "bad_request", 400


class ValidationFailed(OffsyncError):
    code, status = "validation", 422


class Unauthenticated(OffsyncError):
    code, status = "unauthenticated", 401


class Forbidden(OffsyncError):
    code, status = "forbidden", 403


class NotFound(OffsyncError):
    code, status = "not_found", 404


class Conflict(OffsyncError):
    code, status = "conflict", 409


class PreconditionFailed(OffsyncError):
    code, status = "precondition_failed", 412


class PayloadTooLarge(OffsyncError):
    code, status = "payload_too_large", 413


class RateLimited(OffsyncError):
    code, status, retriable = "rate_limited", 429, True

    def __init__(self, message: str, *, retry_after: float | None = None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        # Seconds the caller should wait; HTTP answers carry it as the Retry-After header.
        self.retry_after = retry_after


class Unavailable(OffsyncError):
    code, status, retriable = "unavailable", 503, True
