"""Maintenance: compaction, retention and vacuum. Each change to the live data is one commit; files are
deleted only by vacuum, and only when no snapshot younger than the grace period can reference them.

Destructive operations (retention, vacuum) are dry-run by default and return a report of what they would do,
as delta-rs does; compaction does not change content (it proves it) and runs by default.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from . import segments
from .log import Snapshot, now_iso, parse_iso, read_verified_segment
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
        inputs = [read_verified_segment(storage, store.prefix, e) for e in group]  # never launder changed bytes
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
            t = read_verified_segment(storage, store.prefix, e)  # never launder changed bytes
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


PURGE_STEPS = ("marked", "names", "commit0", "files", "folder", "done")
# Tests set this to a step name to SIGKILL the process right after that step (the fault test's hook).
_CRASH_ENV = "LAKE_CRASH_AFTER"


def _step(name: str) -> None:
    """A crash-injection point: `$LAKE_CRASH_AFTER=purge:<step>` kills the process here (tests only)."""
    if os.environ.get(_CRASH_ENV) == f"purge:{name}":
        import signal
        os.kill(os.getpid(), signal.SIGKILL)


def purge_store(lake: "Lake", store_id: str, name: str | None = None) -> None:
    """Delete a store for good, in an order that every crash point leaves recoverable.

    1. `_catalog/purging/<id>.json` is written durably: from here on the store is gone for readers, listings
       and `verify`, and the next vacuum finishes whatever is left (so this is also how a purge resumes);
    2. every catalog name pointing at the store is released (a name never outlives its store);
    3. commit 0 is deleted (`Log.exists` is false: nothing opens the store any more), then every other file,
       data first and the log last, then the folder itself;
    4. the marker goes last.
    Each step is idempotent, so running the whole purge again after a crash at any point completes it."""
    storage = lake.storage
    prefix = f"stores/{store_id}"
    marker = lake._purge_path(store_id)
    if not storage.exists(marker):
        storage.create(marker, orjson.dumps({"id": store_id, "name": name, "started": now_iso()}))
    _step("marked")
    for f in storage.list("_catalog/names"):
        try:
            if storage.read(f.path).decode() == store_id:
                storage.delete(f.path)
        except FileNotFoundError:
            pass
    _step("names")
    storage.delete(f"{prefix}/_log/{0:020d}.json")
    _step("commit0")
    files = storage.list(prefix)
    files.sort(key=lambda f: (f.path.startswith(f"{prefix}/_log/"), f.path))  # the log last
    for n, f in enumerate(files):
        storage.delete(f.path)
        if n == len(files) // 2:
            _step("files")
    _step("files")
    storage.delete_tree(prefix)
    _step("folder")
    storage.delete(marker)
    lake._stores.pop(store_id, None)


def _remnants(lake: "Lake", horizon: float) -> list[str]:
    """Store folders that can never become a store again: a folder without commit 0 that a catalog name points
    at (a purge by an older Lake that crashed), or one whose files (or, locally, the folder itself) are
    older than `horizon` (an empty skeleton, a creation that died before commit 0)."""
    storage = lake.storage
    named: set[str] = set()
    for f in storage.list("_catalog/names"):
        try:
            named.add(storage.read(f.path).decode())
        except FileNotFoundError:
            pass
    out = []
    for sid in storage.list_dirs("stores"):
        if storage.exists(f"stores/{sid}/_log/{0:020d}.json"):
            continue
        listing = storage.list(f"stores/{sid}")
        if sid in named:
            out.append(sid)
        elif listing:
            if max(f.mtime for f in listing) < horizon:
                out.append(sid)
        elif not storage.local or os.path.getmtime(storage.full(f"stores/{sid}")) < horizon:
            out.append(sid)
    for sid in named - set(out):  # a name pointing at a store folder that is not there at all
        if not storage.exists(f"stores/{sid}/_log/{0:020d}.json") and not storage.list(f"stores/{sid}"):
            out.append(sid)
    return out


def vacuum(lake: "Lake", *, store: "Store | None" = None, grace: timedelta = DEFAULT_GRACE,
           dry_run: bool = True, now: datetime | None = None) -> dict:
    """Delete unreferenced files older than the grace period, and stores deleted more than 7 days ago.
    Dry-run by default: the report lists what would be deleted.

    A purge interrupted by a crash (`_catalog/purging/`), and remnants of a store that can never be opened
    again (no commit 0), are finished by every vacuum of the whole lake, whatever the grace period: they are
    already gone for every reader, and `verify` must pass again."""
    stores = [store] if store is not None else lake.stores(include_expired=True)
    files: list[dict] = []
    purged: list[str] = []
    to_purge: list[tuple[str, str | None]] = []
    for st in stores:
        if st.expired_deletion(now):
            purged.append(st.name)
            to_purge.append((st.id, st.name))
            files.extend({"path": f.path, "bytes": f.size, "reason": "store-deleted"}
                         for f in lake.storage.list(st.prefix))
            continue
        files.extend(vacuum_candidates(st, grace=grace, now=now))
    resumed: list[str] = []
    aborted: list[str] = []
    if store is None:
        horizon = ((now or datetime.now(timezone.utc)) - grace).timestamp()
        gone = lake.purging()
        for sid in sorted(gone):  # purges a crash interrupted
            resumed.append(sid)
            to_purge.append((sid, None))
            files.extend({"path": f.path, "bytes": f.size, "reason": "store-deleted"}
                         for f in lake.storage.list(f"stores/{sid}"))
        remnants = set(_remnants(lake, horizon)) - gone
        for sid in sorted(remnants):
            resumed.append(sid)
            to_purge.append((sid, None))
            files.extend({"path": f.path, "bytes": f.size, "reason": "store-remnant"}
                         for f in lake.storage.list(f"stores/{sid}"))
        # store directories whose creation died before the name was claimed
        known = {st.id for st in stores} | gone | remnants
        for sid in lake.storage.list_dirs("stores"):
            if sid in known:
                continue
            listing = lake.storage.list(f"stores/{sid}")
            if listing and max(f.mtime for f in listing) < horizon:
                aborted.append(sid)
                files.extend({"path": f.path, "bytes": f.size, "reason": "aborted-create"} for f in listing)
    if not dry_run:
        purging = {sid for sid, _ in to_purge} | set(aborted)
        for f in files:
            if f["path"].split("/", 2)[1] not in purging:  # purge_store deletes those, in its order
                lake.storage.delete(f["path"])
        for sid, name in to_purge:
            purge_store(lake, sid, name)
        for sid in aborted:
            lake.storage.delete_tree(f"stores/{sid}")
    return {"operation": "vacuum", "dry_run": dry_run, "files": len(files),
            "bytes": sum(f["bytes"] for f in files), "stores_purged": purged, "purges_finished": resumed,
            "details": files}
