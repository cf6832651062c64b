"""An event data store: CloudTrail Lake semantics over one transaction log.

Metadata uses the CloudTrail API's field names (`Name`, `RetentionPeriod`, `TerminationProtectionEnabled`,
...) so the `lake serve` API and the CLI's JSON output need no translation table.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from . import events, limits, segments
from .errors import InactiveStore, InvalidParameter, ReadOnlyError, TerminationProtected
from .log import Log, Snapshot, now_iso, parse_iso
from .schema import EVENT_SCHEMA

# No events, with the event schema: the scan of no segments, and the schema polars is given for segments.
EMPTY_EVENTS = pl.from_arrow(EVENT_SCHEMA.empty_table())

if TYPE_CHECKING:
    from .lake import Lake

RESTORE_WINDOW = timedelta(days=7)
MIN_RETENTION, MAX_RETENTION = 7, 3653
DEFAULT_RETENTION = {"EXTENDABLE_RETENTION_PRICING": 366, "FIXED_RETENTION_PRICING": 2557}
MAX_FIXED_RETENTION = 2557
ENABLED, STOPPED, PENDING_DELETION = "ENABLED", "STOPPED_INGESTION", "PENDING_DELETION"


@dataclass
class AppendResult:
    """What one append did. `rejected` lists records that could not be stored, with reasons."""

    version: int | None = None
    appended: int = 0
    duplicates: int = 0
    not_selected: int = 0
    expired: int = 0
    truncated: int = 0
    rejected: list[events.Reject] = field(default_factory=list)
    segments: int = 0

    def as_dict(self) -> dict:
        return {"version": self.version, "appended": self.appended, "duplicates": self.duplicates,
                "not_selected": self.not_selected, "expired": self.expired, "truncated": self.truncated,
                "rejected": [r.as_dict() for r in self.rejected], "segments": self.segments}


class _KeyCache:
    """Dedupe keys of immutable segments, shared by all stores of a process and bounded by total keys."""

    def __init__(self, max_keys: int = 2_000_000):
        self._data: OrderedDict[str, pl.Series] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.max_keys = max_keys

    def get(self, key: str, load) -> pl.Series:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
        value = load()
        self.put(key, value)
        return value

    def put(self, key: str, value: pl.Series) -> None:
        with self._lock:
            if key in self._data:
                return
            self._data[key] = value
            self._size += len(value)
            while self._size > self.max_keys and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self._size -= len(old)


KEY_CACHE = _KeyCache()
# Sorted 64-bit hashes of each segment's keys: the first, cheap test of a new batch against a partition
# (8 bytes per key, so it holds far more segments than KEY_CACHE). polars' hash is only stable within a
# process, which is all this cache needs.
HASH_CACHE = _KeyCache(max_keys=20_000_000)


def _key_hashes(keys: pl.Series) -> np.ndarray:
    return keys.hash(seed=0).to_numpy()


def validate_retention(days: Any, billing_mode: str) -> int:
    try:
        days = int(days)
    except (TypeError, ValueError):
        raise InvalidParameter(f"RetentionPeriod must be a whole number of days, got {days!r}") from None
    top = MAX_FIXED_RETENTION if billing_mode == "FIXED_RETENTION_PRICING" else MAX_RETENTION
    if not MIN_RETENTION <= days <= top:
        raise InvalidParameter(f"RetentionPeriod must be between {MIN_RETENTION} and {top} days "
                               f"for {billing_mode}, got {days}")
    return days


def keys_of(table: pa.Table) -> pl.Series:
    """The dedupe key per row, `eventid` + U+001F + `recipientaccountid`; without an eventID the record's
    content id (segments.event_ids), null only when the table has no eventjson. A string Series keeps
    membership tests vectorised and compact."""
    df = pl.from_arrow(table.select(["recipientaccountid"])).with_columns(segments.event_ids(table))
    return df.select(pl.when(pl.col("eventid").is_not_null()).then(
        pl.concat_str([pl.col("eventid"), pl.lit("\x1f"), pl.col("recipientaccountid").fill_null("")]))
        .alias("k")).to_series()


@dataclass
class Pending:
    """A segment on its way into a commit: rows to write, or an already written (uncommitted) entry."""

    account: str
    date: str
    keys: pl.Series
    rows: pa.Table | None = None
    entry: dict | None = None


class Store:
    """One event data store. Obtain it from `Lake.create_store` / `Lake.store`."""

    def __init__(self, lake: "Lake", store_id: str):
        self.lake = lake
        self.id = store_id
        self.prefix = f"stores/{store_id}"
        self.log = Log(lake.storage, self.prefix)

    def __repr__(self) -> str:
        return f"<Store {self.name!r} {self.id}>"

    # -- metadata -------------------------------------------------------------------------------------
    def snapshot(self, refresh: bool = True) -> Snapshot:
        return self.log.load(refresh=refresh)

    @property
    def metadata(self) -> dict:
        return self.snapshot().metadata

    @property
    def name(self) -> str:
        return self.snapshot(refresh=False).metadata["Name"]

    @property
    def arn(self) -> str:
        return self.snapshot(refresh=False).metadata["EventDataStoreArn"]

    @property
    def status(self) -> str:
        return self.metadata["Status"]

    def describe(self) -> dict:
        """GetEventDataStore-shaped description plus lake statistics."""
        snap = self.snapshot()
        out = dict(snap.metadata)
        out["Statistics"] = {"Version": snap.version, "Events": snap.rows, "Segments": snap.segments.num_rows,
                             "Bytes": snap.bytes}
        return out

    def expired_deletion(self, now: datetime | None = None) -> bool:
        md = self.metadata
        if md.get("Status") != PENDING_DELETION or not md.get("DeletionTime"):
            return False
        now = now or datetime.now(timezone.utc)
        return parse_iso(md["DeletionTime"]) + RESTORE_WINDOW <= now

    def _update_metadata(self, operation: str, change) -> dict:
        """Commit a metadata change; `change(md) -> new md` runs on the latest snapshot (re-run on conflict)."""
        def build(snap: Snapshot):
            md = change(dict(snap.metadata))
            if md is None:
                return None
            md["UpdatedTimestamp"] = now_iso()
            return {"metadata": md}
        snap, _ = self.log.commit(operation, build)
        return snap.metadata

    def update(self, *, name: str | None = None, selectors: list | None = None, retention_days: int | None = None,
               termination_protection: bool | None = None, multi_region: bool | None = None,
               organization: bool | None = None, billing_mode: str | None = None,
               max_event_size: str | None = None, kms_key_id: str | None = None) -> dict:
        """UpdateEventDataStore: at least one setting must be given."""
        given = {k: v for k, v in locals().items() if k != "self" and v is not None}
        if not given:
            raise InvalidParameter("update needs at least one setting to change")
        from .selectors import SelectorError, validate_selectors

        try:
            sel = validate_selectors(selectors) if selectors is not None else None
        except SelectorError as e:
            raise InvalidParameter(str(e)) from None
        if max_event_size is not None and max_event_size not in limits.MAX_EVENT_BYTES:
            raise InvalidParameter(f"MaxEventSize must be Standard or Large, got {max_event_size!r}")
        old_name = self.metadata["Name"]  # fresh: a cached name may be stale after another writer's rename
        replaced: list[str] = []  # the name the committed change actually replaced
        owner = self.lake.owner_of(self.metadata)  # names are unique per account (Lake._name_path)
        if name is not None and name != old_name:
            self.lake._claim_name(name, self.id, owner)

        def change(md: dict) -> dict:
            if md["Status"] == PENDING_DELETION:
                raise InactiveStore(f"event data store {md['Name']} is pending deletion; restore it first")
            bm = billing_mode or md["BillingMode"]
            if billing_mode and md["BillingMode"] == "EXTENDABLE_RETENTION_PRICING" and \
                    billing_mode == "FIXED_RETENTION_PRICING":
                raise InvalidParameter("cannot change billing mode from EXTENDABLE to FIXED; create a new store")
            if kms_key_id is not None and md.get("KmsKeyId") and kms_key_id != md["KmsKeyId"]:
                raise InvalidParameter("KmsKeyId cannot be changed or removed once set")
            if name is not None:
                replaced[:] = [md["Name"]]
                md["Name"] = name
            if sel is not None:
                md["AdvancedEventSelectors"] = sel
            if retention_days is not None:
                md["RetentionPeriod"] = validate_retention(retention_days, bm)
            if termination_protection is not None:
                md["TerminationProtectionEnabled"] = bool(termination_protection)
            if multi_region is not None:
                md["MultiRegionEnabled"] = bool(multi_region)
            if organization is not None:
                md["OrganizationEnabled"] = bool(organization)
            if max_event_size is not None:
                md["MaxEventSize"] = max_event_size
            if kms_key_id is not None:
                md["KmsKeyId"] = kms_key_id
            md["BillingMode"] = bm
            return md

        try:
            md = self._update_metadata("UPDATE", change)
        except Exception:
            if name is not None and name != old_name:
                self.lake._release_name(name, self.id, owner)
            raise
        if replaced and replaced[0] != name:
            self.lake._release_name(replaced[0], self.id, owner)
        return md

    def delete(self) -> dict:
        """DeleteEventDataStore: refused under termination protection; restorable for 7 days."""
        def change(md: dict):
            if md.get("TerminationProtectionEnabled", True):
                raise TerminationProtected(
                    f"event data store {md['Name']} has termination protection; run `lake store update "
                    f"{md['Name']} --no-termination-protection` first")
            if md["Status"] == PENDING_DELETION:
                return None
            md["StatusBeforeDeletion"] = md["Status"]  # what `restore` brings back (a stopped store stays stopped)
            md["Status"] = PENDING_DELETION
            md["DeletionTime"] = now_iso()
            return md
        return self._update_metadata("DELETE", change)

    def restore(self) -> dict:
        """RestoreEventDataStore: only within 7 days of deletion."""
        if self.expired_deletion():
            raise InactiveStore(f"event data store {self.name} was deleted more than 7 days ago")

        def change(md: dict):
            if md["Status"] != PENDING_DELETION:
                raise InvalidParameter(f"event data store {md['Name']} is {md['Status']}, not PENDING_DELETION")
            md["Status"] = md.pop("StatusBeforeDeletion", ENABLED)
            md.pop("DeletionTime", None)
            return md
        return self._update_metadata("RESTORE", change)

    def _set_ingestion(self, status: str) -> dict:
        def change(md: dict):
            if md["Status"] == PENDING_DELETION:
                raise InactiveStore(f"event data store {md['Name']} is pending deletion")
            cats = {v for s in md.get("AdvancedEventSelectors", []) for f in s["FieldSelectors"]
                    if f["Field"] == "eventCategory" for v in f.get("Equals", [])}
            if cats - {"Management", "Data", "ConfigurationItem"}:
                raise InvalidParameter("ingestion can only be started or stopped on stores of CloudTrail "
                                       "events or Config items")
            if md["Status"] == status:
                return None
            md["Status"] = status
            return md
        return self._update_metadata("START_INGESTION" if status == ENABLED else "STOP_INGESTION", change)

    def start_ingestion(self) -> dict:
        return self._set_ingestion(ENABLED)

    def stop_ingestion(self) -> dict:
        return self._set_ingestion(STOPPED)

    # -- read-only enforcement ------------------------------------------------------------------------
    def update_events(self, *args, **kwargs):
        raise ReadOnlyError("events are immutable: an event data store never updates an individual event")

    def delete_events(self, *args, **kwargs):
        raise ReadOnlyError("events are immutable: an event data store never deletes an individual event; "
                            "events leave only through the retention period (`lake retention`)")

    # -- ingestion ------------------------------------------------------------------------------------
    def append(self, records: Iterable[Any], *, source: str = "live", now: datetime | None = None,
               location: str = "") -> AppendResult:
        """Store new events. Invalid records are returned in `rejected`; they never stop the batch.

        `source="live"` (PutAuditEvents-style ingestion) applies the store's selectors and AWS's per-field
        size caps. `source="import"` is for trail logs CloudTrail already delivered: like StartImport it
        copies events regardless of selectors and keeps them as delivered. Either way, events older than
        the retention period are not stored and duplicates of stored events are skipped.
        """
        if source not in ("live", "import"):
            raise InvalidParameter(f"source must be 'live' or 'import', got {source!r}")
        live = source == "live"
        operation = "APPEND" if live else "IMPORT"
        md = self.metadata
        if md["Status"] == PENDING_DELETION:
            raise InactiveStore(f"event data store {md['Name']} is pending deletion; restore it to add events")
        if md["Status"] == STOPPED and live:
            raise InactiveStore(f"ingestion is stopped on {md['Name']}; run `lake store start-ingestion` first")
        if live and md.get("ContextKeySelectors"):  # enrichment (eventContext) applies to events as received
            from .enrichment import enrich_for_store
            records = enrich_for_store(self, records, md)
        conv = events.convert(records, size_mode=md.get("MaxEventSize", limits.STANDARD), location=location,
                              field_caps=live)
        result = AppendResult(rejected=conv.rejects, truncated=conv.truncated)
        table = conv.table
        if live and table.num_rows:
            from .selectors import selector_expr

            df = pl.from_arrow(table.select(_SELECTOR_COLUMNS))
            mask = df.select(selector_expr(md["AdvancedEventSelectors"]).alias("m")).to_series().to_arrow()
            kept = table.filter(mask)
            result.not_selected = table.num_rows - kept.num_rows
            table = kept
        if table.num_rows:
            cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=md["RetentionPeriod"])
            kept = table.filter(pc.greater_equal(table.column("eventtime"), pa.scalar(cutoff, EVENT_SCHEMA.field(
                "eventtime").type)))
            result.expired = table.num_rows - kept.num_rows
            table = kept
        table, dups = _dedupe_batch(table)
        result.duplicates = dups
        if table.num_rows == 0:
            return result
        return self._commit_rows(table, result, operation)

    def _commit_rows(self, table: pa.Table, result: AppendResult, operation: str) -> AppendResult:
        pending = [Pending(a, d, keys_of(t), rows=t) for a, d, t in segments.split_partitions(table)]
        snap, added, dups = self._commit_pending(pending, operation=operation)
        result.duplicates += dups
        if snap is not None:
            result.version = snap.version
            result.appended = sum(e["rows"] for e in added)
            result.segments = len(added)
        return result

    def _commit_pending(self, pending: list["Pending"], *, operation: str, txn: str | None = None,
                       info: dict | None = None) -> tuple[Snapshot | None, list[dict], int]:
        """Commit new segments (written already, or rows still to write), dropping events whose key is
        already in their partition. Returns (new snapshot or None if nothing was left, entries, duplicates).

        This is the one place where dedupe against the store meets the optimistic commit loop: after a lost
        race only the segments committed since the last check are read, and an affected segment is rewritten
        without the duplicates (its old file was never committed and is deleted)."""
        txn = txn or uuid.uuid4().hex
        storage = self.lake.storage
        if any(p.entry is None for p in pending):
            storage.create(f"{self.prefix}/_txn/{txn}.json",
                           orjson.dumps({"txn": txn, "created": now_iso(), "operation": operation}))
        pending = list(pending)
        checked: dict[int, int] = {}
        counter = [0]
        dups = [0]

        def build(snap: Snapshot):
            if snap.metadata.get("Status") == PENDING_DELETION:
                raise InactiveStore(f"event data store {snap.metadata['Name']} was deleted during the append")
            seg = snap.segments
            for p in list(pending):
                since = checked.get(id(p), -1)
                mask = pc.and_(pc.and_(pc.equal(seg.column("account"), p.account),
                                       pc.equal(seg.column("date"), p.date)),
                               pc.greater(seg.column("version"), since))
                paths = [x for x in seg.filter(mask).column("path").to_pylist()
                         if p.entry is None or x != p.entry["path"]]
                checked[id(p)] = snap.version
                if not paths:
                    continue
                dup = self._duplicates(p.keys, paths)
                n = int(dup.sum())
                if not n:
                    continue
                dups[0] += n
                if p.rows is None:
                    p.rows = segments.read_segment(storage, self.prefix, p.entry["path"])
                keep = (~dup).to_arrow()
                p.rows = segments.ordered(p.rows.filter(keep))
                p.keys = p.keys.filter(~dup)
                if p.entry is not None:
                    storage.delete(f"{self.prefix}/{p.entry['path']}")  # never committed
                    p.entry = None
                if not p.rows.num_rows:
                    pending.remove(p)
            for p in pending:
                if p.entry is None:
                    name = f"part-{txn}-r{counter[0]:05d}.parquet"
                    counter[0] += 1
                    p.entry = segments.write_segment(storage, self.prefix, p.rows, p.account, p.date, name)
            if not pending:
                return None
            adds = [p.entry for p in pending]
            return {"add": adds, "txn": txn,
                    "info": {**(info or {}), "rows": sum(e["rows"] for e in adds), "duplicates": dups[0]}}

        snap, parts = self.log.commit(operation, build)
        if parts is None:
            return None, [], dups[0]
        for p in pending:
            KEY_CACHE.put(self._cache_key(p.entry["path"]), p.keys)
            HASH_CACHE.put(self._cache_key(p.entry["path"]), np.sort(_key_hashes(p.keys.drop_nulls())))
        return snap, parts["add"], dups[0]

    def _cache_key(self, path: str) -> str:
        return f"{self.lake.storage.uri}/{self.prefix}/{path}"

    def _duplicates(self, keys: pl.Series, paths: list[str]) -> pl.Series:
        """Which of `keys` are already in the segments at `paths` (null keys never are).

        Checking a batch against a whole partition with `is_in` hashed every stored key of the partition
        again for each batch, so importing a big account-day cost O(n^2) (~1 us per event at 10 M). Now the
        batch's key hashes are looked up in each segment's cached sorted hashes, and only the rare keys whose
        hash is found are compared exactly."""
        h = _key_hashes(keys)
        live = keys.is_not_null().to_numpy()
        candidate = np.zeros(len(h), dtype=bool)
        hit_paths = []
        for x in paths:
            stored = HASH_CACHE.get(self._cache_key(x), lambda x=x: np.sort(_key_hashes(self._keys(x).drop_nulls())))
            if len(stored):
                pos = np.minimum(np.searchsorted(stored, h), len(stored) - 1)
                hit = (stored[pos] == h) & live
                if hit.any():
                    candidate |= hit
                    hit_paths.append(x)
        if not hit_paths:
            return pl.Series("k", np.zeros(len(h), dtype=bool))
        wanted = keys.filter(pl.Series(candidate))
        existing = pl.concat([self._keys(x) for x in hit_paths])
        found = existing.filter(existing.is_in(wanted.implode()).fill_null(False))
        return keys.is_in(found.implode()).fill_null(False)

    def _keys(self, path: str) -> pl.Series:
        def load():
            t = segments.read_segment(self.lake.storage, self.prefix, path, ["eventid", "recipientaccountid"])
            if t.column("eventid").null_count:  # events without an eventID are keyed by their text
                t = segments.read_segment(self.lake.storage, self.prefix, path,
                                          ["eventid", "recipientaccountid", "eventjson"])
            return keys_of(t)
        return KEY_CACHE.get(self._cache_key(path), load)

    # -- reading --------------------------------------------------------------------------------------
    def files(self, snapshot: Snapshot | None = None, start: datetime | None = None,
              end: datetime | None = None) -> list[str]:
        """URIs of the live segments, optionally only those that can hold events in [start, end]."""
        snap = snapshot or self.snapshot()
        seg = snap.segments
        if start is not None:
            seg = seg.filter(pc.greater_equal(seg.column("eventtime_max"), pa.scalar(start, seg.schema.field(
                "eventtime_max").type)))
        if end is not None:
            seg = seg.filter(pc.less_equal(seg.column("eventtime_min"), pa.scalar(end, seg.schema.field(
                "eventtime_min").type)))
        return [self.lake.storage.scan_target(f"{self.prefix}/{p}") for p in seg.column("path").to_pylist()]

    def scan(self, snapshot: Snapshot | None = None, start: datetime | None = None,
             end: datetime | None = None) -> pl.LazyFrame:
        """A polars LazyFrame over one consistent snapshot of the store's events."""
        md = (snapshot or self.snapshot()).metadata
        if md.get("Status") == PENDING_DELETION:
            raise InactiveStore(f"event data store {md['Name']} is pending deletion; restore it to query it")
        return self.scan_files(self.files(snapshot, start, end))

    def scan_files(self, files: list[str]) -> pl.LazyFrame:
        """A polars LazyFrame over segment files (paths from `files`).

        The schema is given rather than inferred: every segment is written with EVENT_SCHEMA, and polars
        otherwise re-reads a footer each time a plan's schema is asked for (~0.8 ms; a query asks several
        times while it is planned). A column missing from an older segment reads as NULL; one a newer
        version added is ignored."""
        if not files:
            return EMPTY_EVENTS.lazy()
        opts = self.lake.storage.polars_storage_options()
        return pl.scan_parquet(files, storage_options=opts, hive_partitioning=False, schema=EMPTY_EVENTS.schema,
                               missing_columns="insert", extra_columns="ignore")

    def to_arrow(self, snapshot: Snapshot | None = None) -> pa.Table:
        """Every event of a snapshot as one Arrow table (small stores and tests)."""
        snap = snapshot or self.snapshot()
        if snap.metadata.get("Status") == PENDING_DELETION:
            raise InactiveStore(f"event data store {snap.metadata['Name']} is pending deletion; restore it to read it")
        tables = [segments.read_segment(self.lake.storage, self.prefix, p) for p in snap.paths()]
        if not tables:
            return EVENT_SCHEMA.empty_table()
        return pa.concat_tables(tables)


_SELECTOR_COLUMNS = ["eventcategory", "eventsource", "eventname", "readonly", "eventtype",
                     "sessioncredentialfromconsole", "useridentity_arn", "errorcode", "vpcendpointid", "resources"]


def _dedupe_batch(table: pa.Table) -> tuple[pa.Table, int]:
    """Keep the first occurrence of each (eventid, recipientaccountid) per (account, date) partition within a
    batch: the same scope as the check against stored segments (docs/ARCHITECTURE.md section 5)."""
    if table.num_rows < 2:
        return table, 0
    df = pl.from_arrow(table.select(["recipientaccountid"])).with_columns(
        segments.event_ids(table), pl.from_arrow(segments.partition_columns(table)[1]).alias("d"))
    keep = df.select((pl.col("eventid").is_null() |
                      pl.struct("eventid", "recipientaccountid", "d").is_first_distinct()).alias("k")).to_series()
    dups = int((~keep).sum())
    return (table.filter(keep.to_arrow()) if dups else table), dups
