"""CloudTrail Lake queries over the API: StartQuery, DescribeQuery, GetQueryResults, ListQueries, CancelQuery.

A query is checked synchronously (syntax, read-only, the stores it names exist, are active and belong to
accounts the principal may read, columns resolve), then runs on a thread pool of `MAX_RUNNING` (10) workers
through `lake.query.run` with a cancel event; an 11th query while 10 are queued or running is refused with
MaxConcurrentQueriesException, as CloudTrail Lake refuses it.

Query records live in memory for speed and under the lake for a restart: `_queries/<id>/query.json` (status,
statistics, error, delivery), `_queries/<id>/results.parquet` (the result with its native types), and an
index `_queries/index/<store id>/<creation µs>-<id>` per store read, so ListQueries reads one directory.
A record found on disk in QUEUED/RUNNING state that this server did not start belongs to a server that
stopped; it is reported FAILED.

Result values are strings as CloudTrail Lake returns them, rendered by `lake.resultformat` (timestamps
`YYYY-MM-DD HH:MM:SS[.fff]` UTC, maps/arrays/rows as compact JSON); a NULL value is left out of its row (the
model's values are strings), so each row's single-key maps name the non-null columns in column order.

DeliveryS3Uri writes the result as gzip CSV where CloudTrail Lake puts it,
`<uri>/AWSLogs/<account>/CloudTrail-Lake/Query/<yyyy>/<mm>/<dd>/<query id>/result_<n>.csv.gz`, to any fsspec
URI (`s3://`, and as a Lake extension `file://` or a local path). `RESULT_SIGNER` is the hook for the sign
file (`result_sign.json`, issue 7).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson
import polars as pl

from . import query as lake_query
from . import querylimits, resultformat, tenancy
from .api_lookup import (as_datetime, fingerprint, from_micros, micros, next_token, store_account,
                         token_position)
from .api_stores import resolve_store
from .apicore import ApiContext, ApiError, operation
from .errors import LakeError, NotFound, QueryCancelled, ReadOnlyError, SqlError
from .log import now_iso, parse_iso
from .querylimits import QueryLimits, ScopedLake, prewarm
from .sqlparse import deep, parse, qualify_tree, resolve_tables
from .store import PENDING_DELETION, Store

MAX_RUNNING = 10
QUERY_TIMEOUT_S = 3600  # CloudTrail Lake: "queries that run for longer than one hour might time out"
LIST_WINDOW = timedelta(days=7)  # ListQueries shows the past seven days unless StartTime says otherwise
MAX_PAGE = 1000
ROWS_PER_DELIVERY_FILE = 1_000_000
RESULT_CACHE_ROWS = 2_000_000  # rows of finished results kept in memory across queries
ACTIVE = ("QUEUED", "RUNNING")
TERMINAL = ("FINISHED", "FAILED", "CANCELLED", "TIMED_OUT")
_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?!ANALYZE\b)", re.IGNORECASE)

# The sign-file hook (issue 7): called after the result files are delivered as
# RESULT_SIGNER(record, [(file name, bytes written)], write) where `write(name, data)` stores one more file
# next to them; raising makes DeliveryStatus FAILED_SIGNING_FILE.
RESULT_SIGNER: Callable[[dict, list[tuple[str, bytes]], Callable[[str, bytes], None]], None] | None = None


# The lake as one query may see it; it lives in lake.querylimits because query workers use it too (and must
# not import the whole API stack to start quickly).
_ScopedLake = ScopedLake


@dataclass
class _Live:
    """The in-memory side of a record: what only the running server has."""

    cancel: threading.Event = field(default_factory=threading.Event)
    timed_out: bool = False
    started: float = 0.0


def _short(msg: str) -> str:
    """An ErrorMessage within the model's 4-1000 characters, one line."""
    line = (msg or "").strip().splitlines()[0] if (msg or "").strip() else "the query failed"
    return (line if len(line) >= 4 else f"error: {line}")[:1000]


class QueryManager:
    """Runs and remembers the queries of one lake (one per server process and lake)."""

    def __init__(self, lake: Any, *, max_running: int = MAX_RUNNING, timeout_s: float | None = None,
                 signer: Callable | None = None, limits: QueryLimits | None = None):
        self.lake = lake
        self.signer = signer  # signs delivered results (a server's region keys); else the module's RESULT_SIGNER
        self.max_running = max_running
        # Every query runs in a worker process under these limits (lake.querylimits): memory budget (default
        # half the machine's memory / max_running), result rows, and the timeout, which the timer below
        # enforces so that the query ends TIMED_OUT. LAKE_QUERY_MEMORY / _TIMEOUT / _MAX_ROWS configure them.
        limits = limits or QueryLimits.from_env(max_running, timeout=timeout_s)
        self.timeout_s: float | None = timeout_s if timeout_s is not None else limits.timeout_s
        self.limits = replace(limits, timeout_s=None)
        prewarm()  # the first query need not wait for a worker's imports
        self.instance = uuid.uuid4().hex
        self.pool = ThreadPoolExecutor(max_workers=max_running, thread_name_prefix="lake-query")
        self.records: dict[str, dict] = {}
        self.live: dict[str, _Live] = {}
        self.lock = threading.RLock()
        self._cache: OrderedDict[str, pl.DataFrame] = OrderedDict()
        self._cached_rows = 0
        self.closing = False

    # -- persistence ------------------------------------------------------------------------------------
    def _save(self, rec: dict) -> None:
        """Persist a record; under the lock so a worker and CancelQuery never write stale states last."""
        with self.lock:
            rec["UpdatedTime"] = now_iso()
            self.lake.storage.write(f"_queries/{rec['QueryId']}/query.json", orjson.dumps(rec))

    def record(self, query_id: str) -> dict | None:
        """A query's record from memory, else from the lake (None when unknown)."""
        with self.lock:
            rec = self.records.get(query_id)
        if rec is not None:
            return rec
        if not re.fullmatch(r"[a-f0-9\-]{36}", query_id or ""):
            return None
        try:
            rec = orjson.loads(self.lake.storage.read(f"_queries/{query_id}/query.json"))
        except (FileNotFoundError, ValueError):
            return None
        if rec.get("QueryStatus") in ACTIVE and rec.get("Instance") != self.instance:
            rec["QueryStatus"] = "FAILED"
            rec["ErrorMessage"] = "the server running this query stopped before the query finished"
            if rec.get("DeliveryStatus") == "PENDING":
                rec["DeliveryStatus"] = "FAILED"
        with self.lock:
            return self.records.setdefault(query_id, rec)

    def results(self, rec: dict) -> pl.DataFrame:
        qid = rec["QueryId"]
        with self.lock:
            df = self._cache.get(qid)
            if df is not None:
                self._cache.move_to_end(qid)
                return df
        data = self.lake.storage.read(f"_queries/{qid}/results.parquet")
        df = pl.read_parquet(io.BytesIO(data))
        if rec.get("Columns"):
            df.columns = rec["Columns"]
        self._remember(qid, df)
        return df

    def _remember(self, qid: str, df: pl.DataFrame) -> None:
        with self.lock:
            if qid in self._cache:
                return
            self._cache[qid] = df
            self._cached_rows += df.height
            while self._cached_rows > RESULT_CACHE_ROWS and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._cached_rows -= old.height

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, rec: dict, allowed: set[str]) -> None:
        """Admit a checked query (or refuse it when MAX_RUNNING are active) and run it in the background."""
        with self.lock:
            active = sum(1 for q in self.live if self.records[q]["QueryStatus"] in ACTIVE)
            if active >= self.max_running:
                raise ApiError("MaxConcurrentQueriesException",
                               f"{self.max_running} queries are already queued or running; wait for one to "
                               "finish or cancel one (CancelQuery)")
            self.records[rec["QueryId"]] = rec
            live = self.live[rec["QueryId"]] = _Live()
        for sid in rec["EventDataStores"]:
            self.lake.storage.create(f"_queries/index/{sid}/{rec['CreationMicros']:020d}-{rec['QueryId']}", b"")
        self._save(rec)
        self.pool.submit(self._run, rec, live, allowed)

    def _run(self, rec: dict, live: _Live, allowed: set[str]) -> None:
        timer = threading.Timer(self.timeout_s or 0, self._time_out, (live,))
        timer.daemon = True
        try:
            with self.lock:
                if live.cancel.is_set():
                    return
                rec["QueryStatus"] = "RUNNING"
                live.started = time.monotonic()
            self._save(rec)
            if self.timeout_s:
                timer.start()
            try:
                res = lake_query.run(_ScopedLake(self.lake, allowed), rec["QueryString"], cancel=live.cancel,
                                     limits=self.limits, allowed=allowed)
            except QueryCancelled:
                if self.closing:
                    self._finish(rec, live, "FAILED", "the server stopped while the query was running")
                elif live.timed_out:
                    self._finish(rec, live, "TIMED_OUT", f"the query ran longer than {self.timeout_s:g} seconds")
                else:
                    self._finish(rec, live, "CANCELLED", None)
                return
            except (SqlError, ReadOnlyError, LakeError) as e:
                self._finish(rec, live, "FAILED", str(e))
                return
            except Exception as e:  # a bug must still leave a FAILED record, never a query RUNNING forever
                self._finish(rec, live, "FAILED", f"internal error while running the query: {e}")
                return
            df = res.df
            st = res.stats
            rec["Statistics"] = {"EventsMatched": st.EventsMatched, "EventsScanned": st.EventsScanned,
                                 "BytesScanned": st.BytesScanned, "ExecutionTimeInMillis": st.ExecutionTimeInMillis}
            rec["TotalResultsCount"] = df.height
            rec["Columns"] = list(df.columns)
            self.lake.storage.write(f"_queries/{rec['QueryId']}/results.parquet", resultformat.to_parquet(df))
            self._remember(rec["QueryId"], df)
            if live.cancel.is_set():  # cancelled while the last rows were collected
                self._finish(rec, live, "TIMED_OUT" if live.timed_out else "CANCELLED", None)
                return
            self._finish(rec, live, "FINISHED", None)
            if rec.get("DeliveryS3Uri"):
                self._deliver(rec, df)
        finally:
            timer.cancel()

    def _time_out(self, live: _Live) -> None:
        live.timed_out = True
        live.cancel.set()

    def _finish(self, rec: dict, live: _Live, status: str, error: str | None) -> None:
        with self.lock:
            if rec["QueryStatus"] in TERMINAL:
                return  # CancelQuery got there first
            rec["QueryStatus"] = status
            stats = rec.setdefault("Statistics", {})
            if live.started and "ExecutionTimeInMillis" not in stats:
                stats["ExecutionTimeInMillis"] = int((time.monotonic() - live.started) * 1000)
            if error:
                rec["ErrorMessage"] = _short(error)
            if rec.get("DeliveryS3Uri") and status != "FINISHED":
                rec["DeliveryStatus"] = "CANCELLED" if status == "CANCELLED" else "FAILED"
            self.live.pop(rec["QueryId"], None)
        self._save(rec)

    def cancel(self, rec: dict) -> str:
        with self.lock:
            if rec["QueryStatus"] not in ACTIVE:
                raise ApiError("InactiveQueryException",
                               f"query {rec['QueryId']} is {rec['QueryStatus']}: only QUEUED or RUNNING queries "
                               "can be cancelled")
            live = self.live.pop(rec["QueryId"], None)
            if live is not None:
                live.cancel.set()
            rec["QueryStatus"] = "CANCELLED"
            if rec.get("DeliveryS3Uri"):
                rec["DeliveryStatus"] = "CANCELLED"
        self._save(rec)
        return "CANCELLED"

    def elapsed_ms(self, rec: dict) -> int:
        live = self.live.get(rec["QueryId"])
        if rec["QueryStatus"] == "RUNNING" and live is not None and live.started:
            return int((time.monotonic() - live.started) * 1000)
        return int((rec.get("Statistics") or {}).get("ExecutionTimeInMillis") or 0)

    def close(self) -> None:
        """Cancel what is running and stop the pool (server shutdown)."""
        with self.lock:
            self.closing = True
            for live in self.live.values():
                live.cancel.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        querylimits.shutdown()  # idle query workers would otherwise live until this process exits

    # -- delivery ---------------------------------------------------------------------------------------
    def _deliver(self, rec: dict, df: pl.DataFrame) -> None:
        created = parse_iso(rec["CreationTime"])
        base = (f"{rec['DeliveryS3Uri'].rstrip('/')}/AWSLogs/{rec['AccountId']}/CloudTrail-Lake/Query/"
                f"{created:%Y/%m/%d}/{rec['QueryId']}")
        written: list[tuple[str, bytes]] = []
        try:
            for n, start in enumerate(range(0, max(df.height, 1), ROWS_PER_DELIVERY_FILE), 1):
                data = gzip.compress(resultformat.to_csv(df.slice(start, ROWS_PER_DELIVERY_FILE)).encode(),
                                     mtime=0)
                name = f"result_{n}.csv.gz"
                _write_uri(f"{base}/{name}", data)
                written.append((name, data))
        except FileNotFoundError as e:
            return self._delivered(rec, "RESOURCE_NOT_FOUND", f"cannot deliver the results: {e}")
        except PermissionError as e:
            return self._delivered(rec, "ACCESS_DENIED", f"cannot deliver the results: {e}")
        except Exception as e:
            return self._delivered(rec, "FAILED", f"cannot deliver the results: {e}")
        signer = self.signer or RESULT_SIGNER
        if signer is not None:
            try:
                signer(rec, written, lambda name, data: _write_uri(f"{base}/{name}", data))
            except Exception as e:
                return self._delivered(rec, "FAILED_SIGNING_FILE", f"cannot sign the results: {e}")
        rec["DeliveredFiles"] = [f"{base}/{n}" for n, _ in written]
        self._delivered(rec, "SUCCESS", None)

    def _delivered(self, rec: dict, status: str, error: str | None) -> None:
        with self.lock:
            rec["DeliveryStatus"] = status
            if error:
                rec["DeliveryError"] = _short(error)
        self._save(rec)


def _fs_and_path(uri: str):
    import fsspec

    from .storage import storage_options_from_env

    if uri.startswith("file://"):
        return None, uri[len("file://"):]
    if "://" not in uri:
        return None, os.path.abspath(os.path.expanduser(uri))
    proto = uri.split("://", 1)[0]
    opts = {**storage_options_from_env(proto), "skip_instance_cache": True}
    return fsspec.filesystem(proto, **opts), uri.split("://", 1)[1]


def _write_uri(uri: str, data: bytes) -> None:
    fs, path = _fs_and_path(uri)
    if fs is None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return
    with fs.open(path, "wb") as f:
        f.write(data)


def _check_delivery_uri(uri: str) -> None:
    """Refuse a DeliveryS3Uri that cannot work before the query runs, with the model's exception names."""
    if uri.startswith("s3://"):
        bucket = uri[len("s3://"):].split("/", 1)[0]
        if not re.fullmatch(r"[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9]", bucket):
            raise ApiError("InvalidS3BucketNameException", f"{bucket!r} is not a valid S3 bucket name")
        fs, _ = _fs_and_path(uri)
        try:
            exists = fs.exists(bucket)
        except PermissionError:
            raise ApiError("InsufficientS3BucketPolicyException",
                           f"Lake may not write to bucket {bucket}: check its policy and credentials") from None
        except Exception as e:
            raise ApiError("S3BucketDoesNotExistException", f"cannot reach bucket {bucket}: {e}") from None
        if not exists:
            raise ApiError("S3BucketDoesNotExistException", f"S3 bucket {bucket} does not exist")
        return
    if uri.startswith("file://") or "://" not in uri:
        return  # Lake extension: a local directory, created on delivery
    raise ApiError("InvalidS3PrefixException",
                   f"DeliveryS3Uri {uri!r} must be s3://bucket[/prefix] (or, in Lake, file:///path)")


# ---- the manager per lake -----------------------------------------------------------------------------

_MANAGERS_LOCK = threading.Lock()


def manager(ctx: ApiContext) -> QueryManager:
    """The QueryManager of ctx.lake, kept in `ctx.services["queries"]` (created on first use; a second lake
    served from the same services gets its own under `queries:<uri>`)."""
    m = ctx.services.get("queries")
    if isinstance(m, QueryManager) and m.lake.uri == ctx.lake.uri:
        return m
    with _MANAGERS_LOCK:
        m = ctx.services.get("queries")
        if m is None:
            m = ctx.services["queries"] = QueryManager(ctx.lake, signer=ctx.services.get("result_signer"),
                                                       limits=ctx.services.get("query_limits"))
        elif not (isinstance(m, QueryManager) and m.lake.uri == ctx.lake.uri):
            m = ctx.services.get(f"queries:{ctx.lake.uri}")
            if m is None:
                m = ctx.services[f"queries:{ctx.lake.uri}"] = QueryManager(
                    ctx.lake, signer=ctx.services.get("result_signer"), limits=ctx.services.get("query_limits"))
        return m


# ---- checks shared by the handlers --------------------------------------------------------------------

def _open_store(ctx: ApiContext, ref: str | None, *, active: bool = True) -> Store | None:
    """The store a request names (ARN, id or name) if the principal may see it (`api_stores.resolve_store`),
    refused as inactive when pending deletion and `active`; None when not given."""
    if not ref:
        return None
    st = resolve_store(ctx, ref)
    md = st.metadata
    if active and md.get("Status") == PENDING_DELETION:
        raise ApiError("InactiveEventDataStoreException", f"event data store {md['Name']} is pending deletion")
    return st


def _check_statement(ctx: ApiContext, sql: str) -> tuple[list[Store], list[str]]:
    """Parse and check a statement as StartQuery does; the stores it reads and their owner accounts."""
    text = _EXPLAIN.sub("", sql, count=1)
    problems: list[ApiError] = []

    def lookup(ref: str) -> Store:
        try:
            st = _open_store(ctx, ref)
        except ApiError as e:
            problems.append(e)
            raise NotFound(e.message) from None
        assert st is not None
        return st

    def check() -> dict:
        tree, _ = parse(text)
        tables = resolve_tables(tree, lookup)
        qualify_tree(tree, tables)
        return tables

    try:
        tables = deep(check)  # every step recurses per level of nesting: a deep stack, one line past the limit
    except (SqlError, ReadOnlyError) as e:
        if problems:
            raise problems[0] from None
        raise ApiError("InvalidQueryStatementException", _short(str(e))) from None
    stores = list({st.id: st for st in tables.values()}.values())
    if not stores:
        raise ApiError("InvalidQueryStatementException",
                       "the query reads no event data store: name one in FROM (its ARN, id or name)")
    return stores, [store_account(st, ctx.lake) for st in stores]


def _visible(ctx: ApiContext, rec: dict) -> bool:
    return ctx.principal.may_access(rec.get("AccountId")) and \
        all(ctx.principal.may_access(a) for a in rec.get("StoreAccounts", []))


def _query(ctx: ApiContext, params: dict) -> tuple[QueryManager, dict]:
    """The record a Describe/GetQueryResults/Cancel request names, if the principal may see it."""
    _open_store(ctx, params.get("EventDataStore"), active=False)  # deprecated; checked when given
    m = manager(ctx)
    qid = params.get("QueryId")
    rec = None
    if qid:
        rec = m.record(qid)
    elif params.get("QueryAlias"):
        with m.lock:
            mine = [r for r in m.records.values() if r.get("QueryAlias") == params["QueryAlias"] and _visible(ctx, r)]
        rec = max(mine, key=lambda r: r["CreationMicros"]) if mine else None
    else:
        raise ApiError("InvalidParameterException", "give QueryId (or QueryAlias)")
    if rec is None or not _visible(ctx, rec):
        raise ApiError("QueryIdNotFoundException", f"no query {qid or params.get('QueryAlias')!r}")
    return m, rec


# ---- handlers ---------------------------------------------------------------------------------------

@operation("StartQuery", mutating=True)
def start_query(ctx: ApiContext, params: dict) -> dict:
    sql = params.get("QueryStatement")
    if params.get("QueryParameters"):
        raise ApiError("InvalidParameterException",
                       "QueryParameters are for CloudTrail Lake dashboard templates, which Lake does not run; "
                       "put the values in QueryStatement")
    if not isinstance(sql, str) or not sql.strip():
        raise ApiError("InvalidParameterException", "QueryStatement is required")
    if len(sql) > 10000:
        raise ApiError("InvalidQueryStatementException", "QueryStatement is longer than 10,000 characters")
    delivery = params.get("DeliveryS3Uri")
    if delivery:
        # issue 15: only where the caller's account may write (lake/tenancy.py), checked before S3 is contacted
        named = delivery.startswith("file://") or "://" not in delivery or tenancy.S3_URI_RE.fullmatch(delivery)
        if named and tenancy.location(ctx, delivery, ctx.principal.account_id, must_exist=False) is None:
            raise ApiError("InsufficientS3BucketPolicyException",
                           f"Lake may not write query results to {delivery[:300]} for account "
                           f"{ctx.principal.account_id}: use an S3 bucket of the account or a local folder under "
                           "an import root configured for it")
        _check_delivery_uri(delivery)
    stores, accounts = _check_statement(ctx, sql)
    now = datetime.now(timezone.utc)  # the admission time orders ListQueries (ctx.now is the request's arrival)
    qid = str(uuid.uuid4())
    rec: dict[str, Any] = {
        "QueryId": qid, "QueryString": sql, "QueryStatus": "QUEUED",
        "CreationTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "CreationMicros": micros(now),
        "AccountId": ctx.principal.account_id, "PrincipalArn": ctx.principal.arn,
        "EventDataStores": [s.id for s in stores], "StoreAccounts": sorted(set(accounts)),
        "Statistics": {}, "Instance": None,
    }
    if delivery:
        rec["DeliveryS3Uri"] = delivery
        rec["DeliveryStatus"] = "PENDING"
    if params.get("QueryAlias"):
        rec["QueryAlias"] = params["QueryAlias"]
    if params.get("EventDataStoreOwnerAccountId"):
        rec["EventDataStoreOwnerAccountId"] = params["EventDataStoreOwnerAccountId"]
    m = manager(ctx)
    rec["Instance"] = m.instance
    m.start(rec, {s.id for s in stores})
    out = {"QueryId": qid}
    if rec.get("EventDataStoreOwnerAccountId"):
        out["EventDataStoreOwnerAccountId"] = rec["EventDataStoreOwnerAccountId"]
    return out


@operation("DescribeQuery")
def describe_query(ctx: ApiContext, params: dict) -> dict:
    m, rec = _query(ctx, params)
    st = rec.get("Statistics") or {}
    out: dict[str, Any] = {
        "QueryId": rec["QueryId"], "QueryString": rec["QueryString"], "QueryStatus": rec["QueryStatus"],
        "QueryStatistics": {"EventsMatched": int(st.get("EventsMatched", 0)),
                            "EventsScanned": int(st.get("EventsScanned", 0)),
                            "BytesScanned": int(st.get("BytesScanned", 0)),
                            "ExecutionTimeInMillis": m.elapsed_ms(rec),
                            "CreationTime": parse_iso(rec["CreationTime"])},
    }
    if rec.get("ErrorMessage"):
        out["ErrorMessage"] = rec["ErrorMessage"]
    elif rec.get("DeliveryError"):
        out["ErrorMessage"] = rec["DeliveryError"]
    for k in ("DeliveryS3Uri", "DeliveryStatus", "EventDataStoreOwnerAccountId"):
        if rec.get(k):
            out[k] = rec[k]
    return out


def _page_size(value: Any, top: int, default: int, name: str) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
        raise ApiError("InvalidMaxResultsException", f"{name} must be between 1 and {top}, got {value!r}")
    return value


def render_rows(df: pl.DataFrame) -> list[list[dict[str, str]]]:
    """Rows as GetQueryResults returns them: per row, one {column: text} map per non-null value."""
    out = []
    for r in resultformat.records(df):
        out.append([{k: resultformat.cell_text(v)} for k, v in r.items() if v is not None])
    return out


@operation("GetQueryResults")
def get_query_results(ctx: ApiContext, params: dict) -> dict:
    m, rec = _query(ctx, params)
    size = _page_size(params.get("MaxQueryResults"), MAX_PAGE, MAX_PAGE, "MaxQueryResults")
    fp = fingerprint("results", rec["QueryId"])
    offset = token_position(ctx, "GetQueryResults", params, fp, "o", int) or 0
    st = rec.get("Statistics") or {}
    out: dict[str, Any] = {"QueryStatus": rec["QueryStatus"]}
    if rec["QueryStatus"] != "FINISHED":
        out["QueryStatistics"] = {"ResultsCount": 0, "TotalResultsCount": 0,
                                  "BytesScanned": int(st.get("BytesScanned", 0))}
        out["QueryResultRows"] = []
        if rec.get("ErrorMessage"):
            out["ErrorMessage"] = rec["ErrorMessage"]
        return out
    df = m.results(rec)
    page = df.slice(offset, size)
    rows = render_rows(page)
    out["QueryStatistics"] = {"ResultsCount": len(rows), "TotalResultsCount": df.height,
                              "BytesScanned": int(st.get("BytesScanned", 0))}
    out["QueryResultRows"] = rows
    if offset + size < df.height:
        out["NextToken"] = next_token(ctx, "GetQueryResults", fp, "o", offset + size)
    return out


@operation("ListQueries")
def list_queries(ctx: ApiContext, params: dict) -> dict:
    st = _open_store(ctx, params.get("EventDataStore"), active=False)
    if st is None:
        raise ApiError("InvalidParameterException", "EventDataStore is required")
    size = _page_size(params.get("MaxResults"), MAX_PAGE, MAX_PAGE, "MaxResults")
    start = as_datetime(params.get("StartTime"), "StartTime", "InvalidDateRangeException")
    end = as_datetime(params.get("EndTime"), "EndTime", "InvalidDateRangeException")
    if start and end and start > end:
        raise ApiError("InvalidDateRangeException", "StartTime is after EndTime")
    status = params.get("QueryStatus")
    if status is not None and status not in ACTIVE + TERMINAL:
        raise ApiError("InvalidQueryStatusException", f"QueryStatus {status!r} is not a query status")
    now = ctx.now if ctx.now.tzinfo else ctx.now.replace(tzinfo=timezone.utc)
    lo = micros(start) if start else micros(now - LIST_WINDOW)
    hi = micros(end) if end else micros(now + timedelta(days=1))
    fp = fingerprint("queries", st.id, params.get("StartTime"), params.get("EndTime"), status, ctx.principal.arn)
    after = token_position(ctx, "ListQueries", params, fp, "a", str)
    m = manager(ctx)
    names = [f.path.rsplit("/", 1)[-1] for f in ctx.lake.storage.list(f"_queries/index/{st.id}")]
    names.sort(reverse=True)  # newest first: names start with the zero-padded creation time
    out: list[dict] = []
    last = None
    more = False
    for name in names:
        if after is not None and name >= after:
            continue
        created_us, _, qid = name.partition("-")
        if not created_us.isdigit() or not lo <= int(created_us) <= hi:
            continue
        rec = m.record(qid)
        if rec is None or not _visible(ctx, rec) or (status and rec["QueryStatus"] != status):
            continue
        if len(out) == size:
            more = True
            break
        out.append({"QueryId": qid, "QueryStatus": rec["QueryStatus"],
                    "CreationTime": from_micros(int(created_us))})
        last = name
    resp: dict[str, Any] = {"Queries": out}
    if more and last:
        resp["NextToken"] = next_token(ctx, "ListQueries", fp, "a", last)
    return resp


@operation("CancelQuery", mutating=True)
def cancel_query(ctx: ApiContext, params: dict) -> dict:
    m, rec = _query(ctx, params)
    status = m.cancel(rec)
    out = {"QueryId": rec["QueryId"], "QueryStatus": status}
    if params.get("EventDataStoreOwnerAccountId"):
        out["EventDataStoreOwnerAccountId"] = params["EventDataStoreOwnerAccountId"]
    return out


__all__ = ["QueryManager", "manager", "render_rows", "RESULT_SIGNER", "MAX_RUNNING", "start_query",
           "describe_query", "get_query_results", "list_queries", "cancel_query"]
