"""`lake verify` (docs/ARCHITECTURE.md section 9): a clean store verifies; one changed byte in any file the lake
relies on (segment, commit - the newest included -, checkpoint, checkpoint sidecar, checkpoint hint), a
deleted segment or commit, or an added segment is a finding that names the file; orphans of aborted writers
are not findings; the CLI exits 1 on a finding and 0 when clean.

Every tamper test restores the file and checks that the store verifies again, so a finding is caused by the
change and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from click.testing import CliRunner

import lake
from lake import log as lake_log
from lake import maintenance
from lake.cli import cli
from lake.generate import record
from lake.verify import verify

from conftest import sample_records

POSITIONS = ("start", "middle", "end")
STORE = "verify-me"


# -- helpers -----------------------------------------------------------------------------------------------

def build(uri: str, *, batches: int = 4, per_batch: int = 25, seed: int = 0, records=None,
          retention_days: int = 3653, days: int = 1, accounts: int = 2):
    """A lake with one store filled by `batches` imports (one commit each) of events of 2 accounts."""
    lk = lake.connect(uri)
    st = lk.create_store(STORE, retention_days=retention_days)
    recs = records if records is not None else sample_records(batches * per_batch, seed=seed, days=days,
                                                                       accounts=accounts)
    size = -(-len(recs) // batches)
    for i in range(batches):
        r = st.append(recs[i * size:(i + 1) * size], source="import")
        assert not r.rejected
    return lk, st


def index(data: bytes, pos: str) -> int:
    return {"start": 0, "middle": len(data) // 2, "end": len(data) - 1}[pos]


@contextlib.contextmanager
def flipped(storage, path: str, pos: str, mask: int = 0x01):
    """Change exactly one byte of `path` (XOR `mask` at start/middle/end), restore it afterwards."""
    orig = storage.read(path)
    data = bytearray(orig)
    i = index(orig, pos)
    data[i] ^= mask
    assert bytes(data) != orig and len(data) == len(orig)
    storage.write(path, bytes(data))
    try:
        yield i
    finally:
        storage.write(path, orig)


def findings(result: dict) -> list[dict]:
    return [f for s in result["stores"] for f in s["findings"]] + list(result["catalog"])


def assert_named(lk, path: str, kinds: tuple[str, ...] | None = None) -> list[dict]:
    """verify fails and one finding names `path` (of one of `kinds`, when given)."""
    result = verify(lk)
    fs = findings(result)
    assert result["ok"] is False
    hit = [f for f in fs if f["path"] == path]
    assert hit, f"no finding names {path}: {fs}"
    if kinds:
        assert any(f["kind"] in kinds for f in hit), hit
    return fs


def assert_clean(lk) -> dict:
    result = verify(lk)
    assert result["ok"], findings(result)
    assert findings(result) == []
    return result


def commit_paths(st) -> list[str]:
    return [st.log.commit_path(v) for v in range(st.snapshot().version + 1)]


def seg_paths(st) -> list[str]:
    return [f"{st.prefix}/{p}" for p in st.snapshot().paths()]


def data_files(lk, st) -> list[str]:
    return [f.path for f in lk.storage.list(f"{st.prefix}/data")]


@pytest.fixture
def small_checkpoints(monkeypatch):
    """Checkpoints every 3 versions, so a handful of appends produce checkpoints 3 and 6."""
    monkeypatch.setattr(lake_log, "CHECKPOINT_INTERVAL", 3)


# -- clean stores ----------------------------------------------------------------------------------------

def test_clean_store_verifies_ok(lake_uri, small_checkpoints):
    lk, st = build(lake_uri, batches=6, per_batch=20, accounts=1)
    snap = st.snapshot()
    assert snap.version == 6
    names = {f.path.rsplit("/", 1)[1] for f in lk.storage.list(f"{st.prefix}/_log")}
    assert {"00000000000000000003.checkpoint.parquet", "00000000000000000006.checkpoint.parquet",
            "00000000000000000006.checkpoint.parquet.sha256", "_last_checkpoint"} <= names
    result = assert_clean(lk)
    rep = result["stores"][0]
    assert rep["ok"] and rep["store"] == STORE and rep["version"] == 6 and rep["commits"] == 7
    assert rep["events"] == rep["distinct_events"] == 120
    assert rep["segments"] == snap.segments.num_rows and rep["orphans"] == 0
    assert rep["bytes_hashed"] == snap.bytes
    # by name, id and ARN too
    for ref in (STORE,) if lake_uri.startswith("s3://") else (STORE, st.id, st.arn):
        assert verify(lk, ref)["ok"]


def _timed(times, seed):
    rng = random.Random(seed)
    out = []
    for t in times:
        r = record(rng, t, "111111111111", "us-east-1")
        r["eventTime"] = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(r)
    return out


def test_clean_after_compaction_retention_and_vacuum(lake_uri, small_checkpoints):
    now = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
    lk = lake.connect(lake_uri)
    st = lk.create_store(STORE, retention_days=7)
    # events from 9 days ago to now, in 5 imports: after retention at now+2d, segments are dropped,
    # rewritten (straddling the cutoff) and kept.
    for b in range(5):
        times = [now - timedelta(days=6.9) + timedelta(hours=30 * b + 4 * i) for i in range(8)]
        assert st.append(_timed(times, seed=b), source="import", now=now).appended == 8
    assert_clean(lk)
    rep = maintenance.compact(st)
    assert rep["segments_in"] > rep["segments_out"] > 0
    assert_clean(lk)
    rep = maintenance.retention(st, now=now + timedelta(days=2), dry_run=False)
    assert rep["segments_dropped"] and rep["segments_rewritten"] and rep["events_removed"]
    assert_clean(lk)
    rep = maintenance.vacuum(lk, dry_run=False, now=datetime.now(timezone.utc) + timedelta(days=8))
    assert rep["files"] > 0
    result = assert_clean(lk)
    assert result["stores"][0]["orphans"] == 0
    assert sorted(data_files(lk, st)) == sorted(seg_paths(st))


# -- one changed byte ------------------------------------------------------------------------------------

@pytest.mark.parametrize("pos", POSITIONS)
def test_any_segment_byte_change_is_named(local_uri, pos):
    lk, st = build(local_uri, days=3)
    paths = seg_paths(st)
    assert len(paths) >= 8
    for path in paths:
        with flipped(lk.storage, path, pos):
            fs = assert_named(lk, path, ("tampered",))
            assert len(fs) == 1, fs  # only that file
    assert_clean(lk)


@pytest.mark.parametrize("mask", [0x01, 0x20, 0xFF])
@pytest.mark.parametrize("pos", POSITIONS)
def test_any_commit_byte_change_is_named(local_uri, pos, mask):
    """Every commit, the newest included (no later `prev` protects it), at start/middle/end, with a one-bit,
    a case and an invalid-UTF-8 change."""
    lk, st = build(local_uri, batches=3, per_batch=10)
    paths = commit_paths(st)
    assert len(paths) == 4
    for path in paths:
        with flipped(lk.storage, path, pos, mask):
            assert_named(lk, path, ("tampered", "chain"))
    assert_clean(lk)


def test_newest_commit_edit_that_keeps_valid_json_is_named(local_uri):
    """Change a digit of a value of the newest commit: the JSON stays valid and the chain stays linked,
    only the commit's own canonical checksum can tell."""
    lk, st = build(local_uri, batches=2, per_batch=10)
    path = commit_paths(st)[-1]
    raw = lk.storage.read(path)
    i = raw.index(b'"rows": ') + len(b'"rows": ')
    assert raw[i:i + 1].isdigit()
    edited = raw[:i] + (b"9" if raw[i:i + 1] != b"9" else b"8") + raw[i + 1:]
    orjson.loads(edited)  # still valid JSON
    lk.storage.write(path, edited)
    assert_named(lk, path, ("tampered",))
    # the same content re-serialised in another layout is not the commit either
    lk.storage.write(path, orjson.dumps(orjson.loads(raw)))
    assert_named(lk, path, ("tampered",))
    lk.storage.write(path, raw)
    assert_clean(lk)


@pytest.mark.parametrize("pos", POSITIONS)
def test_checkpoint_sidecar_and_hint_byte_changes_are_named(local_uri, small_checkpoints, pos):
    lk, st = build(local_uri, batches=7, per_batch=6)
    log_dir = f"{st.prefix}/_log"
    cps = [f"{log_dir}/{v:020d}.checkpoint.parquet" for v in (3, 6)]
    hint = f"{log_dir}/_last_checkpoint"
    assert all(lk.storage.exists(p) and lk.storage.exists(p + ".sha256") for p in cps)
    assert orjson.loads(lk.storage.read(hint)) == {"version": 6}
    assert_clean(lk)
    for cp in cps:
        with flipped(lk.storage, cp, pos):
            assert_named(lk, cp, ("tampered",))
            # a reader never trusts the altered checkpoint: it still sees every event
            fresh = lake.connect(local_uri).store(STORE)
            assert fresh.snapshot().rows == 42
        with flipped(lk.storage, cp + ".sha256", pos):
            assert_named(lk, cp + ".sha256", ("tampered",))
    with flipped(lk.storage, hint, pos):
        assert_named(lk, hint, ("tampered",))
    assert_clean(lk)


def test_checkpoint_hint_naming_a_missing_checkpoint_is_named(local_uri, small_checkpoints):
    """`{"version":6}` -> `{"version":7}` is valid JSON; no checkpoint 7 exists, so it was altered."""
    lk, st = build(local_uri, batches=7, per_batch=4)
    hint = f"{st.prefix}/_log/_last_checkpoint"
    raw = lk.storage.read(hint)
    lk.storage.write(hint, raw.replace(b"6", b"7"))
    assert_named(lk, hint, ("tampered",))
    lk.storage.write(hint, raw)
    assert_clean(lk)


# -- deleted and added files -------------------------------------------------------------------------------

def test_deleted_segment_is_missing(local_uri):
    lk, st = build(local_uri)
    victim = seg_paths(st)[3]
    lk.storage.delete(victim)
    assert_named(lk, victim, ("missing",))


def test_added_segment_files_are_unexpected(local_uri):
    lk, st = build(local_uri)
    real = seg_paths(st)[0]
    body = lk.storage.read(real)
    part_dir, name = real.rsplit("/", 1)
    txn = name.split("-")[1]
    added = [
        f"{part_dir}/part-{uuid.uuid4().hex}-00000.parquet",  # a copy under a new name, same partition
        f"{part_dir}/part-{txn}-09999.parquet",  # a copy posing as one more file of a committed writer
        f"{st.prefix}/data/account=999999999999/date=2001-01-01/part-{uuid.uuid4().hex}-00000.parquet",
        f"{part_dir}/notes.txt",
    ]
    for path in added:
        assert lk.storage.create(path, body)
        fs = assert_named(lk, path, ("unexpected",))
        assert len(fs) == 1, fs
        lk.storage.delete(path)
    assert_clean(lk)


def test_file_added_to_log_is_unexpected(local_uri):
    lk, st = build(local_uri, batches=2)
    for name in ("notes.txt", "abc.checkpoint.parquet", "x.sha256"):
        path = f"{st.prefix}/_log/{name}"
        lk.storage.create(path, b"hello")
        assert_named(lk, path, ("unexpected",))
        lk.storage.delete(path)
    assert_clean(lk)


def test_deleted_middle_commit_is_a_finding(local_uri):
    lk, st = build(local_uri, batches=5, per_batch=10)
    paths = commit_paths(st)
    lk.storage.delete(paths[2])
    fs = assert_named(lk, paths[2], ("missing",))
    assert any(f["path"] == paths[3] and f["kind"] == "chain" for f in fs)


def test_deleted_commit_zero_is_a_finding(local_uri):
    lk, st = build(local_uri, batches=2, per_batch=5)
    path = commit_paths(st)[0]
    lk.storage.delete(path)
    assert_named(lk, path, ("missing",))


# -- what is not a finding: orphans of aborted writers ---------------------------------------------------

class WriterDied(Exception):
    pass


@contextlib.contextmanager
def crashing_commits(st):
    """Commits of `st` die before step 4 (after the intent and the segments are written)."""
    def crash(*a, **k):
        raise WriterDied("writer died before creating its commit")
    st.log.try_commit = crash
    try:
        yield
    finally:
        del st.log.try_commit


def test_orphans_of_an_aborted_writer_are_not_findings(lake_uri):
    lk, st = build(lake_uri, batches=2, per_batch=20, accounts=1)
    before = set(data_files(lk, st))
    version = st.snapshot().version
    with crashing_commits(st), pytest.raises(WriterDied):
        st.append(sample_records(30, seed=9), source="import")
    orphans = sorted(set(data_files(lk, st)) - before)
    assert orphans, "the aborted writer left no files"
    txn = orphans[0].rsplit("/", 1)[1].split("-")[1]
    assert lk.storage.exists(f"{st.prefix}/_txn/{txn}.json")
    assert lake.connect(lake_uri).store(STORE).snapshot().version == version  # nothing committed
    result = assert_clean(lk)
    assert result["stores"][0]["orphans"] == len(orphans)
    assert result["stores"][0]["events"] == 40
    # a partially written orphan (the writer died mid-file) is still an orphan
    lk.storage.create(f"{orphans[0].rsplit('/', 1)[0]}/part-{txn}-00077.parquet", b"PAR1\x00\x01")
    assert assert_clean(lk)["stores"][0]["orphans"] == len(orphans) + 1
    # but the same file with its intent removed is unexpected
    lk.storage.delete(f"{st.prefix}/_txn/{txn}.json")
    assert_named(lk, orphans[0], ("unexpected",))


def test_aborted_compaction_leaves_nothing_to_report(local_uri):
    lk, st = build(local_uri, batches=6, per_batch=10)
    other = lake.connect(local_uri).store(STORE)

    def race(n, total):
        if n == 1:
            maintenance.compact(other)
    with pytest.raises(maintenance.MaintenanceAborted):
        maintenance.compact(st, progress=race)
    result = assert_clean(lk)
    assert result["stores"][0]["orphans"] == 0


# -- the CLI ---------------------------------------------------------------------------------------------

def test_cli_exit_status(lake_uri):
    lk, st = build(lake_uri, batches=2, per_batch=10, accounts=1)
    runner = CliRunner()
    ok = runner.invoke(cli, ["--lake", lake_uri, "verify"])
    assert ok.exit_code == 0, ok.output
    ok = runner.invoke(cli, ["--lake", lake_uri, "--format", "json", "verify", "--store", STORE])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["ok"] is True
    seg = seg_paths(st)[0]
    with flipped(lk.storage, seg, "middle"):
        bad = runner.invoke(cli, ["--lake", lake_uri, "verify"])
        assert bad.exit_code == 1, bad.output
        assert "tampered" in bad.output and "FAILED" in bad.output
        bad = runner.invoke(cli, ["--lake", lake_uri, "--format", "json", "verify"])
        assert bad.exit_code == 1
        out = json.loads(bad.stdout)
        assert out["ok"] is False and any(f["path"] == seg for s in out["stores"] for f in s["findings"])
    newest = commit_paths(st)[-1]
    with flipped(lk.storage, newest, "middle"):
        assert runner.invoke(cli, ["--lake", lake_uri, "verify", "--store", STORE]).exit_code == 1
    assert runner.invoke(cli, ["--lake", lake_uri, "verify"]).exit_code == 0


# -- S3 and the real external data -----------------------------------------------------------------------

def test_tampering_representative(lake_uri, small_checkpoints):
    """One of each kind of damage, on the local disk and on S3."""
    lk, st = build(lake_uri, batches=4, per_batch=8, accounts=1)  # versions 0..4: checkpoint 3, the hint
    cp = f"{st.prefix}/_log/{3:020d}.checkpoint.parquet"
    hint = f"{st.prefix}/_log/_last_checkpoint"
    seg = seg_paths(st)[0]
    for path in (seg, commit_paths(st)[1], commit_paths(st)[-1], cp, cp + ".sha256", hint):
        with flipped(lk.storage, path, "middle"):
            assert_named(lk, path)
    body = lk.storage.read(seg)
    extra = f"{seg.rsplit('/', 1)[0]}/part-{uuid.uuid4().hex}-00000.parquet"
    lk.storage.create(extra, body)
    assert_named(lk, extra, ("unexpected",))
    lk.storage.delete(extra)
    assert_clean(lk)
    lk.storage.delete(seg)
    assert_named(lk, seg, ("missing",))
    lk.storage.create(seg, body)
    assert_clean(lk)


def test_real_invictus_records_then_tamper(lake_uri, external):
    recs = external["invictus"]
    assert len(recs) > 1000
    lk, st = build(lake_uri, records=recs, batches=4)
    result = assert_clean(lk)
    rep = result["stores"][0]
    assert rep["events"] == rep["distinct_events"] == len({(r["eventID"], r["recipientAccountId"]) for r in recs})
    assert rep["segments"] == 4  # one partition, one segment per import
    targets = seg_paths(st) + [commit_paths(st)[-1], commit_paths(st)[2]]
    for path in targets:
        for pos in (("middle",) if lake_uri.startswith("s3://") else POSITIONS):
            with flipped(lk.storage, path, pos):
                assert_named(lk, path)
    seg = seg_paths(st)[1]
    body = lk.storage.read(seg)
    lk.storage.delete(seg)
    assert_named(lk, seg, ("missing",))
    new_dir = f"{st.prefix}/data/account=123837392027/date=2023-07-11"
    extra = f"{new_dir}/part-{uuid.uuid4().hex}-00000.parquet"
    lk.storage.create(seg, body)
    lk.storage.create(extra, body)
    assert_named(lk, extra, ("unexpected",))
    lk.storage.delete(extra)
    assert_clean(lk)
