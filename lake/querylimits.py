"""Per-query limits (memory, run time, result rows) and the worker process that enforces them.

Why a separate process: polars cannot stop an operator that is already running. `handle.cancel()` on a
background collect only takes effect between operators, and the streaming engine does not stop a join either;
measured on a 20,000-event store, a self-join on `eventname` kept growing from 1.6 GB to 2.9 GB in the 3 s
after cancel (issue 15). A thread cannot be killed, so a query that must be stoppable runs in a worker
process which the parent kills (SIGKILL) the moment a limit is passed: the kernel gives every byte back at
once and the server (or the `lake sql` shell) never grows.

The parent samples the worker's resident memory (`/proc/<pid>/statm`) every 5 ms while the query runs and
kills it when it passes its idle size plus the query's budget; at the fastest growth measured (1.5 GB/s) that
overshoots by tens of MB, not gigabytes. The same loop enforces the timeout and the caller's cancel event
(CancelQuery, Ctrl-C). A worker that finished a query under its budget is kept for the next one (starting
one costs ~0.8 s of imports); one that grew is replaced.

Defaults (each configurable, see `QueryLimits.from_env`): memory = half the machine's memory (or its cgroup
limit) divided by the number of queries that may run at once; timeout one hour (CloudTrail Lake's); result
rows 1,000,000.
"""

from __future__ import annotations

import io
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from .errors import InvalidParameter, NotFound, QueryCancelled, SqlError

PAGE = os.sysconf("SC_PAGE_SIZE")
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_MAX_ROWS = 1_000_000
# The result travels to the caller's process (the server) and is kept there: capped so that ten concurrent
# queries cannot push their results' memory into the server even within their own budgets.
DEFAULT_MAX_RESULT_BYTES = 256 * 2**20
DEFAULT_MEMORY_FRACTION = 0.5
SAMPLE_S = 0.005
KEEP_WORKER_GROWTH = 256 * 2**20  # a worker that stays within this of its idle size serves the next query
_HEADER = struct.Struct("!Q")


class QueryLimitExceeded(SqlError):
    """A query passed one of its limits (memory, time, rows): it failed, nothing else was affected."""


def machine_memory() -> int:
    """Bytes of memory this process may use: the cgroup limit when one is set, else MemTotal."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(path).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 2**60:
            return int(text)
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def default_memory_budget(concurrent: int) -> int:
    """Half the machine's memory shared by the queries that may run at once (10 over the API)."""
    return int(machine_memory() * DEFAULT_MEMORY_FRACTION) // max(concurrent, 1)


def _size(text: str) -> int:
    """`512M`, `2G`, `1048576`: bytes (ValueError otherwise)."""
    t = text.strip().upper().removesuffix("B")
    if not t:
        raise ValueError(text)
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def _setting(var: str, option: str | None, given: Any, parse: Any, default: Any, what: str) -> Any:
    """One limit: the explicit value (an option), else the environment variable, else the default. An
    unusable value is one line naming where it came from (a typo must not surface as another option's error
    or a traceback)."""
    raw, source = (given, option) if given is not None else (os.environ.get(var) or None, var)
    if raw is None:
        return default
    try:
        value = parse(raw) if isinstance(raw, str) else raw
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidParameter(f"{source}={raw!r} is not {what} (0 turns the limit off)")
    return value


@dataclass(frozen=True)
class QueryLimits:
    """What one query may use. None means unlimited (the in-process Python API's default)."""

    memory_bytes: int | None = None
    timeout_s: float | None = DEFAULT_TIMEOUT_S
    max_rows: int | None = DEFAULT_MAX_ROWS
    max_result_bytes: int | None = DEFAULT_MAX_RESULT_BYTES

    @classmethod
    def from_env(cls, concurrent: int, *, memory: str | int | None = None, timeout: float | None = None,
                 max_rows: int | None = None) -> QueryLimits:
        """Explicit values, else `LAKE_QUERY_MEMORY` (bytes or 512M/2G), `LAKE_QUERY_TIMEOUT` (seconds),
        `LAKE_QUERY_MAX_ROWS`, `LAKE_QUERY_MAX_RESULT` (bytes or 256M), else the defaults; 0 turns a limit
        off."""
        mem_b = _setting("LAKE_QUERY_MEMORY", "--query-memory", memory, _size, None, "a size such as 512M or 2G")
        if mem_b is None:
            mem_b = default_memory_budget(concurrent)
        t = _setting("LAKE_QUERY_TIMEOUT", "--query-timeout", timeout, float, DEFAULT_TIMEOUT_S, "seconds")
        rows = _setting("LAKE_QUERY_MAX_ROWS", "--query-max-rows", max_rows, int, DEFAULT_MAX_ROWS, "a row count")
        result_b = _setting("LAKE_QUERY_MAX_RESULT", None, None, _size, DEFAULT_MAX_RESULT_BYTES,
                            "a size such as 256M")
        return cls(memory_bytes=mem_b or None, timeout_s=t or None, max_rows=rows or None,
                   max_result_bytes=result_b or None)


class ScopedLake:
    """The lake as one query may see it: only the stores checked at StartQuery. `lake.query.run` resolves
    tables through `store()`/`stores()`, so a store renamed in between, or one of another account, cannot
    be read by the running query."""

    def __init__(self, lake: Any, allowed: set[str]):
        self._lake = lake
        self._allowed = allowed

    def store(self, ref: str, **kwargs: Any) -> Any:
        try:
            st = self._lake.store(ref, **kwargs)
            if st.id in self._allowed:
                return st
        except (NotFound, InvalidParameter):
            pass
        for sid in sorted(self._allowed):  # names are per account: the checked store of that name
            try:
                st = self._lake.store(sid, **kwargs)
            except NotFound:  # deleted since StartQuery: it cannot be the one named
                continue
            if st.name == ref:
                return st
        raise NotFound(f"no event data store {ref!r}")

    def stores(self, **kwargs: Any) -> list[Any]:
        return [s for s in self._lake.stores(**kwargs) if s.id in self._allowed]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lake, name)


def rss(pid: int | None = None) -> int:
    """Resident bytes of a process (this one by default), from /proc/<pid>/statm."""
    with open(f"/proc/{pid or 'self'}/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


# ---- the parent's side ---------------------------------------------------------------------------------

# The worker's first lines: watch the parent before the ~1 s of imports (a worker whose parent died exits
# within 0.2 s even while importing; PR_SET_PDEATHSIG would fire when the *thread* that started it ends,
# and workers are started by short-lived threads), and import this very copy of Lake, not whatever `lake`
# the working directory holds.
_BOOT = """\
import os, sys, threading, time
parent = os.getppid()
def watch():
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(0)
threading.Thread(target=watch, name="lake-query-parent-watch", daemon=True).start()
sys.path.insert(0, sys.argv[1])
from lake.querylimits import _serve
_serve()
"""
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Worker:
    """One query worker process (`_BOOT`, then `_serve`), spoken to over its stdin/stdout."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _BOOT, _SOURCE_ROOT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
                                     start_new_session=True)  # Ctrl-C in a terminal reaches the parent only
        hello = self._read(timeout=60.0)
        if hello is None or not isinstance(hello, dict) or "rss" not in hello:
            self.kill()
            raise SqlError("the query worker process did not start")
        self.idle_rss: int = hello["rss"]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()  # type: ignore[union-attr]
            except OSError:
                pass

    def _send(self, obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        assert self.proc.stdin is not None
        self.proc.stdin.write(_HEADER.pack(len(data)) + data)
        self.proc.stdin.flush()

    def _read(self, timeout: float | None = None) -> Any:
        out = self.proc.stdout
        assert out is not None
        if timeout is not None:
            ready, _, _ = select.select([out], [], [], timeout)
            if not ready:
                return None
        head = out.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return None
        (n,) = _HEADER.unpack(head)
        body = out.read(n)
        return pickle.loads(body) if len(body) == n else None

    def run(self, request: dict, limits: QueryLimits, cancel: threading.Event | None) -> dict:
        """Send one query and wait for its answer while watching memory, time and `cancel`."""
        self._send(request)
        out = self.proc.stdout
        assert out is not None
        deadline = time.monotonic() + limits.timeout_s if limits.timeout_s else None
        try:  # the budget is the query's own growth: what a reused worker kept from before is not counted
            base = rss(self.proc.pid)
        except (OSError, ValueError, IndexError):
            base = self.idle_rss
        ceiling = base + limits.memory_bytes if limits.memory_bytes else None
        self.peak = 0
        while True:
            ready, _, _ = select.select([out], [], [], SAMPLE_S)
            if ready:
                reply = self._read()
                if reply is None:
                    raise self._died()
                return reply
            if cancel is not None and cancel.is_set():
                self.kill()
                raise QueryCancelled("the query was cancelled")
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise QueryLimitExceeded(f"the query ran longer than its limit of {limits.timeout_s:g} seconds")
            if ceiling is not None:
                try:
                    now = rss(self.proc.pid)
                except (OSError, ValueError, IndexError):
                    raise self._died() from None
                self.peak = max(self.peak, now)
                if now > ceiling:
                    self.kill()
                    assert limits.memory_bytes is not None
                    e = QueryLimitExceeded(
                        f"the query needed more than its memory limit of {_mb(limits.memory_bytes)}: "
                        "narrow it (WHERE, LIMIT, fewer joined rows) or raise the limit (--query-memory)")
                    e.peak_rss, e.idle_rss = self.peak, base  # type: ignore[attr-defined]
                    raise e

    def _died(self) -> SqlError:
        self.kill()
        code = self.proc.returncode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return SqlError(f"the query engine stopped while running the query ({how})")


_IDLE: list[Worker] = []
_IDLE_LOCK = threading.Condition()
_STARTING = 0  # prewarmed workers still importing
_WAITING = 0   # callers waiting for one of them
MAX_IDLE = 2


def _take() -> Worker:
    """An idle worker, else one that is starting in the background, else a new one. When the last idle one
    is taken a spare starts in the background, so a query rarely waits for a worker's imports (~1 s), and
    never starts a second worker while one it could use is already starting (two at once on a small
    machine take twice as long)."""
    global _WAITING
    with _IDLE_LOCK:
        while True:
            while _IDLE:
                w = _IDLE.pop()
                if w.alive():
                    if not _IDLE and not _STARTING:
                        _prewarm_locked()
                    return w
                w.kill()
            if _STARTING <= _WAITING:
                break
            _WAITING += 1
            try:
                _IDLE_LOCK.wait(1.0)
            finally:
                _WAITING -= 1
    return Worker()


def _give_back(w: Worker) -> None:
    try:
        fresh = w.alive() and rss(w.proc.pid) <= w.idle_rss + KEEP_WORKER_GROWTH
    except (OSError, ValueError, IndexError):
        fresh = False
    with _IDLE_LOCK:
        if fresh and len(_IDLE) < MAX_IDLE + _WAITING:
            _IDLE.append(w)
            _IDLE_LOCK.notify_all()
            return
    w.kill()


def _prewarm_locked() -> None:
    global _STARTING
    _STARTING += 1

    def start() -> None:
        global _STARTING
        w = None
        try:
            w = Worker()
        except Exception:  # noqa: BLE001 - a query that needs one starts its own and reports a failure itself
            pass
        finally:
            with _IDLE_LOCK:  # handed over in the same step, so a waiter never sees neither
                _STARTING -= 1
                if w is not None and w.alive() and len(_IDLE) < MAX_IDLE + _WAITING:
                    _IDLE.append(w)
                    w = None
                _IDLE_LOCK.notify_all()
        if w is not None:
            w.kill()
    threading.Thread(target=start, name="lake-query-prewarm", daemon=True).start()


def prewarm() -> None:
    """Start one worker in the background so the first query does not wait for its imports."""
    with _IDLE_LOCK:
        if not _IDLE and not _STARTING:
            _prewarm_locked()


def idle_pids() -> list[int]:
    """Process ids of the idle workers (operators' tools and tests)."""
    with _IDLE_LOCK:
        return [w.proc.pid for w in _IDLE]


def shutdown() -> None:
    """Stop the idle workers (server shutdown, tests)."""
    with _IDLE_LOCK:
        idle, _IDLE[:] = list(_IDLE), []
    for w in idle:
        w.kill()


def run_isolated(lake: Any, sql: str, *, limits: QueryLimits, cancel: threading.Event | None = None,
                 now: Any = None, allowed: set[str] | None = None) -> tuple[Any, dict, list]:
    """Run `sql` in a worker process under `limits`; returns (DataFrame, statistics dict, scans).

    `allowed` restricts the stores the query may read (the API's per-query scope). Errors the query causes
    come back as the same exception types (SqlError, ReadOnlyError, ...) with the same one-line text."""
    import polars as pl

    request = {"uri": lake.uri, "storage_options": getattr(lake, "storage_options", None),
               "region": getattr(lake, "region", None), "account_id": getattr(lake, "account_id", None),
               "sql": sql, "now": now, "allowed": sorted(allowed) if allowed is not None else None,
               "max_rows": limits.max_rows, "max_result_bytes": limits.max_result_bytes}
    w = _take()
    try:
        reply = w.run(request, limits, cancel)
    except BaseException:
        w.kill()
        raise
    _give_back(w)
    if not reply.get("ok"):
        raise _rebuild(reply)
    df = pl.read_ipc(io.BytesIO(reply["ipc"]))
    return df, reply["stats"], reply["scans"]


def _rebuild(reply: dict) -> BaseException:
    from . import errors

    cls = getattr(errors, reply.get("type", ""), None)
    if reply.get("type") == "QueryLimitExceeded":
        return QueryLimitExceeded(reply["message"], reply.get("line"), reply.get("col"))
    if isinstance(cls, type) and issubclass(cls, SqlError):
        return cls(reply["message"], reply.get("line"), reply.get("col"))
    if isinstance(cls, type) and issubclass(cls, errors.LakeError):
        return cls(reply["message"])
    return SqlError(f"the query failed while running: {reply.get('message')}")


# ---- the worker's side ---------------------------------------------------------------------------------

def _serve() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # the protocol owns the real stdout; anything a library prints goes to stderr instead
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    proto_in = os.fdopen(os.dup(0), "rb")
    import lake as lake_pkg
    from . import query as lake_query
    lake_query.plan  # noqa: B018 - imported now so the idle size includes the engine

    def send(obj: Any) -> None:
        data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        proto_out.write(_HEADER.pack(len(data)) + data)
        proto_out.flush()

    send({"rss": rss()})
    while True:
        head = proto_in.read(_HEADER.size)
        if len(head) < _HEADER.size:
            return
        (n,) = _HEADER.unpack(head)
        req = pickle.loads(proto_in.read(n))
        try:
            lk: Any = lake_pkg.connect(req["uri"], storage_options=req["storage_options"], region=req["region"],
                                       account_id=req["account_id"])
            if req["allowed"] is not None:
                lk = ScopedLake(lk, set(req["allowed"]))
            res = lake_query.run(lk, req["sql"], now=req["now"], max_rows=req["max_rows"])
            cap = req.get("max_result_bytes")
            if cap and res.df.estimated_size() > cap:
                raise QueryLimitExceeded(f"the result is larger than {_mb(cap)}, Lake's limit per query: select "
                                         "fewer or shorter columns, or fewer rows (LAKE_QUERY_MAX_RESULT)")
            buf = io.BytesIO()
            res.df.write_ipc(buf)
            send({"ok": True, "ipc": buf.getvalue(), "stats": res.stats.as_dict(), "scans": res.scans})
        except BaseException as e:  # noqa: BLE001 - every failure goes back as one line
            text = str(getattr(e, "message", None) or e).strip()
            send({"ok": False, "type": type(e).__name__, "message": text.splitlines()[0] if text else type(e).__name__,
                  "line": getattr(e, "line", None), "col": getattr(e, "col", None)})


__all__ = ["ScopedLake", "QueryLimits", "QueryLimitExceeded", "run_isolated", "prewarm", "shutdown",
           "default_memory_budget", "machine_memory", "rss", "Worker"]
