"""LookupEvents (CloudTrail event history) answered from the lake, plus the helpers every `lake serve`
handler of queries and imports shares: which account owns a store, timestamps in requests, and signed
pagination tokens.

Event history is the management (or, with `EventCategory=insight`, Insights) events of the last 90 days in
every store the caller's principal may read, newest first. It is answered without a full scan:

- segments are pruned from the manifest before any file is opened (`lake.pruning.prune`): by the time window,
  by event category, by the eventID Bloom filters for an `EventId` lookup, and by the value sets of
  `eventname`/`eventsource` for those lookups;
- the surviving segments are read newest first, one Parquet row group at a time (row groups carry eventtime
  statistics), through a max-heap on each unit's latest event time; reading stops as soon as no unread unit
  can hold an event newer than the page's oldest, so a default 50-event page touches the newest row groups
  only;
- only the small columns needed to filter and order are read for every candidate row; the response columns
  (`eventjson`, resources, ...) are read for the returned rows only;
- `NextToken` is an HMAC-signed position (the last returned (eventtime, eventID)) bound to the request's
  filters and the principal, so the next page prunes everything newer and never rescans from the start.

Username is what CloudTrail's console shows: `userIdentity.userName` when present; for an assumed role or a
federated user the session name (the last `/` part of the ARN, else the part of the principalId after `:`);
`root` for the root user; otherwise none.
ResourceType matches `resources[].type`; ResourceName matches `resources[].ARN` exactly or its resource name
(the part after the ARN's last `/` or `:`), which covers CloudTrail's usual name forms (bucket names,
instance ids, role names). The same event in two stores (same eventID and eventTime) is returned once;
records that merely reuse an eventID at another time are different records and are all shown.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from . import pruning
from .api_stores import owner_account
from .apicore import ApiContext, ApiError, operation
from .store import PENDING_DELETION, Store
from .enrichment import strip_event_context

LOOKUP_WINDOW_DAYS = 90
MAX_RESULTS = 50
LOOKUP_KEYS = ("EventId", "EventName", "ReadOnly", "Username", "ResourceType", "ResourceName", "EventSource",
               "AccessKeyId")
# Columns read for every candidate row (to filter and order); the response columns only for returned rows.
_BASE = ["eventtime", "eventid", "eventcategory"]
_FILTER_COLUMNS = {
    "EventId": [], "EventName": ["eventname"], "EventSource": ["eventsource"], "ReadOnly": ["readonly"],
    "AccessKeyId": ["useridentity_accesskeyid"],
    "Username": ["useridentity_username", "useridentity_type", "useridentity_arn", "useridentity_principalid"],
    "ResourceType": ["resources"], "ResourceName": ["resources"],
}
_RESPONSE_COLUMNS = ["eventtime", "eventid", "eventname", "eventsource", "readonly", "useridentity_accesskeyid",
                     "useridentity_username", "useridentity_type", "useridentity_arn", "useridentity_principalid",
                     "resources", "eventjson"]
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# ---- shared helpers: store ownership, request timestamps, tokens -----------------------------------------

def store_account(store: Store, lake: Any = None, metadata: dict | None = None) -> str:
    """The account that owns a store: the rule of `lake.api_stores.owner_account` (its ARN's account field,
    else the lake's account), so every handler module scopes stores the same way."""
    return owner_account(lake or store.lake, metadata if metadata is not None else store.metadata)


def visible_stores(ctx: ApiContext, *, include_inactive: bool = False) -> list[Store]:
    """The stores the principal may read (not pending deletion unless asked)."""
    out = []
    for st in ctx.lake.stores():
        md = st.snapshot(refresh=False).metadata  # stores() has just refreshed it
        if not ctx.principal.may_access(store_account(st, ctx.lake, md)):
            continue
        if not include_inactive and md.get("Status") == PENDING_DELETION:
            continue
        out.append(st)
    return out


def as_datetime(value: Any, name: str, code: str = "InvalidParameterException") -> datetime | None:
    """A request timestamp as an aware UTC datetime. JSON 1.1 sends epoch seconds; ISO text and datetime
    objects (direct calls, tests) are accepted too."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, bool):
        raise ApiError(code, f"{name} must be a timestamp, got {value!r}")
    if isinstance(value, (int, float)):
        try:
            return EPOCH + timedelta(seconds=float(value))
        except (OverflowError, ValueError):
            raise ApiError(code, f"{name} is out of range: {value!r}") from None
    if isinstance(value, str):
        text = value.strip()
        try:
            return as_datetime(float(text), name, code)
        except ValueError:
            pass
        try:
            return as_datetime(datetime.fromisoformat(text.replace("Z", "+00:00")), name, code)
        except ValueError:
            pass
    raise ApiError(code, f"{name} must be a timestamp (epoch seconds or ISO 8601), got {value!r}")


def micros(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def from_micros(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(us))


_KEYS: dict[str, bytes] = {}
_KEYS_LOCK = threading.Lock()


def _token_key(lake: Any) -> bytes:
    """The lake's token-signing key, created once under `_api/` so tokens survive a restart and work on
    every server sharing the lake (create-only: racing servers agree on the first key written)."""
    with _KEYS_LOCK:
        key = _KEYS.get(lake.uri)
        if key is None:
            lake.storage.create("_api/token-key", os.urandom(32).hex().encode())
            key = _KEYS[lake.uri] = bytes.fromhex(lake.storage.read("_api/token-key").decode().strip())
        return key


def encode_token(lake: Any, kind: str, payload: dict) -> str:
    """An opaque, signed pagination token: base64url(JSON) + '.' + HMAC. `kind` keeps one operation's token
    from being replayed to another."""
    body = base64.urlsafe_b64encode(orjson.dumps({"k": kind, **payload})).decode().rstrip("=")
    mac = hmac.new(_token_key(lake), body.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{body}.{mac}"


def decode_token(lake: Any, kind: str, token: str, code: str = "InvalidNextTokenException") -> dict:
    """The payload of a token made by `encode_token` for `kind`; ApiError(code) for anything else."""
    bad = ApiError(code, "NextToken is not valid: pass the NextToken of the previous page unchanged")
    if not isinstance(token, str) or "." not in token:
        raise bad
    body, mac = token.rsplit(".", 1)
    want = hmac.new(_token_key(lake), body.encode(), hashlib.sha256).hexdigest()[:32]
    if not hmac.compare_digest(mac, want):
        raise bad
    try:
        data = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except ValueError:
        raise bad from None
    if not isinstance(data, dict) or data.get("k") != kind:
        raise bad
    return data


def token_position(ctx: ApiContext, kind: str, params: dict, fp: str, key: str, typ: type) -> Any:
    """The position the request's NextToken carries (None without one); InvalidNextTokenException when the
    token is forged or was made for another request (`fp`: its `fingerprint`)."""
    token = params.get("NextToken")
    if not token:
        return None
    tok = decode_token(ctx.lake, kind, token)
    value = tok.get(key)
    if tok.get("f") != fp or not isinstance(value, typ) or isinstance(value, bool):
        raise ApiError("InvalidNextTokenException",
                       "NextToken belongs to a different request: repeat the same parameters with it")
    return value


def next_token(ctx: ApiContext, kind: str, fp: str, key: str, value: Any) -> str:
    """The NextToken for the page after `value` (read back with `token_position`)."""
    return encode_token(ctx.lake, kind, {"f": fp, key: value})


def fingerprint(*parts: Any) -> str:
    """A short digest of what a token is bound to (filters, principal), so it cannot be reused elsewhere."""
    return hashlib.sha256(orjson.dumps(parts, default=str)).hexdigest()[:16]


# ---- LookupEvents -------------------------------------------------------------------------------------

@dataclass
class LookupStats:
    """What one lookup read: for tests, and to show that point lookups and narrow windows stay narrow."""

    stores: int = 0
    segments_considered: int = 0
    segments_kept: int = 0
    segments_opened: int = 0
    row_groups_read: int = 0
    rows_read: int = 0
    opened: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Request:
    key: str | None
    value: str | None
    start_us: int
    end_us: int
    category: str  # "Management" or "Insight"
    limit: int
    cursor: tuple[int, str] | None
    fp: str


def _parse(ctx: ApiContext, params: dict) -> _Request:
    attrs = params.get("LookupAttributes") or []
    if not isinstance(attrs, list) or len(attrs) > 1:
        raise ApiError("InvalidLookupAttributesException",
                       "LookupAttributes can hold at most one attribute; look up one attribute at a time")
    key = value = None
    if attrs:
        a = attrs[0] if isinstance(attrs[0], dict) else {}
        key, value = a.get("AttributeKey"), a.get("AttributeValue")
        if key not in LOOKUP_KEYS:
            raise ApiError("InvalidLookupAttributesException",
                           f"AttributeKey {key!r} is not valid: use one of {', '.join(LOOKUP_KEYS)}")
        if not isinstance(value, str) or not 1 <= len(value) <= 2000:
            raise ApiError("InvalidLookupAttributesException",
                           f"AttributeValue for {key} must be 1 to 2000 characters")
        if key == "ReadOnly" and value not in ("true", "false"):
            raise ApiError("InvalidLookupAttributesException", "AttributeValue for ReadOnly must be true or false")
    category = params.get("EventCategory")
    if category not in (None, "insight"):
        raise ApiError("InvalidEventCategoryException", f"EventCategory must be 'insight', got {category!r}")
    limit = params.get("MaxResults")
    if limit is None:
        limit = MAX_RESULTS
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RESULTS:
        raise ApiError("InvalidMaxResultsException", f"MaxResults must be between 1 and {MAX_RESULTS}, got {limit!r}")
    start = as_datetime(params.get("StartTime"), "StartTime", "InvalidTimeRangeException")
    end = as_datetime(params.get("EndTime"), "EndTime", "InvalidTimeRangeException")
    if start and end and start > end:
        raise ApiError("InvalidTimeRangeException", "StartTime is after EndTime")
    now = ctx.now if ctx.now.tzinfo else ctx.now.replace(tzinfo=timezone.utc)
    days = ctx.services.get("lookup_window_days", LOOKUP_WINDOW_DAYS)
    floor = now - timedelta(days=days)
    lo = max(start, floor) if start else floor
    hi = end or now
    fp = fingerprint("lookup", key, value, category, params.get("StartTime"), params.get("EndTime"),
                     ctx.principal.arn)
    pos = token_position(ctx, "LookupEvents", params, fp, "p", list)
    if pos is not None and not (len(pos) == 2 and isinstance(pos[0], int) and isinstance(pos[1], str)):
        raise ApiError("InvalidNextTokenException", "NextToken is not valid")
    cursor = tuple(pos) if pos is not None else None
    return _Request(key, value, micros(lo), micros(hi), "Insight" if category == "insight" else "Management",
                    limit, cursor, fp)


def _bounds(req: _Request) -> pruning.Bounds:
    hi = min(req.end_us, req.cursor[0]) if req.cursor else req.end_us
    b: dict[str, Any] = {"eventtime": ((req.start_us, hi),) if req.start_us <= hi else (),
                         "eventcategory": frozenset([req.category])}
    if req.key == "EventId":
        b["eventid"] = frozenset([req.value])
    elif req.key == "EventName":
        b["eventname"] = frozenset([req.value])
    elif req.key == "EventSource":
        b["eventsource"] = frozenset([req.value])
    return pruning.Bounds(**b)


def _username() -> pl.Expr:
    """CloudTrail's Username: userName, else the session name of an assumed role / federated user, else
    `root` for the root user."""
    arn_tail = pl.col("useridentity_arn").str.split("/").list.last()
    pid = pl.col("useridentity_principalid")
    pid_tail = pl.when(pid.str.contains(":", literal=True)).then(pid.str.split(":").list.last())
    return (pl.when(pl.col("useridentity_username").is_not_null()).then(pl.col("useridentity_username"))
            .when(pl.col("useridentity_type").is_in(["AssumedRole", "FederatedUser"]))
            .then(pl.coalesce(arn_tail, pid_tail))
            .when(pl.col("useridentity_type") == "Root").then(pl.lit("root"))
            .otherwise(pl.lit(None, pl.String)))


def _resource_name_matches(value: str) -> pl.Expr:
    arn = pl.element().struct.field("arn")
    return (arn == value) | arn.str.ends_with("/" + value) | arn.str.ends_with(":" + value)


def _attribute_filter(key: str | None, value: str | None) -> pl.Expr | None:
    if key is None:
        return None
    if key == "EventId":
        return pl.col("eventid") == value
    if key == "EventName":
        return pl.col("eventname") == value
    if key == "EventSource":
        return pl.col("eventsource") == value
    if key == "ReadOnly":
        return pl.col("readonly") == (value == "true")
    if key == "AccessKeyId":
        return pl.col("useridentity_accesskeyid") == value
    if key == "Username":
        return _username() == value
    if key == "ResourceType":
        return pl.col("resources").list.eval(pl.element().struct.field("type") == value).list.any()
    return pl.col("resources").list.eval(_resource_name_matches(value)).list.any()  # ResourceName


@dataclass(order=True)
class _Candidate:
    sort: tuple  # (-eventtime_us, negated key) so that ascending order is newest first
    t: int = field(compare=False)
    key: str = field(compare=False)
    unit: tuple = field(compare=False)  # (store index, segment path, row group)
    row: int = field(compare=False)


def _neg(key: str) -> tuple:
    """A sort key that orders strings descending under ascending comparison."""
    return tuple(-ord(c) for c in key) + (1,)


class _Reader:
    """Opens each segment once per lookup and reads row groups of it."""

    def __init__(self, stores: list[Store], stats: LookupStats):
        self.stores = stores
        self.stats = stats
        self.files: dict[tuple[int, str], tuple[Any, pq.ParquetFile]] = {}

    def file(self, si: int, path: str) -> pq.ParquetFile:
        got = self.files.get((si, path))
        if got is None:
            st = self.stores[si]
            f = st.lake.storage.open_read(f"{st.prefix}/{path}")
            got = self.files[(si, path)] = (f, pq.ParquetFile(f))
            self.stats.segments_opened += 1
            self.stats.opened.append(f"{st.id}/{path}")
        return got[1]

    def close(self) -> None:
        for f, _ in self.files.values():
            try:
                f.close()
            except Exception:  # pragma: no cover - closing a read handle
                pass


def _row_group_span(pf: pq.ParquetFile, rg: int, fallback: tuple[int, int]) -> tuple[int, int]:
    """(min, max) eventtime in microseconds of a row group, from its Parquet statistics."""
    md = pf.metadata.row_group(rg)
    for c in range(md.num_columns):
        col = md.column(c)
        if col.path_in_schema == "eventtime":
            s = col.statistics
            if s is not None and s.has_min_max and isinstance(s.min, datetime) and isinstance(s.max, datetime):
                lo = s.min if s.min.tzinfo else s.min.replace(tzinfo=timezone.utc)
                hi = s.max if s.max.tzinfo else s.max.replace(tzinfo=timezone.utc)
                return micros(lo), micros(hi)
    return fallback


def lookup(ctx: ApiContext, params: dict) -> tuple[dict, LookupStats]:
    """The LookupEvents response for `params`, and what answering it read."""
    req = _parse(ctx, params)
    stats = LookupStats()
    stores = visible_stores(ctx)
    stats.stores = len(stores)
    b = _bounds(req)
    heap: list[tuple] = []
    seq = 0
    for si, st in enumerate(stores):
        seg = st.snapshot(refresh=False).segments  # visible_stores() has just refreshed it
        res = pruning.prune(seg, b)
        stats.segments_considered += res.considered
        stats.segments_kept += res.segments.num_rows
        if not res.segments.num_rows:
            continue
        for path, lo, hi in zip(res.segments.column("path").to_pylist(),
                                res.segments.column("eventtime_min").to_pylist(),
                                res.segments.column("eventtime_max").to_pylist()):
            lo_us = micros(lo) if lo is not None else pruning.LOW
            hi_us = micros(hi) if hi is not None else pruning.HIGH
            heap.append((-hi_us, seq, "seg", si, path, -1, lo_us))
            seq += 1
    heapq.heapify(heap)
    hi_bound = min(req.end_us, req.cursor[0]) if req.cursor else req.end_us
    columns = list(dict.fromkeys(_BASE + _FILTER_COLUMNS.get(req.key or "", [])
                                 + (["insightdetails"] if req.category == "Insight" else [])))
    attr = _attribute_filter(req.key, req.value)
    best: list[_Candidate] = []
    seen: set[tuple[int, str]] = set()
    reader = _Reader(stores, stats)
    try:
        while heap:
            top_max = -heap[0][0]
            if len(best) >= req.limit and top_max < best[req.limit - 1].t:
                break
            neg_hi, _, kind, si, path, rg, lo_us = heapq.heappop(heap)
            if kind == "seg":
                pf = reader.file(si, path)
                for g in range(pf.metadata.num_row_groups):
                    glo, ghi = _row_group_span(pf, g, (lo_us, -neg_hi))
                    if ghi < req.start_us or glo > hi_bound:
                        continue
                    heapq.heappush(heap, (-ghi, seq, "rg", si, path, g, glo))
                    seq += 1
                continue
            table = reader.file(si, path).read_row_group(rg, columns=columns)
            stats.row_groups_read += 1
            stats.rows_read += table.num_rows
            for cand in _candidates(table, req, attr, (si, path, rg), hi_bound):
                if (cand.t, cand.key) in seen:
                    continue  # the same event in another store
                seen.add((cand.t, cand.key))
                best.append(cand)
            best.sort()
            del best[req.limit + 1:]
        more = len(best) > req.limit or bool(heap)
        page = best[:req.limit]
        events = _render(reader, page)
    finally:
        reader.close()
    out: dict[str, Any] = {"Events": events}
    if more and page:
        out["NextToken"] = next_token(ctx, "LookupEvents", req.fp, "p", [page[-1].t, page[-1].key])
    return out, stats


def _candidates(table: pa.Table, req: _Request, attr: pl.Expr | None, unit: tuple, hi_bound: int):
    """The rows of one row group that match, as candidates (newest first is decided by the caller)."""
    df = pl.from_arrow(table).with_row_index("__row")
    t = pl.col("eventtime").dt.epoch("us")
    cond = (t >= req.start_us) & (t <= hi_bound) & (pl.col("eventcategory") == req.category)
    if req.category == "Insight":  # data-event Insights are a trail's, listed by ListInsightsData (reference 9.3)
        cond = cond & (pl.col("insightdetails").map.get("sourceEventCategory") != "Data").fill_null(True)
    if attr is not None:
        cond = cond & attr.fill_null(False)
    # null eventIDs get a per-row key so they neither collapse together nor break the ordering
    key = pl.coalesce(pl.col("eventid"), pl.lit(f"~{unit[0]}/{unit[1]}/{unit[2]}/") + pl.col("__row").cast(pl.String))
    df = df.filter(cond).select(t.alias("t"), key.alias("k"), pl.col("__row"))
    if req.cursor:
        ct, ck = req.cursor
        df = df.filter((pl.col("t") < ct) | ((pl.col("t") == ct) & (pl.col("k") < ck)))
    df = df.sort(["t", "k"], descending=True).head(req.limit + 1)
    for tt, kk, row in df.iter_rows():
        yield _Candidate((-tt, _neg(kk)), tt, kk, unit, row)


def _render(reader: _Reader, page: list[_Candidate]) -> list[dict]:
    """The Event objects of the returned rows, reading the response columns of their row groups only."""
    rows: dict[int, dict] = {}
    by_unit: dict[tuple, list[int]] = {}
    for i, c in enumerate(page):
        by_unit.setdefault(c.unit, []).append(i)
    for (si, path, rg), idx in by_unit.items():
        table = reader.file(si, path).read_row_group(rg, columns=_RESPONSE_COLUMNS)
        picked = pl.from_arrow(table.take(pa.array([page[i].row for i in idx], pa.int64()))) \
            .with_columns(_username().alias("__user"))
        for i, r in zip(idx, picked.iter_rows(named=True)):
            rows[i] = r
    return [_event(rows[i]) for i in range(len(page))]


def _event(r: dict) -> dict:
    ev: dict[str, Any] = {}
    if r["eventid"] is not None:
        ev["EventId"] = r["eventid"]
    if r["eventname"] is not None:
        ev["EventName"] = r["eventname"]
    if r["readonly"] is not None:
        ev["ReadOnly"] = "true" if r["readonly"] else "false"
    if r["useridentity_accesskeyid"]:
        ev["AccessKeyId"] = r["useridentity_accesskeyid"]
    t = r["eventtime"]
    ev["EventTime"] = t if t.tzinfo else t.replace(tzinfo=timezone.utc)
    if r["eventsource"] is not None:
        ev["EventSource"] = r["eventsource"]
    if r["__user"] is not None:
        ev["Username"] = r["__user"]
    resources = []
    for res in r["resources"] or []:
        item = {}
        if res.get("type"):
            item["ResourceType"] = res["type"]
        name = res.get("arn") or res.get("arnprefix")
        if name:
            item["ResourceName"] = name
        if item:
            resources.append(item)
    ev["Resources"] = resources
    if r["eventjson"] is not None:
        ev["CloudTrailEvent"] = strip_event_context(r["eventjson"])  # AWS never shows eventContext here
    return ev


@operation("LookupEvents")
def lookup_events(ctx: ApiContext, params: dict) -> dict:
    """LookupEvents: event history from the lake (see the module docstring)."""
    return lookup(ctx, params)[0]


__all__ = ["lookup", "lookup_events", "LookupStats", "store_account", "visible_stores", "as_datetime",
           "encode_token", "decode_token", "token_position", "next_token", "fingerprint", "micros", "from_micros"]
