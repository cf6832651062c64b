"""`lake verify`: prove that a store's files are exactly what its commits say.

Checks (docs/ARCHITECTURE.md section 9): every commit is canonical and self-checksummed and links to the
previous one; checkpoints match their sidecars and the replayed state; every live segment exists with the
recorded size and SHA-256 and row count; no file under `data/` is unaccounted for; and the number of events
equals the number of distinct (eventid, recipientaccountid) keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from . import segments
from .log import Log, LogError, Snapshot, apply_commit, commit_is_canonical

_CHECKPOINT_SUFFIX = ".checkpoint.parquet"


@dataclass
class Finding:
    kind: str  # tampered | missing | unexpected | chain | checkpoint | duplicates | catalog
    path: str
    message: str

    def as_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "message": self.message}


@dataclass
class StoreReport:
    store: str
    id: str
    version: int = -1
    commits: int = 0
    segments: int = 0
    events: int = 0
    distinct_events: int = 0
    bytes_hashed: int = 0
    events_without_id: int = 0
    orphans: int = 0  # files of aborted writers, declared by an intent: not a finding
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {"store": self.store, "id": self.id, "ok": self.ok, "version": self.version,
                "commits": self.commits, "segments": self.segments, "events": self.events,
                "distinct_events": self.distinct_events,
                "events_without_id": self.events_without_id, "bytes_hashed": self.bytes_hashed,
                "orphans": self.orphans, "findings": [f.as_dict() for f in self.findings]}


def verify_store(lake, store_id: str, progress=None) -> StoreReport:
    """Verify one store by id. Never raises for damage: everything found is a Finding."""
    storage = lake.storage
    prefix = f"stores/{store_id}"
    report = StoreReport(store="?", id=store_id)
    add = report.findings.append
    log_files = {f.path: f for f in storage.list(f"{prefix}/_log")}

    # 1. the chain
    snap: Snapshot | None = None
    committed: set[str] = set()
    v = 0
    states: dict[int, Snapshot] = {}
    while True:
        path = f"{prefix}/_log/{v:020d}.json"
        if path not in log_files:
            break
        raw = storage.read(path)
        if not commit_is_canonical(raw):
            add(Finding("tampered", path, "commit is not in canonical form or its checksum does not match"))
        try:
            commit = orjson.loads(raw)
            snap = apply_commit(snap, commit, raw)
        except (orjson.JSONDecodeError, LogError, KeyError, TypeError, ValueError) as e:
            add(Finding("chain", path, f"commit {v} cannot be applied: {str(e).splitlines()[0]}"))
            break
        for e in commit.get("add") or []:
            committed.add(e["path"])
        if v and v % 100 == 0:
            states[v] = snap
        v += 1
    report.commits = v
    if snap is None:
        add(Finding("missing", f"{prefix}/_log/{0:020d}.json", "the store has no readable commit 0"))
        return report
    report.version = snap.version
    report.store = snap.metadata.get("Name", "?")
    for p in log_files:
        name = p.rsplit("/", 1)[1]
        if name.endswith(".json") and name[:-5].isdigit() and int(name[:-5]) >= v:
            add(Finding("chain", p, f"commit {int(name[:-5])} exists after a gap or a broken link at {v}"))

    # 2. checkpoints
    log = Log(storage, prefix)
    for p in log_files:
        name = p.rsplit("/", 1)[1]
        if name.endswith(_CHECKPOINT_SUFFIX):
            ver = int(name[: -len(_CHECKPOINT_SUFFIX)])
            try:
                cp = log.read_checkpoint(ver)
            except FileNotFoundError:
                add(Finding("checkpoint", p, "checkpoint has no .sha256 sidecar"))
                continue
            except Exception as e:  # noqa: BLE001 - any damage is a finding
                add(Finding("tampered", p, f"checkpoint unreadable or altered: {str(e).splitlines()[0][:200]}"))
                continue
            want = states.get(ver)
            if want is None or cp.head_hash != want.head_hash or cp.metadata != want.metadata or \
                    not cp.segments.equals(want.segments):
                add(Finding("tampered", p, f"checkpoint {ver} differs from the state replayed from the commits"))
        elif name.endswith(".sha256"):
            if p[: -len(".sha256")] not in log_files:
                continue  # sidecar written, checkpoint not (crash): harmless
        elif name == "_last_checkpoint":
            try:
                int(orjson.loads(storage.read(p))["version"])
            except Exception:  # noqa: BLE001
                add(Finding("tampered", p, "the checkpoint hint is not valid"))
        elif not (name.endswith(".json") and name[:-5].isdigit()) and not name.startswith(".tmp-"):
            add(Finding("unexpected", p, "file in _log that the lake did not write"))

    # 3. segments
    live = {e["path"]: e for e in snap.entries()}
    report.segments = len(live)
    keys: set = set()
    part_keys: dict[tuple, set] = {}
    in_partition_dups = 0
    events = 0
    for n, (rel, e) in enumerate(sorted(live.items())):
        full = f"{prefix}/{rel}"
        try:
            digest, size = segments.file_sha256(storage, full)
        except FileNotFoundError:
            add(Finding("missing", full, "segment referenced by the live snapshot is absent"))
            continue
        report.bytes_hashed += size
        if digest != e["sha256"] or size != e["bytes"]:
            add(Finding("tampered", full, f"SHA-256/size differ from the manifest ({size} bytes vs {e['bytes']})"))
            continue
        t = segments.read_segment(storage, prefix, rel, ["eventid", "recipientaccountid"])
        if t.num_rows != e["rows"]:
            add(Finding("tampered", full, f"{t.num_rows} rows, manifest says {e['rows']}"))
        events += t.num_rows
        pk = part_keys.setdefault((e["account"], e["date"]), set())
        for k in zip(t.column("eventid").to_pylist(), t.column("recipientaccountid").to_pylist()):
            if k[0] is None:
                continue  # no eventID: nothing to deduplicate on
            if k in pk:
                in_partition_dups += 1
            pk.add(k)
            keys.add(k)
        report.events_without_id += t.num_rows - len([x for x in t.column("eventid").to_pylist() if x is not None])
        if progress:
            progress(n + 1, len(live))
    report.events = events
    report.distinct_events = len(keys)
    if in_partition_dups:
        add(Finding("duplicates", prefix, f"{in_partition_dups} events repeat an (eventID, recipientAccountId) "
                                          "key within one partition"))

    # 4. files nobody accounts for
    intents = set()
    for f in storage.list(f"{prefix}/_txn"):
        try:
            intents.add(orjson.loads(storage.read(f.path))["txn"])
        except Exception:  # noqa: BLE001
            add(Finding("tampered", f.path, "transaction intent is not valid"))
    for f in storage.list(f"{prefix}/data"):
        rel = f.path[len(prefix) + 1:]
        if rel in live or rel in committed:
            continue  # live, or retired by a commit and waiting for vacuum
        name = rel.rsplit("/", 1)[1]
        txn = name.split("-")[1] if name.startswith("part-") and name.count("-") >= 2 else None
        if txn is not None and txn in intents:
            report.orphans += 1
            continue
        add(Finding("unexpected", f.path, "file under data/ that no commit or transaction intent accounts for"))
    return report


def verify_catalog(lake) -> list[Finding]:
    """Every name in the catalog points at an existing store."""
    out = []
    for f in lake.storage.list("_catalog/names"):
        sid = lake.storage.read(f.path).decode()
        if not lake.storage.exists(f"stores/{sid}/_log/{0:020d}.json"):
            out.append(Finding("catalog", f.path, f"name points at store {sid!r}, which does not exist"))
    return out


def verify(lake, store_ref: str | None = None, progress=None) -> dict:
    """Verify one store (by name/id/ARN) or every store. `ok` is False on any finding."""
    if store_ref:
        ids = [lake.store(store_ref, include_expired=True).id]
        catalog: list[Finding] = []
    else:
        ids = lake.storage.list_dirs("stores")
        catalog = verify_catalog(lake)
    reports = [verify_store(lake, sid, progress) for sid in ids]
    ok = all(r.ok for r in reports) and not catalog
    return {"ok": ok, "stores": [r.as_dict() for r in reports], "catalog": [f.as_dict() for f in catalog]}


__all__ = ["verify", "verify_store", "Finding", "StoreReport"]
