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
from .log import Log, LogError, Snapshot, apply_commit, commit_is_canonical, sha256_hex

_CHECKPOINT_SUFFIX = ".checkpoint.parquet"


def _txn_of(rel: str) -> str | None:
    """The writer's txn id in a segment name `.../part-<txn>-<n>.parquet`, else None."""
    name = rel.rsplit("/", 1)[-1]
    return name.split("-")[1] if name.startswith("part-") and name.count("-") >= 2 else None


def _checkpoint_version(name: str) -> int | None:
    """The version of a file named `<digits>.checkpoint.parquet`, else None."""
    stem = name[: -len(_CHECKPOINT_SUFFIX)] if name.endswith(_CHECKPOINT_SUFFIX) else ""
    return int(stem) if stem.isdigit() else None


def _same_state(cp: Snapshot, want: Snapshot | None) -> bool:
    return want is not None and cp.version == want.version and cp.head_hash == want.head_hash and \
        cp.metadata == want.metadata and cp.segments.equals(want.segments)


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
    # versions that have a checkpoint file (whatever the checkpoint interval was when they were written)
    cp_versions = {ver for ver in (_checkpoint_version(p.rsplit("/", 1)[1]) for p in log_files) if ver is not None}

    # 1. the chain
    snap: Snapshot | None = None
    committed: set[str] = set()
    committed_txns: set[str] = set()
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
        if commit.get("txn"):
            committed_txns.add(commit["txn"])
        for e in commit.get("add") or []:
            committed.add(e["path"])
            if _txn_of(e["path"]):
                committed_txns.add(_txn_of(e["path"]))
        if v in cp_versions:
            states[v] = snap
        v += 1
    report.commits = v
    if snap is None:
        add(Finding("missing", f"{prefix}/_log/{0:020d}.json", "the store has no readable commit 0"))
        return report
    report.version = snap.version
    report.store = snap.metadata.get("Name", "?")
    later = [p for p in log_files if p.endswith(".json") and p.rsplit("/", 1)[1][:-5].isdigit()
             and int(p.rsplit("/", 1)[1][:-5]) >= v]
    gap = f"{prefix}/_log/{v:020d}.json"
    if later and gap not in log_files:
        add(Finding("missing", gap, f"commit {v} is absent but later commits exist"))
    for p in later:
        name = p.rsplit("/", 1)[1]
        if p != gap:
            add(Finding("chain", p, f"commit {int(name[:-5])} exists after a gap or a broken link at {v}"))

    # 2. checkpoints
    log = Log(storage, prefix)
    for p in log_files:
        name = p.rsplit("/", 1)[1]
        if name.endswith(_CHECKPOINT_SUFFIX):
            ver = _checkpoint_version(name)
            if ver is None:
                add(Finding("unexpected", p, "file in _log that the lake did not write"))
                continue
            side = p + ".sha256"
            if side not in log_files:
                add(Finding("checkpoint", p, "checkpoint has no .sha256 sidecar"))
                continue
            data = storage.read(p)
            side_raw = storage.read(side)
            digest = sha256_hex(data).encode()
            if side_raw.strip() != digest:
                # One of the two files was altered. A sidecar that differs from the checkpoint's actual hash
                # in a few characters was edited (a changed checkpoint would have an unrelated hash).
                near = sum(a != b for a, b in zip(side_raw, digest)) + abs(len(side_raw) - len(digest)) <= 8
                if near:
                    add(Finding("tampered", side, f"sidecar differs in a few characters from the SHA-256 of {name}: "
                                                  "the sidecar was altered"))
                else:
                    add(Finding("tampered", p, f"checkpoint does not match its sidecar {name}.sha256: the "
                                               "checkpoint (or the whole sidecar) was altered"))
                continue
            try:
                cp = log.read_checkpoint(ver)
            except Exception as e:  # noqa: BLE001 - any damage is a finding
                add(Finding("tampered", p, f"checkpoint unreadable or altered: {str(e).splitlines()[0][:200]}"))
                continue
            if not _same_state(cp, states.get(ver)):
                add(Finding("tampered", p, f"checkpoint {ver} differs from the state replayed from the commits"))
        elif name.endswith(".sha256"):
            base = p[: -len(".sha256")]
            if _checkpoint_version(base.rsplit("/", 1)[1]) is None:
                add(Finding("unexpected", p, "file in _log that the lake did not write"))
            # a sidecar whose checkpoint was never written (crash between the two) is harmless
        elif name == "_last_checkpoint":
            try:
                hint = orjson.loads(storage.read(p))
                hv = hint["version"]
                valid = hint == {"version": hv} and type(hv) is int and hv in cp_versions
            except Exception:  # noqa: BLE001
                valid = False
            if not valid:
                add(Finding("tampered", p, "the checkpoint hint is not valid or names no existing checkpoint"))
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
        txn = _txn_of(rel)
        if txn is not None and txn in intents and txn not in committed_txns:
            report.orphans += 1  # written by a writer that never committed
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
