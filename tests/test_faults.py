"""Fault test (issue 15, acceptance): every mutating command is SIGKILLed at a random point, as a real process.

Scenarios: append (the Python API, batch after batch), import (`lake import` of trail log files), compact,
retention, vacuum including the purge of an expired store, trail delivery (`lake trails deliver`) and `lake
serve` under PutAuditEvents load. Each trial copies a prepared lake (with its own key store, so signed chain
heads stay consistent), starts the command, kills its whole process group after a random delay inside the
command's working time, and then checks:

- `lake verify` exits 0 (right after the kill, and again after the command is run to completion);
- nothing acknowledged is lost or duplicated: the events the child reported as appended (or the server
  answered as stored), and the events the lake held before, are each in the store exactly once;
- the audit store holds a record of every API call the server answered.

CI runs 12 trials (about a minute); LAKE_SLOW=1 runs 8 per scenario (56).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from test_crash_safety import audit_request_ids, client, recover_audit, start_serve

import lake

pytestmark = pytest.mark.slow  # the CI size is small; LAKE_SLOW=1 runs 8 trials per scenario

REPO = Path(__file__).resolve().parent.parent
SLOW = os.environ.get("LAKE_SLOW") == "1"
ACCOUNTS = ("111111111111", "222222222222")


def trials(ci: int) -> int:
    return 8 if SLOW else ci


def rec(eid: str, when: datetime, n: int = 0) -> dict:
    return {"eventVersion": "1.08", "eventID": eid, "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": "s3.amazonaws.com", "eventName": "PutObject", "awsRegion": "us-east-1",
            "recipientAccountId": ACCOUNTS[n % 2], "eventCategory": "Management", "managementEvent": True,
            "readOnly": False, "eventType": "AwsApiCall", "sourceIPAddress": "192.0.2.1",
            "userIdentity": {"type": "IAMUser", "userName": f"u{n % 7}", "accountId": ACCOUNTS[n % 2]},
            "requestParameters": {"bucketName": "b", "key": f"k{n}"}}


def batch(k: int, size: int = 10, *, days: int = 2) -> list[dict]:
    """Batch `k`: deterministic eventIDs (a retry of the batch is the same events)."""
    now = datetime.now(timezone.utc)
    return [rec(str(uuid.uuid5(uuid.NAMESPACE_OID, f"b{k}-{i}")), now - timedelta(hours=(k * size + i) % (24 * days)),
                k * size + i) for i in range(size)]


class Trial:
    """One copy of a prepared lake, its key store and env."""

    def __init__(self, template: Path, root: Path):
        shutil.copytree(template, root)
        self.root = root
        self.lake_dir = root / "lake"
        self.env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    "LAKE_KEY_DIR": str(root / "keys"), "LAKE_ACCOUNT_ID": ACCOUNTS[0], "LAKE_REGION": "us-east-1"}
        os.environ["LAKE_KEY_DIR"] = str(root / "keys")  # in-process writes sign with this lake's key store

    def lake(self):
        return lake.connect(str(self.lake_dir), account_id=ACCOUNTS[0])

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lake.cli", "--lake", str(self.lake_dir), *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout, check=False)

    def verify(self, when: str, *, cli: bool = False) -> None:
        """`lake verify` passes: the CLI itself (`cli=True`), or the same check in this process (faster)."""
        if cli:
            r = self.cli("--format", "json", "verify")
            assert r.returncode == 0, f"lake verify failed {when}: {r.stdout[-3000:]} {r.stderr[-2000:]}"
            return
        from lake.verify import verify

        report = verify(self.lake())
        bad = [f for s in report["stores"] for f in s["findings"]] + report["catalog"]
        assert report["ok"], f"lake verify failed {when}: {bad[:3]}"

    def kill_at_random(self, argv: list[str], rng: random.Random, window: tuple[float, float],
                       ready: str | None = None) -> tuple[int, list[str]]:
        """Run `argv`, SIGKILL its process group after a random delay in `window` (seconds after it printed
        `ready`, or after start); returns (exit code, its stdout lines)."""
        out = open(self.root / "child.out", "wb")  # noqa: SIM115 - the child's stdout, read after it dies
        proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=open(self.root / "child.err", "wb"),  # noqa: SIM115
                                start_new_session=True, cwd=str(self.root))
        t0 = time.monotonic()
        if ready:
            while time.monotonic() - t0 < 60 and proc.poll() is None:
                if ready.encode() in (self.root / "child.out").read_bytes():
                    break
                time.sleep(0.02)
            t0 = time.monotonic()
        delay = rng.uniform(*window)
        while time.monotonic() - t0 < delay and proc.poll() is None:
            time.sleep(0.01)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: it and any worker it started
        proc.wait()
        out.close()
        return proc.returncode, (self.root / "child.out").read_text().splitlines()


def event_ids(st) -> Counter:
    t = st.to_arrow()
    return Counter(t.column("eventid").to_pylist())


def assert_once(have: Counter, expected: set[str], what: str) -> None:
    missing = [e for e in expected if have[e] == 0]
    dups = {e: n for e, n in have.items() if n > 1}
    assert not missing, f"{what}: {len(missing)} acknowledged events lost"
    assert not dups, f"{what}: {len(dups)} events stored more than once"


@pytest.fixture
def keys_env(monkeypatch):
    """Children and in-process writes use the trial's own key store; restored afterwards."""
    monkeypatch.setenv("LAKE_KEY_DIR", os.environ.get("LAKE_KEY_DIR", ""))
    yield


def template_lake(base: Path, name: str = "fault", *, retention: int | None = None) -> tuple[Path, object]:
    base.mkdir(parents=True)
    os.environ["LAKE_KEY_DIR"] = str(base / "keys")
    lk = lake.connect(str(base / "lake"), account_id=ACCOUNTS[0])
    st = lk.create_store(name, termination_protection=False,
                         **({"retention_days": retention} if retention else {}))
    return base, st


# ---- append ------------------------------------------------------------------------------------------------

APPEND_CHILD = r"""
import sys, uuid
sys.path.insert(0, sys.argv[2])
import lake
from test_faults import batch
st = lake.connect(sys.argv[1], account_id="111111111111").store("fault")
print("READY", flush=True)
for k in range(1000, 100000):
    st.append(batch(k), source="import")
    print("ACK", k, flush=True)
"""


def test_sigkill_append(tmp_path, keys_env):
    """A writer appending batch after batch is killed: every acknowledged batch is stored once, an
    unacknowledged batch wholly or not at all, and appending it again adds nothing twice."""
    rng = random.Random(1)
    base, st = template_lake(tmp_path / "template")
    for k in range(3):
        st.append(batch(k), source="import")
    before = set(event_ids(st))
    for n in range(trials(2)):
        tr = Trial(base, tmp_path / f"t{n}")
        code, lines = tr.kill_at_random([sys.executable, "-c", APPEND_CHILD, str(tr.lake_dir),
                                         str(Path(__file__).parent)], rng, (0.05, 1.5), ready="READY")
        assert code == -9
        acked = [int(x.split()[1]) for x in lines if x.startswith("ACK")]
        tr.verify("after the kill", cli=n == 0)
        st2 = tr.lake().store("fault")
        have = event_ids(st2)
        expected = before | {r["eventID"] for k in acked for r in batch(k)}
        assert_once(have, expected, "append")
        nxt = (max(acked) + 1) if acked else 1000
        part = [r["eventID"] for r in batch(nxt) if have[r["eventID"]]]
        assert len(part) in (0, 10), "a batch was stored in part"
        st2.append(batch(nxt), source="import")  # the writer's retry
        assert_once(event_ids(st2), expected | {r["eventID"] for r in batch(nxt)}, "append retried")
        tr.verify("after the retry")


# ---- import ------------------------------------------------------------------------------------------------

def test_sigkill_import(tmp_path, keys_env):
    """`lake import` of a folder of trail log files is killed (with its workers); running the import again
    stores every source event exactly once."""
    import gzip

    rng = random.Random(2)
    base, _ = template_lake(tmp_path / "template")
    src = base / "src" / "AWSLogs" / ACCOUNTS[0] / "CloudTrail" / "us-east-1"
    all_ids: set[str] = set()
    for k in range(24):
        recs = batch(k, 200)
        all_ids |= {r["eventID"] for r in recs}
        day = datetime.now(timezone.utc)
        d = src / day.strftime("%Y/%m/%d")
        d.mkdir(parents=True, exist_ok=True)
        name = f"{ACCOUNTS[0]}_CloudTrail_us-east-1_{day:%Y%m%dT%H%M}Z_{k:016d}.json.gz"
        (d / name).write_bytes(gzip.compress(json.dumps({"Records": recs}).encode()))
    for n in range(trials(2)):
        tr = Trial(base, tmp_path / f"t{n}")
        code, _ = tr.kill_at_random([sys.executable, "-m", "lake.cli", "--lake", str(tr.lake_dir), "import",
                                     "--store", "fault", "--workers", "1", "--no-progress", str(tr.root / "src")],
                                    rng, (0.8, 3.0))
        tr.verify("after the kill", cli=n == 0)
        have = event_ids(tr.lake().store("fault"))
        assert_once(have, set() if code else all_ids, "import (killed)")
        r = tr.cli("import", "--store", "fault", "--workers", "1", "--no-progress", str(tr.root / "src"))
        assert r.returncode == 0, r.stderr[-2000:]
        assert_once(event_ids(tr.lake().store("fault")), all_ids, "import (again)")
        assert set(event_ids(tr.lake().store("fault"))) == all_ids
        tr.verify("after the import ran again")


# ---- compact -----------------------------------------------------------------------------------------------

def test_sigkill_compact(tmp_path, keys_env):
    """`lake compact` over many small segments is killed: the store holds the same events, once each."""
    rng = random.Random(3)
    base, st = template_lake(tmp_path / "template")
    for k in range(25):
        st.append(batch(k), source="import")
    before = set(event_ids(st))
    for n in range(trials(2)):
        tr = Trial(base, tmp_path / f"t{n}")
        tr.kill_at_random([sys.executable, "-m", "lake.cli", "--lake", str(tr.lake_dir), "compact", "--store",
                           "fault"], rng, (0.6, 2.0))
        tr.verify("after the kill", cli=n == 0)
        have = event_ids(tr.lake().store("fault"))
        assert_once(have, before, "compact")
        assert set(have) == before
        r = tr.cli("compact", "--store", "fault")
        assert r.returncode == 0, r.stderr[-2000:]
        assert event_ids(tr.lake().store("fault")) == Counter(before)
        tr.verify("after compaction ran again")


# ---- retention ---------------------------------------------------------------------------------------------

def test_sigkill_retention(tmp_path, keys_env):
    """`lake retention --apply` is killed: events inside the retention period are all there, once; events
    past it are either all there (nothing committed) or all gone, and a second run removes them."""
    rng = random.Random(4)
    base, st = template_lake(tmp_path / "template", retention=3653)
    for k in range(20):
        st.append(batch(k, 15, days=20), source="import")
    st.update(retention_days=7)
    now = datetime.now(timezone.utc)
    rows = st.to_arrow().select(["eventid", "eventtime"]).to_pylist()
    keep = {r["eventid"] for r in rows if r["eventtime"] >= now - timedelta(days=7) + timedelta(hours=1)}
    old = {r["eventid"] for r in rows if r["eventtime"] < now - timedelta(days=7) - timedelta(hours=1)}
    assert keep and old
    for n in range(trials(2)):
        tr = Trial(base, tmp_path / f"t{n}")
        tr.kill_at_random([sys.executable, "-m", "lake.cli", "--lake", str(tr.lake_dir), "retention", "--store",
                           "fault", "--apply"], rng, (0.6, 2.0))
        tr.verify("after the kill", cli=n == 0)
        have = event_ids(tr.lake().store("fault"))
        assert_once(have, keep, "retention")
        left = old & set(have)
        assert left in (set(), old), f"{len(left)} of {len(old)} expired events left: part of a commit"
        r = tr.cli("retention", "--store", "fault", "--apply")
        assert r.returncode == 0, r.stderr[-2000:]
        assert not old & set(event_ids(tr.lake().store("fault")))
        tr.verify("after retention ran again")


# ---- vacuum, with the purge of an expired store --------------------------------------------------------------

# A purge of a small store takes milliseconds, so a kill after a random delay would rarely land inside it:
# this child SIGKILLs itself before its k-th file deletion, k random (the deletions are the real ones).
VACUUM_CHILD = r"""
import os, signal, sys
from datetime import datetime, timedelta, timezone
import lake
from lake import maintenance
from lake.storage import Storage
kill_at, count = int(sys.argv[2]), [0]
def counting(fn):
    def wrapped(self, path, *a, **kw):
        if count[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1
        return fn(self, path, *a, **kw)
    return wrapped
Storage.delete = counting(Storage.delete)
Storage.delete_tree = counting(Storage.delete_tree)
maintenance.vacuum(lake.connect(sys.argv[1]), dry_run=False, grace=timedelta(0),
                   now=datetime.now(timezone.utc) + timedelta(days=8))
print("DONE", count[0], flush=True)
"""


def test_sigkill_vacuum_with_purge(tmp_path, keys_env):
    """Vacuum deleting retired segments and purging an expired store is killed: the lake verifies, the
    live store is intact, the purged store is gone, and the next vacuum finishes."""
    rng = random.Random(5)
    base, st = template_lake(tmp_path / "template")
    for k in range(20):
        st.append(batch(k), source="import")
    from lake import maintenance
    maintenance.compact(st)  # retired segments for vacuum to delete
    lk = lake.connect(str(base / "lake"))
    doomed = lk.create_store("doomed", termination_protection=False)
    for k in range(100, 112):
        doomed.append(batch(k), source="import")
    doomed.delete()
    before = set(event_ids(st))
    later = datetime.now(timezone.utc) + timedelta(days=8)
    total = maintenance.vacuum(lk, grace=timedelta(0), now=later)["files"] + 3  # + a name, the folder, a marker
    for n in range(trials(2)):
        tr = Trial(base, tmp_path / f"t{n}")
        k = rng.randint(total // 2, total) if n % 2 == 0 else rng.randint(0, total)  # every other one: the purge
        r = subprocess.run([sys.executable, "-c", VACUUM_CHILD, str(tr.lake_dir), str(k)],
                           env=tr.env, capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode in (0, -9), r.stderr[-2000:]
        tr.verify("after the kill", cli=n == 0)
        lk2 = tr.lake()
        assert set(event_ids(lk2.store("fault"))) == before
        names = sorted(s.name for s in lk2.stores())  # the clock is real: `doomed` is only pending deletion
        began = bool(lk2.storage.list("_catalog/purging")) or "doomed" not in names
        assert names == (["fault"] if began else ["doomed", "fault"])
        maintenance.vacuum(lk2, dry_run=False, grace=timedelta(0), now=datetime.now(timezone.utc) + timedelta(days=8))
        tr.verify("after vacuum ran again")
        assert lk2.storage.list_dirs("stores") == [lk2.store("fault").id]
        assert_once(event_ids(lk2.store("fault")), before, "vacuum")


# ---- trail delivery ----------------------------------------------------------------------------------------

def delivered_ids(bucket: Path) -> Counter:
    import gzip

    c: Counter = Counter()
    for f in bucket.rglob("*.json.gz"):
        if "CloudTrail-Digest" in str(f):
            continue
        c.update(r["eventID"] for r in json.loads(gzip.decompress(f.read_bytes()))["Records"])
    return c


def test_sigkill_trail_delivery(tmp_path, keys_env):
    """`lake trails deliver` is killed while writing log files: delivering again sends every event of the
    store exactly once, and the lake verifies."""
    from lake.trails import TrailCatalog, map_bucket

    rng = random.Random(6)
    base, st = template_lake(tmp_path / "template")
    lk = lake.connect(str(base / "lake"), account_id=ACCOUNTS[0])
    map_bucket(lk, "trail-bucket", "bucket")  # relative: each trial's copy delivers into its own folder
    cat = TrailCatalog(lk)
    cat.set_logging(cat.create("main", "trail-bucket", owner=ACCOUNTS[0], region="us-east-1", multi_region=True),
                    True)
    for k in range(20):  # after logging started: a trail delivers what arrives from then on
        st.append(batch(k, 30), source="import")
    rows = st.to_arrow().select(["eventid", "recipientaccountid"]).to_pylist()
    expected = Counter(r["eventid"] for r in rows if r["recipientaccountid"] == ACCOUNTS[0])  # the owner's
    assert expected
    for n in range(trials(1)):
        tr = Trial(base, tmp_path / f"t{n}")
        tr.kill_at_random([sys.executable, "-m", "lake.cli", "--lake", str(tr.lake_dir), "trails", "deliver"],
                          rng, (0.7, 2.5))
        tr.verify("after the kill", cli=n == 0)
        for _ in range(3):  # a replayed batch, then the rest
            r = subprocess.run([sys.executable, "-m", "lake.cli", "--lake", str(tr.lake_dir), "trails", "deliver"],
                               env=tr.env, cwd=str(tr.root), capture_output=True, text=True, timeout=300, check=False)
            assert r.returncode == 0, r.stderr[-2000:]
            got = delivered_ids(tr.root / "bucket")
            if got == expected:
                break
        assert got == expected, (f"{sum((expected - got).values())} events not delivered, "
                                 f"{sum((got - expected).values())} delivered twice")
        tr.verify("after delivery ran again")


# ---- the server under PutAuditEvents load ------------------------------------------------------------------

def put_load(url: str, channel: str, acked_events: list[str], acked_calls: list[str], stop, threads: int = 4):
    import threading

    from botocore.exceptions import BotoCoreError, ClientError

    lock = threading.Lock()

    def work(n: int) -> None:
        c = client(url, "cloudtrail-data")
        i = 0
        while not stop.is_set():
            i += 1
            events = [{"id": f"e{j}", "eventData": json.dumps({
                "version": "0.01", "UID": f"{n}-{i}-{j}", "userIdentity": {"type": "CustomUser", "principalId": "p"},
                "eventSource": "app.example.com", "eventName": "DocumentOpened",
                "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "recipientAccountId": ACCOUNTS[0]})} for j in range(5)]
            try:
                r = c.put_audit_events(channelArn=channel, auditEvents=events)
            except ClientError as e:
                with lock:
                    acked_calls.append(e.response["ResponseMetadata"].get("RequestId"))
                continue
            except (BotoCoreError, OSError):
                return
            with lock:
                acked_calls.append(r["ResponseMetadata"]["RequestId"])
                acked_events.extend(s["eventID"] for s in r["successful"])

    ts = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def test_sigkill_server_under_put_audit_events(tmp_path, keys_env):
    """`lake serve` taking PutAuditEvents from 4 clients is killed: every event it answered as stored is in
    the channel's store once, and (after the next start replays the journal) the audit store has a record of
    every call it answered."""
    import threading

    rng = random.Random(7)
    base = tmp_path / "template"
    base.mkdir()
    os.environ["LAKE_KEY_DIR"] = str(base / "keys")
    env_keys = {"LAKE_KEY_DIR": str(base / "keys")}
    os.environ.update(env_keys)
    proc, url = start_serve(base / "lake")
    try:
        ct = client(url)
        arn = ct.create_event_data_store(Name="integrations", TerminationProtectionEnabled=False,
                                         AdvancedEventSelectors=[{"Name": "a", "FieldSelectors": [
                                             {"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}]
                                         )["EventDataStoreArn"]
        channel = ct.create_channel(Name="app", Source="Custom", Destinations=[
            {"Type": "EVENT_DATA_STORE", "Location": arn}])["ChannelArn"]
    finally:
        proc.terminate()
        proc.wait()
    for n in range(trials(1)):
        tr = Trial(base, tmp_path / f"t{n}")
        proc, url = start_serve(tr.lake_dir)
        events: list[str] = []
        calls: list[str] = []
        stop = threading.Event()
        t = threading.Thread(target=put_load, args=(url, channel, events, calls, stop))
        t.start()
        deadline = time.monotonic() + 30
        while len(calls) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        t.join()
        assert calls
        tr.verify("after the kill", cli=n == 0)
        assert_once(event_ids(tr.lake().store("integrations")), set(events), "PutAuditEvents")
        recover_audit(tr.lake_dir)  # what the next start does first
        ids = Counter(audit_request_ids(tr.lake_dir))
        missing = [c for c in calls if not ids[c]]
        assert not missing, f"{len(missing)} of {len(calls)} answered calls have no audit record"
        assert not [c for c, k in ids.items() if k > 1], "audit records stored twice"
        tr.verify("after the audit journal was replayed")
