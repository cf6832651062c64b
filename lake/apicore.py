"""The operation registry shared by `lake serve` and its handlers: what an API handler receives and raises.

A handler is a plain function `(ctx: ApiContext, params: dict) -> dict` registered under its CloudTrail
operation name with `@operation("LookupEvents")`. `params` is the request's JSON body (already checked
against botocore's service model by the server); the returned dict is the response body, in the model's
shape. Errors are `ApiError(code, message)` with `code` one of the operation's exception names in the model
(e.g. "EventDataStoreNotFoundException"); the server turns them into AWS-shaped error responses. Keeping
handlers free of HTTP lets tests call them directly and lets each concept live in its own module
(`api_stores.py`, `api_queries.py`, `api_lookup.py`, `api_imports.py`, `api_channels.py`, `api_tags.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

# CloudTrail JSON 1.1 target prefix, and the separate cloudtrail-data service (rest-json: PutAuditEvents).
TARGET_PREFIX = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101."
SERVICE_CLOUDTRAIL = "cloudtrail"
SERVICE_DATA = "cloudtrail-data"


@dataclass(frozen=True)
class Principal:
    """Who signed the request: from the server's credentials configuration, never from the request."""

    access_key_id: str
    arn: str                        # e.g. arn:aws:iam::111111111111:user/alice
    account_id: str                 # the account the principal belongs to
    allowed_accounts: frozenset[str]  # accounts whose stores and events it may see (its own at least)
    anonymous: bool = False

    def may_access(self, account_id: str | None) -> bool:
        return account_id is None or account_id in self.allowed_accounts


@dataclass
class ApiContext:
    """Everything a handler may use besides its parameters."""

    lake: Any                        # lake.lake.Lake
    principal: Principal
    region: str
    request_id: str
    source_ip: str = "127.0.0.1"
    user_agent: str = ""
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    services: dict[str, Any] = field(default_factory=dict)  # long-lived helpers (query manager, ...)


class ApiError(Exception):
    """An error the client sees: `code` is the model's exception name, `status` the HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


Handler = Callable[[ApiContext, dict], dict]
OPERATIONS: dict[str, Handler] = {}      # CloudTrail (JSON 1.1) operations by name
DATA_OPERATIONS: dict[str, Handler] = {}  # cloudtrail-data (rest-json) operations by name
MUTATING: set[str] = set()               # operations recorded as management events (the lake audits itself)


def operation(name: str, *, service: str = SERVICE_CLOUDTRAIL, mutating: bool = False) -> Callable[[Handler], Handler]:
    """Register a handler for an operation; `mutating` ones are audited (read-only ones are not)."""
    def deco(fn: Handler) -> Handler:
        (DATA_OPERATIONS if service == SERVICE_DATA else OPERATIONS)[name] = fn
        if mutating:
            MUTATING.add(name)
        return fn
    return deco


__all__ = ["ApiContext", "ApiError", "Principal", "OPERATIONS", "DATA_OPERATIONS", "MUTATING", "operation",
           "TARGET_PREFIX", "SERVICE_CLOUDTRAIL", "SERVICE_DATA"]
