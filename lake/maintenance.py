"""Maintenance: compaction, retention and vacuum. Each change to the live data is one commit; files are
deleted only by vacuum, and only when no snapshot younger than the grace period can reference them.

Destructive operations (retention, vacuum) are dry-run by default and return a report of what they would do,
as delta-rs does; compaction does not change content (it proves it) and runs by default.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from . import segments
from .log import Snapshot, now_iso, parse_iso
from .schema import TIMESTAMP

if TYPE_CHECKING:
    from .lake import Lake
    from .store import Store

DEFAULT_TARGET_BYTES = 128 * 1024 * 1024
DEFAULT_GRACE = timedelta(days=7)


class MaintenanceAborted(RuntimeError):
    """A maintenance commit was abandoned because its proof failed or its inputs changed."""


def _write_intent(store: "Store", txn: str, operation: str) -> None:
    store.lake.storage.create(f"{store.prefix}/_txn/{txn}.json",
                              orjson.dumps({"txn": txn, "created": now_iso(), "operation": operation}))


def _checksums(tables: list[pa.Table]) -> Counter:
    """The multiset of SHA-256 digests of the stored event JSON: what maintenance must never change."""
    c: Counter = Counter()
    for t in tables:
        c.update(hashlib.sha256(j.encode()).digest() for j in t.column("eventjson").to_pylist())
    return c


# -- compaction -----------------------------------------------------------------------------------------

def plan_compaction(snap: Snapshot, target_bytes: int = DEFAULT_TARGET_BYTES) -> list[list[dict]]:
    """Groups of small segments of one partition to merge, each group about `target_bytes` in total."""
    small = [e for e in snap.entries() if e["bytes"] < target_bytes // 2]
    by_part: dict[tuple, list[dict]] = {}
    for e in small:
        by_part.setdefault((e["account"], e["date"]), []).append(e)
    groups = []
    for key in sorted(by_part):
        entries = sorted(by_part[key], key=lambda e: (e["eventtime_min"], e["path"]))
        cur: list[dict] = []
        size = 0
        for e in entries:
            if cur and size + e["bytes"] > target_bytes:
                if len(cur) > 1:
                    groups.append(cur)
                cur, size = [], 0
            cur.append(e)
            size += e["bytes"]
        if len(cur) > 1:
            groups.append(cur)
    return groups


def compact(store: "Store", *, target_bytes: int = DEFAULT_TARGET_BYTES, dry_run: bool = False,
            progress=None) -> dict:
    """Merge small segments per partition. The multiset of event JSON digests is compared before commit."""
    snap = store.snapshot()
    groups = plan_compaction(snap, target_bytes)
    report = {"operation": "compact", "store": snap.metadata["Name"], "dry_run": dry_run,
              "groups": len(groups), "segments_in": sum(len(g) for g in groups), "segments_out": 0,
              "events": sum(e["rows"] for g in groups for e in g), "version": snap.version}
    if dry_run or not groups:
        return report
    storage = store.lake.storage
    txn = uuid.uuid4().hex
    _write_intent(store, txn, "COMPACT")
    added: list[dict] = []
    removed: list[str] = []
    for n, group in enumerate(groups):
        inputs = [segments.read_segment(storage, store.prefix, e["path"]) for e in group]
        merged = pa.concat_tables(inputs)
        merged = segments.ordered(merged)
        if _checksums(inputs) != _checksums([merged]):  # pragma: no cover - defensive proof
            raise MaintenanceAborted("compaction changed the multiset of event checksums; nothing committed")
        entry = segments.write_segment(storage, store.prefix, merged, group[0]["account"], group[0]["date"],
                                       f"part-{txn}-{n:05d}.parquet")
        check = segments.read_segment(storage, store.prefix, entry["path"], ["eventjson"])
        if _checksums(inputs) != _checksums([check]):
            raise MaintenanceAborted("compacted segment does not hold the same events; nothing committed")
        added.append(entry)
        removed.extend(e["path"] for e in group)
        if progress:
            progress(n + 1, len(groups))

    def build(s: Snapshot):
        live = set(s.paths())
        missing = [p for p in removed if p not in live]
        if missing:
            for e in added:
                storage.delete(f"{store.prefix}/{e['path']}")
            raise MaintenanceAborted(f"{len(missing)} input segments were removed by a concurrent commit; "
                                     "compaction abandoned, run it again")
        return {"add": added, "remove": removed, "txn": txn,
                "info": {"segments_in": len(removed), "segments_out": len(added)}}

    new, _ = store.log.commit("COMPACT", build)
    report.update(segments_out=len(added), version=new.version)
    return report


# -- retention ------------------------------------------------------------------------------------------

def retention(store: "Store", *, now: datetime | None = None, dry_run: bool = True) -> dict:
    """Remove events older than the store's retention period (on eventTime).

    Segments wholly older than the cutoff are dropped (strict evaluation on eventtime_max); segments that
    straddle it are rewritten with only the in-retention rows. Dry-run by default."""
    snap = store.snapshot()
    now = now or datetime.now(timezone.utc)
    cutoff = now - timedelta(days=snap.metadata["RetentionPeriod"])
    entries = snap.entries()
    drop = [e for e in entries if e["eventtime_max"] < cutoff]
    straddle = [e for e in entries if e["eventtime_min"] < cutoff <= e["eventtime_max"]]
    report = {"operation": "retention", "store": snap.metadata["Name"], "dry_run": dry_run,
              "cutoff": cutoff.strftime("%Y-%m-%dT%H:%M:%SZ"), "segments_dropped": len(drop),
              "segments_rewritten": len(straddle), "events_removed": sum(e["rows"] for e in drop),
              "version": snap.version}
    if not drop and not straddle:
        return report
    storage = store.lake.storage
    added: list[dict] = []
    if straddle:
        txn = uuid.uuid4().hex
        if not dry_run:
            _write_intent(store, txn, "RETENTION")
        for n, e in enumerate(straddle):
            t = segments.read_segment(storage, store.prefix, e["path"])
            kept = t.filter(pc.greater_equal(t.column("eventtime"), pa.scalar(cutoff, TIMESTAMP)))
            kept = segments.ordered(kept)  # dropping rows can move row-group boundaries
            report["events_removed"] += t.num_rows - kept.num_rows
            if not dry_run and kept.num_rows:
                added.append(segments.write_segment(storage, store.prefix, kept, e["account"], e["date"],
                                                    f"part-{txn}-{n:05d}.parquet"))
    if dry_run:
        return report
    removed = [e["path"] for e in drop + straddle]

    def build(s: Snapshot):
        live = set(s.paths())
        gone = [p for p in removed if p not in live]
        if gone:
            for e in added:
                storage.delete(f"{store.prefix}/{e['path']}")
            raise MaintenanceAborted("segments changed concurrently; retention abandoned, run it again")
        return {"add": added, "remove": removed, "info": {"cutoff": report["cutoff"],
                                                          "events_removed": report["events_removed"]}}

    new, _ = store.log.commit("RETENTION", build)
    report["version"] = new.version
    return report


# -- vacuum ---------------------------------------------------------------------------------------------

def vacuum_candidates(store: "Store", *, grace: timedelta = DEFAULT_GRACE,
                      now: datetime | None = None) -> list[dict]:
    """Files of one store that no snapshot younger than `grace` can reference."""
    now = now or datetime.now(timezone.utc)
    horizon = (now - grace).timestamp()
    storage = store.lake.storage
    snap = store.snapshot()
    live = set(snap.paths())
    retired: dict[str, float] = {}  # path -> time of the commit that removed it
    committed: set[str] = set()
    for _, commit, _ in store.log.commits():
        ts = parse_iso(commit["timestamp"]).timestamp()
        for e in commit.get("add") or []:
            committed.add(e["path"])
        for p in commit.get("remove") or []:
            retired[p] = ts
    out = []
    waiting: set[str] = set()  # txns with never-committed files too young to delete: keep their intents
    for f in storage.list(f"{store.prefix}/data"):
        rel = f.path[len(store.prefix) + 1:]
        if rel in live:
            continue
        if rel in retired:
            if retired[rel] < horizon:
                out.append({"path": f.path, "bytes": f.size, "reason": "retired"})
        elif rel not in committed:
            if f.mtime < horizon:
                out.append({"path": f.path, "bytes": f.size, "reason": "orphan"})
            else:
                name = rel.rsplit("/", 1)[-1]
                if name.startswith("part-") and name.count("-") >= 2:
                    waiting.add(name.split("-")[1])
    for f in storage.list(f"{store.prefix}/_txn"):
        txn = f.path.rsplit("/", 1)[-1][: -len(".json")]
        if f.mtime < horizon and txn not in waiting:
            out.append({"path": f.path, "bytes": f.size, "reason": "intent"})
    return out


def vacuum(lake: "Lake", *, store: "Store | None" = None, grace: timedelta = DEFAULT_GRACE,
           dry_run: bool = True, now: datetime | None = None) -> dict:
    """Delete unreferenced files older than the grace period, and stores deleted more than 7 days ago.
    Dry-run by default: the report lists what would be deleted."""
    stores = [store] if store is not None else lake.stores(include_expired=True)
    files: list[dict] = []
    purged: list[str] = []
    for st in stores:
        if st.expired_deletion(now):
            purged.append(st.name)
            files.extend({"path": f.path, "bytes": f.size, "reason": "store-deleted"}
                         for f in lake.storage.list(st.prefix))
            continue
        files.extend(vacuum_candidates(st, grace=grace, now=now))
    aborted: list[str] = []
    if store is None:  # store directories whose creation died before the name was claimed
        horizon = ((now or datetime.now(timezone.utc)) - grace).timestamp()
        known = {st.id for st in stores}
        for sid in lake.storage.list_dirs("stores"):
            if sid in known:
                continue
            listing = lake.storage.list(f"stores/{sid}")
            if listing and max(f.mtime for f in listing) < horizon:
                aborted.append(sid)
                files.extend({"path": f.path, "bytes": f.size, "reason": "aborted-create"} for f in listing)
    if not dry_run:
        for f in files:
            lake.storage.delete(f["path"])
        for st in stores:
            if st.name in purged:
                lake._release_name(st.name, st.id)
                lake.storage.delete_tree(st.prefix)
        for sid in aborted:
            lake.storage.delete_tree(f"stores/{sid}")
    return {"operation": "vacuum", "dry_run": dry_run, "files": len(files),
            "bytes": sum(f["bytes"] for f in files), "stores_purged": purged, "details": files}
