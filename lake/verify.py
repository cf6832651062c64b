"""`lake verify`: prove that a store's files are exactly what its commits say.

Checks (docs/ARCHITECTURE.md section 9): every commit is canonical and self-checksummed and links to the
previous one; checkpoints match their sidecars and the replayed state; every live segment exists with the
recorded size and SHA-256 and row count; no file under `data/` is unaccounted for; and the number of events
equals the number of distinct (eventid, recipientaccountid) keys.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from . import segments
from .errors import InvalidParameter
from .log import (
    Log,
    LogError,
    Snapshot,
    apply_commit,
    commit_is_canonical,
    parse_iso,
    sha256_hex,
)
from .maintenance import DEFAULT_GRACE

log = logging.getLogger("lake.verify")

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
    head: str = ""  # "<version>:<sha256>" of the newest commit: record it, check later with --expect-head
    anchor: str = "none"  # what outside the lake the chain was checked against (see Anchors)
    signed_version: int = -1  # newest version whose head carries a trusted signature
    retired_checked: int = 0  # retired segments still referenced whose SHA-256 was checked
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def as_dict(self) -> dict:
        return {"store": self.store, "id": self.id, "ok": self.ok, "version": self.version,
                "commits": self.commits, "segments": self.segments, "events": self.events,
                "distinct_events": self.distinct_events,
                "events_without_id": self.events_without_id, "bytes_hashed": self.bytes_hashed,
                "orphans": self.orphans, "head": self.head, "anchor": self.anchor,
                "signed_version": self.signed_version, "retired_checked": self.retired_checked,
                "findings": [f.as_dict() for f in self.findings]}


@dataclass
class Anchors:
    """What a store is checked against beyond its own files (docs/security.md, "anchors").

    - `trusted`: chain-head public keys held elsewhere (`--trusted-key`): the newest commit must carry a valid
      signature by one of them, and no signed head may disagree with the chain. Without `--trusted-key`, the
      local key store's head keys are used when this machine has them; a store whose head that key store
      never signed (made before heads were signed) is then not required to carry a signature.
    - `strict`: heads must be signed (True with `--trusted-key`, or when the key store recorded a head).
    - `expect`: heads the caller recorded elsewhere (`--expect-head`): per store id or name (None = any
      store), (version or None, hash); the chain must reach each.
    - `keystore`: the local key store (lake/keys.py), whose record of the newest head it signed per store
      must be reached by the chain: a rewritten or truncated history cannot reach it.
    - `grace` / `now` / `undelivered`: which retired segments are still referenced (vacuum's grace period;
      the oldest commit each store's trails have not delivered yet).
    """

    trusted: dict[str, Any] = field(default_factory=dict)
    strict: bool = False
    expect: dict[str | None, list[tuple[int | None, str]]] = field(default_factory=dict)
    keystore: Any = None
    grace: timedelta = DEFAULT_GRACE
    now: datetime | None = None
    undelivered: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, lake: Any, trusted_key: str | None = None, expect_heads: list[str] | None = None,
             grace: timedelta = DEFAULT_GRACE, now: datetime | None = None) -> Anchors:
        """Anchors from the CLI's options; LakeError with one line for a malformed option."""
        from .keys import key_dir_for, keyring_for_storage, load_trusted_head_keys

        a = cls(grace=grace, now=now)
        if trusted_key:
            try:
                a.trusted = load_trusted_head_keys(trusted_key)
            except (ValueError, OSError) as e:
                raise InvalidParameter(str(e).splitlines()[0]) from None
            a.strict = True
        if os.path.isdir(key_dir_for(lake.storage)):
            a.keystore = keyring_for_storage(lake.storage)
            if not trusted_key:
                try:
                    a.trusted = a.keystore.head_public_keys()
                except (ValueError, OSError):
                    a.trusted = {}
        for spec in expect_heads or []:
            store, _, head = spec.rpartition("=")
            version_s, _, digest = head.rpartition(":")
            digest = digest.strip().lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest) or \
                    (version_s and not version_s.isdigit()):
                raise InvalidParameter(f"--expect-head {spec!r}: use [STORE=][VERSION:]SHA256 (64 hex digits), "
                                       "as `lake verify` prints it")
            a.expect.setdefault(store or None, []).append((int(version_s) if version_s else None, digest))
        try:
            from .delivery import undelivered_from

            a.undelivered = undelivered_from(lake)
        except Exception as e:  # noqa: BLE001 - a broken trail state must not stop verification
            log.warning("could not read the trails' delivery cursors: %s", str(e).splitlines()[0] if str(e) else e)
        return a


def _check_retired(storage, prefix: str, report: StoreReport, live: dict, added: dict, retired_at: dict,
                   anchors: Anchors) -> None:
    """Retired segments that a reader may still use must still be what their manifest entry says: those a
    snapshot within vacuum's grace period references (a query or export that started before the retiring
    commit), and those a trail has not delivered yet (delivery reads every added segment, retired or not)."""
    now = anchors.now or datetime.now(timezone.utc)
    horizon = now - anchors.grace
    store_id = prefix.rsplit("/", 1)[-1]
    first_undelivered = anchors.undelivered.get(store_id)
    for rel, ts in sorted(retired_at.items()):
        if rel in live or rel not in added:
            continue
        version, entry = added[rel]
        why = []
        try:
            if ts is not None and parse_iso(ts) >= horizon:
                why.append(f"snapshots within the {anchors.grace.days}-day vacuum grace period")
        except ValueError:
            why.append("snapshots within the vacuum grace period")
        if first_undelivered is not None and version >= first_undelivered:
            why.append("a trail that has not delivered it yet")
        if not why:
            continue
        full = f"{prefix}/{rel}"
        try:
            digest, size = segments.file_sha256(storage, full)
        except FileNotFoundError:
            continue  # vacuum may delete retired files with a shorter grace; a reader then fails loudly
        report.retired_checked += 1
        report.bytes_hashed += size
        if digest != entry["sha256"] or size != entry["bytes"]:
            report.findings.append(Finding(
                "tampered", full, f"retired segment still referenced by {' and '.join(why)}: SHA-256/size differ "
                                  f"from the manifest of commit {version} ({size} bytes vs {entry['bytes']})"))


def _check_anchors(storage, prefix: str, store_id: str, report: StoreReport, hashes: dict[int, str],
                   anchors: Anchors) -> None:
    """The store's chain against what is held outside the lake: signed heads, the key store's record of the
    newest head it signed, and heads the caller expects."""
    from .keys import verify_head

    head_v = max(hashes) if hashes else -1
    add = report.findings.append
    checked: list[str] = []
    recorded = anchors.keystore.recorded_head(store_id) if anchors.keystore is not None else None
    if recorded is not None:
        checked.append("key store record")
        v, h = recorded
        if hashes.get(v) != h:
            add(Finding("chain", f"{prefix}/_log/{v:020d}.json",
                        f"the chain does not reach commit {v}:{h}, the newest head this lake's key store signed: "
                        + ("the commits were rewritten" if v in hashes else "history was truncated")))
    if anchors.trusted:
        strict = anchors.strict or recorded is not None
        checked.append("trusted key" if anchors.strict else "key store keys")
        matched: set[int] = set()
        conflicts: dict[int, str] = {}
        for f in storage.list(f"{prefix}/_heads"):
            name = f.path.rsplit("/", 1)[-1]
            version_s, _, rest = name.partition("-")
            if not (version_s.isdigit() and rest.endswith(".json")):
                continue
            try:
                rec = orjson.loads(storage.read(f.path))
            except (FileNotFoundError, orjson.JSONDecodeError):
                continue
            if not isinstance(rec, dict) or rec.get("store") != store_id or rec.get("version") != int(version_s) \
                    or rec.get("hash") != rest[:-5]:
                continue  # not a head of this store at this place: never trusted
            if rec.get("fingerprint") in anchors.trusted and not verify_head(rec, anchors.trusted):
                add(Finding("tampered", f.path, "signed head whose signature by a trusted key does not verify"))
                continue
            if not verify_head(rec, anchors.trusted):
                continue  # signed by a key we do not trust: proves nothing
            v = rec["version"]
            if hashes.get(v) == rec["hash"]:
                matched.add(v)
            elif v in hashes:
                conflicts[v] = rec["hash"]
        for v in sorted(set(conflicts) - matched):
            add(Finding("chain", f"{prefix}/_log/{v:020d}.json",
                        f"commit {v} is not the commit the key store signed ({conflicts[v][:16]}...): the history "
                        "was rewritten"))
        report.signed_version = max(matched) if matched else -1
        if strict and head_v >= 0 and head_v not in matched:
            add(Finding("chain", f"{prefix}/_log/{head_v:020d}.json",
                        f"the newest commit {head_v} carries no signature by a trusted key (newest signed: "
                        f"{report.signed_version}): commits after it were added or rewritten without the key "
                        "(or by a process with another key store: see docs/security.md, several writers)"))
    for ref in (None, store_id, report.store):
        for v, h in anchors.expect.get(ref, []):
            checked.append("expected head")
            if v is not None and hashes.get(v) != h:
                add(Finding("chain", f"{prefix}/_log/{v:020d}.json",
                            f"expected head {v}:{h} not reached: commit {v} "
                            + ("differs: the history was rewritten" if v in hashes else
                               f"does not exist (head is {head_v}): the history was truncated")))
            elif v is None and h not in hashes.values():
                add(Finding("chain", prefix, f"expected head {h} is not in the chain: the history was rewritten "
                                             "or truncated"))
    report.anchor = ", ".join(dict.fromkeys(checked)) or "none"


def verify_store(lake, store_id: str, progress=None, anchors: Anchors | None = None) -> StoreReport:
    """Verify one store by id. Never raises for damage: everything found is a Finding. `anchors` says what
    outside the store's own files to check it against (default: the local key store, if any)."""
    anchors = anchors if anchors is not None else Anchors.load(lake)
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
    hashes: dict[int, str] = {}                 # version -> SHA-256 of the commit (the chain head at v)
    added: dict[str, tuple[int, dict]] = {}    # segment path -> (commit that added it, its manifest entry)
    retired_at: dict[str, str | None] = {}     # segment path -> timestamp of the commit that retired it
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
        hashes[v] = snap.head_hash
        if commit.get("txn"):
            committed_txns.add(commit["txn"])
        for p in commit.get("remove") or []:
            retired_at[p] = commit.get("timestamp")
        for e in commit.get("add") or []:
            committed.add(e["path"])
            added[e["path"]] = (v, e)
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
    report.head = f"{snap.version}:{snap.head_hash}"
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

    # 3b. retired segments that something may still read
    _check_retired(storage, prefix, report, live, added, retired_at, anchors)

    # 4. anchors: signed heads, the key store's record, heads the caller expects
    _check_anchors(storage, prefix, store_id, report, hashes, anchors)

    # 5. files nobody accounts for
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


def verify(lake, store_ref: str | None = None, progress=None, *, trusted_key: str | None = None,
           expect_heads: list[str] | None = None, grace: timedelta = DEFAULT_GRACE) -> dict:
    """Verify one store (by name/id/ARN) or every store. `ok` is False on any finding. `trusted_key` (a PEM
    file or a directory of them) and `expect_heads` (`[STORE=][VERSION:]SHA256`) anchor the check outside
    the lake (see Anchors)."""
    anchors = Anchors.load(lake, trusted_key, expect_heads, grace)
    if expect_heads and not store_ref and None in anchors.expect and len(lake.storage.list_dirs("stores")) > 1:
        raise InvalidParameter("--expect-head without STORE= needs --store when the lake has more than one store")
    if store_ref:
        ids = [lake.store(store_ref, include_expired=True).id]
        catalog: list[Finding] = []
    else:
        gone = lake.purging()  # a purge that began (and maybe crashed) has deleted the store: vacuum ends it
        ids = [sid for sid in lake.storage.list_dirs("stores") if sid not in gone]
        catalog = verify_catalog(lake)
    reports = [verify_store(lake, sid, progress, anchors) for sid in ids]
    ok = all(r.ok for r in reports) and not catalog
    return {"ok": ok, "stores": [r.as_dict() for r in reports], "catalog": [f.as_dict() for f in catalog]}


__all__ = ["verify", "verify_store", "Finding", "StoreReport", "Anchors"]
