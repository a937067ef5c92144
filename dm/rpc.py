"""The vocabulary shared by the pRPC layer and the service: status codes,
the error a method raises, and the per-call context it receives.

pRPC clients read the code from the `X-Prpc-Grpc-Code` response header and
ignore the HTTP status; the status still has to be right for proxies, load
balancers and people reading access logs.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any


class Code(enum.IntEnum):
    """The canonical gRPC status codes (google.rpc.Code)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# HTTP status for each code, copied on purpose from the table that LUCI's
# current Go pRPC server uses (luci-go grpc/grpcutil/errors.go, codeToStatus).
# LUCI's older Python server differs for CANCELLED, DEADLINE_EXCEEDED,
# RESOURCE_EXHAUSTED, FAILED_PRECONDITION and DATA_LOSS; clients go by the
# X-Prpc-Grpc-Code header either way.
HTTP_STATUS: dict[Code, int] = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}

# Codes after which re-sending the identical request cannot succeed. A
# client treats every other non-OK code as transient.
FINAL: frozenset[Code] = frozenset(
    {
        Code.INVALID_ARGUMENT,
        Code.PERMISSION_DENIED,
        Code.ALREADY_EXISTS,
        Code.UNIMPLEMENTED,
        Code.NOT_FOUND,
        Code.UNAUTHENTICATED,
    }
)


class RpcError(Exception):
    """An RPC outcome other than OK, with a message safe to show the caller.

    The message goes back to the client verbatim, so it must never carry a
    token, a digest, a stack trace or a storage error's text.
    """

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"RpcError({self.code.name}, {self.message!r})"


@dataclasses.dataclass
class Context:
    """Per-call state handed to a method implementation."""

    # time.monotonic() value by which the call must answer, or None.
    deadline: float | None = None
    # Facts about the call for its log line (never a token or digest).
    log_fields: dict[str, Any] = dataclasses.field(default_factory=dict)

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or None when there is none."""
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()
