"""Imports over the API: StartImport, GetImport, ListImports, ListImportFailures, StopImport.

An import is `lake.importer.Importer` run on a background thread of the server. Its state is the importer's
own (`imports/<id>/import.json`, failures under `imports/<id>/failures/`), so imports started with
`lake import` on the command line are listed too, and an import survives a server restart: StartImport with
the ImportId of a FAILED or STOPPED import (or one left IN_PROGRESS by a server that died) resumes it with
`lake.importer.resume`, which skips the objects already imported. Next to it the API keeps what the importer
does not know, `imports/<id>/api.json`: the ImportSource exactly as given and the account that started it.

Sources are `s3://bucket/prefix` (read with Lake's own S3 settings, e.g. LAKE_S3_ENDPOINT; the
S3BucketAccessRoleArn is recorded and echoed but not assumed) and, as a Lake extension, `file:///path`.

**Which sources a caller may import** (the server reads them with its own privileges, so the API must not
become a way to read the server's files or another account's logs):
- `file:///path` only under an *import root* the operator configured for the destination store's account
  (`lake serve --import-root ACCOUNT=PATH`, `ServerConfig.import_roots`, `ctx.services["import_roots"]`);
  without one, no local source is accepted over the API. The path and the root are both resolved
  (symlinks, `..`) before the containment check, and the walk of the folder does not follow symlinks out
  of it. A path outside every root and a path that does not exist get the same answer, so the API is no
  oracle for the server's files. `lake import` on the command line (the operator) reads any path.
- `s3://bucket/prefix` unless it lies under an import root declared for another account, under the lake's
  own storage root, or in the bucket another account's trail delivers to. When the destination account
  has `s3://` roots of its own, the source must lie under one of them.
The destination store decides whose roots apply: data of an account's root only ever lands in that
account's stores, and a caller may only name stores it may see. A resumed import (StartImport with an
ImportId) is checked again against the roots in force now.

StopImport takes effect between chunks (the importer's progress callback raises): the chunk being written is
committed, nothing after it is read. StopImport waits a few seconds for that and then reports STOPPED; a
GetImport during the remainder of the chunk already says STOPPED.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from . import importer
from .api_lookup import as_datetime, fingerprint, next_token, store_account, token_position
from .api_stores import resolve_store
from .apicore import ApiContext, ApiError, operation
from .errors import InvalidParameter, LakeError, NotFound
from .store import PENDING_DELETION, Store
from . import tenancy

STATISTICS = ("PrefixesFound", "PrefixesCompleted", "FilesCompleted", "EventsCompleted", "FailedEntries")
ACTIVE = ("INITIALIZING", "IN_PROGRESS")
MAX_PAGE = 1000
STOP_WAIT_S = 10.0
_EVENT_CATEGORIES = {"Management", "Data", "NetworkActivity", "Insight"}  # what trail logs hold
_ARN = re.compile(r"arn:aws[a-z-]*:cloudtrail:[^:]*:\d*:eventdatastore/[A-Za-z0-9-]+")


class _Stopped(Exception):
    """Raised from the importer's progress callback to end the run between chunks."""


@dataclass
class _Job:
    imp: importer.Importer
    account: str
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    error: str | None = None


class ImportManager:
    """The imports this server runs (one per server process and lake)."""

    def __init__(self, lake: Any, *, workers: int | None = None, chunk_bytes: int | None = None):
        self.lake = lake
        self.workers = workers  # importer worker processes (None: one per CPU)
        self.chunk_bytes = chunk_bytes or importer.DEFAULT_CHUNK_BYTES
        self.jobs: dict[str, _Job] = {}
        self.lock = threading.Lock()

    def running(self, import_id: str) -> _Job | None:
        with self.lock:
            job = self.jobs.get(import_id)
        return job if job is not None and job.thread is not None and job.thread.is_alive() else None

    def account_busy(self, account: str) -> str | None:
        with self.lock:
            for iid, job in self.jobs.items():
                if job.account == account and job.thread is not None and job.thread.is_alive() \
                        and not job.stop.is_set():
                    return iid
        return None

    def launch(self, imp: importer.Importer, account: str) -> _Job:
        job = _Job(imp, account)

        def progress(stats: Any, total: int) -> None:
            if job.stop.is_set():
                raise _Stopped()

        imp.progress = progress
        t0 = time.monotonic()

        def work() -> None:
            try:
                imp.run()
            except _Stopped:
                imp._save("STOPPED", time.monotonic() - t0)
            except Exception as e:  # a run that cannot go on: record it, never leave it IN_PROGRESS silently
                job.error = str(e).splitlines()[0] if str(e) else type(e).__name__
                imp._record_failures([importer._failure(",".join(imp.sources), "ImportError", job.error)])
                imp._save("STOPPED" if job.stop.is_set() else "FAILED", time.monotonic() - t0)

        job.thread = threading.Thread(target=work, name=f"lake-import-{imp.import_id[:8]}", daemon=True)
        with self.lock:
            self.jobs[imp.import_id] = job
        job.thread.start()
        return job

    def close(self) -> None:
        with self.lock:
            for job in self.jobs.values():
                job.stop.set()


_LOCK = threading.Lock()


def manager(ctx: ApiContext) -> ImportManager:
    """The ImportManager of ctx.lake, kept in `ctx.services["imports"]`."""
    m = ctx.services.get("imports")
    if isinstance(m, ImportManager) and m.lake.uri == ctx.lake.uri:
        return m
    with _LOCK:
        key = "imports"
        m = ctx.services.get(key)
        if m is not None and not (isinstance(m, ImportManager) and m.lake.uri == ctx.lake.uri):
            key = f"imports:{ctx.lake.uri}"
            m = ctx.services.get(key)
        if m is None:
            m = ctx.services[key] = ImportManager(ctx.lake, workers=ctx.services.get("import_workers"),
                                                  chunk_bytes=ctx.services.get("import_chunk_bytes"))
        return m


# ---- state --------------------------------------------------------------------------------------------

def _api_state(lake: Any, import_id: str) -> dict:
    try:
        return orjson.loads(lake.storage.read(f"imports/{import_id}/api.json"))
    except (FileNotFoundError, ValueError):
        return {}


def _owner(ctx: ApiContext, state: dict, api: dict, cache: dict[str, str]) -> str:
    """The account an import belongs to: the destination store's owner (the API's caller account is also
    required to match when recorded)."""
    arn = (state.get("Destinations") or [""])[0]
    if arn not in cache:
        try:
            cache[arn] = store_account(ctx.lake.store(arn, include_expired=True), ctx.lake)
        except (NotFound, LakeError):
            parts = arn.split(":")
            cache[arn] = parts[4] if len(parts) > 4 and parts[4] else ctx.lake.account_id
    return cache[arn]


def _visible(ctx: ApiContext, state: dict, api: dict, cache: dict[str, str]) -> bool:
    if api.get("AccountId") and not ctx.principal.may_access(api["AccountId"]):
        return False
    return ctx.principal.may_access(_owner(ctx, state, api, cache))


def _status(m: ImportManager, state: dict) -> str:
    job = m.running(state["ImportId"])
    if job is not None and job.stop.is_set():
        return "STOPPED"
    return state.get("ImportStatus", "FAILED")


def _source(state: dict, api: dict) -> dict:
    if api.get("ImportSource"):
        return api["ImportSource"]
    uri = (state.get("ImportSource") or [""])[0]
    if "://" not in uri:
        uri = f"file://{uri}"
    return {"S3": {"S3LocationUri": uri, "S3BucketRegion": "", "S3BucketAccessRoleArn": ""}}


def _ts(value: str | None) -> datetime | None:
    return as_datetime(value, "timestamp") if value else None


def _describe(m: ImportManager, state: dict, api: dict, *, statistics: bool = True) -> dict:
    out: dict[str, Any] = {"ImportId": state["ImportId"], "Destinations": list(state.get("Destinations") or []),
                           "ImportSource": _source(state, api), "ImportStatus": _status(m, state)}
    for k in ("StartEventTime", "EndEventTime", "CreatedTimestamp", "UpdatedTimestamp"):
        if state.get(k):
            out[k] = _ts(state[k])
    if statistics:
        st = state.get("ImportStatistics") or {}
        out["ImportStatistics"] = {k: int(st.get(k, 0) or 0) for k in STATISTICS}
    return out


def _load(ctx: ApiContext, import_id: Any) -> tuple[dict, dict]:
    """(importer state, API state) of an import the principal may see; ImportNotFoundException otherwise."""
    if not isinstance(import_id, str) or not re.fullmatch(r"[a-f0-9\-]{36}", import_id):
        raise ApiError("ImportNotFoundException", f"no import {import_id!r}")
    try:
        state = importer.get_import(ctx.lake, import_id)
    except NotFound:
        raise ApiError("ImportNotFoundException", f"no import {import_id}") from None
    api = _api_state(ctx.lake, import_id)
    if not _visible(ctx, state, api, {}):
        raise ApiError("ImportNotFoundException", f"no import {import_id}")
    return state, api


# ---- checks -------------------------------------------------------------------------------------------

def _destination(ctx: ApiContext, destinations: Any) -> Store:
    if not isinstance(destinations, list) or len(destinations) != 1:
        raise ApiError("InvalidParameterException", "Destinations must hold exactly one event data store ARN")
    ref = destinations[0]
    if not isinstance(ref, str) or not _ARN.fullmatch(ref):
        raise ApiError("EventDataStoreARNInvalidException", f"{ref!r} is not an event data store ARN")
    st = resolve_store(ctx, ref)
    md = st.metadata
    if md.get("Status") == PENDING_DELETION:
        raise ApiError("InactiveEventDataStoreException", f"event data store {md['Name']} is pending deletion")
    cats = {v for s in md.get("AdvancedEventSelectors", []) for f in s.get("FieldSelectors", [])
            if f.get("Field") == "eventCategory" for v in f.get("Equals", [])}
    if cats and not cats & _EVENT_CATEGORIES:
        raise ApiError("InvalidEventDataStoreCategoryException",
                       f"event data store {md['Name']} holds {', '.join(sorted(cats))} events, not CloudTrail "
                       "events: import into a store of CloudTrail management or data events")
    return st


FORBIDDEN_SOURCE = ("import source {uri} is not valid: it does not exist or is not readable for this account (over "
                    "the API only s3:// sources and local folders under an import root configured for the account "
                    "are accepted)")


def parse_import_roots(values: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """`lake serve --import-root ACCOUNT=PATH` items as {account: roots} (lake/tenancy.py)."""
    return tenancy.parse_roots(values)


def check_source(ctx: ApiContext, uri: str, account: str) -> str:
    """The location the importer reads for `uri` on behalf of `account` (the destination store's owner):
    a resolved local path under one of the account's roots, or the s3:// URI (lake/tenancy.py's rules).
    InvalidImportSourceException with one message for every refusal (missing and forbidden look alike)."""
    if not uri.startswith(("file://", "s3://")):
        raise ApiError("InvalidImportSourceException",
                       f"S3LocationUri {uri[:300]!r} must be s3://bucket[/prefix] (or, in Lake, file:///path)")
    found = tenancy.location(ctx, uri, account, must_exist=True)
    if found is None:
        raise ApiError("InvalidImportSourceException", FORBIDDEN_SOURCE.format(uri=uri[:300]))
    return found


def _local_or_s3(ctx: ApiContext, source: Any, account: str) -> tuple[dict, str]:
    """The checked ImportSource and the location the importer reads (a local path or an s3:// URI)."""
    s3 = source.get("S3") if isinstance(source, dict) else None
    if not isinstance(s3, dict) or not isinstance(s3.get("S3LocationUri"), str):
        raise ApiError("InvalidImportSourceException", "ImportSource.S3.S3LocationUri is required")
    for k in ("S3BucketRegion", "S3BucketAccessRoleArn"):
        if not isinstance(s3.get(k), str):
            raise ApiError("InvalidParameterException", f"ImportSource.S3.{k} is required")
    uri = s3["S3LocationUri"]
    location = check_source(ctx, uri, account)
    if location != uri:  # a local folder: checked to exist above
        return {"S3": dict(s3)}, location
    import fsspec

    from .storage import storage_options_from_env

    try:
        fs = fsspec.filesystem("s3", skip_instance_cache=True, **storage_options_from_env("s3"))
        found = fs.exists(uri[len("s3://"):].rstrip("/"))
    except Exception:  # noqa: BLE001 - denied, unreachable, no such bucket: one answer, no oracle
        found = False
    if not found:
        raise ApiError("InvalidImportSourceException", FORBIDDEN_SOURCE.format(uri=uri[:300]))
    return {"S3": dict(s3)}, uri


def _recheck(ctx: ApiContext, state: dict) -> None:
    """A resumed import reads its sources again: they must still be allowed for the destination's owner
    (roots change; an import started by `lake import` names any path the operator chose)."""
    account = _owner(ctx, state, {}, {})
    for src in state.get("ImportSource") or []:
        check_source(ctx, src if "://" in src else f"file://{src}", account)


# ---- handlers ---------------------------------------------------------------------------------------

@operation("StartImport", mutating=True)
def start_import(ctx: ApiContext, params: dict) -> dict:
    m = manager(ctx)
    busy = m.account_busy(ctx.principal.account_id)
    if params.get("ImportId"):
        state, api = _load(ctx, params["ImportId"])
        if m.running(state["ImportId"]) is not None:
            raise ApiError("AccountHasOngoingImportException", f"import {state['ImportId']} is still running")
        if busy:
            raise ApiError("AccountHasOngoingImportException", f"import {busy} is still running for this account")
        _recheck(ctx, state)
        try:
            imp = importer.resume(ctx.lake, state["ImportId"], workers=m.workers, chunk_bytes=m.chunk_bytes,
                                  isolate=True)  # decoding never runs in the server's own process
        except (NotFound, LakeError) as e:
            raise ApiError("EventDataStoreNotFoundException" if isinstance(e, NotFound) else "InvalidParameterException",
                           str(e)) from None
        # the resumed run counts what it adds; GetImport reports the whole import, as CloudTrail does
        prev = state.get("ImportStatistics") or {}
        imp.stats.EventsCompleted = int(prev.get("EventsCompleted") or 0)
        imp.stats.FilesCompleted = int(prev.get("FilesCompleted") or 0)
        account = api.get("AccountId") or ctx.principal.account_id
    else:
        if busy:
            raise ApiError("AccountHasOngoingImportException",
                           f"import {busy} is still running for account {ctx.principal.account_id}; wait for it "
                           "or stop it (StopImport)")
        store = _destination(ctx, params.get("Destinations"))
        source, location = _local_or_s3(ctx, params.get("ImportSource"), store_account(store, ctx.lake))
        start = as_datetime(params.get("StartEventTime"), "StartEventTime")
        end = as_datetime(params.get("EndEventTime"), "EndEventTime")
        if start and end and start > end:
            raise ApiError("InvalidParameterException", "StartEventTime is after EndEventTime")
        try:
            imp = importer.Importer(store, [location], start=start, end=end, import_id=str(uuid.uuid4()),
                                    workers=m.workers, chunk_bytes=m.chunk_bytes,
                                    isolate=True)  # decoding never runs in the server's own process
        except InvalidParameter as e:
            raise ApiError("InvalidParameterException", str(e)) from None
        account = ctx.principal.account_id
        api = {"ImportSource": source, "AccountId": account, "PrincipalArn": ctx.principal.arn}
        ctx.lake.storage.write(f"imports/{imp.import_id}/api.json", orjson.dumps(api))
    state = imp._save("INITIALIZING").as_dict()
    m.launch(imp, account)
    return _describe(m, state, api, statistics=False)


@operation("GetImport")
def get_import(ctx: ApiContext, params: dict) -> dict:
    state, api = _load(ctx, params.get("ImportId"))
    return _describe(manager(ctx), state, api)


def _page_size(value: Any) -> int:
    if value is None:
        return MAX_PAGE
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGE:
        raise ApiError("InvalidParameterException", f"MaxResults must be between 1 and {MAX_PAGE}, got {value!r}")
    return value


@operation("ListImports")
def list_imports(ctx: ApiContext, params: dict) -> dict:
    size = _page_size(params.get("MaxResults"))
    dest = params.get("Destination")
    if dest is not None and (not isinstance(dest, str) or not _ARN.fullmatch(dest)):
        raise ApiError("EventDataStoreARNInvalidException", f"{dest!r} is not an event data store ARN")
    status = params.get("ImportStatus")
    fp = fingerprint("imports", dest, status, ctx.principal.arn)
    after = token_position(ctx, "ListImports", params, fp, "a", str)
    m = manager(ctx)
    cache: dict[str, str] = {}
    items = []
    for state in importer.list_imports(ctx.lake):
        if "ImportId" not in state:
            continue
        if dest and dest not in (state.get("Destinations") or []):
            continue
        items.append((f"{state.get('CreatedTimestamp', '')}|{state['ImportId']}", state))
    items.sort(key=lambda x: x[0], reverse=True)  # newest first
    out, more, last = [], False, None
    for cursor, state in items:
        if after is not None and cursor >= after:
            continue
        api = _api_state(ctx.lake, state["ImportId"])
        if not _visible(ctx, state, api, cache):
            continue
        d = _describe(m, state, api, statistics=False)
        if status and d["ImportStatus"] != status:
            continue
        if len(out) == size:
            more = True
            break
        out.append({k: d[k] for k in ("ImportId", "ImportStatus", "Destinations", "CreatedTimestamp",
                                      "UpdatedTimestamp") if k in d})
        last = cursor
    resp: dict[str, Any] = {"Imports": out}
    if more and last:
        resp["NextToken"] = next_token(ctx, "ListImports", fp, "a", last)
    return resp


@operation("ListImportFailures")
def list_import_failures(ctx: ApiContext, params: dict) -> dict:
    state, api = _load(ctx, params.get("ImportId"))
    size = _page_size(params.get("MaxResults"))
    fp = fingerprint("failures", state["ImportId"], ctx.principal.arn)
    offset = token_position(ctx, "ListImportFailures", params, fp, "o", int) or 0
    failures = importer.import_failures(ctx.lake, state["ImportId"])  # oldest first, append-only
    page = failures[offset:offset + size]
    root = _source(state, api)["S3"]["S3LocationUri"].rstrip("/")
    out = []
    for f in page:
        item: dict[str, Any] = {k: f[k] for k in ("Location", "Status", "ErrorType", "ErrorMessage") if f.get(k)}
        if "Location" in item and "://" not in item["Location"] and not item["Location"].startswith("/"):
            item["Location"] = f"{root}/{item['Location']}"  # the importer records keys under the source
        if f.get("LastUpdatedTime"):
            item["LastUpdatedTime"] = _ts(f["LastUpdatedTime"])
        out.append(item)
    resp: dict[str, Any] = {"Failures": out}
    if offset + size < len(failures):
        resp["NextToken"] = next_token(ctx, "ListImportFailures", fp, "o", offset + size)
    return resp


@operation("StopImport", mutating=True)
def stop_import(ctx: ApiContext, params: dict) -> dict:
    state, api = _load(ctx, params.get("ImportId"))
    m = manager(ctx)
    job = m.running(state["ImportId"])
    if job is not None:
        job.stop.set()
        if job.thread is not None:
            job.thread.join(STOP_WAIT_S)
        state = importer.get_import(ctx.lake, state["ImportId"])
    elif state.get("ImportStatus") in ACTIVE:
        # started by a server that is gone (or by `lake import` elsewhere): mark it stopped; StartImport
        # with its ImportId resumes it
        state = {**state, "ImportStatus": "STOPPED"}
        ctx.lake.storage.write(f"imports/{state['ImportId']}/import.json", orjson.dumps(state))
    out = _describe(m, state, api)
    if job is not None and out["ImportStatus"] in ACTIVE:
        out["ImportStatus"] = "STOPPED"
    return out


__all__ = ["ImportManager", "manager", "parse_import_roots", "check_source", "FORBIDDEN_SOURCE",
           "start_import", "get_import", "list_imports", "list_import_failures", "stop_import"]
