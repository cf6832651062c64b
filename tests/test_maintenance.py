"""Maintenance (docs/ARCHITECTURE.md section 7): compaction keeps every event byte for byte and proves it,
retention removes exactly the events older than the cutoff, vacuum deletes only what no live snapshot (or one
younger than the grace period) can reference. After each of them `lake verify` passes.

The full-size compaction of 1,000 real appends runs with LAKE_SLOW=1: the appends alone take 65-75 s
(each append filters the snapshot's segment table, which holds one Arrow chunk per commit, so append cost
grows with the number of commits). The default run compacts 1,000 small segments committed through the log
directly (100 per commit) and 150 segments made by real appends.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from click.testing import CliRunner

import lake
from lake import events, maintenance, segments
from lake.cli import cli
from lake.errors import TerminationProtected
from lake.generate import record
from lake.verify import verify

from conftest import sample_records

SLOW = os.environ.get("LAKE_SLOW") == "1"
UTC = timezone.utc


# -- helpers -----------------------------------------------------------------------------------------------

def assert_clean(lk, store_ref=None) -> dict:
    result = verify(lk, store_ref)
    found = [f for s in result["stores"] for f in s["findings"]] + result["catalog"]
    assert result["ok"] and not found, found
    return result


def contents(st) -> dict:
    """Everything maintenance must not change: the multiset of checksums and each event's stored JSON."""
    df = st.scan().select(["eventid", "eventjson"]).collect()
    ids, jsons = (df[c].to_list() for c in ("eventid", "eventjson"))
    sums = [hashlib.sha256(j.encode()).hexdigest() for j in jsons]
    assert len(set(ids)) == len(ids) == st.snapshot().rows
    return {"checksums": Counter(sums), "by_id": dict(zip(ids, zip(sums, jsons))), "rows": df.height}


def assert_same_events(before: dict, after: dict) -> None:
    assert after["rows"] == before["rows"]
    assert after["checksums"] == before["checksums"]
    assert sorted(after["checksums"].elements()) == sorted(before["checksums"].elements())
    assert after["by_id"] == before["by_id"]  # full eventjson equality, per event
    for cs, js in after["by_id"].values():
        assert hashlib.sha256(js.encode()).hexdigest() == cs


def data_files(lk, st) -> set[str]:
    return {f.path for f in lk.storage.list(f"{st.prefix}/data")}


def live_files(st) -> set[str]:
    return {f"{st.prefix}/{p}" for p in st.snapshot().paths()}


def all_files(lk, st) -> dict[str, int]:
    return {f.path: f.size for f in lk.storage.list(st.prefix)}


def timed(times, seed=0, account="111111111111"):
    """Generated records at exact (microsecond) eventTimes."""
    rng = random.Random(seed)
    out = []
    for t in times:
        r = record(rng, t, account, "us-east-1")
        r["eventTime"] = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        out.append(r)
    return out


def parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


class WriterDied(Exception):
    pass


def abort_one_append(st, records) -> set[str]:
    """An append whose writer dies before creating its commit; returns the orphan files it left."""
    before = data_files(st.lake, st)

    def crash(*a, **k):
        raise WriterDied("died before step 4")
    st.log.try_commit = crash
    try:
        with pytest.raises(WriterDied):
            st.append(records, source="import")
    finally:
        del st.log.try_commit
    orphans = data_files(st.lake, st) - before
    assert orphans
    return orphans


# -- compaction ------------------------------------------------------------------------------------------

def _commit_small_segments(st, records, n_segments: int, per_commit: int = 100) -> None:
    """n_segments small segments of one partition, committed `per_commit` at a time through the log,
    following the protocol (intent, segments, create-only commit)."""
    table = events.convert(records, field_caps=False).table
    storage = st.lake.storage
    for start in range(0, n_segments, per_commit):
        txn = uuid.uuid4().hex
        storage.create(f"{st.prefix}/_txn/{txn}.json", orjson.dumps({"txn": txn, "operation": "IMPORT"}))
        added = []
        for n in range(start, min(start + per_commit, n_segments)):
            rows = table.take(list(range(n, table.num_rows, n_segments)))
            for account, date, part in segments.split_partitions(rows):
                added.append(segments.write_segment(storage, st.prefix, part, account, date,
                                                    f"part-{txn}-{n:05d}.parquet"))
        st.log.commit("IMPORT", lambda s, added=added, txn=txn: {"add": added, "txn": txn})


def _check_compaction(lk, st, records, n_segments: int) -> dict:
    snap = st.snapshot()
    assert snap.segments.num_rows == n_segments
    assert snap.rows == len(records)
    before = contents(st)
    # the stored JSON of each event parses equal to the source record
    src = {r["eventID"]: r for r in records}
    assert all(orjson.loads(js) == src[eid] for eid, (_, js) in before["by_id"].items())
    assert maintenance.compact(st, dry_run=True)["segments_in"] == n_segments
    assert st.snapshot().version == snap.version  # dry run commits nothing
    t0 = time.perf_counter()
    rep = maintenance.compact(st)
    took = time.perf_counter() - t0
    assert rep["segments_in"] == n_segments and rep["events"] == len(records)
    after_snap = st.snapshot()
    assert after_snap.version == snap.version + 1
    assert after_snap.segments.num_rows == rep["segments_out"] < n_segments
    assert_same_events(before, contents(st))
    for p in after_snap.paths():  # outputs are in segment order
        assert segments.in_segment_order(segments.read_segment(lk.storage, st.prefix, p))
    result = assert_clean(lk)
    assert result["stores"][0]["events"] == result["stores"][0]["distinct_events"] == len(records)
    # a second run has nothing left to merge
    assert maintenance.compact(st)["groups"] == 0
    rep["seconds"] = took
    return rep


def test_compaction_of_1000_small_segments(local_uri, external):
    """1,000 segments of ~3 real events each in one partition -> 1 segment, every event kept."""
    recs = external["invictus"]
    lk = lake.connect(local_uri)
    st = lk.create_store("compact-1000", retention_days=3653)
    _commit_small_segments(st, recs, 1000)
    rep = _check_compaction(lk, st, recs, 1000)
    assert rep["segments_out"] == 1


@pytest.mark.parametrize("n", [150, pytest.param(1000, marks=[
    pytest.mark.slow, pytest.mark.skipif(not SLOW, reason="1,000 appends take ~1 min; set LAKE_SLOW=1")])])
def test_compaction_after_many_small_appends(local_uri, external, n):
    """n real appends of a few invictus events each (one segment per append), then compaction."""
    recs = external["invictus"]
    lk = lake.connect(local_uri)
    st = lk.create_store("compact-appends", retention_days=3653)
    t0 = time.perf_counter()
    for i in range(n):
        r = st.append(recs[i::n], source="import")
        assert r.appended == len(recs[i::n]) and r.segments == 1
    appended = time.perf_counter() - t0
    rep = _check_compaction(lk, st, recs, n)
    assert rep["segments_out"] == 1
    print(f"\n{n} appends: {appended:.1f}s, compaction: {rep['seconds']:.1f}s")


def test_compaction_groups_per_partition_up_to_target(lake_uri):
    lk = lake.connect(lake_uri)
    st = lk.create_store("compact-groups", retention_days=3653)
    recs = sample_records(240, seed=3, days=2, accounts=2)
    for i in range(8):
        st.append(recs[i::8], source="import")
    snap = st.snapshot()
    n_in = snap.segments.num_rows
    parts = {(e["account"], e["date"]) for e in snap.entries()}
    sizes = sorted(e["bytes"] for e in snap.entries())
    target = 3 * sizes[len(sizes) // 2]  # about three segments per output
    before = contents(st)
    rep = maintenance.compact(st, target_bytes=target)
    after = st.snapshot()
    assert after.segments.num_rows < n_in
    assert {(e["account"], e["date"]) for e in after.entries()} == parts
    outputs = Counter((e["account"], e["date"]) for e in after.entries() if e["version"] == after.version)
    assert sum(outputs.values()) == rep["segments_out"]
    assert max(outputs.values()) > 1  # the target split a partition into several outputs
    assert_same_events(before, contents(st))
    for e in after.entries():  # each output holds one partition, in segment order
        t = segments.read_segment(lk.storage, st.prefix, e["path"])
        assert set(t.column("recipientaccountid").to_pylist()) == {e["account"]}
        assert {x.strftime("%Y-%m-%d") for x in t.column("eventtime").to_pylist()} == {e["date"]}
        assert segments.in_segment_order(t)
    assert_clean(lk)


def test_compaction_aborts_when_a_concurrent_commit_removed_an_input(lake_uri):
    lk = lake.connect(lake_uri)
    st = lk.create_store("compact-race", retention_days=3653)
    recs = sample_records(60, seed=4, days=1, accounts=1)
    for i in range(6):
        st.append(recs[i::6], source="import")
    other = lake.connect(lake_uri).store("compact-race")  # another process, its own log cache
    before = contents(st)
    files_before = data_files(lk, st)
    state = {}

    def race(n, total):  # runs after our outputs are written, before our commit
        if n == 1:
            state["ours"] = data_files(lk, st) - files_before
            state["theirs"] = maintenance.compact(other)
    with pytest.raises(maintenance.MaintenanceAborted, match="removed by a concurrent commit"):
        maintenance.compact(st, progress=race)
    assert state["ours"]  # we had written outputs ...
    assert not (state["ours"] & data_files(lk, st))  # ... and removed them
    snap = lake.connect(lake_uri).store("compact-race").snapshot()
    assert snap.version == state["theirs"]["version"]  # only the other compaction committed
    assert [c["operation"] for _, c, _ in st.log.commits()][-1] == "COMPACT"
    assert_same_events(before, contents(st))
    assert_clean(lk)


def test_compaction_retries_over_a_concurrent_append(local_uri):
    """A concurrent commit that removes none of the inputs is not a reason to abort."""
    lk = lake.connect(local_uri)
    st = lk.create_store("compact-retry", retention_days=3653)
    recs = sample_records(80, seed=5, days=1, accounts=1)
    for i in range(6):
        st.append(recs[i:60:6], source="import")
    other = lake.connect(local_uri).store("compact-retry")
    before = contents(st)

    def race(n, total):
        if n == 1:
            other.append(recs[60:], source="import")
    rep = maintenance.compact(st, progress=race)
    assert rep["version"] == st.snapshot().version
    after = contents(st)
    assert after["rows"] == 80
    assert {k: v for k, v in after["by_id"].items() if k in before["by_id"]} == before["by_id"]
    assert_clean(lk)


# -- retention -------------------------------------------------------------------------------------------

NOW = datetime(2025, 6, 15, 12, 0, 0, tzinfo=UTC)  # when retention runs
RETENTION_DAYS = 10
CUTOFF = NOW - timedelta(days=RETENTION_DAYS)  # 2025-06-05T12:00:00Z, mid-partition


def _around_cutoff() -> list[datetime]:
    """Event times from 3 days before to 3 days after the cutoff, with the boundary itself."""
    us = timedelta(microseconds=1)
    times = [CUTOFF - timedelta(days=3) + timedelta(minutes=97 * i) for i in range(90)]  # 6 days
    times += [CUTOFF - us, CUTOFF, CUTOFF + us, CUTOFF - timedelta(seconds=1), CUTOFF + timedelta(seconds=1)]
    return times


def test_retention_never_drops_an_in_retention_event(lake_uri):
    lk = lake.connect(lake_uri)
    st = lk.create_store("retention", retention_days=RETENTION_DAYS)
    times = _around_cutoff()
    recs = timed(times, seed=7)
    # appended 3 days before NOW: nothing is past retention yet. Several imports, so some segments lie
    # wholly before the cutoff, some after, and some straddle it.
    for i in range(3):
        r = st.append(recs[i::3], source="import", now=NOW - timedelta(days=3))
        assert r.expired == 0 and not r.rejected
    entries = st.snapshot().entries()
    assert any(e["eventtime_max"] < CUTOFF for e in entries)
    assert any(e["eventtime_min"] < CUTOFF <= e["eventtime_max"] for e in entries)
    assert any(e["eventtime_min"] >= CUTOFF for e in entries)
    before = contents(st)
    files = all_files(lk, st)
    version = st.snapshot().version
    expired_ids = {r["eventID"] for r, t in zip(recs, times) if t < CUTOFF}
    kept_ids = {r["eventID"] for r, t in zip(recs, times) if t >= CUTOFF}
    assert expired_ids and kept_ids and len(expired_ids) + len(kept_ids) == len(recs)

    dry = maintenance.retention(st, now=NOW)  # dry run by default
    assert dry["dry_run"] and dry["events_removed"] == len(expired_ids)
    assert dry["segments_dropped"] > 0 and dry["segments_rewritten"] > 0
    assert dry["cutoff"] == CUTOFF.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert all_files(lk, st) == files and st.snapshot().version == version  # changed nothing

    rep = maintenance.retention(st, now=NOW, dry_run=False)
    assert rep["events_removed"] == len(expired_ids)
    assert st.snapshot().version == version + 1
    after = contents(st)
    assert set(after["by_id"]) == kept_ids  # exactly the expired events are gone
    assert after["by_id"] == {k: v for k, v in before["by_id"].items() if k in kept_ids}  # same checksum, JSON
    assert all(e["eventtime_min"] >= CUTOFF for e in st.snapshot().entries())
    assert_clean(lk)
    # nothing left to do; running it again changes nothing
    again = maintenance.retention(st, now=NOW, dry_run=False)
    assert again["events_removed"] == 0 and st.snapshot().version == version + 1


def test_retention_on_real_events_straddling_the_cutoff(local_uri, external):
    recs = external["invictus"]  # 2023-07-10 11:42..12:37 UTC, one partition
    lk = lake.connect(local_uri)
    st = lk.create_store("retention-real", retention_days=7)
    for i in range(4):
        r = st.append(recs[i::4], source="import", now=datetime(2023, 7, 11, tzinfo=UTC))
        assert r.expired == 0
    now = datetime(2023, 7, 17, 12, 10, tzinfo=UTC)
    cutoff = now - timedelta(days=7)
    assert all(e["eventtime_min"] < cutoff <= e["eventtime_max"] for e in st.snapshot().entries())
    before = contents(st)
    kept_ids = {r["eventID"] for r in recs if parse_time(r["eventTime"]) >= cutoff}
    assert 0 < len(kept_ids) < len(recs)
    rep = maintenance.retention(st, now=now, dry_run=False)
    assert rep["segments_rewritten"] == 4 and rep["segments_dropped"] == 0
    assert rep["events_removed"] == len(recs) - len(kept_ids)
    after = contents(st)
    assert set(after["by_id"]) == kept_ids
    assert after["by_id"] == {k: v for k, v in before["by_id"].items() if k in kept_ids}
    assert_clean(lk)


def test_append_never_stores_events_past_retention(local_uri):
    lk = lake.connect(local_uri)
    st = lk.create_store("retention-append", retention_days=RETENTION_DAYS)
    times = _around_cutoff()
    recs = timed(times, seed=8)
    r = st.append(recs, source="import", now=NOW)
    expired = [t for t in times if t < CUTOFF]
    assert r.expired == len(expired) > 0
    assert r.appended == len(times) - len(expired)
    stored = st.to_arrow().column("eventtime").to_pylist()
    assert min(stored) == CUTOFF  # the event exactly at the cutoff is in retention
    assert all(t >= CUTOFF for t in stored)
    # a live append applies the same rule; a batch wholly past retention stores nothing
    old = timed([CUTOFF - timedelta(days=1), CUTOFF + timedelta(days=1)], seed=9)
    for rec in old:
        rec.update(eventCategory="Management", managementEvent=True)
    r = st.append(old, source="live", now=NOW)
    assert r.not_selected == 0 and r.expired == 1 and r.appended == 1
    r = st.append(old[:1], source="live", now=NOW)
    assert r.expired == 1 and r.appended == 0 and r.version is None
    assert_clean(lk)


# -- vacuum ----------------------------------------------------------------------------------------------

def test_vacuum(lake_uri):
    lk = lake.connect(lake_uri)
    st = lk.create_store("vacuum-me", retention_days=3653)
    recs = sample_records(90, seed=11, days=1, accounts=1)
    for i in range(4):
        st.append(recs[i:60:4], source="import")
    pre_compaction = live_files(st)
    maintenance.compact(st)
    retired = pre_compaction - live_files(st)
    assert retired
    orphans = abort_one_append(st, recs[60:])
    intents = {f.path for f in lk.storage.list(f"{st.prefix}/_txn")}
    live = live_files(st)
    before = contents(st)
    files = all_files(lk, st)
    real_now = datetime.now(UTC)
    later = real_now + timedelta(days=8)
    assert_clean(lk)

    # dry run by default: reports, deletes nothing
    rep = maintenance.vacuum(lk, now=later)
    assert rep["dry_run"] is True
    by_reason = {}
    for d in rep["details"]:
        by_reason.setdefault(d["reason"], set()).add(d["path"])
    assert by_reason == {"retired": retired, "orphan": orphans, "intent": intents}
    assert rep["bytes"] == sum(files[p] for p in retired | orphans | intents)
    assert all_files(lk, st) == files

    # within the grace period nothing is deleted, even when applied
    rep = maintenance.vacuum(lk, dry_run=False, now=real_now + timedelta(days=6))
    assert rep["files"] == 0 and all_files(lk, st) == files
    rep = maintenance.vacuum(lk, dry_run=False, grace=timedelta(days=30), now=later)
    assert rep["files"] == 0 and all_files(lk, st) == files

    # after it: retired segments, orphans and intents go; everything live stays
    rep = maintenance.vacuum(lk, store=st, dry_run=False, now=later)
    assert rep["files"] == len(retired | orphans | intents)
    assert data_files(lk, st) == live
    assert not lk.storage.list(f"{st.prefix}/_txn")
    assert {p: s for p, s in all_files(lk, st).items() if "/_log/" in p} == \
        {p: s for p, s in files.items() if "/_log/" in p}  # the log is never vacuumed
    assert_same_events(before, contents(lake.connect(lake_uri).store("vacuum-me")))
    result = assert_clean(lk)
    assert result["stores"][0]["orphans"] == 0
    # and a vacuum far in the future still deletes nothing live
    assert maintenance.vacuum(lk, dry_run=False, grace=timedelta(0), now=later + timedelta(days=999))["files"] == 0
    assert_clean(lk)


def test_vacuum_keeps_the_intent_of_orphans_it_keeps(local_uri):
    """An intent older than the grace period whose orphan files are younger must stay, or those orphans
    would become `unexpected` findings."""
    lk = lake.connect(local_uri)
    st = lk.create_store("vacuum-intent", retention_days=3653)
    st.append(sample_records(10, seed=12), source="import")
    orphans = abort_one_append(st, sample_records(10, seed=13))
    txn = next(iter(orphans)).rsplit("/", 1)[1].split("-")[1]
    intent = f"{st.prefix}/_txn/{txn}.json"
    old = time.time() - 10 * 86400
    os.utime(lk.storage.full(intent), (old, old))
    rep = maintenance.vacuum(lk, dry_run=False)
    assert intent not in {d["path"] for d in rep["details"]}
    assert lk.storage.exists(intent) and orphans <= data_files(lk, st)
    assert assert_clean(lk)["stores"][0]["orphans"] == len(orphans)
    # once the orphans are old too, both go
    for p in orphans:
        os.utime(lk.storage.full(p), (old, old))
    rep = maintenance.vacuum(lk, dry_run=False)
    assert {d["path"] for d in rep["details"]} >= orphans | {intent}
    assert_clean(lk)


def test_vacuum_apply_from_the_cli_then_verify(lake_uri):
    lk = lake.connect(lake_uri)
    st = lk.create_store("vacuum-cli", retention_days=3653)
    recs = sample_records(40, seed=14, days=1, accounts=1)
    for i in range(3):
        st.append(recs[i:30:3], source="import")
    maintenance.compact(st)
    abort_one_append(st, recs[30:])
    live = live_files(st)
    runner = CliRunner()
    res = runner.invoke(cli, ["--lake", lake_uri, "vacuum", "--grace-hours", "0"])  # dry run
    assert res.exit_code == 0, res.output
    assert data_files(lk, st) > live
    res = runner.invoke(cli, ["--lake", lake_uri, "--format", "json", "vacuum", "--grace-hours", "0", "--apply"])
    assert res.exit_code == 0, res.output
    assert orjson.loads(res.stdout)["files"] > 0
    assert data_files(lk, st) == live
    assert runner.invoke(cli, ["--lake", lake_uri, "verify"]).exit_code == 0


def test_vacuum_purges_a_store_deleted_more_than_7_days_ago(lake_uri):
    lk = lake.connect(lake_uri)
    keep = lk.create_store("keep-me", retention_days=3653)
    gone = lk.create_store("delete-me", retention_days=3653)
    keep.append(sample_records(10, seed=15, accounts=1), source="import")
    gone.append(sample_records(10, seed=16, accounts=1), source="import")
    with pytest.raises(TerminationProtected):
        gone.delete()
    gone.update(termination_protection=False)
    md = gone.delete()
    assert md["Status"] == "PENDING_DELETION"
    deleted_at = parse_time(md["DeletionTime"])
    keep_files = {p: n for p, n in all_files(lk, keep).items() if "/_txn/" not in p}
    gone_files = all_files(lk, gone)

    # within the 7-day restore window: not purged, even applied
    rep = maintenance.vacuum(lk, dry_run=False, now=deleted_at + timedelta(days=6, hours=23))
    assert rep["stores_purged"] == [] and all_files(lk, gone) == gone_files
    # dry run after 7 days: reported, not deleted
    rep = maintenance.vacuum(lk, now=deleted_at + timedelta(days=7, minutes=1))
    assert rep["stores_purged"] == ["delete-me"]
    assert {d["path"] for d in rep["details"] if d["reason"] == "store-deleted"} == set(gone_files)
    assert all_files(lk, gone) == gone_files
    # applied
    rep = maintenance.vacuum(lk, dry_run=False, now=deleted_at + timedelta(days=7, minutes=1))
    assert rep["stores_purged"] == ["delete-me"]
    assert all_files(lk, gone) == {}
    assert not lk.storage.exists("_catalog/names/delete-me")
    fresh = lake.connect(lake_uri)
    assert [s.name for s in fresh.stores(include_expired=True)] == ["keep-me"]
    assert {p: n for p, n in all_files(fresh, keep).items() if "/_txn/" not in p} == keep_files
    assert_clean(fresh)
    # the name is free again
    fresh.create_store("delete-me", retention_days=3653)
    assert_clean(fresh)
