"""Running CloudTrail Lake SQL against a lake: parse, check, plan, prune, execute, and account for it.

`run()` is what `Lake.sql()`, `lake sql` and the server's StartQuery use. Statistics follow CloudTrail Lake's
DescribeQuery: EventsScanned and BytesScanned count the segments that survived pruning (what was actually
read), EventsMatched is the number of result rows, plus the pruning figures Lake adds.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import polars as pl

from .errors import LakeError, NotFound, QueryCancelled, SqlError
from .planner import Planner, ScanInfo
from .querylimits import QueryLimitExceeded, QueryLimits, run_isolated
from .sqlexpr import CastFailed
from .sqlparse import VISIBLE_SCHEMA, deep, in_deep, parse, qualify_tree, resolve_tables

_EXPLAIN = re.compile(r"^\s*EXPLAIN\s+(?!ANALYZE\b)", re.IGNORECASE)


@dataclass
class QueryStatistics:
    EventsMatched: int = 0
    EventsScanned: int = 0
    BytesScanned: int = 0
    ExecutionTimeInMillis: int = 0
    SegmentsConsidered: int = 0
    SegmentsSkipped: int = 0
    BytesSkipped: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class QueryResult:
    df: pl.DataFrame
    stats: QueryStatistics
    scans: list[ScanInfo] = field(default_factory=list)


@dataclass
class Plan:
    """A planned query: the lazy frame, output names, and what each store scan will read."""

    lf: pl.LazyFrame
    names: list[str]
    planner: Planner
    sql: str


def _lookup(lake):
    def lookup(ref: str):
        try:
            return lake.store(ref)
        except NotFound:
            names = ", ".join(sorted(s.name for s in lake.stores())) or "none yet"
            raise SqlError(f"table {ref!r} is not an event data store of this lake (stores: {names})") from None
    return lookup


def plan(lake, sql: str, *, now: datetime | None = None) -> Plan:
    """Parse, resolve, qualify and plan: on a thread with a deep stack (sqlparse.deep), since every step
    recurses once per level of nesting."""
    if not in_deep():
        return deep(plan, lake, sql, now=now)
    tree, text = parse(sql)
    tables = resolve_tables(tree, _lookup(lake))
    tree = qualify_tree(tree, tables)
    planner = Planner(tables, now=now or datetime.now(timezone.utc))
    rel = planner.plan(tree)
    # sqlglot names unnamed columns `_col_N`; Trino (and CloudTrail Lake) call them `_colN`
    names = [f"_col{n[5:]}" if n.startswith("_col_") and n[5:].isdigit() else n for n, _ in rel.outputs]
    lf = rel.lf.select([pl.col(c).alias(f"__out{i}") for i, (_, c) in enumerate(rel.outputs)])
    return Plan(lf, names, planner, text)


def _stats(p: Plan, rows: int, ms: int) -> QueryStatistics:
    s = QueryStatistics(EventsMatched=rows, ExecutionTimeInMillis=ms)
    for sc in p.planner.scans:
        s.EventsScanned += sc.rows
        s.BytesScanned += sc.bytes
        s.SegmentsConsidered += sc.segments + sc.segments_skipped
        s.SegmentsSkipped += sc.segments_skipped
        s.BytesSkipped += sc.bytes_skipped
    return s


_CANCELLED: list = []


def _collect(lf: pl.LazyFrame, cancel: threading.Event | None) -> pl.DataFrame:
    if cancel is None:
        return lf.collect()
    handle = lf.collect(background=True)
    while True:
        if cancel.is_set():
            handle.cancel()
            # keep the handle alive: dropping it while polars' worker still sends its (cancelled) result
            # makes that worker panic with a backtrace on stderr
            _CANCELLED.append(handle)
            del _CANCELLED[:-32]
            raise QueryCancelled("the query was cancelled")
        out = handle.fetch()
        if out is not None:
            return out
        time.sleep(0.01)


def run(lake, sql: str, *, cancel: threading.Event | None = None, now: datetime | None = None,
        limits: QueryLimits | None = None, allowed: set[str] | None = None,
        max_rows: int | None = None) -> QueryResult:
    """Run one SELECT (or `EXPLAIN SELECT ...`, which returns the plan as rows) and return rows + statistics.

    With `limits` the query runs in a worker process that is killed past its memory budget, its timeout or
    on `cancel` (see lake.querylimits: polars cannot stop a running operator, a process can be killed), and
    the result may have at most `limits.max_rows` rows; `allowed` then restricts the stores it may read.
    Without, it runs in this process (the Python API), bounded only by `max_rows` when given."""
    if limits is not None:
        t0 = time.perf_counter()
        df, stats, scans = run_isolated(lake, sql, limits=limits, cancel=cancel, now=now, allowed=allowed)
        st = QueryStatistics(**stats)
        st.ExecutionTimeInMillis = int((time.perf_counter() - t0) * 1000)
        return QueryResult(df, st, scans)
    t0 = time.perf_counter()
    if _EXPLAIN.match(sql):
        text = explain(lake, _EXPLAIN.sub("", sql, count=1), now=now)
        df = pl.DataFrame({"plan": text.splitlines()})
        return QueryResult(df, QueryStatistics(EventsMatched=df.height))
    p = plan(lake, sql, now=now)
    lf = p.lf if max_rows is None else p.lf.head(max_rows + 1)
    try:
        df = _collect(lf, cancel)
    except QueryCancelled:
        raise
    except CastFailed as e:  # a strict CAST or a Trino function that fails on its input
        raise SqlError(str(e).strip().splitlines()[0]) from None
    except pl.exceptions.PolarsError as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        m = re.search(r"(?:CastFailed|FunctionFailed): ([^\n]*)", str(e))
        if m:
            raise SqlError(m.group(1)) from None
        raise SqlError(f"the query failed while running: {msg}") from None
    except LakeError:
        raise
    if max_rows is not None and df.height > max_rows:
        raise QueryLimitExceeded(f"the result has more than {max_rows:,} rows, Lake's limit per query: add a "
                                 "LIMIT or narrow the WHERE clause (or raise the limit, --query-max-rows)")
    df.columns = _dedupe(p.names)
    ms = int((time.perf_counter() - t0) * 1000)
    return QueryResult(df, _stats(p, df.height, ms), list(p.planner.scans))


def _dedupe(names: list[str]) -> list[str]:
    out, used = [], set()
    for n in names:
        m, k = n, 1
        while m in used:
            k += 1
            m = f"{n}_{k}"
        used.add(m)
        out.append(m)
    return out


def explain(lake, sql: str, *, now: datetime | None = None) -> str:
    """The plan: per store scan the pruning bounds and what they keep, then polars' optimised plan."""
    p = plan(lake, sql, now=now)
    lines = ["Lake query plan", ""]
    for sc in p.planner.scans:
        total = sc.segments + sc.segments_skipped
        lines.append(f"scan {sc.store} AS {sc.alias}: {sc.segments} of {total} segments "
                     f"({sc.segments_skipped} skipped), {sc.rows:,} of {sc.rows + sc.rows_skipped:,} events, "
                     f"{sc.bytes:,} of {sc.bytes + sc.bytes_skipped:,} bytes")
        for b in sc.bounds or ["(no pruning bounds)"]:
            lines.append(f"  bound: {b}")
    lines += ["", "polars plan:"]
    try:
        lines += p.lf.explain().splitlines()
    except pl.exceptions.PolarsError as e:
        lines.append(f"(cannot show: {str(e).splitlines()[0]})")
    return "\n".join(lines)


def table_names(lake) -> list[str]:
    return sorted(s.name for s in lake.stores())


def _paths(name: str, t: str) -> list[str]:
    out = [name]
    if t.startswith("STRUCT<"):
        body = t[len("STRUCT<"):-1]
        depth, start, parts = 0, 0, []
        for i, ch in enumerate(body):
            if ch in "<(":
                depth += 1
            elif ch in ">)":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(body[start:i].strip())
                start = i + 1
        parts.append(body[start:].strip())
        for part in parts:
            fname, ftype = part.split(" ", 1)
            out += _paths(f"{name}.{fname.strip(chr(34))}", ftype)
    return out


def columns() -> list[str]:
    """Every column path a query can name, nested struct fields included (for completion and `.schema`)."""
    out: list[str] = []
    for name, t in VISIBLE_SCHEMA.items():
        out += _paths(name, t)
    return out


def schema_rows() -> list[dict[str, Any]]:
    return [{"column": name, "type": t} for name, t in VISIBLE_SCHEMA.items()]


def _function_names() -> list[str]:
    from . import sqlfunctions
    names = getattr(sqlfunctions, "FUNCTION_NAMES", None)
    return sorted(names) if names else []


FUNCTION_NAMES: list[str] = _function_names()

__all__ = ["run", "explain", "plan", "table_names", "columns", "schema_rows", "QueryResult", "QueryStatistics",
           "FUNCTION_NAMES"]
