"""`lake serve`: CloudTrail's API on the wire (starlette + uvicorn), so boto3 and the AWS CLI work unchanged.

Two protocols, both straight from botocore's service models (so the wire format cannot drift from what SDKs
send and expect):

- CloudTrail, JSON 1.1: `POST /` with `X-Amz-Target: com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.<Op>`;
  errors are `{"__type": "<Exception>", "message": ...}`.
- cloudtrail-data, rest-json: `POST /PutAuditEvents?channelArn=...&externalId=...`; errors carry the code in
  the `x-amzn-ErrorType` header and `{"message": ...}` in the body.

Every request is authenticated (SigV4, `lake/sigv4.py`: the headers before the body is read, then the body's
hash), under the limits of `ServerConfig` (body size, read and header timeouts, connections), its input checked against the operation's input shape
(required members, types, enums, lengths, ranges, patterns: AWS's "1 validation error detected: ..." messages),
handed to the handler registered in `lake/apicore.py`, and the handler's dict serialised through the output
shape (datetimes and ISO strings become epoch seconds; members the model does not know are dropped).
Mutating calls are recorded in the audit store (`lake/audit.py`). Handlers are synchronous and run in a thread
pool, so a slow query never blocks the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import importlib
import ipaddress
import logging
import re
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import unquote

import orjson

from .apicore import (DATA_OPERATIONS, MUTATING, OPERATIONS, SERVICE_CLOUDTRAIL, SERVICE_DATA, TARGET_PREFIX,
                      ApiContext, ApiError, Principal)
from .errors import LakeError
from .sigv4 import (MAX_SKEW, Credential, PendingSignature, ReplayCache, SigV4Error, SignedRequest, check_headers,
                    has_signature)

log = logging.getLogger("lake.serve")

HANDLER_MODULES = ("lake.api_stores", "lake.api_tags", "lake.api_queries", "lake.api_lookup", "lake.api_imports",
                   "lake.api_channels", "lake.keys", "lake.api_trails", "lake.api_aggregation", "lake.api_insights")
JSON_11 = "application/x-amz-json-1.1"
DEFAULT_PORT = 8455


@dataclass
class ServerConfig:
    """How the server authenticates, audits and limits requests (`lake serve` options)."""

    credentials: list[Credential] = field(default_factory=list)
    allow_anonymous: bool = False          # unsigned requests from loopback act as the lake's default account
    audit_store: str | None = None         # store receiving one event per mutating call; None = no auditing
    region: str | None = None              # the region this endpoint serves (default: the lake's)
    max_body_bytes: int = 8 << 20         # Content-Length over this is refused (413) before reading
    max_skew: timedelta = MAX_SKEW         # accepted distance of a request's date from the clock (AWS: 5 min.)
    replay_cache_size: int = 100_000       # accepted signatures remembered until their date leaves the window
    max_connections: int = 256             # open connections (uvicorn's limit_concurrency): 503 beyond it
    header_timeout: float = 10.0           # s from connection (or the previous response) to a complete header
    read_timeout: float = 10.0             # s the body may pause between two chunks
    body_timeout: float = 60.0             # s the whole body may take (a trickling body is cut off)
    unverified_body_bytes: int = 64 << 20  # bodies held before their signature is verified, all requests
    audit_flush_interval: float = 1.0
    audit_batch_size: int = 100
    delivery: bool = False                 # run trail delivery, aggregation and Insights in the background
    #                                        (`lake serve` turns it on)
    import_roots: dict[str, tuple[str, ...]] = field(default_factory=dict)  # account -> folders/s3:// prefixes
    #                                        StartImport may read for it (lake/api_imports.py; none: s3:// only)


LIMITS = {"max_body_bytes": int, "max_connections": int, "header_timeout": float, "read_timeout": float,
          "body_timeout": float, "unverified_body_bytes": int, "replay_cache_size": int}


def parse_limits(pairs: list[str] | tuple[str, ...]) -> dict[str, int | float]:
    """`lake serve --limit NAME=VALUE` (repeatable) as ServerConfig fields; ValueError (one line) for an
    unknown name or a value that is not a positive number."""
    out: dict[str, int | float] = {}
    for pair in pairs:
        name, eq, text = pair.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or name not in LIMITS:
            raise ValueError(f"{pair!r}: give NAME=VALUE with NAME one of {', '.join(LIMITS)}")
        try:
            value = LIMITS[name](text.strip())
        except ValueError:
            value = 0
        if value <= 0:
            raise ValueError(f"{pair!r}: {name} must be a positive {'whole ' if LIMITS[name] is int else ''}number")
        out[name] = value
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(config: ServerConfig, host: str) -> None:
    """Refuse configurations that would expose an open lake: anonymous access only on loopback, and some
    way in at all."""
    if config.allow_anonymous and not is_loopback(host):
        raise ValueError(f"--allow-anonymous is only allowed on a loopback address (127.0.0.1, ::1, localhost), "
                         f"not {host}")
    if not config.credentials and not config.allow_anonymous:
        raise ValueError("no credentials configured: give --credentials FILE (or $LAKE_SERVE_CREDENTIALS), or "
                         "--allow-anonymous on a loopback address")


# ---- the service models -------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


@lru_cache(maxsize=None)
def operation_model(service: str, name: str):
    """The botocore OperationModel, or None when the service has no such operation."""
    model = service_model(service)
    return model.operation_model(name) if name in model.operation_names else None


class _TypeMismatch(Exception):
    """A value of the wrong JSON type: AWS answers SerializationException, not a validation error."""


# Which modelled exception a constraint failure of a top-level member becomes, when the operation declares it
# (AWS services report these fields with their own exception; everything else is InvalidParameterException
# when declared, else ValidationException).
MEMBER_EXCEPTIONS = {
    "MaxResults": "InvalidMaxResultsException",
    "NextToken": "InvalidNextTokenException",
    "EventDataStore": "EventDataStoreARNInvalidException",
    "TagsList": "InvalidTagParameterException",
    "AdvancedEventSelectors": "InvalidEventSelectorsException",
    "LookupAttributes": "InvalidLookupAttributesException",
    "StartTime": "InvalidTimeRangeException",
    "EndTime": "InvalidTimeRangeException",
    "EventCategory": "InvalidEventCategoryException",
    "QueryStatement": "InvalidQueryStatementException",
    "Channel": "ChannelARNInvalidException",
    "ChannelArn": "ChannelARNInvalidException",
    "ResourceId": "ResourceARNNotValidException",
    "ResourceArn": "ResourceARNNotValidException",
    "ResourcePolicy": "ResourcePolicyNotValidException",
    "channelArn": "InvalidChannelARN",
}


def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value[:200]}'" + ("..." if len(value) > 200 else "")
    if isinstance(value, (int, float)):
        return str(value)
    text = orjson.dumps(value).decode()
    return f"'{text[:200]}'" + ("..." if len(text) > 200 else "")


def _lower_first(name: str) -> str:
    return name[:1].lower() + name[1:]


@lru_cache(maxsize=512)
def _pattern(text: str):
    try:
        return re.compile(text)
    except re.error:  # a Java-only construct: skip the check rather than refuse valid input
        return None


def _to_epoch(value: Any) -> float:
    """Seconds since the epoch from a datetime, an ISO-8601 string or a number."""
    if isinstance(value, bool):
        raise _TypeMismatch("a timestamp")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return dt.timestamp()
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise _TypeMismatch("a timestamp") from None
        return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).timestamp()
    raise _TypeMismatch("a timestamp")


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def check_input(shape, value: Any, path: str, errors: list[tuple[str, str]], top: str = "") -> Any:
    """Validate `value` against a botocore shape; append (top-level member, message) per constraint failure
    and return the value in canonical form (null members dropped, timestamps as epoch seconds).
    Raises _TypeMismatch for a value of the wrong JSON type."""
    t = shape.type_name
    md = shape.metadata
    want = {"structure": "an object", "map": "an object", "list": "an array", "string": "a string",
            "boolean": "a boolean", "integer": "an integer", "long": "an integer", "float": "a number",
            "double": "a number", "blob": "a base64 string", "timestamp": "a timestamp"}.get(t, t)

    def mismatch() -> _TypeMismatch:
        return _TypeMismatch(f"Unexpected value type at '{path}': expected {want}, got {_json_kind(value)}")

    def fail(constraint: str) -> None:
        errors.append((top, f"Value {_render(value)} at '{path}' failed to satisfy constraint: {constraint}"))

    def check_length() -> None:  # lists, maps and strings
        if "min" in md and len(value) < md["min"]:
            fail(f"Member must have length greater than or equal to {md['min']}")
        if "max" in md and len(value) > md["max"]:
            fail(f"Member must have length less than or equal to {md['max']}")

    if t == "structure":
        if not isinstance(value, dict):
            raise mismatch()
        out = {}
        for name, member in shape.members.items():
            v = value.get(name)
            sub = f"{path}.{_lower_first(name)}" if path else _lower_first(name)
            if v is None:
                if name in shape.required_members:
                    errors.append((top or name, f"Value null at '{sub}' failed to satisfy constraint: "
                                                "Member must not be null"))
                continue
            out[name] = check_input(member, v, sub, errors, top or name)
        return out
    if t == "list":
        if not isinstance(value, list):
            raise mismatch()
        check_length()
        return [check_input(shape.member, v, f"{path}.{i}.member", errors, top) for i, v in enumerate(value, 1)]
    if t == "map":
        if not isinstance(value, dict):
            raise mismatch()
        check_length()
        return {check_input(shape.key, k, f"{path}.key", errors, top):
                check_input(shape.value, v, f"{path}.value", errors, top) for k, v in value.items()}
    if t == "string":
        if not isinstance(value, str):
            raise mismatch()
        check_length()
        enum = shape.enum
        if enum and value not in enum:
            fail(f"Member must satisfy enum value set: [{', '.join(enum)}]")
        elif "pattern" in md and (rx := _pattern(md["pattern"])) is not None and not rx.fullmatch(value):
            fail(f"Member must satisfy regular expression pattern: {md['pattern']}")
        return value
    if t in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise mismatch()
        value = int(value)
        if "min" in md and value < md["min"]:
            fail(f"Member must have value greater than or equal to {md['min']}")
        if "max" in md and value > md["max"]:
            fail(f"Member must have value less than or equal to {md['max']}")
        return value
    if t in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise mismatch()
        return value
    if t == "boolean":
        if not isinstance(value, bool):
            raise mismatch()
        return value
    if t == "timestamp":
        try:
            return _to_epoch(value)
        except _TypeMismatch:
            raise mismatch() from None
    if t == "blob":
        if not isinstance(value, str):
            raise mismatch()
        return value
    return value


def validation_error(op, errors: list[tuple[str, str]], default: str = "ValidationException") -> ApiError:
    """The ApiError AWS would send for these constraint failures of operation `op`."""
    declared = {s.name for s in op.error_shapes} if op is not None else set()
    top = errors[0][0]
    code = MEMBER_EXCEPTIONS.get(top)
    if code not in declared or any(m.endswith("Member must not be null") for _, m in errors[:1]):
        code = "InvalidParameterException" if "InvalidParameterException" in declared else default
    n = len(errors)
    head = f"{n} validation error{'s' if n > 1 else ''} detected: "
    return ApiError(code, head + "; ".join(m for _, m in errors[:10]))


def validate_params(op, params: Any) -> dict:
    """Check a request against the operation's input shape: the canonical params, or ApiError."""
    shape = op.input_shape
    if shape is None:
        return {}
    errors: list[tuple[str, str]] = []
    try:
        out = check_input(shape, params, "", errors)
    except _TypeMismatch as e:
        raise ApiError("SerializationException", str(e)) from None
    if errors:
        raise validation_error(op, errors)
    return out


def serialize(shape, value: Any, iso: bool = False) -> Any:
    """A handler's value in the wire form of `shape`: members the model lacks are dropped, timestamps become
    epoch seconds (or ISO-8601 text with `iso=True`, for audit records), bytes become base64."""
    if value is None or shape is None:
        return None
    t = shape.type_name
    if t == "structure":
        if not isinstance(value, dict):
            return value
        out = {}
        for name, member in shape.members.items():
            v = value.get(name)
            if v is not None:
                out[name] = serialize(member, v, iso)
        return out
    if t == "list":
        return [serialize(shape.member, v, iso) for v in value]
    if t == "map":
        return {str(k): serialize(shape.value, v, iso) for k, v in value.items()}
    if t == "timestamp":
        epoch = _to_epoch(value)
        if iso:
            return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return round(epoch, 3)
    if t == "blob" and isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if t == "string" and not isinstance(value, str):
        return str(value)
    return value


# ---- server state ---------------------------------------------------------------------------------------

def load_handlers() -> list[str]:
    """Import every handler module that exists (others are written separately); the loaded names."""
    loaded = []
    for name in HANDLER_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        loaded.append(name)
    return loaded


class LakeServer:
    """What every request shares: the lake, the keys, the audit writer, long-lived handler services."""

    def __init__(self, lake, config: ServerConfig):
        self.lake = lake
        self.config = config
        self.region = config.region or lake.region
        self.keys = {c.access_key_id: c for c in config.credentials}
        self.services: dict[str, Any] = {}  # handlers keep query managers etc. here (ApiContext.services)
        self.services["import_roots"] = dict(config.import_roots)  # StartImport's allow-list (api_imports)
        self.audit = None
        self.modules = load_handlers()
        self.replay = ReplayCache(config.replay_cache_size)
        self.unverified_bytes = 0  # body bytes held by requests whose signature is not verified yet

    def start(self) -> None:
        if self.config.audit_store and self.audit is None:
            from .audit import AuditWriter

            self.audit = AuditWriter(self.lake, self.config.audit_store,
                                     flush_interval=self.config.audit_flush_interval,
                                     batch_size=self.config.audit_batch_size)
        self.services.setdefault("audit", self.audit)
        # Query results delivered by StartQuery are signed with this server's region keys (result_sign.json),
        # the region ListPublicKeys answers for; the query manager takes the signer from the services.
        from . import resultsign
        self.services.setdefault("result_signer", resultsign.result_signer(self.lake, region=self.region))
        # Trails deliver log files (and digests) in the background, every $LAKE_DELIVERY_INTERVAL seconds.
        if self.config.delivery:
            from .aggregation import AggregationService
            from .delivery import DeliveryService
            from .insights import InsightsService
            self.services.setdefault("delivery", DeliveryService(self.lake).start())
            self.services.setdefault("aggregation", AggregationService(self.lake).start())
            self.services.setdefault("insights", InsightsService(self.lake).start())

    def stop(self) -> None:
        for name, svc in list(self.services.items()):
            if svc is self.audit:
                continue
            close = getattr(svc, "close", None) or getattr(svc, "shutdown", None)
            if callable(close):
                try:
                    close()
                except Exception as e:  # noqa: BLE001 - shut the rest down anyway
                    log.error("closing %s: %s", name, e)
        if self.audit is not None:
            self.audit.close()

    def flush_audit(self) -> None:
        if self.audit is not None:
            self.audit.flush()

    def anonymous(self) -> Principal:
        acct = self.lake.account_id
        return Principal(access_key_id="anonymous", arn=f"arn:aws:iam::{acct}:anonymous", account_id=acct,
                         allowed_accounts=frozenset({acct}), anonymous=True)

    def check_signature(self, sreq: SignedRequest, service: str, client_host: str) -> PendingSignature | None:
        """Everything about the signature that the headers decide, before the body is read (None: an
        anonymous request on loopback, when allowed). ApiError for a request that can never be authentic."""
        if not has_signature(sreq) and self.config.allow_anonymous and is_loopback(client_host):
            return None
        try:
            return check_headers(sreq, self.keys, region=self.region, service=service,
                                 max_skew=self.config.max_skew)
        except SigV4Error as e:
            raise ApiError(e.code, e.message, 400) from None

    def authenticate(self, pending: PendingSignature | None, sreq: SignedRequest, body_hash: str,
                     mutating: bool) -> Principal:
        """The principal of a request whose body has arrived (hashed while read): the signature and the
        payload hash hold and, for a mutating operation, the signature was never accepted before.

        Replays are refused for mutating operations only: botocore signs no per-call nonce (its
        amz-sdk-invocation-id header is added after signing), so identical read-only calls within one
        second (polling DescribeQuery/GetQueryResults) carry identical signatures, and replaying a read
        changes nothing."""
        if pending is None:
            return self.anonymous()
        try:
            return pending.finish(sreq, body_hash, replay=self.replay if mutating else None).principal
        except SigV4Error as e:
            raise ApiError(e.code, e.message, 400) from None


# ---- HTTP ---------------------------------------------------------------------------------------------------

def _signed_request(request, body: bytes) -> SignedRequest:
    scope = request.scope
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = []
    qs = scope.get("query_string", b"").decode("latin-1")
    for pair in qs.split("&") if qs else []:
        k, _, v = pair.partition("=")
        query.append((unquote(k), unquote(v)))
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
    return SignedRequest(scope["method"], raw_path.decode("latin-1"), query, headers, body)


def _json_response(body: Any, status: int, request_id: str, content_type: str, extra: dict | None = None):
    from starlette.responses import Response

    headers = {"x-amzn-RequestId": request_id, **(extra or {})}
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=content_type)


def error_response(protocol: str, err: ApiError, request_id: str):
    """AWS's error shape: JSON 1.1 puts the code in `__type`, rest-json in the x-amzn-ErrorType header."""
    status = err.status
    if protocol == "rest-json":
        if err.code in ("MissingAuthenticationTokenException", "InvalidSignatureException",
                        "IncompleteSignatureException", "UnrecognizedClientException") and status == 400:
            status = 403  # rest-json services answer authentication failures with 403
        return _json_response({"message": err.message}, status, request_id, "application/json",
                              {"x-amzn-ErrorType": err.code})
    return _json_response({"__type": err.code, "message": err.message}, status, request_id, JSON_11,
                          {"x-amzn-ErrorType": err.code})


def _call(handler, ctx: ApiContext, params: dict) -> Any:
    try:
        return handler(ctx, params)
    except ApiError:
        raise
    except LakeError as e:
        raise ApiError(e.code, str(e).splitlines()[0] if str(e) else e.code) from None


class _BodyReader:
    """Reads one request body under the server's limits, hashing it on the way (SigV4's payload hash).

    The declared Content-Length is checked before a byte is read; the body must keep arriving (at most
    `read_timeout` s between chunks) and be complete within `body_timeout` s, so a trickling client is cut off
    instead of holding its connection and buffer; while the signature is not verified yet the bytes count
    against the server-wide `unverified_body_bytes` budget, so many unauthenticated-but-plausible bodies
    cannot fill memory either."""

    def __init__(self, state: LakeServer, request, verified: bool):
        self.state = state
        self.request = request
        self.verified = verified
        self.held = 0           # bytes counted in state.unverified_bytes
        self.consumed = False   # the whole body was received (the connection can be reused)
        self.sha = hashlib.sha256()

    def check_length(self) -> None:
        limit = self.state.config.max_body_bytes
        declared = self.request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)

    async def read(self) -> bytes:
        cfg = self.state.config
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            wait = min(cfg.read_timeout, deadline - loop.time())
            try:
                if wait <= 0:
                    raise asyncio.TimeoutError
                message = await asyncio.wait_for(self.request.receive(), timeout=wait)
            except asyncio.TimeoutError:
                raise ApiError("RequestTimeoutException",
                               f"the request body did not arrive in time (at most {cfg.read_timeout:g} s between "
                               f"chunks, {cfg.body_timeout:g} s in all); connection closed", 408) from None
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > cfg.max_body_bytes:
                raise _too_large(cfg.max_body_bytes)
            if not self.verified and chunk:
                if self.state.unverified_bytes + len(chunk) > cfg.unverified_body_bytes:
                    raise ApiError("ThrottlingException", "Rate exceeded: too many request bodies are awaiting "
                                   "signature verification; retry shortly")
                self.state.unverified_bytes += len(chunk)
                self.held += len(chunk)
            self.sha.update(chunk)
            chunks.append(chunk)
            if not message.get("more_body", False):
                self.consumed = True
                return b"".join(chunks)

    async def drain(self, limit: int = 64 << 10, timeout: float = 1.0) -> None:
        """Discard a small unread body before answering an early refusal: closing a socket with unread
        input resets the connection, and the client would lose the answer. Larger or slower bodies are not
        waited for (the answer then closes the connection)."""
        declared = self.request.headers.get("content-length")
        if self.consumed or not declared or not declared.isdigit() or int(declared) > limit:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(timeout, self.state.config.read_timeout)
        with contextlib.suppress(asyncio.TimeoutError):
            while (wait := deadline - loop.time()) > 0:
                message = await asyncio.wait_for(self.request.receive(), timeout=wait)
                if message["type"] == "http.disconnect" or not message.get("more_body", False):
                    self.consumed = message["type"] != "http.disconnect"
                    return

    def release(self) -> None:
        self.state.unverified_bytes -= self.held
        self.held = 0


class _ClientGone(Exception):
    """The client disconnected before its body was complete: nothing to answer."""


def _too_large(limit: int) -> ApiError:
    return ApiError("RequestEntityTooLargeException", f"request body exceeds {limit} bytes", 413)


def _parse_json(body: bytes) -> Any:
    if not body.strip():
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ApiError("SerializationException", f"the request body is not valid JSON: {e}") from None


async def _handle(state: LakeServer, request, service: str) -> Any:
    """One API call: authenticate (the headers first, then the body's hash), route, validate, run,
    serialise, audit."""
    from starlette.concurrency import run_in_threadpool

    rest = service == SERVICE_DATA
    protocol = "rest-json" if rest else "json"
    request_id = str(uuid.uuid4())
    op_name = None
    principal = None
    params: Any = None
    ctx = None
    reader: _BodyReader | None = None
    remembered: str | None = None  # the signature the replay cache holds for this request
    try:
        client_host = request.client.host if request.client else ""
        sreq = _signed_request(request, b"")
        pending = state.check_signature(sreq, service, client_host)
        reader = _BodyReader(state, request, verified=pending is not None and pending.verified)
        reader.check_length()
        body = await reader.read()
        sreq = dataclasses.replace(sreq, body=body)
        claimed = request.url.path.strip("/") if rest else \
            request.headers.get("x-amz-target", "").removeprefix(TARGET_PREFIX)  # both covered by the signature
        principal = state.authenticate(pending, sreq, reader.sha.hexdigest(), claimed in MUTATING)
        remembered = pending.signature if pending is not None and claimed in MUTATING else None
        reader.release()
        ctx = ApiContext(lake=state.lake, principal=principal, region=state.region, request_id=request_id,
                         source_ip=client_host or "127.0.0.1", user_agent=request.headers.get("user-agent", ""),
                         services=state.services)
        if rest:
            op_name = request.url.path.strip("/")
            registry = DATA_OPERATIONS
        else:
            target = request.headers.get("x-amz-target", "")
            if not target.startswith(TARGET_PREFIX):
                raise ApiError("UnknownOperationException",
                               f"X-Amz-Target {target[:200]!r} does not name a CloudTrail operation")
            op_name = target[len(TARGET_PREFIX):]
            registry = OPERATIONS
        op = operation_model(service, op_name)
        if op is None:
            raise ApiError("UnknownOperationException", f"{op_name[:200]!r} is not a {service} operation")
        handler = registry.get(op_name)
        if handler is None:
            raise ApiError("UnsupportedOperationException", f"Lake does not implement {op_name}")
        raw = _parse_json(body)
        if rest:
            if not isinstance(raw, dict):
                raise ApiError("SerializationException", "the request body must be a JSON object")
            raw = dict(raw)
            qmap = {(m.serialization.get("name") or n): n for n, m in op.input_shape.members.items()
                    if m.serialization.get("location") == "querystring"}
            for k, v in sreq.query:
                if k in qmap:
                    raw[qmap[k]] = v
        params = raw  # what a failed validation is audited with
        params = validate_params(op, raw)
        result = await run_in_threadpool(_call, handler, ctx, params)
        out = serialize(op.output_shape, result if result is not None else {}) if op.output_shape else {}
        if op_name in MUTATING and state.audit is not None:
            shown = None if rest or not op.output_shape else serialize(op.output_shape, result or {}, iso=True)
            await run_in_threadpool(_audit, state, ctx, op_name, service, params, shown, None)  # fsyncs the journal
        return _json_response(out or {}, 200, request_id, "application/json" if rest else JSON_11)
    except _ClientGone:
        return _json_response({}, 400, request_id, JSON_11, {"connection": "close"})
    except ApiError as e:
        if ctx is not None and op_name in MUTATING and state.audit is not None:
            await run_in_threadpool(_audit, state, ctx, op_name, service,  # journal fsync off the event loop
                                    params if isinstance(params, dict) else None, None, (e.code, e.message))
        if remembered is not None and (e.status >= 500 or e.code == "ThrottlingException"):
            state.replay.forget(remembered)  # the SDK retries it, possibly with the same signature
        return await _refuse(protocol, e, request_id, reader)
    except Exception as e:  # noqa: BLE001 - one line to the client and the log, a bounded traceback at debug
        _log_internal_error(request_id, op_name, e)
        err = ApiError("InternalFailure", f"internal error ({type(e).__name__}); request id {request_id}", 500)
        if ctx is not None and op_name in MUTATING and state.audit is not None:
            await run_in_threadpool(_audit, state, ctx, op_name, service,  # journal fsync off the event loop
                                    params if isinstance(params, dict) else None, None, (err.code, err.message))
        if remembered is not None:
            state.replay.forget(remembered)
        return await _refuse(protocol, err, request_id, reader)
    finally:
        if reader is not None:
            reader.release()


async def _refuse(protocol: str, err: ApiError, request_id: str, reader: _BodyReader | None):
    """The error response; a request whose body was not read (refused on its headers, too large, too
    slow) gets `Connection: close`, so the rest of its body is never read or buffered."""
    if reader is not None and not reader.consumed:
        await reader.drain()
    response = error_response(protocol, err, request_id)
    if reader is None or not reader.consumed:
        response.headers["connection"] = "close"
    return response


TRACEBACK_FRAMES = 20      # frames of an unexpected error's traceback logged at DEBUG (the innermost)
TRACEBACK_CHARS = 8000     # and at most this much text of it


def _log_internal_error(request_id: str, op_name: str | None, e: BaseException) -> None:
    """An unexpected error costs the log one line at ERROR (the request id ties it to the client's
    answer) and at most TRACEBACK_CHARS of traceback at DEBUG: a request that makes a handler fail (deep
    recursion: 450 KB of traceback per request) must not be a way to fill the disk."""
    text = " ".join(str(e).split())
    log.error("request %s (%s) failed: %s%s", request_id, op_name or "-", type(e).__name__,
              f": {text[:300]}" if text else "")
    if log.isEnabledFor(logging.DEBUG):
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-TRACEBACK_FRAMES,
                                                chain=False))
        if len(tb) > TRACEBACK_CHARS:
            tb = "...\n" + tb[-TRACEBACK_CHARS:]
        log.debug("request %s traceback (innermost %d frames):\n%s", request_id, TRACEBACK_FRAMES, tb)


def _audit(state: LakeServer, ctx: ApiContext, op: str, service: str, params, response, error) -> None:
    from .audit import make_event

    try:
        state.audit.record(make_event(ctx, op, service, params, response, error))
    except Exception as e:  # noqa: BLE001 - never fail the call being audited
        log.error("audit: cannot record %s: %s: %s", op, type(e).__name__, " ".join(str(e).split())[:300])


def create_app(lake, config: ServerConfig | None = None):
    """The ASGI application serving `lake` (a `lake.Lake`). The audit writer starts with the app's lifespan."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    config = config or ServerConfig()
    state = LakeServer(lake, config)

    async def cloudtrail(request: Request):
        return await _handle(state, request, SERVICE_CLOUDTRAIL)

    async def data(request: Request):
        return await _handle(state, request, SERVICE_DATA)

    async def health(request: Request):
        return JSONResponse({"status": "ok", "region": state.region, "operations": sorted(OPERATIONS),
                             "dataOperations": sorted(DATA_OPERATIONS),
                             "audit": state.audit.stats() if state.audit is not None else None})

    async def not_found(request: Request):
        err = ApiError("UnknownOperationException", f"no operation at {request.method} {request.url.path}", 404)
        return error_response("rest-json", err, str(uuid.uuid4()))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await asyncio.get_running_loop().run_in_executor(None, state.start)
        try:
            yield
        finally:
            await asyncio.get_running_loop().run_in_executor(None, state.stop)

    routes = [Route("/", cloudtrail, methods=["POST"]), Route("/health", health, methods=["GET"])]
    routes += [Route(f"/{name}", data, methods=["POST"]) for name in
               sorted({service_model(SERVICE_DATA).operation_model(n).http["requestUri"].strip("/")
                       for n in service_model(SERVICE_DATA).operation_names})]
    routes.append(Route("/{path:path}", not_found, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]))
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.lake_server = state
    return app


# ---- running it -------------------------------------------------------------------------------------------

def _guarded_protocol(header_timeout: float):
    """uvicorn's h11 protocol with a deadline for the request line and headers.

    uvicorn times out idle keep-alive connections but not a request whose headers trickle in (slowloris):
    such a connection would hold its slot of `limit_concurrency` forever. Here each connection must deliver
    a complete header within `header_timeout` s of connecting or of its previous response."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class GuardedH11Protocol(H11Protocol):
        _lake_timer: asyncio.TimerHandle | None = None

        def _waiting_for_header(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _arm(self) -> None:
            if self._lake_timer is None:
                self._lake_timer = self.loop.call_later(header_timeout, self._expire)

        def _disarm(self) -> None:
            if self._lake_timer is not None:
                self._lake_timer.cancel()
                self._lake_timer = None

        def _expire(self) -> None:
            self._lake_timer = None
            if self._waiting_for_header() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._waiting_for_header():
                self._arm()
            super().data_received(data)
            if not self._waiting_for_header():
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedH11Protocol


_SECRET_PATTERNS = [
    (re.compile(r"(?i)(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(Signature=)[0-9a-f]{16,}"), r"\1REDACTED"),
    (re.compile(r"(?i)(Credential=)[^,&\s\"']+"), r"\1REDACTED"),
    (re.compile(r"(?i)(secret_access_key[\"']?\s*[:=]\s*[\"']?)[^\"',\s}]+"), r"\1REDACTED"),
    (re.compile(r"(?m)^([0-9a-f]{64})$"), "REDACTED"),  # botocore.auth's "Signature:\n<hex>" debug line
]


def redact(text: str) -> str:
    """`text` with SigV4 signatures, credentials and session tokens replaced: a presigned URL in an access
    log, or an Authorization header in botocore's debug output, is a usable credential until it expires."""
    for rx, sub in _SECRET_PATTERNS:
        text = rx.sub(sub, text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts the message and its string arguments in place (keeping the argument tuple: uvicorn's access
    formatter unpacks it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        if record.args:  # an object argument (botocore logs its request object, headers included)
            try:
                text = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed record is logging's problem, not ours
                return True
            clean = redact(text)
            if clean != text:
                record.msg, record.args = clean, ()
        return True


REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error", "botocore.auth", "botocore.endpoint", "botocore.hooks",
                    "botocore.parsers", "urllib3.connectionpool", "s3fs", "lake.serve")


def install_log_redaction() -> None:
    """Attach the redacting filter to every logger that can print a request's URL or signing headers
    (uvicorn's access log shows presigned query strings; botocore's DEBUG output shows Authorization)."""
    for name in REDACTED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def _configure_lake_logging(log_level: str) -> None:
    """`lake serve --log-level`: the lake's own loggers follow it (uvicorn configures only its own), so
    `--log-level debug` shows the bounded tracebacks of failed requests."""
    logger = logging.getLogger("lake")
    logger.setLevel(log_level.upper())
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
        handler.addFilter(RedactingFilter())
        logger.addHandler(handler)


def uvicorn_config(app, config: ServerConfig, *, log_level: str, access_log: bool, graceful: float):
    """The uvicorn settings of `lake serve` and `ServerThread` alike: the connection cap, the header
    deadline, keep-alive, and redacted logs."""
    import uvicorn

    cfg = uvicorn.Config(app, log_level=log_level, lifespan="on", access_log=access_log,
                         timeout_graceful_shutdown=graceful, limit_concurrency=config.max_connections,
                         timeout_keep_alive=5, http=_guarded_protocol(config.header_timeout))
    install_log_redaction()  # after uvicorn.Config: its dictConfig (re)creates the uvicorn loggers' handlers
    return cfg


def serve(lake, config: ServerConfig, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
          log_level: str = "info", ready: Callable[[str], None] | None = None) -> None:
    """Run the server in the foreground until interrupted (`lake serve`). The port is bound before anything
    is announced, so "address in use" is an error here, not a log line after a ready message."""
    import uvicorn

    check_bind(config, host)
    _configure_lake_logging(log_level)
    app = create_app(lake, config)
    sock = _bind(host, port)
    server = uvicorn.Server(uvicorn_config(app, config, log_level=log_level, access_log=log_level == "debug",
                                           graceful=10))
    if ready is not None:
        ready(_url(host, sock.getsockname()[1]))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled: shutdown is already complete
        pass
    finally:
        sock.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio enables TCP_NODELAY on accepted connections only when the listening socket
    # says it is TCP; without it every response (headers, then body) waits ~40 ms for a delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ServerThread:
    """The server on a background thread (tests, embedding): `with ServerThread(lake, cfg) as srv: srv.url`.
    Port 0 (the default) picks a free port; `stop()` finishes in-flight requests and flushes the audit."""

    def __init__(self, lake, config: ServerConfig | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning"):
        self.lake = lake
        self.config = config or ServerConfig()
        self.host = host
        self.port = port
        self.log_level = log_level
        self.app = None
        self._server = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    @property
    def state(self) -> LakeServer:
        return self.app.state.lake_server

    def start(self, timeout: float = 20.0) -> "ServerThread":
        import uvicorn

        check_bind(self.config, self.host)
        self.app = create_app(self.lake, self.config)
        sock = _bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._server = uvicorn.Server(uvicorn_config(self.app, self.config, log_level=self.log_level,
                                                     access_log=self.log_level == "debug", graceful=5))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"lake-serve-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"lake serve on {self.url} failed to start (see the log above)")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"lake serve on {self.url} did not start within {timeout:.0f} s")
            time.sleep(0.01)
        return self

    def flush_audit(self) -> None:
        self.state.flush_audit()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["ServerConfig", "ServerThread", "LakeServer", "create_app", "serve", "check_bind", "is_loopback",
           "validate_params", "serialize", "service_model", "HANDLER_MODULES"]
