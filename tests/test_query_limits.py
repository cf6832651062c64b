"""Issue 15 points 4 and 7 (queries): per-query memory budget, generated-size caps, row cap, timeout, Ctrl-C in
`lake sql`, deep nesting.

Every query here that would grow without limit runs in a separate process (a `lake serve` subprocess or a
`lake sql` subprocess) watched by `_Watch`, which kills that process tree if it ever passes the budget plus a
margin: on code without the limits the test fails there instead of taking the machine's memory. Budgets are
small (200-300 MB) so a passing run never uses much either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

import lake
from lake.errors import SqlError
from tests.server_fixture import ACCOUNT_A, REGION, boto_client, lake_serve_process

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 2**20
BUDGET = 200 * MB
MARGIN = 250 * MB  # sampling interval, kill latency, the interpreter of the worker: generous but far below GBs

LPAD = "SELECT length(lpad(eventname, 2000000000, 'b')) FROM {t} LIMIT 1"  # the issue's 97 characters
SELF_JOIN = "SELECT count(DISTINCT a.eventid || b.eventid) FROM {t} a JOIN {t} b ON a.eventname = b.eventname"
CTES = "WITH " + ", ".join(["c0 AS (SELECT * FROM {t})"] + [f"c{i} AS (SELECT * FROM c{i - 1})"
                                                             for i in range(1, 300)]) + " SELECT count(*) FROM c299"


def _rec(i: int) -> dict:
    return {"eventVersion": "1.08", "eventID": f"00000000-0000-0000-0000-{i:012d}",
            "eventTime": f"2024-03-01T{i % 24:02d}:{i % 60:02d}:00Z", "eventSource": "s3.amazonaws.com",
            "eventName": ["GetObject", "PutObject", "DeleteBucket", "CreateUser"][i % 4],
            "awsRegion": "us-east-1", "recipientAccountId": ACCOUNT_A, "eventType": "AwsApiCall",
            "userIdentity": {"type": "IAMUser", "arn": f"arn:aws:iam::{ACCOUNT_A}:user/u{i % 5}"}}


def _lake(root, n: int) -> tuple[lake.Lake, str]:
    lk = lake.connect(str(root), region=REGION, account_id=ACCOUNT_A)
    st = lk.create_store("limits", retention_days=3653)
    st.append([_rec(i) for i in range(n)], source="import")
    return lk, st.id


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/<pid>/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


class _Watch:
    """Samples the resident memory of a process tree every 5 ms; kills the tree past `ceiling` bytes (the
    safety net for code without limits). `peak` is the highest per-process growth above its first sample."""

    def __init__(self, pid: int, ceiling: int):
        self.pid, self.ceiling = pid, ceiling
        self.base: dict[int, int] = {}
        self.peak_growth = 0
        self.peak_total = 0
        self.killed = False
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Watch:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            total = 0
            for p in pids:
                r = _rss(p)
                total += r
                self.base.setdefault(p, r)
                self.peak_growth = max(self.peak_growth, r - self.base[p])
            self.peak_total = max(self.peak_total, total)
            if total > self.ceiling:
                self.killed = True
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                return
            time.sleep(0.005)


def _wait(client, qid: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = client.describe_query(QueryId=qid)
        if d["QueryStatus"] not in ("QUEUED", "RUNNING") or time.monotonic() > deadline:
            return d
        time.sleep(0.05)


@pytest.fixture
def served(tmp_path, monkeypatch):
    """`lake serve` in a subprocess with a 200 MB query budget on a 20,000-event store."""
    _, sid = _lake(tmp_path / "lake", 20_000)
    monkeypatch.setenv("LAKE_QUERY_MEMORY", str(BUDGET))
    monkeypatch.setenv("LAKE_QUERY_TIMEOUT", "20")
    proc, port = lake_serve_process(tmp_path)
    client = boto_client(SimpleNamespace(url=f"http://127.0.0.1:{port}"), "cloudtrail", "alice")
    try:
        yield proc, client, sid
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def test_issue_queries_fail_with_one_line_and_the_server_stays_small(served):
    """The issue's three queries over the API: FAILED with a one-line ErrorMessage; no process of the server
    grows past the budget plus a margin, and the server answers the next query."""
    proc, client, sid = served
    idle = sum(_rss(p) for p in _tree(proc.pid))
    with _Watch(proc.pid, ceiling=idle + 2 * BUDGET + MARGIN) as w:
        results = {}
        for name, sql in (("lpad", LPAD), ("self-join", SELF_JOIN), ("ctes", CTES)):
            try:
                qid = client.start_query(QueryStatement=sql.format(t=sid))["QueryId"]
            except client.exceptions.InvalidQueryStatementException as e:  # refused upfront: also one line
                results[name] = ("REFUSED", e.response["Error"]["Message"])
                continue
            d = _wait(client, qid)
            results[name] = (d["QueryStatus"], d.get("ErrorMessage", ""))
        after = sum(_rss(p) for p in _tree(proc.pid))
    assert not w.killed, f"the server's processes passed {w.ceiling / MB:.0f} MB: no memory limit ({results})"
    for name, (status, msg) in results.items():
        assert status in ("FAILED", "REFUSED"), (name, status, msg)
        assert msg and "\n" not in msg and "Traceback" not in msg, (name, msg)
    assert "1048576" in results["lpad"][1]
    assert "memory limit" in results["self-join"][1] and "memory limit" in results["ctes"][1]
    assert w.peak_growth < BUDGET + MARGIN, w.peak_growth / MB
    assert after < idle + BUDGET + MARGIN, (idle / MB, after / MB)
    qid = client.start_query(QueryStatement=f"SELECT count(*) FROM {sid}")["QueryId"]
    d = _wait(client, qid)
    assert d["QueryStatus"] == "FINISHED"
    assert client.get_query_results(QueryId=qid)["QueryResultRows"] == [[{"_col0": "20000"}]]


def test_deep_nesting_over_the_api(served):
    """1,000 levels of parentheses run (Trino accepts them); a 6 KB query nested 3,000 deep is refused with one
    line (it was HTTP 500 and a 450 KB traceback in the server log)."""
    proc, client, sid = served
    qid = client.start_query(QueryStatement="SELECT " + "(" * 1000 + "1" + ")" * 1000 + f" FROM {sid} LIMIT 1")
    d = _wait(client, qid["QueryId"])
    assert d["QueryStatus"] == "FINISHED", d
    assert client.get_query_results(QueryId=qid["QueryId"])["QueryResultRows"] == [[{"_col0": "1"}]]
    deep = "SELECT " + "(" * 3000 + "1" + ")" * 3000 + f" FROM {sid}"
    with pytest.raises(client.exceptions.InvalidQueryStatementException) as e:
        client.start_query(QueryStatement=deep)
    msg = e.value.response["Error"]["Message"]
    assert "1000" in msg and "\n" not in msg
    proc.kill()
    log = proc.communicate(timeout=30)[1]
    assert "Traceback" not in log and "RecursionError" not in log, log[-2000:]


def test_timeout_stops_the_query(tmp_path, monkeypatch):
    """LAKE_QUERY_TIMEOUT (`lake serve --query-timeout`) ends a running query TIMED_OUT and stops its work."""
    _, sid = _lake(tmp_path / "lake", 3000)
    monkeypatch.setenv("LAKE_QUERY_MEMORY", str(BUDGET))
    proc, port = lake_serve_process(tmp_path, "--query-timeout", "1")
    client = boto_client(SimpleNamespace(url=f"http://127.0.0.1:{port}"), "cloudtrail", "alice")
    try:
        slow = (f"SELECT count(*) FROM {sid} a JOIN {sid} b ON a.eventname = b.eventname "
                "WHERE levenshtein(a.eventid || 'x', b.eventid) < 0")
        t0 = time.monotonic()
        d = _wait(client, client.start_query(QueryStatement=slow)["QueryId"])
        assert d["QueryStatus"] == "TIMED_OUT", d
        assert time.monotonic() - t0 < 8
        time.sleep(0.5)
        busy = [p for p in _tree(proc.pid)[1:] if _cpu(p) > 0.2]
        assert not busy, "a query worker is still computing after the timeout"
    finally:
        proc.kill()
        proc.communicate(timeout=30)


def _cpu(pid: int, span: float = 0.5) -> float:
    """Share of one core the process used over `span` seconds."""
    def ticks() -> int:
        try:
            with open(f"/proc/{pid}/stat") as f:
                parts = f.read().rsplit(")", 1)[1].split()
            return int(parts[11]) + int(parts[12])
        except (OSError, IndexError, ValueError):
            return 0
    a = ticks()
    time.sleep(span)
    return (ticks() - a) / os.sysconf("SC_CLK_TCK") / span


def test_ctrl_c_stops_the_running_query_in_lake_sql(tmp_path):
    """SIGINT to `lake sql -c` (what Ctrl-C sends) stops the query: the process exits 130 within a second or
    two and no worker keeps computing (the old shell gave up after 5 s and left the query running)."""
    _lake(tmp_path / "lake", 3000)
    slow = ("SELECT count(*) FROM limits a JOIN limits b ON a.eventname = b.eventname "
            "WHERE levenshtein(a.eventid || 'x', b.eventid) < 0;")
    env = {**os.environ, "LAKE_ACCOUNT_ID": ACCOUNT_A, "LAKE_QUERY_MEMORY": str(BUDGET)}
    proc = subprocess.Popen([sys.executable, "-m", "lake.cli", "--lake", str(tmp_path / "lake"), "sql", "-c", slow],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with _Watch(proc.pid, ceiling=3 * 2**30) as w:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until the shell waits (idle) while a worker computes
                if _cpu(proc.pid, 0.3) < 0.2 and any(_cpu(p, 0.3) > 0.3 for p in _tree(proc.pid)[1:]):
                    break
            workers = _tree(proc.pid)[1:]
            proc.send_signal(signal.SIGINT)
            t0 = time.monotonic()
            out, err = proc.communicate(timeout=30)
            took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert not w.killed
    assert proc.returncode == 130, (proc.returncode, err)
    assert "cancelled" in err and "Traceback" not in err and "background" not in err, err
    assert took < 4, took  # the old shell waited 5 s (and then left the query running)
    time.sleep(0.3)
    alive = [p for p in workers if os.path.exists(f"/proc/{p}") and _cpu(p, 0.3) > 0.1]
    assert not alive, "the query worker kept running after Ctrl-C"


def test_generated_sizes_are_refused_upfront(tmp_path):
    """lpad/rpad past 1 MiB characters and repeat/sequence past 10,000 entries: one line while translating,
    before anything is built (the old code built the 2 GB padding literal first)."""
    lk, sid = _lake(tmp_path / "lake", 100)
    # In a subprocess capped at 5 GB of address space: the old code dies there building its 2 GB padding twice.
    code = ("import resource, sys, lake\n"
            "resource.setrlimit(resource.RLIMIT_AS, (5 * 2**30, 5 * 2**30))\n"
            f"lk = lake.connect({str(tmp_path / 'lake')!r}, account_id={ACCOUNT_A!r})\n"
            "for sql in sys.argv[1:]:\n"
            "    try:\n"
            "        lk.sql(sql)\n"
            "        print('ran', sql)\n"
            "    except Exception as e:\n"
            "        print(type(e).__name__, str(e).replace(chr(10), ' | '), flush=True)\n")
    cases = ((LPAD, "1048576"), ("SELECT rpad(eventname, 1048577) FROM {t}", "1048576"),
             ("SELECT repeat(eventname, 10001) FROM {t}", "10000"), ("SELECT sequence(1, 20000) FROM {t}", "10000"),
             ("SELECT sequence(date '2000-01-01', date '2100-01-01') FROM {t}", "10000"))
    r = subprocess.run([sys.executable, "-c", code, *(sql.format(t=sid) for sql, _ in cases)], capture_output=True,
                       text=True, timeout=120)
    lines = r.stdout.splitlines()
    assert len(lines) == len(cases), (r.stdout, r.stderr[-500:])
    for (sql, needle), line in zip(cases, lines, strict=True):
        assert line.startswith("SqlError") and needle in line and " | " not in line, (sql, line)
    # computed sizes fail when the query runs, also with one line; sizes within the caps work
    with pytest.raises(SqlError, match="1048576"):
        lk.sql(f"SELECT lpad(eventname, length(eventid) * 100000) FROM {sid}")
    with pytest.raises(SqlError, match="10000"):
        lk.sql(f"SELECT repeat(1, length(eventid) * 1000) FROM {sid}")
    df = lk.sql(f"SELECT length(lpad(eventname, 1048576, 'ab')) AS n, cardinality(repeat(1, 10000)) AS r "
                f"FROM {sid} LIMIT 1")
    assert df.row(0) == (1048576, 10000)


def test_row_cap_and_nesting_in_process(tmp_path):
    """The Python API: max_rows refuses a larger result with one line; 1,000 nested levels run, 1,001 are
    refused with one line, and a long flat OR chain still plans (no RecursionError)."""
    from lake.query import run

    lk, sid = _lake(tmp_path / "lake", 300)
    assert run(lk, f"SELECT eventid FROM {sid}", max_rows=300).df.height == 300
    with pytest.raises(SqlError, match="more than 299 rows"):
        run(lk, f"SELECT eventid FROM {sid}", max_rows=299)
    assert lk.sql("SELECT " + "(" * 1000 + "1" + ")" * 1000 + f" FROM {sid} LIMIT 1").row(0) == (1,)
    with pytest.raises(SqlError, match="at most 1000") as e:
        lk.sql("SELECT " + "(" * 1001 + "1" + ")" * 1001 + f" FROM {sid}")
    assert "\n" not in str(e.value)
    ors = " OR ".join(["eventname = 'x'"] * 1500)
    assert lk.sql(f"SELECT count(*) FROM {sid} WHERE {ors}").row(0) == (0,)


def test_memory_budget_in_process_api(tmp_path):
    """`run(..., limits=...)`: the self-join stops at its budget in the worker; this process does not grow, and
    the next query under the same limits runs."""
    from lake.query import run
    from lake.querylimits import QueryLimitExceeded, QueryLimits, rss

    lk, sid = _lake(tmp_path / "lake", 20_000)
    limits = QueryLimits(memory_bytes=BUDGET, timeout_s=60, max_rows=1000)
    before = rss()
    with pytest.raises(QueryLimitExceeded, match="memory limit of 200 MB") as e:
        run(lk, SELF_JOIN.format(t=sid), limits=limits)
    assert e.value.peak_rss - e.value.idle_rss < BUDGET + MARGIN
    assert rss() < before + 50 * MB
    assert run(lk, f"SELECT count(*) FROM {sid}", limits=limits).df.row(0) == (20_000,)
    # the result that travels back to the caller is capped too
    small = QueryLimits(memory_bytes=BUDGET, timeout_s=60, max_rows=None, max_result_bytes=MB)
    with pytest.raises(QueryLimitExceeded, match="result is larger than 1 MB"):
        run(lk, f"SELECT lpad(eventid, 1000) FROM {sid}", limits=small)


def _read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    """Terminal output from the pty master until `needle` appears (or the timeout; returns what came)."""
    import select as _select

    buf = b""
    deadline = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < deadline:
        ready, _, _ = _select.select([fd], [], [], 0.1)
        if ready:
            try:
                buf += os.read(fd, 65536)
            except OSError:
                break
    return buf


def test_ctrl_c_in_the_interactive_shell_stops_the_query(tmp_path):
    """The issue's case: `lake sql` on a terminal, a long query, Ctrl-C typed on the terminal. The prompt comes
    back at once and nothing keeps computing (the old shell came back after 5 s saying the query "stops in the
    background", and it went on using a core, and memory, in the same process)."""
    import pty

    _lake(tmp_path / "lake", 3000)
    slow = ("SELECT count(*) FROM limits a JOIN limits b ON a.eventname = b.eventname "
            "WHERE levenshtein(a.eventid || 'x', b.eventid) < 0;")
    env = {**os.environ, "LAKE_ACCOUNT_ID": ACCOUNT_A, "LAKE_QUERY_MEMORY": str(BUDGET), "TERM": "xterm",
           "HOME": str(tmp_path), "COLUMNS": "120", "LINES": "40"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: `lake sql` with the pty as its controlling terminal
        os.execve(sys.executable, [sys.executable, "-m", "lake.cli", "--lake", str(tmp_path / "lake"), "sql"], env)
    try:
        assert b"Ctrl-D leaves" in _read_until(fd, b"Ctrl-D leaves", 60)
        time.sleep(0.5)
        os.write(fd, slow.encode() + b"\r")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and sum(_cpu(p, 0.3) for p in _tree(pid)) < 0.5:
            pass  # until the query computes
        time.sleep(0.5)
        os.write(fd, b"\x03")  # Ctrl-C on the terminal: SIGINT to the foreground process group
        t0 = time.monotonic()
        out = _read_until(fd, b"cancelled", 10)
        took = time.monotonic() - t0
        assert b"cancelled" in out and b"background" not in out, out[-300:]
        assert took < 3, took
        time.sleep(0.5)
        busy = sum(_cpu(p, 0.5) for p in _tree(pid))
        assert busy < 0.3, f"{busy:.2f} cores still busy after Ctrl-C: the query kept running"
        os.write(fd, b".quit\r")
        _read_until(fd, b"\x00", 2)
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)


def test_an_unusable_limit_names_its_option_or_variable(tmp_path):
    """A typo in LAKE_QUERY_* or a --query-* option is one line naming that setting (it was reported as a
    bad --query-memory, or raised ValueError where no CLI check ran)."""
    from lake.errors import InvalidParameter
    from lake.querylimits import QueryLimits

    env = dict(os.environ, LAKE_QUERY_TIMEOUT="abc")
    out = subprocess.run([sys.executable, "-m", "lake.cli", "--lake", str(tmp_path / "lk"), "sql", "-c", "SELECT 1"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: LAKE_QUERY_TIMEOUT='abc' is not seconds (0 turns the limit off)"]
    with pytest.raises(InvalidParameter, match=r"--query-max-rows=-1 is not a row count"):
        QueryLimits.from_env(1, max_rows=-1)
    with pytest.raises(InvalidParameter, match=r"--query-memory='12X' is not a size"):
        QueryLimits.from_env(1, memory="12X")


def test_scoped_lake_skips_an_allowed_store_deleted_since_the_check(tmp_path):
    """A store checked at StartQuery and purged before the query resolves its tables must not make a query
    that names another checked store fail (the name search over the checked stores stopped at NotFound)."""
    from lake.querylimits import ScopedLake

    lk = lake.connect(str(tmp_path / "lk"))
    lk.create_store("dup", termination_protection=False)  # the default account's: not in the query's scope
    kept = lk.create_store("dup", termination_protection=False, account_id="222222222222")
    while True:  # a checked store searched before `kept` (ids are searched in sorted order)
        gone = lk.create_store(f"gone-{uuid.uuid4().hex[:8]}", termination_protection=False)
        if gone.id < kept.id:
            break
    gone_id = gone.id
    gone.delete()
    lk.storage.delete_tree(f"stores/{gone_id}")  # purged: opening it by id is NotFound
    fresh = lake.connect(str(tmp_path / "lk"))  # a new process's view: nothing cached
    assert ScopedLake(fresh, {gone_id, kept.id}).store("dup").id == kept.id


def test_idle_query_workers_stop_with_the_query_manager(tmp_path):
    """The server's QueryManager.close stops the idle query workers (they lived until the process exited)."""
    from lake import querylimits
    from lake.api_queries import QueryManager

    lk = lake.connect(str(tmp_path / "lk"))
    qm = QueryManager(lk)
    querylimits.prewarm()
    deadline = time.monotonic() + 30
    while not querylimits.idle_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = querylimits.idle_pids()
    assert pids
    qm.close()
    assert querylimits.idle_pids() == []
    for pid in pids:
        with pytest.raises(ProcessLookupError):  # killed and reaped
            os.kill(pid, 0)
