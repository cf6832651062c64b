"""The transaction log of one event data store: create-only commits, a hash chain, checkpoints, snapshots.

See docs/ARCHITECTURE.md section 4. A snapshot is (version, metadata, live segment table). The segment
table is an Arrow table rather than Python objects so that opening and pruning a store with 100,000
segments is a Parquet read and a vectorised filter, not a loop.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import bloom
from .schema import STAT_COLUMNS, TIMESTAMP
from .storage import Storage

CHECKPOINT_INTERVAL = 100
MAX_ATTEMPTS = 50
VERSION_DIGITS = 20

SEGMENT_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("rows", pa.int64()),
    ("bytes", pa.int64()),
    ("sha256", pa.string()),
    ("account", pa.string()),
    ("date", pa.string()),
    ("eventtime_min", TIMESTAMP),
    ("eventtime_max", TIMESTAMP),
    ("version", pa.int64()),  # the commit that added the segment
    ("eventid_bloom", pa.binary()),  # Bloom filter of the segment's eventIDs (lake/bloom.py); null = none
    *[item for c in STAT_COLUMNS for item in (
        (f"{c}_min", pa.string()), (f"{c}_max", pa.string()), (f"{c}_values", pa.list_(pa.string())))],
])


HEADS_DIR = "_heads"  # stores/<id>/_heads/<version>-<sha256>.json: chain heads signed by the key store


def head_signer(storage: Storage) -> Any:
    """The key store that signs this lake's chain heads (lake/keys.py), or None when `$LAKE_SIGN_HEADS=0`
    turns the anchor off. Cached on the storage object: a commit costs one Ed25519 signature (~50 us) and
    one small create-only write."""
    if os.environ.get("LAKE_SIGN_HEADS", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    ring = getattr(storage, "_head_keyring", None)
    if ring is None:
        from .keys import keyring_for_storage  # late: keys imports the API layer

        ring = keyring_for_storage(storage)
        try:
            storage._head_keyring = ring
        except AttributeError:  # pragma: no cover - a storage with __slots__
            pass
    return ring


class LogError(RuntimeError):
    """The log cannot be read as a valid chain (corrupt or tampered commit)."""


class CommitConflict(RuntimeError):
    """A commit could not be made after MAX_ATTEMPTS tries because other writers kept winning."""


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    return datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z") if "." in value \
        else datetime.strptime(value.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S%z")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Snapshot:
    """One consistent state of a store: everything a reader needs, and nothing that can change under it."""

    version: int
    metadata: dict
    segments: pa.Table
    head_hash: str

    @property
    def rows(self) -> int:
        return int(pc.sum(self.segments.column("rows")).as_py() or 0)

    @property
    def bytes(self) -> int:
        return int(pc.sum(self.segments.column("bytes")).as_py() or 0)

    def paths(self) -> list[str]:
        return self.segments.column("path").to_pylist()

    def entries(self) -> list[dict]:
        return self.segments.to_pylist()


def _ts(value: Any):
    if value is None or isinstance(value, datetime):
        return value
    return parse_iso(value) if isinstance(value, str) else value


def entries_to_table(entries: list[dict], version: int) -> pa.Table:
    """Segment entries as they appear in a commit file -> rows of SEGMENT_SCHEMA."""
    rows = []
    for e in entries:
        row = {k: e.get(k) for k in ("path", "rows", "bytes", "sha256", "account", "date")}
        row["eventtime_min"] = _ts(e.get("eventtime_min"))
        row["eventtime_max"] = _ts(e.get("eventtime_max"))
        row["version"] = version
        row["eventid_bloom"] = bloom.decode(e.get("eventid_bloom"))
        stats = e.get("stats") or {}
        for c in STAT_COLUMNS:
            s = stats.get(c) or {}
            row[f"{c}_min"], row[f"{c}_max"], row[f"{c}_values"] = s.get("min"), s.get("max"), s.get("values")
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SEGMENT_SCHEMA)


@dataclass
class Log:
    """The `_log/` directory of one store."""

    storage: Storage
    prefix: str  # "stores/<id>"
    _cache: Snapshot | None = field(default=None, repr=False)

    # -- paths ----------------------------------------------------------------------------------------
    def commit_path(self, version: int) -> str:
        return f"{self.prefix}/_log/{version:0{VERSION_DIGITS}d}.json"

    def checkpoint_path(self, version: int) -> str:
        return f"{self.prefix}/_log/{version:0{VERSION_DIGITS}d}.checkpoint.parquet"

    @property
    def hint_path(self) -> str:
        return f"{self.prefix}/_log/_last_checkpoint"

    @property
    def store_id(self) -> str:
        return self.prefix.rsplit("/", 1)[-1]

    def head_path(self, version: int, head_hash: str) -> str:
        """The signed head of commit `version` whose SHA-256 is `head_hash` (lake/keys.py signs it)."""
        return f"{self.prefix}/{HEADS_DIR}/{version:0{VERSION_DIGITS}d}-{head_hash}.json"

    # -- reading --------------------------------------------------------------------------------------
    def read_commit(self, version: int) -> tuple[dict, bytes] | None:
        try:
            raw = self.storage.read(self.commit_path(version))
        except FileNotFoundError:
            return None
        try:
            return orjson.loads(raw), raw
        except orjson.JSONDecodeError as e:
            raise LogError(f"{self.storage.uri_of(self.commit_path(version))}: commit is not valid JSON ({e}); "
                           "run `lake verify` to see what else is damaged") from None

    def exists(self) -> bool:
        return self.storage.exists(self.commit_path(0))

    def load(self, refresh: bool = True) -> Snapshot:
        """The latest snapshot. Cached snapshots are advanced with the commits written since."""
        snap = self._cache
        if snap is None:
            snap = self._load_checkpoint()
        elif not refresh:
            return snap
        snap = self._advance(snap)
        self._cache = snap
        return snap

    def _load_checkpoint(self) -> Snapshot | None:
        start = 0
        try:
            start = int(orjson.loads(self.storage.read(self.hint_path))["version"])
        except (FileNotFoundError, KeyError, ValueError, TypeError, orjson.JSONDecodeError):
            start = 0
        # The hint may lag (a writer died before updating it): look for later checkpoints cheaply.
        while self.storage.exists(self.checkpoint_path(start + CHECKPOINT_INTERVAL)):
            start += CHECKPOINT_INTERVAL
        while start > 0:
            try:
                return self.read_checkpoint(start)
            except (FileNotFoundError, OSError, pa.ArrowException, KeyError, ValueError, LogError):
                start -= CHECKPOINT_INTERVAL
        return None

    def read_checkpoint(self, version: int) -> Snapshot:
        """Load a checkpoint, refusing one whose bytes do not match its SHA-256 sidecar."""
        path = self.checkpoint_path(version)
        data = self.storage.read(path)
        if self.storage.read(path + ".sha256").decode().strip() != sha256_hex(data):
            raise LogError(f"{self.storage.uri_of(path)} does not match its .sha256 sidecar")
        from .segments import (
            arrow_owned,  # never a Python-owned buffer (SIGABRT at exit; see there)
        )
        table = pq.read_table(pa.BufferReader(arrow_owned(data)))
        meta = table.schema.metadata or {}
        table = table.replace_schema_metadata(None)
        for f in SEGMENT_SCHEMA:  # checkpoints written before a column existed: the column is null there
            if f.name not in table.column_names:
                table = table.append_column(f, pa.nulls(table.num_rows, f.type))
        snap = Snapshot(int(meta[b"lake.version"]), orjson.loads(meta[b"lake.metadata"]),
                        table.select(SEGMENT_SCHEMA.names).cast(SEGMENT_SCHEMA), meta[b"lake.hash"].decode())
        if snap.version != version:
            raise LogError(f"checkpoint {version} says it is version {snap.version}")
        return snap

    def _advance(self, snap: Snapshot | None) -> Snapshot:
        version = -1 if snap is None else snap.version
        while True:
            got = self.read_commit(version + 1)
            if got is None:
                break
            commit, raw = got
            snap = apply_commit(snap, commit, raw)
            version += 1
        if snap is None:
            raise FileNotFoundError(f"no event data store at {self.storage.uri_of(self.prefix)}")
        if snap.segments.num_rows and snap.segments.column(0).num_chunks > 1:
            # One contiguous table per loaded version: every query prunes over it (Bloom filters are read
            # in place), and per-chunk work would grow with the number of commits since the checkpoint.
            snap = Snapshot(snap.version, snap.metadata, snap.segments.combine_chunks(), snap.head_hash)
        return snap

    def commits(self, start: int = 0):
        """Yield (version, commit, raw bytes) from `start` until the first missing version."""
        v = start
        while True:
            got = self.read_commit(v)
            if got is None:
                return
            yield v, got[0], got[1]
            v += 1

    # -- writing --------------------------------------------------------------------------------------
    def try_commit(self, snap: Snapshot | None, operation: str, *, add: list[dict] | None = None,
                   remove: list[str] | None = None, metadata: dict | None = None, info: dict | None = None,
                   txn: str | None = None) -> Snapshot | None:
        """Create commit snap.version+1; return the new snapshot, or None if another writer took it."""
        version = 0 if snap is None else snap.version + 1
        body: dict[str, Any] = {
            "version": version, "timestamp": now_iso(), "operation": operation, "txn": txn,
            "prev": None if snap is None else snap.head_hash,
        }
        if metadata is not None:
            body["metadata"] = metadata
        body["add"] = add or []
        body["remove"] = remove or []
        body["info"] = info or {}
        raw = encode_commit(body)
        signer = head_signer(self.storage)
        head_hash = sha256_hex(raw)
        if signer is not None:
            # Signed before the commit exists, so no crash can leave a head unsigned. A writer that loses the
            # race for this version leaves a signature of a head that never was: verify ignores those.
            try:
                record = signer.head_signer().sign_head(self.store_id, version, head_hash)
            except OSError as e:
                from .errors import LakeError

                raise LakeError(f"cannot use the key store {signer.key_dir} to sign commit {version}: "
                                f"{e.strerror or e}; set LAKE_KEY_DIR to a directory this user owns "
                                "(docs/security.md)") from None
            self.storage.create(self.head_path(version, head_hash), orjson.dumps(record))
        if not self.storage.create(self.commit_path(version), raw):
            return None
        if signer is not None:
            try:
                signer.record_head(self.store_id, version, head_hash)
            except OSError:  # the record is a hint that only strengthens verify; the commit stands
                pass
        new = apply_commit(snap, body, raw)
        self._cache = new
        if version and version % CHECKPOINT_INTERVAL == 0:
            self.write_checkpoint(new)
        return new

    def commit(self, operation: str, build: Callable[[Snapshot], dict | None]) -> tuple[Snapshot, dict | None]:
        """Optimistic commit loop: `build(snapshot)` returns the commit's parts (add/remove/metadata/info/txn)
        or None when there is nothing to do; it is called again on the newer snapshot after a conflict."""
        delay = 0.005
        for _ in range(MAX_ATTEMPTS):
            snap = self.load()
            parts = build(snap)
            if parts is None:
                return snap, None
            new = self.try_commit(snap, operation, **parts)
            if new is not None:
                return new, parts
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 0.5)
        raise CommitConflict(f"{self.storage.uri_of(self.prefix)}: gave up after {MAX_ATTEMPTS} conflicting "
                             "commits; too many concurrent writers, retry later")

    def write_checkpoint(self, snap: Snapshot) -> None:
        """Write the checkpoint's SHA-256 sidecar first, then the checkpoint: a checkpoint without a
        matching sidecar is never trusted, so a crash between the two is harmless."""
        table = snap.segments.replace_schema_metadata({
            "lake.version": str(snap.version), "lake.hash": snap.head_hash,
            "lake.metadata": orjson.dumps(snap.metadata).decode()})
        buf = io.BytesIO()
        pq.write_table(table, buf, compression="zstd")
        data = buf.getvalue()
        try:
            self.storage.create(self.checkpoint_path(snap.version) + ".sha256", sha256_hex(data).encode())
            self.storage.create(self.checkpoint_path(snap.version), data)
            self.storage.write(self.hint_path, orjson.dumps({"version": snap.version}))
        except OSError:
            pass  # a checkpoint is an optimisation; the commits remain the truth


def check_segment_bytes(storage: Storage, path: str, data: bytes, entry: dict) -> None:
    """Raise SegmentIntegrityError (one line) unless `data` are the bytes `entry` (a manifest entry) records."""
    from .errors import SegmentIntegrityError

    digest = sha256_hex(data)
    if digest != entry.get("sha256") or len(data) != entry.get("bytes"):
        raise SegmentIntegrityError(
            f"segment {storage.uri_of(path)} does not match its manifest entry (SHA-256 {digest[:16]}..., "
            f"{len(data)} bytes; manifest {str(entry.get('sha256'))[:16]}..., {entry.get('bytes')} bytes): "
            "stopped, nothing written; run `lake verify`")


def read_verified_segment(storage: Storage, prefix: str, entry: dict, columns: list[str] | None = None) -> pa.Table:
    """A segment's rows, from bytes checked against its manifest entry first (the bytes hashed are the bytes
    parsed). For writers that turn stored events into new, freshly hashed segments (compaction, retention):
    without the check they would launder a changed segment into one that verifies."""
    path = f"{prefix}/{entry['path']}"
    data = storage.read(path)
    check_segment_bytes(storage, path, data, entry)
    return pq.read_table(pa.BufferReader(data), columns=columns)


def encode_commit(body: dict) -> bytes:
    """The canonical bytes of a commit: sorted keys, 2-space indent, and a `checksum` of the rest.

    Because the form is canonical, `lake verify` can detect a change to any byte of any commit, the
    newest included (which no later `prev` link protects yet)."""
    body = {k: v for k, v in body.items() if k != "checksum"}
    opts = orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2
    body["checksum"] = sha256_hex(orjson.dumps(body, option=opts))
    return orjson.dumps(body, option=opts)


def commit_is_canonical(raw: bytes) -> bool:
    """True if `raw` is exactly what encode_commit writes for its own content."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return isinstance(body, dict) and "checksum" in body and encode_commit(body) == raw and \
        body["checksum"] == sha256_hex(orjson.dumps({k: v for k, v in body.items() if k != "checksum"},
                                                    option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2))


def apply_commit(snap: Snapshot | None, commit: dict, raw: bytes) -> Snapshot:
    """The snapshot after one commit. Checks the commit's version and chain link."""
    version = commit.get("version")
    expected = 0 if snap is None else snap.version + 1
    if version != expected:
        raise LogError(f"commit {expected} says it is version {version}")
    if snap is not None and commit.get("prev") != snap.head_hash:
        raise LogError(f"commit {expected} does not chain to commit {snap.version} (hash mismatch); "
                       "the log was altered: run `lake verify`")
    segments = SEGMENT_SCHEMA.empty_table() if snap is None else snap.segments
    metadata = {} if snap is None else snap.metadata
    removes = commit.get("remove") or []
    if removes:
        keep = pc.invert(pc.is_in(segments.column("path"), value_set=pa.array(removes, pa.string())))
        segments = segments.filter(keep)
    adds = commit.get("add") or []
    if adds:
        segments = pa.concat_tables([segments, entries_to_table(adds, version)])
        if segments.column(0).num_chunks > 32:  # keep filters over the segment table vectorised
            segments = segments.combine_chunks()
    if "metadata" in commit:
        metadata = commit["metadata"]
    return Snapshot(version, metadata, segments, sha256_hex(raw))
