"""AWS Signature Version 4 verification for `lake serve`, and the credentials it verifies against.

The server recomputes the signature exactly as botocore computes it (`botocore.auth.SigV4Auth`): canonical
request (method, normalised and URI-encoded path, sorted query, the signed headers trimmed and lower-cased,
the payload's SHA-256), string to sign, HMAC chain from the secret. Clients therefore need no change beyond
`--endpoint-url`. Failures raise `SigV4Error` carrying the error code AWS's JSON services return
(MissingAuthenticationTokenException, IncompleteSignatureException, InvalidSignatureException,
UnrecognizedClientException), so SDKs report them as they would against AWS.

Verification has two steps so that the server reads no body for a request that cannot be authentic:
`check_headers` does everything the headers decide (and the whole signature when `x-amz-content-sha256`
declares the payload hash), `PendingSignature.finish` checks the body's hash once it has arrived. Requests
are accepted within AWS's 5 minutes of the server's clock; `ReplayCache` refuses a signature accepted
before; `UNSIGNED-PAYLOAD` is refused for a body, since every CloudTrail operation signs its payload.

Credentials are configured for the server, never taken from the request: each access key stands for one
principal ARN in one account, and may see the stores of `allowed_accounts` (its own at least).
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import os
import re
import stat
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from .apicore import Principal

log = logging.getLogger("lake.serve")

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW = timedelta(minutes=5)  # AWS's window for the request date
MAX_PRESIGN_EXPIRES = 7 * 24 * 3600
CREDENTIALS_ENV = "LAKE_SERVE_CREDENTIALS"  # JSON text, or the path of a JSON/TOML file
_ACCOUNT_RE = re.compile(r"^\d{12}\Z")
_ARN_RE = re.compile(r"^arn:aws[a-z-]*:(iam|sts)::(\d{12}):(.+)\Z")
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")
_SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your "
                       "AWS Secret Access Key and signing method. Consult the service documentation for details.")


class SigV4Error(Exception):
    """A request that is not (correctly) signed; `code` is AWS's error name."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


# ---- credentials ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credential:
    """One access key the server accepts and the principal it stands for."""

    access_key_id: str
    secret_access_key: str
    principal_arn: str
    account_id: str
    allowed_accounts: frozenset[str]

    @property
    def principal(self) -> Principal:
        return Principal(access_key_id=self.access_key_id, arn=self.principal_arn, account_id=self.account_id,
                         allowed_accounts=self.allowed_accounts)


def credential_from_dict(d: Mapping[str, Any], where: str = "credentials") -> Credential:
    """Validate one entry: `access_key_id`, `secret_access_key`, `principal_arn` are required; `account_id`
    defaults to the ARN's account; `allowed_accounts` to `[account_id]` (the own account is always added)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: each credential must be an object with access_key_id, secret_access_key, "
                         "principal_arn")
    missing = [k for k in ("access_key_id", "secret_access_key", "principal_arn") if not d.get(k)]
    if missing:
        raise ValueError(f"{where}: credential {d.get('access_key_id', '?')!r} lacks {', '.join(missing)}")
    arn = str(d["principal_arn"])
    m = _ARN_RE.match(arn)
    if not m:
        raise ValueError(f"{where}: principal_arn {arn!r} is not an IAM/STS ARN like "
                         "arn:aws:iam::111111111111:user/alice")
    account = str(d.get("account_id") or m.group(2))
    allowed = d.get("allowed_accounts") or [account]
    if isinstance(allowed, str) or not isinstance(allowed, Iterable):
        raise ValueError(f"{where}: allowed_accounts of {d['access_key_id']!r} must be a list of account ids")
    accounts = {str(a) for a in allowed} | {account}
    bad = sorted(a for a in accounts if not _ACCOUNT_RE.match(a))
    if bad:
        raise ValueError(f"{where}: account ids must be 12 digits, got {', '.join(bad)}")
    return Credential(str(d["access_key_id"]), str(d["secret_access_key"]), arn, account, frozenset(accounts))


def parse_credentials(data: Any, where: str = "credentials") -> list[Credential]:
    """A list of credential objects, or `{"credentials": [...]}` (the TOML form is `[[credentials]]`)."""
    if isinstance(data, Mapping):
        data = data.get("credentials")
    if not isinstance(data, list):
        raise ValueError(f"{where}: expected a list of credentials or {{\"credentials\": [...]}}")
    creds = [credential_from_dict(d, where) for d in data]
    seen: set[str] = set()
    for c in creds:
        if c.access_key_id in seen:
            raise ValueError(f"{where}: access key {c.access_key_id!r} is listed twice")
        seen.add(c.access_key_id)
    return creds


def _check_file_mode(path: str, mode: int) -> None:
    """A credentials file holds every secret key the server accepts. Writable by group or others, anyone
    there can add a key of their own and act as any principal: refused. Readable by them, they can read the
    secrets: a warning (on the log and stderr), since some deployments share a group with a secrets agent."""
    perms = stat.S_IMODE(mode)
    if perms & 0o022:
        raise ValueError(f"credentials file {path} is writable by group or others (mode {perms:04o}): anyone who "
                         f"can write it can add an access key; run chmod 600 {path}")
    if perms & 0o044:
        log.warning("credentials file %s is readable by group or others (mode %04o): they can read every secret "
                    "key in it; run chmod 600 %s", path, perms, path)


def load_credentials(path: str | None = None) -> list[Credential]:
    """Credentials from a JSON or TOML file, else from $LAKE_SERVE_CREDENTIALS (JSON text or a file path)."""
    if path is None:
        env = os.environ.get(CREDENTIALS_ENV, "").strip()
        if not env:
            return []
        if env[:1] in "[{":
            try:
                return parse_credentials(json.loads(env), f"${CREDENTIALS_ENV}")
            except json.JSONDecodeError as e:
                raise ValueError(f"${CREDENTIALS_ENV} is not valid JSON: {e}") from None
        path = env
    try:
        with open(path, "rb") as f:
            _check_file_mode(path, os.fstat(f.fileno()).st_mode)
            raw = f.read()
    except OSError as e:
        raise ValueError(f"cannot read credentials file {path}: {e.strerror or e}") from None
    if path.endswith(".toml"):
        try:
            import tomllib
        except ModuleNotFoundError:  # pragma: no cover - python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(raw.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"credentials file {path} is not valid TOML: {e}") from None
    else:
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"credentials file {path} is not valid JSON: {e}") from None
    return parse_credentials(data, path)


# ---- verification -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SignedRequest:
    """What verification needs from an HTTP request (kept free of any web framework)."""

    method: str
    raw_path: str                       # as sent, percent-encoded, without the query
    query: list[tuple[str, str]]        # decoded pairs, in order
    headers: list[tuple[str, str]]      # lower-case names, every occurrence
    body: bytes

    def header(self, name: str) -> str | None:
        vals = [v for k, v in self.headers if k == name]
        return ",".join(vals) if vals else None

    def query_value(self, name: str) -> str | None:
        for k, v in self.query:
            if k == name:
                return v
        return None


def has_signature(req: SignedRequest) -> bool:
    """True when the request carries SigV4 material (header or presigned query), even malformed."""
    return req.header("authorization") is not None or req.query_value("X-Amz-Signature") is not None \
        or req.query_value("X-Amz-Algorithm") is not None


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    return _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), date), region), service), "aws4_request")


def _canonical_path(raw_path: str) -> str:
    """botocore: remove dot segments and empty segments, then URI-encode the (still encoded) path again."""
    parts: list[str] = []
    for seg in (raw_path or "/").split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if parts:
                parts.pop()
            continue
        parts.append(seg)
    path = "/" + "/".join(parts)
    if raw_path.endswith("/") and parts:
        path += "/"
    return quote(path, safe="/~")


def _canonical_query(pairs: list[tuple[str, str]]) -> str:
    enc = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in enc)


def canonical_request(req: SignedRequest, signed_headers: list[str], payload_hash: str,
                      query: list[tuple[str, str]] | None = None) -> str:
    lines = []
    for name in signed_headers:
        vals = [" ".join(v.split()) for k, v in req.headers if k == name]
        lines.append(f"{name}:{','.join(vals)}")
    return "\n".join([req.method.upper(), _canonical_path(req.raw_path),
                      _canonical_query(req.query if query is None else query),
                      "\n".join(lines) + "\n", ";".join(signed_headers), payload_hash])


def string_to_sign(amz_date: str, scope: str, creq: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])


def _parse_authorization(value: str) -> dict[str, str]:
    algo, _, rest = value.strip().partition(" ")
    if algo != ALGORITHM:
        raise SigV4Error("IncompleteSignatureException",
                         f"Unsupported AWS 'algorithm': '{algo}'; only {ALGORITHM} (Signature Version 4) is "
                         "accepted")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        k, eq, v = part.strip().partition("=")
        if eq:
            fields[k.strip()] = v.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise SigV4Error("IncompleteSignatureException",
                         " ".join(f"Authorization header requires '{k}' parameter." for k in missing)
                         + f" Authorization={value[:200]}")
    return fields


def _parse_amz_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, _AMZ_DATE).replace(tzinfo=timezone.utc)
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:  # the Date header form (RFC 7231)
        dt = parsedate_to_datetime(value)
        return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


@dataclass
class PendingSignature:
    """A request whose SigV4 material passed every check that does not need the body.

    `check_headers` returns it before a byte of the body is read, so a request without a valid credential,
    scope or date costs the server nothing. When the client declared the payload's SHA-256 in
    `x-amz-content-sha256` (the value the canonical request carries), the signature itself is verified here
    too (`verified`): the body then only has to hash to the declared value (`finish`). Otherwise the payload
    hash is part of the canonical request and the signature can only be checked once the body has arrived."""

    credential: Credential
    signature: str
    amz_date: str
    scope: str
    key: bytes
    signed_headers: list[str]
    presigned: bool
    declared: str | None               # x-amz-content-sha256 as sent
    query: list[tuple[str, str]] | None  # the presigned query without X-Amz-Signature
    expires_at: datetime               # after this the clock check refuses the signature (replay cache)
    service: str
    require_signed_payload: bool
    verified: bool = False

    def _matches(self, req: SignedRequest, payload: str) -> bool:
        creq = canonical_request(req, self.signed_headers, payload, self.query)
        expected = hmac.new(self.key, string_to_sign(self.amz_date, self.scope, creq).encode(),
                            hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, self.signature)

    def finish(self, req: SignedRequest, body_hash: str | None = None,
               replay: ReplayCache | None = None) -> Credential:
        """The credential, once the body (`req.body`, or its SHA-256 `body_hash` when the body was hashed
        while it was read) is known; SigV4Error if the signature or the payload hash does not hold, or
        (with `replay`) if this signature was accepted before."""
        if body_hash is None:
            body_hash = hashlib.sha256(req.body).hexdigest() if req.body else EMPTY_SHA256
        empty = body_hash == EMPTY_SHA256
        declared = self.declared
        if declared is not None and declared != UNSIGNED_PAYLOAD and declared != body_hash:
            raise SigV4Error("InvalidSignatureException",
                             "The provided 'x-amz-content-sha256' header does not match what was computed.")
        if not self.verified:
            if declared is not None:
                candidates = [declared]
            elif self.presigned:
                candidates = [UNSIGNED_PAYLOAD, body_hash]  # some presigners sign the body anyway
            else:
                candidates = [body_hash]
            if not any(self._matches(req, p) for p in candidates):
                raise SigV4Error("InvalidSignatureException", _SIGNATURE_MISMATCH)
            # The payload line the signature covers: an unsigned payload lets anyone swap the body
            unsigned = declared == UNSIGNED_PAYLOAD or (declared is None and self.presigned
                                                        and not self._matches(req, body_hash))
            if unsigned and self.require_signed_payload and not empty:
                raise SigV4Error("InvalidSignatureException",
                                 f"{self.service} requires a signed payload: this request's signature does not "
                                 "cover its body (UNSIGNED-PAYLOAD); sign the body's SHA-256")
            self.verified = True
        if replay is not None:
            replay.remember(self.signature, self.expires_at)
        return self.credential


def check_headers(req: SignedRequest, credentials: Mapping[str, Credential], *, region: str, service: str,
                  now: datetime | None = None, max_skew: timedelta = MAX_SKEW,
                  require_signed_payload: bool = True) -> PendingSignature:
    """Every check of `req` (a request whose body has not been read: `req.body` is ignored) that does not
    need the body; SigV4Error on the first failure. Both the Authorization header and the presigned query
    form (X-Amz-Signature in the URL) are accepted. `require_signed_payload` refuses `UNSIGNED-PAYLOAD` for a
    non-empty body: every JSON operation of CloudTrail and cloudtrail-data signs its payload (botocore
    does), so an unsigned one could only be a body swapped under a valid signature."""
    now = now or datetime.now(timezone.utc)
    auth = req.header("authorization")
    presigned = auth is None and req.query_value("X-Amz-Signature") is not None
    if auth is None and not presigned:
        if req.query_value("X-Amz-Algorithm") is not None:
            raise SigV4Error("IncompleteSignatureException",
                             "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', "
                             "'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders' and 'X-Amz-Expires'.")
        raise SigV4Error("MissingAuthenticationTokenException", "Missing Authentication Token")
    if presigned:
        names = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-SignedHeaders", "X-Amz-Expires")
        if any(req.query_value(n) is None for n in names):
            raise SigV4Error("IncompleteSignatureException",
                             "AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', "
                             "'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders' and 'X-Amz-Expires'.")
        if req.query_value("X-Amz-Algorithm") != ALGORITHM:
            raise SigV4Error("IncompleteSignatureException",
                             f"X-Amz-Algorithm only supports '{ALGORITHM}'")
        fields = {"Credential": req.query_value("X-Amz-Credential") or "",
                  "SignedHeaders": req.query_value("X-Amz-SignedHeaders") or "",
                  "Signature": req.query_value("X-Amz-Signature") or ""}
        amz_date_text = req.query_value("X-Amz-Date")
    else:
        fields = _parse_authorization(auth or "")
        amz_date_text = req.header("x-amz-date") or req.header("date")
        if amz_date_text is None:
            raise SigV4Error("IncompleteSignatureException",
                             "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' "
                             f"header. Authorization={(auth or '')[:200]}")

    scope_parts = fields["Credential"].split("/")
    if len(scope_parts) != 5:
        raise SigV4Error("IncompleteSignatureException",
                         "Credential must have exactly 5 slash-delimited elements, e.g. "
                         f"keyid/date/region/service/term, got '{fields['Credential'][:200]}'")
    key_id, scope_date, scope_region, scope_service, term = scope_parts
    signed_headers = fields["SignedHeaders"].split(";")
    if signed_headers != sorted(set(h.lower() for h in signed_headers)):
        raise SigV4Error("InvalidSignatureException",
                         "SignedHeaders must be lower-case header names, sorted and without duplicates")
    if "host" not in signed_headers:
        raise SigV4Error("InvalidSignatureException",
                         "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.")
    if not presigned:
        date_header = "x-amz-date" if req.header("x-amz-date") is not None else "date"
        if date_header not in signed_headers:
            raise SigV4Error("InvalidSignatureException",
                             f"'{'X-Amz-Date' if date_header == 'x-amz-date' else 'Date'}' must be a "
                             "'SignedHeader' in the AWS Authorization.")
    unsigned = [h for h in ("x-amz-target", "x-amz-content-sha256")
                 if req.header(h) is not None and h not in signed_headers]
    if unsigned:  # the operation and the payload hash must not be changeable under a valid signature
        raise SigV4Error("InvalidSignatureException",
                         f"There were headers present in the request which were not signed: {', '.join(unsigned)}")
    missing = [h for h in signed_headers if req.header(h) is None]
    if missing:
        raise SigV4Error("InvalidSignatureException",
                         f"Signed header(s) {', '.join(missing)} are not present in the request")

    cred = credentials.get(key_id)
    if cred is None:
        raise SigV4Error("UnrecognizedClientException", "The security token included in the request is invalid.")

    when = _parse_amz_date(amz_date_text)
    if when is None:
        raise SigV4Error("IncompleteSignatureException",
                         f"Date must be in ISO-8601 'basic format'. Got '{amz_date_text}'. See "
                         "http://en.wikipedia.org/wiki/ISO_8601")
    amz_date = when.strftime(_AMZ_DATE)
    if scope_date != amz_date[:8]:
        raise SigV4Error("InvalidSignatureException",
                         "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from "
                         f"HTTP: '{scope_date}' != '{amz_date[:8]}', from '{amz_date}'.")
    if scope_region != region:
        raise SigV4Error("InvalidSignatureException",
                         f"Credential should be scoped to a valid region, not '{scope_region}'. This endpoint "
                         f"serves '{region}'.")
    if scope_service != service:
        raise SigV4Error("InvalidSignatureException",
                         f"Credential should be scoped to correct service: '{service}'. ")
    if term != "aws4_request":
        raise SigV4Error("InvalidSignatureException",
                         f"Credential should be scoped with a valid terminator: 'aws4_request', not '{term}'. ")

    fmt = lambda d: d.strftime(_AMZ_DATE)  # noqa: E731
    skew_text = f"{max_skew.total_seconds() / 60:g} min."
    if when > now + max_skew:
        raise SigV4Error("InvalidSignatureException",
                         f"Signature not yet current: {amz_date} is still later than {fmt(now + max_skew)} "
                         f"({fmt(now)} + {skew_text})")
    if presigned:
        try:
            expires = int(req.query_value("X-Amz-Expires") or "")
        except ValueError:
            raise SigV4Error("IncompleteSignatureException", "X-Amz-Expires must be a whole number of seconds") \
                from None
        if not 1 <= expires <= MAX_PRESIGN_EXPIRES:
            raise SigV4Error("IncompleteSignatureException",
                             f"X-Amz-Expires must be between 1 and {MAX_PRESIGN_EXPIRES} seconds")
        if now > when + timedelta(seconds=expires):
            raise SigV4Error("InvalidSignatureException",
                             f"Signature expired: {amz_date} is now earlier than "
                             f"{fmt(now - timedelta(seconds=expires))} ({fmt(now)} - {expires} sec.)")
        expires_at = when + timedelta(seconds=expires)
    else:
        if when < now - max_skew:
            raise SigV4Error("InvalidSignatureException",
                             f"Signature expired: {amz_date} is now earlier than {fmt(now - max_skew)} "
                             f"({fmt(now)} - {skew_text})")
        expires_at = when + max_skew

    declared = req.header("x-amz-content-sha256")
    if declared == UNSIGNED_PAYLOAD and not presigned and require_signed_payload and \
            req.header("content-length") not in (None, "0"):
        raise SigV4Error("InvalidSignatureException",
                         f"{service} requires a signed payload: x-amz-content-sha256 must be the SHA-256 of the "
                         "body, not UNSIGNED-PAYLOAD")
    pending = PendingSignature(
        credential=cred, signature=fields["Signature"], amz_date=amz_date,
        scope=f"{scope_date}/{scope_region}/{scope_service}/{term}",
        key=signing_key(cred.secret_access_key, scope_date, scope_region, scope_service),
        signed_headers=signed_headers, presigned=presigned, declared=declared,
        query=[(k, v) for k, v in req.query if k != "X-Amz-Signature"] if presigned else None,
        expires_at=expires_at, service=service, require_signed_payload=require_signed_payload)
    if declared is not None and _SHA256_HEX.match(declared):
        # The canonical request carries the declared hash, not the body's: verifiable before the body
        if not pending._matches(req, declared):
            raise SigV4Error("InvalidSignatureException", _SIGNATURE_MISMATCH)
        pending.verified = True
    return pending


def verify(req: SignedRequest, credentials: Mapping[str, Credential], *, region: str, service: str,
           now: datetime | None = None, max_skew: timedelta = MAX_SKEW, require_signed_payload: bool = True,
           replay: ReplayCache | None = None) -> Credential:
    """The credential that signed `req` (body included), or SigV4Error: `check_headers` then `finish`."""
    return check_headers(req, credentials, region=region, service=service, now=now, max_skew=max_skew,
                         require_signed_payload=require_signed_payload).finish(req, replay=replay)


class ReplayCache:
    """Signatures already accepted, so that a captured request cannot be sent again.

    SigV4 alone lets a signed request be replayed for as long as its date passes the clock check (±5 min.;
    a presigned URL until it expires): three replays of one PutAuditEvents stored three events. Each
    accepted signature is kept until that moment (`expires_at`), after which the clock check refuses it
    anyway; a replay is refused with ThrottlingException (see `remember`). Only verified signatures are
    remembered, so only holders of a secret key can fill the cache;
    when `capacity` unexpired signatures are held the request is refused with ThrottlingException (fail
    closed: forgetting one early would reopen the replay) and the client retries with a new signature."""

    def __init__(self, capacity: int = 100_000):
        self.capacity = capacity
        self._seen: dict[bytes, float] = {}
        self._expiry: list[tuple[float, bytes]] = []  # a heap: the earliest expiry first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def remember(self, signature: str, expires_at: datetime, now: datetime | None = None) -> None:
        """Record `signature`; SigV4Error if it was accepted before and has not expired, or if the cache
        is full of unexpired signatures."""
        try:
            key = bytes.fromhex(signature)
        except ValueError:
            key = signature.encode()
        t_now = (now or datetime.now(timezone.utc)).timestamp()
        with self._lock:
            while self._expiry and self._expiry[0][0] < t_now:
                t, old = heapq.heappop(self._expiry)
                if self._seen.get(old) == t:
                    del self._seen[old]
            if key in self._seen:
                # ThrottlingException, not InvalidSignatureException: SDKs sign no nonce, so a client that
                # sends the same call twice within one second sends the same signature; SDKs retry a
                # throttled call, signed anew in a later second, while a replayed copy stays refused.
                raise SigV4Error("ThrottlingException",
                                 "Rate exceeded: an identical signed request was already accepted (replay "
                                 "protection); sign the call again (SDKs retry it automatically)")
            if len(self._seen) >= self.capacity:
                raise SigV4Error("ThrottlingException",
                                 f"Rate exceeded: {self.capacity} signed requests are already remembered for "
                                 "replay protection; retry shortly")
            t = expires_at.timestamp()
            self._seen[key] = t
            heapq.heappush(self._expiry, (t, key))

    def forget(self, signature: str) -> None:
        """Drop `signature` again: its request failed in a way the client retries (a server fault,
        throttling), and an SDK retry signed within the same second carries the same signature."""
        try:
            key = bytes.fromhex(signature)
        except ValueError:
            key = signature.encode()
        with self._lock:
            self._seen.pop(key, None)  # its heap entry is skipped when it expires


__all__ = ["Credential", "SigV4Error", "SignedRequest", "PendingSignature", "ReplayCache", "load_credentials",
           "parse_credentials", "credential_from_dict", "check_headers", "verify", "has_signature",
           "CREDENTIALS_ENV", "MAX_SKEW"]
