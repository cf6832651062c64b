"""Concurrency and crash safety of the commit protocol (docs/ARCHITECTURE.md 4.2, invariants 1-4), with real
OS processes: no mocks, every writer is a separate `sys.executable -c` child.

1. test_concurrent_appends: 4 processes append overlapping batches to one store at the same instant (local
   directory and S3 on moto). Every event ends up stored exactly once, every input record is accounted for
   exactly once (appended or duplicate), no two writers ever get the same version, the log is contiguous and
   `verify` is clean.
2. test_sigkill_writer_random / _s3: a child appends numbered batches and is SIGKILLed after a random delay.
   After each kill the store opens, `verify` is ok (orphans allowed), the events present are exactly the
   whole batches that have an IMPORT commit, and a new writer appends on top.
   test_sigkill_writer_at_protocol_points: the same checks, but the child SIGKILLs itself at exact points of
   the protocol that a random delay rarely hits (temp files half made, commit linked but temp not removed,
   checkpoint sidecar without checkpoint, ...).
3. test_create_store_name_race: two processes create stores with the same names at the same instant; each
   name ends with one store and one AlreadyExists.

The children only add pass-through wrappers (phase markers written to a file, a conflict counter and, for the
targeted trials, a self-SIGKILL at one point); every file operation is the real one.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import pytest

import lake
import lake.log
from conftest import make_bucket, sample_records
from lake.errors import AlreadyExists
from lake.verify import verify

TESTS_DIR = str(Path(__file__).resolve().parent)
REPO = str(Path(__file__).resolve().parent.parent)
SLOW = os.environ.get("LAKE_SLOW") == "1"
CHILD_TIMEOUT = 60.0


# -- child processes ------------------------------------------------------------------------------------

class Child:
    """One `python -c script` child with line-based stdin/stdout; stderr goes to a temp file for messages."""

    def __init__(self, script: str):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, bufsize=0, cwd=REPO, env=os.environ.copy())

    def send(self, obj) -> None:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def readline(self, timeout: float = CHILD_TIMEOUT) -> str:
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise AssertionError(f"child sent no line within {timeout}s; stderr:\n{self.stderr()}")
            if not select.select([fd], [], [], left)[0]:
                continue
            ch = os.read(fd, 1)
            if not ch:
                self.proc.wait(10)
                raise AssertionError(f"child exited ({self.proc.returncode}) early; stderr:\n{self.stderr()}")
            buf += ch
        return buf.decode().rstrip("\n")

    def expect(self, word: str) -> None:
        line = self.readline()
        assert line == word, f"child said {line!r}, expected {word!r}; stderr:\n{self.stderr()}"

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read().decode(errors="replace")[-4000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL to this child's pid only
        self.proc.wait(30)

    def close(self) -> None:
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self.err.close()


class Warm:
    """Keeps one child of `script` importing in the background while the parent checks the previous trial,
    so the ~0.5 s interpreter + polars/pyarrow start-up overlaps with useful work."""

    def __init__(self, script: str):
        self.script = script
        self.next: Child | None = None
        self.started: list[Child] = []

    def take(self) -> Child:
        child = self.next or self._spawn()
        self.next = self._spawn()
        child.expect("warm")
        return child

    def _spawn(self) -> Child:
        c = Child(self.script)
        self.started.append(c)
        return c

    def close(self) -> None:
        for c in self.started:
            c.close()


# Appender for test 1: appends its batches once the shared start time arrives, reports every AppendResult
# and how many of its commit attempts lost to another writer (pass-through counter around Log.try_commit).
WRITER = r"""
import json, sys, time
import lake
from lake.log import Log

conflicts = 0
_try_commit = Log.try_commit
def try_commit(self, *a, **k):
    global conflicts
    new = _try_commit(self, *a, **k)
    conflicts += new is None
    return new
Log.try_commit = try_commit

print("warm", flush=True)
cfg = json.loads(sys.stdin.readline())
batches = json.load(open(cfg["batches"]))
store = lake.connect(cfg["uri"]).store(cfg["store"])
store.snapshot()
print("ready", flush=True)
go = json.loads(sys.stdin.readline())
while time.time() < go - 0.003:
    time.sleep(0.001)
while time.time() < go:
    pass
out = []
for batch in batches:
    r = store.append(batch, source="import")
    out.append({"version": r.version, "appended": r.appended, "duplicates": r.duplicates, "n": len(batch),
                "rejected": len(r.rejected), "expired": r.expired})
print(json.dumps({"results": out, "conflicts": conflicts}), flush=True)
"""

# Crash child for test 2. Phase markers ("+name" on entry, "-name" on exit, "=..." per batch) go to a file
# with unbuffered os.write, so the parent knows where the SIGKILL landed. With cfg["die"] = {"point", "nth"}
# the child SIGKILLs itself the nth time it reaches that point.
KILLABLE = r"""
import builtins, json, os, signal, sys
import lake, lake.events, lake.log, lake.segments, lake.storage
from lake.log import Log
from lake.storage import Storage

print("warm", flush=True)
cfg = json.loads(sys.stdin.readline())
sys.path.insert(0, cfg["tests_dir"])
from conftest import sample_records

fd = os.open(cfg["phase_file"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
def mark(s):
    os.write(fd, (s + "\n").encode())

if cfg.get("checkpoint_interval"):
    lake.log.CHECKPOINT_INTERVAL = cfg["checkpoint_interval"]  # checkpoints every few commits
die = cfg.get("die")
hits = {}
def point(name):
    if die and die["point"] == name:
        hits[name] = hits.get(name, 0) + 1
        if hits[name] == die["nth"]:
            mark("!" + name)
            os.kill(os.getpid(), signal.SIGKILL)

def kind(path):
    p = str(path).replace(os.sep, "/")
    if "/_txn/" in p: return "intent"
    if p.endswith(".sha256"): return "sidecar"
    if ".checkpoint" in p: return "checkpoint"
    if p.endswith("_last_checkpoint"): return "hint"
    if "/_log/" in p: return "commit"
    if "/data/" in p: return "segment"
    return "other"

def phase(name, fn):
    def wrapper(*a, **k):
        mark("+" + name)
        out = fn(*a, **k)
        mark("-" + name)
        return out
    return wrapper

lake.events.convert = phase("convert", lake.events.convert)
lake.segments.write_segment = phase("write_segment", lake.segments.write_segment)
Log.write_checkpoint = phase("write_checkpoint", Log.write_checkpoint)
Log.load = phase("load", Log.load)
lake.store.Store._keys = phase("dedupe", lake.store.Store._keys)

_create = Storage.create
def create(self, path, data):
    k = kind(path)
    point("before-create:" + k)
    mark("+create:" + k)
    out = _create(self, path, data)
    mark("-create:" + k)
    return out
Storage.create = create

_write = Storage.write
def write(self, path, data):
    point("before-write:" + kind(path))
    return _write(self, path, data)
Storage.write = write

_link = os.link
def link(src, dst, *a, **k):
    point("before-link:" + kind(dst))
    out = _link(src, dst, *a, **k)
    point("after-link:" + kind(dst))
    return out
os.link = link

class HalfWriter:
    # a segment stream that can die with half of the bytes on disk
    def __init__(self, f): self.f = f
    def write(self, data):
        half = len(data) // 2
        self.f.write(data[:half]); self.f.flush()
        point("segment-half-written")
        return self.f.write(data[half:]) + half
    def __getattr__(self, name): return getattr(self.f, name)
    def __enter__(self): return self
    def __exit__(self, *exc): self.f.close()

def storage_open(file, mode="r", *a, **k):
    f = builtins.open(file, mode, *a, **k)
    if "w" in mode:
        if os.path.basename(str(file)).startswith(".tmp-"):
            point("tmp-opened:" + kind(file))  # the temp file exists, still empty
        elif kind(file) == "segment":
            return HalfWriter(f)
    return f
lake.storage.open = storage_open  # shadows the builtin inside lake/storage.py only

batches = []
for b, spec in enumerate(cfg["plan"]):
    recs = sample_records(spec["n"], seed=spec["seed"], accounts=spec["accounts"], days=spec["days"])
    for i, r in enumerate(recs):
        r["eventID"] = f"{cfg['tag']}-b{b:04d}-{i:05d}"
    batches.append(recs)
store = lake.connect(cfg["uri"]).store(cfg["store"])
store.snapshot()
print("ready", flush=True)
sys.stdin.readline()  # go
for b, recs in enumerate(batches):
    mark(f"=start {b}")
    r = store.append(recs, source="import")
    mark(f"=done {b} {r.version} {r.appended}")
print("finished", flush=True)
sys.stdin.readline()
"""

# Store creator for test 3: tries to create each name at go + i * gap.
CREATOR = r"""
import json, sys, time
import lake
from lake.errors import AlreadyExists

print("warm", flush=True)
cfg = json.loads(sys.stdin.readline())
lk = lake.connect(cfg["uri"])
print("ready", flush=True)
go = json.loads(sys.stdin.readline())
out = []
for i, name in enumerate(cfg["names"]):
    t = go + i * cfg["gap"]
    while time.time() < t - 0.003:
        time.sleep(0.001)
    while time.time() < t:
        pass
    try:
        out.append({"name": name, "id": lk.create_store(name, retention_days=30).id})
    except AlreadyExists as e:
        out.append({"name": name, "exists": str(e), "type": type(e).__name__})
print(json.dumps(out), flush=True)
"""


def _start_together(children: list[Child], configs: list[dict], lead: float = 0.3) -> None:
    """Configure every child, wait until all are ready, then give them one start time shortly ahead."""
    for c, cfg in zip(children, configs):
        c.expect("warm")
        c.send(cfg)
    for c in children:
        c.expect("ready")
    go = time.time() + lead
    for c in children:
        c.send(go)


def _assert_verified(lk, context: str) -> dict:
    rep = verify(lk)
    findings = [f for s in rep["stores"] for f in s["findings"]] + rep["catalog"]
    assert rep["ok"], f"{context}: verify found {json.dumps(findings, indent=1)[:3000]}"
    return rep


def _contiguous_log(store) -> list[dict]:
    """The commits, after checking that versions run 0..head without a gap."""
    snap = store.snapshot()
    commits = list(store.log.commits())
    assert [v for v, _, _ in commits] == list(range(snap.version + 1))
    assert [c["version"] for _, c, _ in commits] == list(range(snap.version + 1))
    return [c for _, c, _ in commits]


# -- 1. concurrent appenders ----------------------------------------------------------------------------

def _overlapping_batches(pool: list[dict], procs: int, rounds: int, seed: int) -> list[list[list[dict]]]:
    """Batches per process. Process p owns slice p of the pool and appends it over `rounds` batches; batch i
    also carries half of what process p+1 appends in the same round (cross-process overlap, committed at the
    same time), some of its own previous batch and a few repeated records (within-process overlap)."""
    rng = random.Random(seed)
    own = [pool[p::procs] for p in range(procs)]
    slices = [[o[i::rounds] for i in range(rounds)] for o in own]
    out = []
    for p in range(procs):
        batches = []
        for i in range(rounds):
            b = list(slices[p][i])
            nxt = slices[(p + 1) % procs][i]
            b += rng.sample(nxt, len(nxt) // 2)
            if i:
                prev = slices[p][i - 1]
                b += rng.sample(prev, min(len(prev), 10))
            b += rng.sample(b, 5)  # repeats inside the batch
            rng.shuffle(b)
            batches.append(b)
        out.append(batches)
    return out


def _run_concurrent_appends(uri: str, tmp: Path, *, procs: int, rounds: int, events: int, seed: int) -> dict:
    lk = lake.connect(uri)
    store = lk.create_store("concurrent", retention_days=3653)
    pool = sample_records(events, seed=seed, accounts=2, days=1)
    per_proc = _overlapping_batches(pool, procs, rounds, seed)
    files = []
    for p, batches in enumerate(per_proc):
        f = tmp / f"batches-{p}.json"
        f.write_text(json.dumps(batches))
        files.append(f)
    children = [Child(WRITER) for _ in range(procs)]
    try:
        _start_together(children, [{"uri": uri, "store": "concurrent", "batches": str(f)} for f in files])
        reports = [json.loads(c.readline()) for c in children]
        for c in children:
            assert c.proc.wait(30) == 0, c.stderr()
    finally:
        for c in children:
            c.close()

    universe = {(r["eventID"], r["recipientAccountId"]) for r in pool}
    inputs = {(r["eventID"], r["recipientAccountId"]) for batches in per_proc for b in batches for r in b}
    assert inputs == universe  # the batches cover the pool exactly
    results = [r for rep in reports for r in rep["results"]]
    for r in results:  # every input record is accounted for once: stored or a duplicate
        assert r["rejected"] == 0 and r["expired"] == 0
        assert r["appended"] + r["duplicates"] == r["n"], r
    assert sum(r["appended"] for r in results) == len(universe)

    # no two writers were ever told they made the same commit
    versions = [r["version"] for r in results if r["version"] is not None]
    assert len(versions) == len(set(versions))

    fresh = lake.connect(uri).store("concurrent")
    commits = _contiguous_log(fresh)
    imports = [c for c in commits if c["operation"] == "IMPORT"]
    assert sorted(c["version"] for c in imports) == sorted(versions)
    assert sum(c["info"]["rows"] for c in imports) == len(universe)

    table = fresh.to_arrow()
    keys = list(zip(table.column("eventid").to_pylist(), table.column("recipientaccountid").to_pylist()))
    assert table.num_rows == len(set(keys)) == len(set(table.column("eventid").to_pylist())) == len(universe)
    assert set(keys) == universe
    rep = _assert_verified(lake.connect(uri), "after concurrent appends")
    assert rep["stores"][0]["events"] == rep["stores"][0]["distinct_events"] == len(universe)

    # the writers really overlapped: commits of different processes interleave and some attempts lost
    owner = {r["version"]: p for p, rep_ in enumerate(reports) for r in rep_["results"] if r["version"] is not None}
    order = [owner[v] for v in sorted(owner)]
    runs = 1 + sum(1 for a, b in zip(order, order[1:]) if a != b)
    conflicts = sum(rep_["conflicts"] for rep_ in reports)
    # (on a loaded machine one process can finish before another starts; either sign of overlap will do)
    assert runs > procs or conflicts > 0, f"the writers never overlapped: commit order {order}, no lost races"
    assert store.snapshot().version == fresh.snapshot().version
    return {"commits": len(imports), "conflicts": conflicts, "events": len(universe),
            "inputs": sum(r["n"] for r in results)}


def test_concurrent_appends(lake_uri, tmp_path):
    stats = _run_concurrent_appends(lake_uri, tmp_path, procs=4, rounds=4, events=800, seed=7)
    print(f"\nconcurrent appends {'s3' if lake_uri.startswith('s3://') else 'local'}: {stats}")


# -- 2. SIGKILLed writers -------------------------------------------------------------------------------

def _plan(rng: random.Random, batches: int) -> list[dict]:
    """Batch shapes from a single event to ~800 events over 1..12 (account, date) partitions, so a kill
    lands in conversion, segment writing, the intent, the commit or a checkpoint."""
    return [{"n": rng.choice([1, 7, 40, 150, 300, 800]), "accounts": rng.randint(1, 3),
             "days": rng.choice([0, 1, 3]), "seed": rng.randrange(1 << 30)} for _ in range(batches)]


def _fast_forward(store, commits_until_checkpoint: int | None) -> None:
    """Make real metadata commits until the child's `commits_until_checkpoint`-th commit lands on a checkpoint
    version (a multiple of lake.log.CHECKPOINT_INTERVAL, which `verify` checks against the replayed log)."""
    if commits_until_checkpoint is None:
        return
    interval = lake.log.CHECKPOINT_INTERVAL
    v = store.snapshot().version
    target = (v // interval + 1) * interval - commits_until_checkpoint
    if target <= v:
        target += interval
    for i in range(target - v):
        store.update(termination_protection=bool(i % 2))
    assert store.snapshot().version == target


def _kill_phase(lines: list[str]) -> str:
    """Where the child was when it died: the innermost open phase, or `between` phases."""
    stack: list[str] = []
    for line in lines:
        if line.startswith("+"):
            stack.append(line[1:])
        elif line.startswith("-"):
            if stack and stack[-1] == line[1:]:
                stack.pop()
        elif line.startswith("=start"):
            stack = []
        elif line.startswith("!"):
            return "at " + line[1:]
    return stack[-1] if stack else "between"


def _check_after_kill(root: str, tag: str, plan: list[dict], marks: list[str]) -> dict:
    """The acceptance checks after a SIGKILL, then a new writer on top."""
    lk = lake.connect(root)
    store = lk.store("crash")
    rep = _assert_verified(lk, f"{tag}: after the kill")
    commits = _contiguous_log(store)
    imports = [c for c in commits if c["operation"] == "IMPORT"]
    k = len(imports)

    ids = store.to_arrow().column("eventid").to_pylist()
    assert len(ids) == len(set(ids)), "an event is stored twice"
    by_batch: dict[int, set] = {}
    for e in ids:
        t, b, _ = e.split("-")
        assert t == tag
        by_batch.setdefault(int(b[1:]), set()).add(e)
    # whole batches, in order, one per IMPORT commit
    assert sorted(by_batch) == list(range(k)), f"batches present {sorted(by_batch)} vs {k} IMPORT commits"
    for b, present in by_batch.items():
        assert present == {f"{tag}-b{b:04d}-{i:05d}" for i in range(plan[b]["n"])}, f"batch {b} is partial"
    assert [c["info"]["rows"] for c in imports] == [plan[b]["n"] for b in range(k)]
    done = sum(1 for m in marks if m.startswith("=done"))
    assert done <= k <= done + 1, f"child reported {done} batches committed, log has {k}"

    # a new writer (new connection, new process state) appends on top
    extra = sample_records(60, seed=zlib.crc32(tag.encode()), accounts=2, days=1)
    for i, r in enumerate(extra):
        r["eventID"] = f"{tag}-new-{i:05d}"
    writer = lake.connect(root)
    res = writer.store("crash").append(extra, source="import")
    assert res.appended == 60 and res.version == commits[-1]["version"] + 1
    rep2 = _assert_verified(writer, f"{tag}: after appending on top")
    assert rep2["stores"][0]["events"] == rep2["stores"][0]["distinct_events"] == len(ids) + 60
    assert rep2["stores"][0]["version"] == res.version
    checkpoints = sum(f.path.endswith(".checkpoint.parquet") for f in lk.storage.list(f"{store.prefix}/_log"))
    return {"committed": k, "orphans": rep["stores"][0]["orphans"], "version": commits[-1]["version"],
            "checkpoints": checkpoints}


def _kill_trial(warm: Warm, root: str, tag: str, plan: list[dict], phase_file: Path, *,
                delay: float | None = None, die: dict | None = None,
                commits_until_checkpoint: int | None = None, checkpoint_interval: int | None = None) -> dict:
    """One trial: fresh store, one child appending `plan`, SIGKILL (by the parent after `delay`, or by the
    child itself at `die`), then the checks. Checkpoints come either from fast-forwarding the store to just
    before a default-interval checkpoint or from a child that writes one every `checkpoint_interval` commits
    (the parent and the new writer keep the default interval)."""
    store = lake.connect(root).create_store("crash", retention_days=3653)
    child = warm.take()
    try:
        child.send({"uri": root, "store": "crash", "plan": plan, "tag": tag, "phase_file": str(phase_file),
                    "tests_dir": TESTS_DIR, "die": die, "checkpoint_interval": checkpoint_interval})
        _fast_forward(store, commits_until_checkpoint)  # while the child generates its batches
        child.expect("ready")
        child.send("go")
        if die is None:
            time.sleep(delay)
            child.proc.kill()
        code = child.proc.wait(CHILD_TIMEOUT)
        assert code == -signal.SIGKILL, f"{tag}: child ended with {code}, not SIGKILL; stderr:\n{child.stderr()}"
    finally:
        child.close()
    marks = phase_file.read_text().splitlines() if phase_file.exists() else []
    if die is not None:
        assert f"!{die['point']}" in marks, f"{tag}: the child never reached {die['point']}"
    out = _check_after_kill(root, tag, plan, marks)
    out["phase"] = _kill_phase(marks)
    return out


def _random_kills(root_of, tmp: Path, trials: int, seed: int, *, max_delay: float = 0.35,
                  fast_forward: bool = True) -> list[dict]:
    """`trials` SIGKILLs after 0..max_delay s. Trial t % 4 == 1 starts 1-4 commits before a default
    checkpoint (if `fast_forward`), t % 4 in (2, 3) runs a child that checkpoints every 2-5 commits, so kills
    also land while checkpoints are written."""
    rng = random.Random(seed)
    warm = Warm(KILLABLE)
    out = []
    try:
        for t in range(trials):
            delay = 0.0 if t == 0 else rng.uniform(0.0, max_delay)
            cut, interval = rng.randint(1, 4), rng.choice([2, 3, 5])
            res = _kill_trial(warm, root_of(t), f"t{t:03d}", _plan(rng, 12), tmp / f"phases-{t}.txt",
                              delay=delay, commits_until_checkpoint=cut if fast_forward and t % 4 == 1 else None,
                              checkpoint_interval=interval if t % 4 in (2, 3) else None)
            res["delay_ms"] = round(delay * 1000)
            out.append(res)
    finally:
        warm.close()
    return out


def _summary(results: list[dict]) -> str:
    phases = Counter(r["phase"] for r in results)
    committed = Counter(r["committed"] for r in results)
    return (f"{len(results)} trials; kill phases {dict(phases)}; batches committed per trial "
            f"{dict(sorted(committed.items()))}; orphans left {sum(r['orphans'] for r in results)}; "
            f"checkpoints written {sum(r['checkpoints'] for r in results)}")


def test_sigkill_writer_random(tmp_path):
    trials = 24
    results = _random_kills(lambda t: str(tmp_path / f"lake-{t}"), tmp_path, trials, seed=20261125)
    print("\nrandom SIGKILL, local:", _summary(results))
    assert len(results) == trials
    # the kills were spread: before the first commit and after several, in more than one phase
    assert len({r["committed"] for r in results}) >= 3
    assert len({r["phase"] for r in results}) >= 2


@pytest.mark.s3
def test_sigkill_writer_random_s3(s3_env, tmp_path):
    bucket = make_bucket(s3_env)
    results = _random_kills(lambda t: f"s3://{bucket}/lake-{t}", tmp_path, 4, seed=7, max_delay=1.2,
                            fast_forward=False)
    print("\nrandom SIGKILL, s3:", _summary(results))
    assert len(results) == 4


# Exact points of the local protocol (storage.create = temp file + fsync + os.link + unlink) that a random
# delay rarely hits: (point, nth arrival, child commits until a checkpoint version or None, what the kill
# must have left on disk, as a predicate over {relative path: size} of the store directory).
CP = f"_log/{100:020d}.checkpoint.parquet"
PROTOCOL_POINTS = [
    # intent temp file created, still empty
    ("tmp-opened:intent", 2, None, lambda fs: any(p.startswith("_txn/.tmp-") and n == 0 for p, n in fs.items())),
    # intent linked, its temp file not yet removed
    ("after-link:intent", 2, None, lambda fs: any(p.startswith("_txn/.tmp-") and n > 0 for p, n in fs.items())),
    # half a Parquet segment on disk
    ("segment-half-written", 3, None, lambda fs: any(p.startswith("data/") for p in fs)),
    # segments written, commit not attempted
    ("before-create:commit", 2, None, lambda fs: any(p.startswith("data/") for p in fs)),
    # commit temp file written and fsynced, not linked
    ("before-link:commit", 2, None, lambda fs: any(p.startswith("_log/.tmp-") for p in fs)),
    # commit exists, its temp file left behind, the writer never learnt it had committed
    ("after-link:commit", 2, None, lambda fs: any(p.startswith("_log/.tmp-") for p in fs)),
    # checkpoint sidecar written, checkpoint not
    ("before-create:checkpoint", 1, 2, lambda fs: CP + ".sha256" in fs and CP not in fs),
    # checkpoint linked, its temp file left, hint not written
    ("after-link:checkpoint", 1, 2, lambda fs: CP in fs and "_log/_last_checkpoint" not in fs),
    # checkpoint complete, _last_checkpoint not written
    ("before-write:hint", 1, 2, lambda fs: CP in fs and "_log/_last_checkpoint" not in fs),
]


def _store_files(root: str) -> dict[str, int]:
    """{path relative to the store: size} of every file of the only store under a local root, temp files
    included (os.walk, not Storage.list)."""
    (sid,) = os.listdir(os.path.join(root, "stores"))
    base = os.path.join(root, "stores", sid)
    return {os.path.relpath(os.path.join(d, f), base).replace(os.sep, "/"): os.path.getsize(os.path.join(d, f))
            for d, _, files in os.walk(base) for f in files}


def test_sigkill_writer_at_protocol_points(tmp_path):
    warm = Warm(KILLABLE)
    plan = [{"n": 50, "accounts": 2, "days": 1, "seed": s} for s in range(3)]
    results = []
    try:
        for i, (where, nth, cut, left) in enumerate(PROTOCOL_POINTS):
            root = str(tmp_path / f"lake-{i}")
            res = _kill_trial(warm, root, f"p{i:03d}", plan, tmp_path / f"points-{i}.txt",
                              die={"point": where, "nth": nth}, commits_until_checkpoint=cut)
            results.append(res)
            assert left(_store_files(root)), f"{where}: the kill did not leave what it should have"
            if where == "after-link:commit":
                assert res["committed"] == nth  # the commit the child died inside exists and counts
            elif where.startswith(("before-create:commit", "before-link:commit")):
                assert res["committed"] == nth - 1
            if cut is not None:  # the checkpoint trials died while writing checkpoint `version`
                assert res["version"] % lake.log.CHECKPOINT_INTERVAL == 0
    finally:
        warm.close()
    print("\nSIGKILL at protocol points (point, batches committed, orphans):",
          [(p[0], r["committed"], r["orphans"]) for p, r in zip(PROTOCOL_POINTS, results)])


@pytest.mark.slow
def test_concurrency_soak(tmp_path):
    """Larger variant: more writers contending and more SIGKILL trials (LAKE_SLOW=1 for full size)."""
    procs, rounds, trials = (8, 8, 200) if SLOW else (6, 2, 3)
    stats = _run_concurrent_appends(str(tmp_path / "soak"), tmp_path, procs=procs, rounds=rounds,
                                    events=(600 if SLOW else 150) * procs, seed=99)
    results = _random_kills(lambda t: str(tmp_path / f"soak-{t}"), tmp_path, trials, seed=4242)
    print(f"\nsoak: appends {stats}; kills: {_summary(results)}")


# -- 3. racing store creation ---------------------------------------------------------------------------

def test_create_store_name_race(lake_uri):
    names = [f"raced-{i}" for i in range(5)]
    children = [Child(CREATOR) for _ in range(2)]
    try:
        _start_together(children, [{"uri": lake_uri, "names": names, "gap": 0.15}] * 2)
        outcomes = [json.loads(c.readline()) for c in children]
        for c in children:
            assert c.proc.wait(30) == 0, c.stderr()
    finally:
        for c in children:
            c.close()

    lk = lake.connect(lake_uri)
    winners = {}
    for i, name in enumerate(names):
        a, b = outcomes[0][i], outcomes[1][i]
        assert a["name"] == b["name"] == name
        won = [o for o in (a, b) if "id" in o]
        lost = [o for o in (a, b) if "exists" in o]
        assert len(won) == 1 and len(lost) == 1, (a, b)
        assert lost[0]["type"] == AlreadyExists.__name__
        assert name in lost[0]["exists"] and "already exists" in lost[0]["exists"]
        winners[name] = won[0]["id"]
        assert lk.store(name).id == won[0]["id"]
    stores = lk.stores()
    assert sorted(s.name for s in stores) == names
    assert {s.id for s in stores} == set(winners.values())
    assert set(lk.storage.list_dirs("stores")) == set(winners.values())  # the loser left no store behind
    _assert_verified(lk, "after the creation race")
    with pytest.raises(AlreadyExists):
        lk.create_store(names[0])
