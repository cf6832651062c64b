"""Import and ingest robustness against hostile or broken input (issue 15, points 3, 5, 7 and 14).

Each test builds the bad input the review found and checks the result through the public paths (`Importer`,
`lake import`, `Store.append`, PutAuditEvents through boto3 against a live `lake serve`):

- a recipientAccountId that is a path (`1/../../../<other store>/data/x`) stays inside its own store;
- a gzip or zip bomb fails alone (ObjectTooLarge) with memory bounded by the cap; the server never decodes
  an import in its own process;
- deep nesting, an eventTime of year 10000, looping, dangling and escaping symbolic links and FIFOs are each a
  failure entry while the neighbours import and the import ends;
- import workers die with their killed parent; events without an eventID are stored once across a resume;
  eventTime is bounded; invalid UTF-8 is reported as such; FilesCompleted counts only files read; records
  with a duplicate key are refused the same way in the C and Python paths.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lake import recordscan
from lake.events import convert, convert_raw
from lake.importer import Importer, import_failures, resume
from lake.lake import Lake
from lake.verify import verify
from tests.server_fixture import *
from tests.server_fixture import ACCOUNT_A

UTC = timezone.utc


def rec(i: int, **over) -> dict:
    r = {"eventVersion": "1.08", "eventTime": "2024-01-01T00:00:00Z", "eventID": f"id-{i}", "eventName": "GetObject",
         "eventSource": "s3.amazonaws.com", "awsRegion": "us-east-1", "recipientAccountId": "111111111111",
         "userIdentity": {"type": "IAMUser", "accountId": "111111111111"}}
    r.update(over)
    return {k: v for k, v in r.items() if v is not None}


def write_log(path: Path, records: list, *, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"Records": records}).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def new_store(lk: Lake, name: str):
    return lk.create_store(name, retention_days=3653)


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def failures(lk: Lake, rep) -> dict[str, str]:
    return {f["Location"]: f["ErrorType"] for f in import_failures(lk, rep.ImportId)}


# ---- point 3: partition values never leave the store ----------------------------------------------------

def test_recipient_account_id_path_stays_inside_its_store(tmp_path):
    """The issue's record: its recipientAccountId names another store's data folder. Through the import (C
    scanner path) and Store.append (Python converter) nothing is written outside the importing store, the
    other store still verifies, and the event is stored and found by its own account value."""
    lk = Lake(str(tmp_path / "lake"))
    a, b = new_store(lk, "store-a"), new_store(lk, "store-b")
    a.append([rec(1)], source="import")
    evil = f"1/../../../{a.id}/data/x"
    before = files_under(tmp_path / "lake")
    src = tmp_path / "src"
    write_log(src / "evil.json", [rec(2, recipientAccountId=evil), rec(3)])
    write_log(src / "dots.json", [rec(4, recipientAccountId=".."), rec(5, recipientAccountId="../../..")])
    rep = Importer(b, [str(src)], workers=1).run()
    assert rep.ImportStatus == "COMPLETED" and rep.ImportStatistics.EventsCompleted == 4
    r = b.append([rec(6, recipientAccountId=f"../../{a.id}/data/y"), rec(7, recipientAccountId="a/b\\c")],
                 source="import")
    assert r.appended == 2 and not r.rejected
    new = files_under(tmp_path / "lake") - before
    assert new and all(p.startswith((f"stores/{b.id}/", "imports/")) for p in new), sorted(new)
    assert not [p for p in new if p.startswith(f"stores/{b.id}/data/") and "/.." in p]
    assert verify(Lake(str(tmp_path / "lake")), "store-a")["ok"]
    assert verify(Lake(str(tmp_path / "lake")), "store-b")["ok"]
    assert Lake(str(tmp_path / "lake")).store("store-a").to_arrow().num_rows == 1
    found = lk.sql(f"SELECT eventid FROM \"store-b\" WHERE recipientaccountid = '{evil}'")
    assert found["eventid"].to_list() == ["id-2"]


# ---- point 5: decompression bombs and process isolation -------------------------------------------------

def _bomb(size: int) -> bytes:
    """A valid log file (an empty Records list padded with whitespace) of `size` bytes, gzip-compressed
    (streamed: the test process never holds the inflated bytes)."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as f:
        f.write(b'{"Records":[')
        block = b" " * (1 << 20)
        for _ in range(size >> 20):
            f.write(block)
        f.write(b" " * (size & ((1 << 20) - 1)) + b"]}")
    return out.getvalue()


def test_gzip_and_zip_bombs_fail_alone_within_the_cap(tmp_path):
    src = tmp_path / "src"
    write_log(src / "a_good.json", [rec(1), rec(2)])
    (src / "b_bomb.json.gz").write_bytes(_bomb(64 << 20))
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w", zipfile.ZIP_DEFLATED) as z:
        for n in range(3):
            z.writestr(f"part{n}.json", b'{"Records":[' + b" " * (12 << 20) + b"]}")
    (src / "c_bomb.zip").write_bytes(zbuf.getvalue())
    lk = Lake(str(tmp_path / "lake"))
    rep = Importer(new_store(lk, "bombs"), [str(src)], workers=1, max_object_bytes=16 << 20).run()
    assert rep.ImportStatistics.EventsCompleted == 2
    assert failures(lk, rep) == {"b_bomb.json.gz": "ObjectTooLarge", "c_bomb.zip": "ObjectTooLarge"}
    assert rep.ImportStatistics.FilesFailed == 2 and rep.ImportStatistics.FilesCompleted == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_lake_import_of_a_gzip_bomb_stays_within_the_cap(tmp_path):
    """`lake import` of a 600 MB gzip bomb (600 KB on disk) with LAKE_IMPORT_MAX_OBJECT_BYTES=32 MiB: one
    ObjectTooLarge failure entry, the neighbour imported, and the process's peak memory far below the bomb
    (the old code inflated it in full)."""
    src = tmp_path / "src"
    write_log(src / "a_good.json", [rec(1)])
    (src / "b_bomb.json.gz").write_bytes(_bomb(600 << 20))
    uri = str(tmp_path / "lake")
    new_store(Lake(uri), "bomb")
    env = {**os.environ, "LAKE_IMPORT_MAX_OBJECT_BYTES": str(32 << 20)}
    # The child reports its own peak RSS (VmHWM) at exit: rusage of children would include this process's.
    script = ("import atexit, sys; atexit.register(lambda: sys.stderr.write(next(l for l in open('/proc/self/status') "
              "if l.startswith('VmHWM')))); from lake.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", script, "--lake", uri, "--format", "json", "import", str(src),
                           "--store", "bomb", "--no-progress"], env=env, capture_output=True, timeout=300, check=False)
    peak_kib = int(proc.stderr.decode().rsplit("VmHWM:", 1)[1].split()[0])
    assert peak_kib < 450 << 10, f"peak RSS {peak_kib >> 10} MiB"
    rep = json.loads(proc.stdout)
    assert rep["ImportStatistics"]["EventsCompleted"] == 1
    assert failures(Lake(uri), type("R", (), {"ImportId": rep["ImportId"]})) == {"b_bomb.json.gz": "ObjectTooLarge"}


def test_gunzip_stops_at_the_cap_before_spending_memory():
    from lake.trailfiles import ObjectTooLarge, decode_bytes

    bomb = _bomb(200 << 20)
    tracemalloc.start()
    try:
        with pytest.raises(ObjectTooLarge, match="more than 8,388,608 bytes"):
            decode_bytes(bomb, "bomb.json.gz", 8 << 20)
        with pytest.raises(ObjectTooLarge):  # a second member after a small first one takes the other path
            decode_bytes(gzip.compress(b"{}") + bomb, "two.json.gz", 8 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20, peak


def test_isolated_import_never_decodes_in_the_calling_process(tmp_path, monkeypatch):
    """`isolate=True` (what the server uses) sends even a single small chunk to a worker process: the parent's
    converter is broken here, and the import still succeeds."""
    from lake import importer

    def broken(*a, **k):
        raise AssertionError("decoded in the server's own process")

    monkeypatch.setattr(importer, "convert_raw", broken)
    src = tmp_path / "src"
    write_log(src / "one.json", [rec(1), rec(2)])
    lk = Lake(str(tmp_path / "lake"))
    rep = Importer(new_store(lk, "isolated"), [str(src)], workers=1, isolate=True).run()
    assert rep.ImportStatus == "COMPLETED" and rep.ImportStatistics.EventsCompleted == 2


# ---- point 7: one bad object never stops or hangs the import ---------------------------------------------

def _make_bad(src: Path, kind: str, outside: Path) -> str:
    """Create one bad entry of `kind` in `src`; return its location as failure entries name it."""
    if kind == "deep":  # the record fails alone: its neighbours in the same file are imported
        (src / "b_deep.json").write_text('{"Records":[' + json.dumps(rec(60)) + ',{"eventTime":"2024-01-01T00:00:00Z",'
                                         '"requestParameters":' + "[" * 100_000 + "]" * 100_000 + "}," +
                                         json.dumps(rec(61)) + "]}")
        return "b_deep.json#1"
    if kind == "year10000":
        write_log(src / "b_year.json", [rec(50), rec(51, eventTime="+10000-01-01T00:00:00Z"), rec(52)])
        return "b_year.json#1"
    if kind == "symlink-loop":
        os.symlink(src / "c_loop.json", src / "c_loop.json")
        return "c_loop.json"
    if kind == "symlink-dangling":
        os.symlink(src / "missing" / "x.json", src / "c_dangling.json")
        return "c_dangling.json"
    if kind == "symlink-outside":
        write_log(outside / "secret.json", [rec(90)])
        os.symlink(outside / "secret.json", src / "c_outside.json")
        return "c_outside.json"
    if kind == "fifo":
        os.mkfifo(src / "c_fifo.json")
        return "c_fifo.json"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["deep", "year10000", "symlink-loop", "symlink-dangling", "symlink-outside",
                                  "fifo"])
def test_one_bad_object_is_a_failure_entry_and_the_rest_imports(tmp_path, kind):
    src, outside = tmp_path / "src", tmp_path / "outside"
    write_log(src / "a_good.json", [rec(i) for i in range(5)])
    write_log(src / "z_good.json.gz", [rec(i) for i in range(5, 10)], gz=True)
    outside.mkdir()
    where = _make_bad(src, kind, outside)
    lk = Lake(str(tmp_path / "lake"))
    st = new_store(lk, "bad-objects")
    imp = Importer(st, [str(src)], workers=1)
    out: dict = {}

    def run() -> None:
        try:
            out["rep"] = imp.run()
        except BaseException as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    if t.is_alive() and kind == "fifo":  # old code: blocked opening the FIFO; release it, then fail
        fd = os.open(src / "c_fifo.json", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        t.join(30)
        pytest.fail("the import hung on a FIFO")
    assert "error" not in out, f"the import stopped: {out.get('error')!r}"
    rep = out["rep"]
    good = 12 if kind in ("year10000", "deep") else 10
    assert rep.ImportStatistics.EventsCompleted == good
    assert rep.ImportStatus in ("COMPLETED", "FAILED") and rep.ImportStatistics.FailedEntries == 1
    assert where in failures(lk, rep), failures(lk, rep)
    assert st.to_arrow().num_rows == good
    assert "id-90" not in st.to_arrow().column("eventid").to_pylist()  # the file outside was never read


@pytest.fixture
def channel(server, cloudtrail_client):
    ct = cloudtrail_client("alice")
    store_arn = ct.create_event_data_store(
        Name="integrations", TerminationProtectionEnabled=False,
        AdvancedEventSelectors=[{"Name": "a", "FieldSelectors": [{"Field": "eventCategory",
                                                                   "Equals": ["ActivityAuditLog"]}]}],
    )["EventDataStoreArn"]
    return ct.create_channel(Name="app", Source="Custom",
                             Destinations=[{"Type": "EVENT_DATA_STORE", "Location": store_arn}])["ChannelArn"]


def _audit_event(n: int, when: str) -> dict:
    data = {"version": "0.01", "UID": f"uid-{n}", "userIdentity": {"type": "CustomUser", "principalId": "u"},
            "eventSource": "app.example.com", "eventName": "Opened", "eventTime": when,
            "recipientAccountId": ACCOUNT_A}
    return {"id": f"e{n}", "eventData": json.dumps(data)}


def test_put_audit_events_out_of_range_event_time_fails_that_event_only(server, data_client, channel):
    now = (datetime.now(UTC) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    far = (datetime.now(UTC) + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = data_client("alice").put_audit_events(channelArn=channel, auditEvents=[
        _audit_event(0, now), _audit_event(1, "+10000-01-01T00:00:00Z"), _audit_event(2, "9999-12-31T00:00:00Z"),
        _audit_event(3, far), _audit_event(4, "1969-12-31T23:59:59Z")])
    assert [s["id"] for s in out["successful"]] == ["e0"]
    failed = {f["id"]: f for f in out["failed"]}
    assert set(failed) == {"e1", "e2", "e3", "e4"}
    for f in failed.values():
        assert f["errorCode"] == "InvalidData" and "outside the accepted range" in f["errorMessage"]


# ---- point 14 ------------------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_import_workers_die_with_a_killed_parent(tmp_path):
    src = tmp_path / "src"
    for n in range(40):
        write_log(src / f"f{n:03d}.json", [rec(n * 1000 + i, requestParameters={"pad": "x" * 400})
                                           for i in range(1000)])
    lk = Lake(str(tmp_path / "lake"))
    new_store(lk, "killed")
    script = ("import sys; from lake.lake import Lake; from lake.importer import Importer; "
              "st = Lake(sys.argv[1]).store('killed'); "
              "Importer(st, [sys.argv[2]], workers=2, chunk_bytes=256 << 10).run()")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "lake"), str(src)])
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(workers) < 2 and proc.poll() is None:
            # spawn starts a resource tracker and the workers; the workers are the ones running the pool
            workers = [c for c in _children(proc.pid)
                       if "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
                       and "resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
            time.sleep(0.05)
        assert len(workers) >= 2, "the import finished or never started its workers"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(map(_alive, workers)):
            time.sleep(0.1)
        left = [w for w in workers if _alive(w)]
        assert not left, f"workers {left} outlived their killed parent"
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:  # the old code leaves them running forever
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_events_without_event_id_are_stored_once_across_a_resume(tmp_path, monkeypatch):
    """A chunk committed but not yet in the ledger is read again by the resume; events without an eventID
    had no dedupe key and were stored twice. Now their key is their record text."""
    src = tmp_path / "src"
    total = 0
    for n in range(6):
        write_log(src / f"f{n}.json", [rec(0, eventID=None, requestParameters={"n": n * 1000 + i, "pad": "y" * 300})
                                       for i in range(200)])
        total += 200
    lk = Lake(str(tmp_path / "lake"))
    st = new_store(lk, "no-ids")
    real_create = type(lk.storage).create
    seen = []

    class Crash(BaseException):
        pass

    def create(self, path, data, durable=True):
        if "/_sources/" in path:
            seen.append(path)
            if len(seen) == 2:
                raise Crash()  # the second chunk is committed, its ledger entry never written
        return real_create(self, path, data, durable)

    monkeypatch.setattr(type(lk.storage), "create", create)
    imp = Importer(st, [str(src)], workers=1, chunk_bytes=64 << 10)
    with pytest.raises(Crash):
        imp.run()
    monkeypatch.setattr(type(lk.storage), "create", real_create)
    committed = st.to_arrow().num_rows
    assert 0 < committed < total
    rep = resume(Lake(str(tmp_path / "lake")), imp.import_id, workers=1).run()
    assert rep.ImportStatus == "COMPLETED"
    t = Lake(str(tmp_path / "lake")).store("no-ids").to_arrow()
    assert t.num_rows == total
    assert len(set(t.column("eventjson").to_pylist())) == total
    assert verify(Lake(str(tmp_path / "lake")), "no-ids")["ok"]


def _raws(records: list) -> list[bytes]:
    return [r if isinstance(r, bytes) else json.dumps(r).encode() for r in records]


PATHS = {
    "scanner": lambda raws: convert_raw(raws),
    "arrow": lambda raws: convert_raw(raws, scanner=False),
    "python": lambda raws: convert(raws, field_caps=False),
}


@pytest.mark.parametrize("path", PATHS)
def test_event_time_bounds_in_every_converter(path):
    soon = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    later = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    batch = [rec(0), rec(1, eventTime="9999-12-31T23:59:59Z"), rec(2, eventTime="1969-12-31T23:59:59Z"),
             rec(3, eventTime=soon), rec(4, eventTime=later), rec(5, eventTime="+10000-01-01T00:00:00Z"),
             rec(6, eventTime="1970-01-01T00:00:00Z")]
    conv = PATHS[path](_raws(batch))
    assert sorted(conv.indexes) == [0, 3, 6]
    codes = {r.index: r.code for r in conv.rejects}
    assert set(codes) == {1, 2, 4, 5} and set(codes.values()) == {"InvalidEventTime"}
    for r in conv.rejects:
        if r.index != 5 or "outside" in r.message:
            assert "outside the accepted range" in r.message


def test_store_append_rejects_far_future_events(tmp_path):
    st = new_store(Lake(str(tmp_path / "lake")), "future")
    r = st.append([rec(0), rec(1, eventTime="9999-01-01T00:00:00Z")], source="import")
    assert r.appended == 1 and [x.code for x in r.rejected] == ["InvalidEventTime"]


@pytest.mark.parametrize("path", PATHS)
def test_invalid_utf8_is_reported_as_such(path):
    bad = b'{"eventTime":"2024-01-01T00:00:00Z","eventID":"u","eventName":"\xff\xfe"}'
    conv = PATHS[path]([json.dumps(rec(0)).encode(), bad])
    assert conv.indexes == [0]
    (r,) = conv.rejects
    assert r.code == "InvalidUtf8" and "not valid UTF-8" in r.message and "surrogates" not in r.message


def test_files_completed_counts_only_files_read(tmp_path):
    src = tmp_path / "src"
    write_log(src / "a.json", [rec(1)])
    (src / "b.json.gz").write_bytes(gzip.compress(b'{"Records":[]}')[:-6])  # damaged
    lk = Lake(str(tmp_path / "lake"))
    rep = Importer(new_store(lk, "counts"), [str(src)], workers=1).run()
    s = rep.ImportStatistics
    assert (s.FilesFound, s.FilesCompleted, s.FailedEntries) == (2, 1, 1)
    assert s.FilesFailed == 1


DUPLICATES = [
    b'{"eventTime":"2024-01-01T00:00:00Z","eventID":"d1","eventName":"A","eventName":"B"}',
    b'{"eventTime":"2024-01-01T00:00:00Z","eventID":"d2","requestParameters":{"k":1,"k":2}}',
    b'{"eventTime":"2024-01-01T00:00:00Z","eventID":"d3","custom":{"x":{"y":1,"y":1}}}',
    b'{"eventTime":"2024-01-01T00:00:00Z","eventID":"d4","userIdentity":{"type":"a","\\u0074ype":"b"}}',
    b'{"eventTime":"2024-01-01T00:00:00Z","eventID":"d5","resources":[{"ARN":"a","ARN":"b"}]}',
]


@pytest.mark.parametrize("path", PATHS)
def test_records_with_duplicate_keys_are_refused_in_every_path(path):
    good = [json.dumps(rec(i)).encode() for i in range(3)]
    conv = PATHS[path]([good[0], *DUPLICATES, good[1], good[2]])
    assert sorted(conv.indexes) == [0, 6, 7]
    assert {r.index: r.code for r in conv.rejects} == {i: "DuplicateKey" for i in range(1, 6)}
    assert "'eventName'" in conv.rejects[0].message


def test_duplicate_keys_detection_is_exact():
    wide = b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(300)) + b"}"
    assert recordscan.duplicate_keys([wide]) == []
    assert recordscan.duplicate_keys([wide[:-1] + b',"k17":0}']) == [(0, "k17")]
    assert recordscan.duplicate_keys([b'{"a":{"b":1},"c":{"b":1}}', b'[{"a":1},{"a":1}]', b'{"a":1,']) == []
    assert recordscan.duplicate_keys([b'{"\\u00e9":1,"\xc3\xa9":2}']) == [(0, "\u00e9")]


def test_import_refuses_duplicate_key_records_and_keeps_the_rest(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    body = b'{"Records":[' + b",".join([json.dumps(rec(1)).encode(), DUPLICATES[0], json.dumps(rec(2)).encode()]) \
        + b"]}"
    (src / "dup.json").write_bytes(body)
    lk = Lake(str(tmp_path / "lake"))
    rep = Importer(new_store(lk, "dups"), [str(src)], workers=1).run()
    assert rep.ImportStatistics.EventsCompleted == 2
    assert failures(lk, rep) == {"dup.json#1": "DuplicateKey"}


def test_server_import_decodes_in_a_worker_process(server, cloudtrail_client, s3_env, monkeypatch):
    """StartImport through boto3: the server's own process must never decode an import, even a single small
    object (a hostile one would spend the server's memory). Its converter is broken here; the import still
    completes, because the decoding happens in a worker process."""
    import boto3

    from lake import importer
    from tests.conftest import make_bucket

    def broken(*a, **k):
        raise AssertionError("decoded in the server's own process")

    monkeypatch.setattr(importer, "convert_raw", broken)
    server.state.services["import_workers"] = 1
    bucket = make_bucket(s3_env)
    body = gzip.compress(json.dumps({"Records": [rec(1), rec(2), rec(3)]}).encode())
    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").put_object(
        Bucket=bucket, Key="logs/111111111111_CloudTrail_us-east-1_20240101T0000Z_x.json.gz", Body=body)
    ct = cloudtrail_client("alice")
    arn = ct.create_event_data_store(Name="imported", RetentionPeriod=3653,
                                     TerminationProtectionEnabled=False)["EventDataStoreArn"]
    iid = ct.start_import(Destinations=[arn], ImportSource={"S3": {
        "S3LocationUri": f"s3://{bucket}/logs", "S3BucketRegion": "us-east-1",
        "S3BucketAccessRoleArn": "arn:aws:iam::111111111111:role/import"}})["ImportId"]
    deadline = time.monotonic() + 120
    while (d := ct.get_import(ImportId=iid))["ImportStatus"] in ("INITIALIZING", "IN_PROGRESS"):
        assert time.monotonic() < deadline, d
        time.sleep(0.1)
    assert d["ImportStatus"] == "COMPLETED", d
    assert d["ImportStatistics"]["EventsCompleted"] == 3


def _big_log(path: Path, records: int) -> int:
    """A gzip trail log of `records` ~1 KB records, written piece by piece; returns its inflated size."""
    size = 0
    with gzip.open(path, "wb", compresslevel=1) as f:
        for part in (b'{"Records":[', *(
                (b"," if i else b"") + json.dumps(rec(i, requestParameters={"pad": f"{i:08d}" * 110})).encode()
                for i in range(records)), b"]}"):
            f.write(part)
            size += len(part)
    return size


def test_large_gzip_objects_are_split_while_inflated(tmp_path):
    """A large object's records are split piece by piece as it inflates: the whole text is never held, so the
    peak is about the records themselves (the old path held the text and the records: twice that)."""
    from lake.importer import split_raw

    path = tmp_path / "big.json.gz"
    size = _big_log(path, 40_000)
    data = path.read_bytes()
    tracemalloc.start()
    try:
        recs = split_raw(data, "big.json.gz")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(recs) == 40_000 and json.loads(recs[-1])["eventID"] == "id-39999"
    held = sum(map(len, recs)) + 40_000 * 33  # the records' bytes plus their object headers
    assert held > 0.9 * size
    assert peak < 1.5 * held, (peak, held)  # the usual split peaked at ~2.0x


def test_streamed_split_gives_the_records_of_the_usual_split(tmp_path, monkeypatch):
    from lake import importer
    from lake.generate import generate

    files = generate(str(tmp_path / "gen"), events=3_000, days=1, seed=5)
    odd = [b' {\n "Records" : [\n {"a": 1,\n "b": [1, 2]}, {"c": 12345}\n ]\n}\n', b'{"Records":[]}',
           b'{"Records":[{"a":"]}"}, 7]}' + b" " * 3000, b'{"Records":[{"a":1}],"x":1}', b'{"Records":[{"a":1},]}']
    blobs = [Path(f).read_bytes() for f in files] + [gzip.compress(o) for o in odd]

    def split_all() -> list:
        out = []
        for n, b in enumerate(blobs):
            try:
                out.append(importer.split_raw(b, f"f{n}"))
            except ValueError as e:
                out.append(str(e))
        return out

    monkeypatch.setattr(importer, "STREAM_SPLIT_BYTES", 1 << 40)
    usual = split_all()
    monkeypatch.setattr(importer, "STREAM_SPLIT_BYTES", 0)
    for piece in (1, 5, 4096):
        monkeypatch.setattr(importer, "STREAM_PIECE", piece)
        assert split_all() == usual, piece


def test_deep_records_are_refused_even_with_a_raised_recursion_limit(tmp_path):
    """Lake's SQL parser raises Python's recursion limit (deep queries); msgspec and the json module then
    recursed as deep as a hostile record went and overflowed an import thread's C stack (a segfault). Every
    path refuses such a record by its depth first. Run in a child process: the old code crashes it."""
    script = r'''
import gzip, json, sys, threading
sys.setrecursionlimit(60_000)
from lake.events import convert, convert_raw
from lake.importer import split_raw
deep = b'{"eventTime":"2024-01-01T00:00:00Z","eventID":"d","requestParameters":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
good = b'{"eventTime":"2024-01-01T00:00:00Z","eventID":"g","eventName":"A"}'
pretty = b'{"eventTime":"2024-01-01T00:00:00Z",\n"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
out = {}
def run():
    out["scanner"] = [r.code for r in convert_raw([good, deep, pretty]).rejects]
    out["arrow"] = [r.code for r in convert_raw([good, deep, pretty], scanner=False).rejects]
    out["python"] = [r.code for r in convert([good, deep, pretty]).rejects]
    out["ndjson"] = len(split_raw(good + b"\n" + deep + b"\n" + good, "f.jsonl"))
    out["array"] = len(split_raw(b"[" + good + b",\n" + good + b"]", "f.json"))
    out["deep-array"] = [r.code for r in convert_raw(split_raw(b"[" + good + b",\n" + deep + b"]", "g.json")).rejects]
t = threading.Thread(target=run)
t.start()
t.join()
print(json.dumps(out))
'''
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, (proc.returncode, proc.stderr.decode()[-500:])
    out = json.loads(proc.stdout)
    for path in ("scanner", "arrow", "python"):
        assert out.get(path) == ["InvalidJson", "InvalidJson"], (out, proc.stderr.decode()[-500:])
    assert out["ndjson"] == 3 and out["array"] == 2 and set(out["deep-array"]) == {"InvalidJson"}, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_killed_mid_import_fails_nothing_else(tmp_path):
    """A worker that dies (here SIGKILLed, as the OOM killer would) breaks the whole process pool: every
    chunk in flight failed with BrokenProcessPool and the next submit ended the import with a traceback.
    The chunks in flight now run again in a fresh pool: every event is imported, nothing fails."""
    src = tmp_path / "src"
    for n in range(24):
        write_log(src / f"f{n:03d}.json", [rec(n * 1000 + i, requestParameters={"pad": "x" * 400})
                                           for i in range(1000)])
    st = new_store(Lake(str(tmp_path / "lake")), "killed-worker")
    killed: list[int] = []

    def kill_one_worker(stats, total) -> None:
        if killed:
            return
        for c in _children(os.getpid()):
            cmd = Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")
            if "spawn_main" in cmd and "resource_tracker" not in cmd:
                os.kill(c, signal.SIGKILL)
                killed.append(c)
                return

    rep = Importer(st, [str(src)], workers=2, chunk_bytes=256 << 10, progress=kill_one_worker).run()
    assert killed, "no worker was running after the first chunk"
    assert rep.ImportStatus == "COMPLETED", failures(st.lake, rep)
    assert rep.ImportStatistics.FailedEntries == 0
    assert st.to_arrow().num_rows == 24_000


def test_lake_import_of_the_operator_follows_links_out_of_the_source(tmp_path):
    """Only sources named over the API are confined: `lake import`, run by the operator who can read the
    linked files anyway, follows a link to a log file kept elsewhere (a folder of links to the real logs
    imported before the confinement, and must still)."""
    src, elsewhere = tmp_path / "src", tmp_path / "elsewhere"
    write_log(src / "a.json", [rec(1)])
    write_log(elsewhere / "real.json", [rec(2)])
    os.symlink(elsewhere / "real.json", src / "b_link.json")
    lake_dir = tmp_path / "lake"
    new_store(Lake(str(lake_dir)), "linked")
    out = subprocess.run([sys.executable, "-m", "lake.cli", "--lake", str(lake_dir), "import", str(src),
                          "--store", "linked", "--no-progress"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(Lake(str(lake_dir)).store("linked").to_arrow().column("eventid").to_pylist()) == ["id-1", "id-2"]
