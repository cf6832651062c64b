"""Segment pruning: what a WHERE clause implies for one table, and which segments can hold a matching row.

The planner calls `bounds(where, alias, now)` on the qualified sqlglot tree and `prune(segments, b)` on the
snapshot's segment table before it opens any Parquet file. Like pyiceberg's pruning visitors the work is
split in two pure steps with named results: a `Bounds` (an over-approximation of the rows the predicate can
be true for, per column) and a `PruneResult` (the kept segments and what was skipped, for EXPLAIN and query
statistics).

The one rule is: never drop a segment that could hold a matching row. So every predicate this module does
not fully understand (other columns, functions, subqueries, NOT IN, IS NULL, ...) is "unconstrained", a
literal that does not parse is unconstrained, and a segment whose statistics are missing is kept. NOT is
pushed down to the comparisons (De Morgan holds in SQL's three-valued logic, and a negated comparison is
false, not true, for NULL), so `NOT (eventtime < x)` prunes like `eventtime >= x`.

Time is kept as inclusive intervals of integer microseconds since the epoch (UTC), the resolution of the
stored `eventtime`, so strict and non-strict bounds are exact: `eventtime < '2024-01-02'` is
`eventtime <= 2024-01-01 23:59:59.999999`, and a day's segments stay apart from the next day's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from . import bloom

from .schema import STAT_COLUMNS
from .segments import NO_ACCOUNT

SECOND = 1_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
LOW, HIGH = -(2 ** 63), 2 ** 63 - 1  # open interval ends: the int64 range of the timestamp column
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Beyond this many IN values the min/max fallback tests only the hull of the set: one comparison pair
# instead of one per value keeps a 10,000-value IN list from costing seconds on a large store.
MAX_RANGE_CHECKS = 64
# An `eventid IN (...)` list longer than this is not worth probing every Bloom filter for.
MAX_BLOOM_KEYS = 1000
DESCRIBE_ITEMS = 10

Interval = tuple[int, int]  # inclusive [lo, hi] in microseconds since the epoch, UTC


@dataclass(frozen=True)
class Bounds:
    """What a WHERE clause implies for one table alias: eventtime interval(s), and allowed value sets for
    recipientaccountid, awsregion, eventsource, eventname, eventcategory. None = unconstrained.

    `eventtime` is a sorted tuple of disjoint inclusive microsecond intervals; an empty tuple or an empty
    value set means no row can match (e.g. `eventname = 'a' AND eventname = 'b'`)."""

    eventtime: tuple[Interval, ...] | None = None
    recipientaccountid: frozenset[str] | None = None
    awsregion: frozenset[str] | None = None
    eventsource: frozenset[str] | None = None
    eventname: frozenset[str] | None = None
    eventcategory: frozenset[str] | None = None
    eventid: frozenset[str] | None = None  # tested against each segment's Bloom filter (lake/bloom.py)

    @property
    def unconstrained(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    @property
    def impossible(self) -> bool:
        """True when no row at all can satisfy the predicate."""
        return any(v is not None and len(v) == 0 for v in (getattr(self, f.name) for f in fields(self)))

    def values(self, column: str) -> frozenset[str] | None:
        return getattr(self, column)

    def describe(self) -> list[str]:
        """Human lines for EXPLAIN, e.g. "eventtime >= 2024-01-01 00:00:00", "eventname IN ('a', 'b')"."""
        out = _describe_time(self.eventtime) if self.eventtime is not None else []
        for column in (*STAT_COLUMNS, "eventid"):
            allowed = self.values(column)
            if allowed is None:
                continue
            if not allowed:
                out.append(f"{column}: no value can match")
            elif len(allowed) == 1:
                out.append(f"{column} = {_quote(next(iter(allowed)))}")
            else:
                out.append(f"{column} IN ({_abbreviate([_quote(v) for v in sorted(allowed)], ', ')})")
        return out


EVERYTHING = Bounds()
NOTHING = Bounds(eventtime=())


@dataclass(frozen=True)
class PruneResult:
    """The segments that can hold a matching row, and what pruning saved (for EXPLAIN and statistics)."""

    segments: pa.Table  # the kept rows of the segment table
    considered: int
    skipped: int
    bytes_considered: int
    bytes_skipped: int
    rows_considered: int
    rows_skipped: int
    bounds: Bounds


# -- WHERE clause -> Bounds ---------------------------------------------------------------------------------

def bounds(where: exp.Expression | None, alias: str, now: datetime | None = None) -> Bounds:
    """The bounds `where` implies for the table called `alias` in a qualified tree.

    `now` is what current_timestamp / now() / current_date mean; pass the query's start time so that pruning
    and evaluation agree (default: the current time)."""
    if where is None:
        return EVERYTHING
    if isinstance(where, exp.Where):
        where = where.this
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return _Visitor(alias.lower(), _micros(now)).visit(where, negated=False)


_FLIP = {exp.EQ: "=", exp.NEQ: "<>", exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}
_MIRROR = {"=": "=", "<>": "<>", ">": "<", ">=": "<=", "<": ">", "<=": ">="}  # `x op col` is `col mirror x`
_NEGATE = {"=": "<>", "<>": "=", ">": "<=", ">=": "<", "<": ">=", "<=": ">"}
_UNITS = {"MILLISECOND": 1000, "SECOND": SECOND, "MINUTE": MINUTE, "HOUR": HOUR, "DAY": DAY, "WEEK": 7 * DAY}
# date_trunc units whose truncation is a plain floor on the epoch (WEEK is not: weeks start on Monday).
_TRUNC_UNITS = {"SECOND": SECOND, "MINUTE": MINUTE, "HOUR": HOUR, "DAY": DAY}
_TIMESTAMP_TYPES = (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMPLTZ,
                    exp.DataType.Type.TIMESTAMPNTZ, exp.DataType.Type.DATETIME, exp.DataType.Type.TIMESTAMP_S,
                    exp.DataType.Type.TIMESTAMP_MS, exp.DataType.Type.TIMESTAMP_NS)
_DATE_TYPES = (exp.DataType.Type.DATE, exp.DataType.Type.DATE32)


class _Visitor:
    """Turns a boolean expression into Bounds; `negated` carries a pending NOT down to the leaves."""

    def __init__(self, alias: str, now_us: int):
        self.alias = alias
        self.now = now_us

    def visit(self, node: exp.Expression, negated: bool) -> Bounds:
        if isinstance(node, exp.Paren):
            return self.visit(node.this, negated)
        if isinstance(node, exp.Not):
            return self.visit(node.this, not negated)
        if isinstance(node, (exp.And, exp.Or)):
            meet = isinstance(node, exp.And) != negated  # NOT (a AND b) = NOT a OR NOT b, and vice versa
            # flatten() walks a long `a OR b OR ...` chain without recursing once per term.
            parts = [self.visit(part, negated) for part in node.flatten()]
            return _intersect(parts) if meet else _union(parts)
        if isinstance(node, exp.Boolean):
            return NOTHING if node.this == negated else EVERYTHING
        if isinstance(node, exp.Null):  # WHERE NULL and WHERE NOT NULL are both never true
            return NOTHING
        if type(node) in _FLIP:
            return self.comparison(_FLIP[type(node)], node.this, node.expression, negated)
        if isinstance(node, exp.NullSafeEQ) and not negated:  # IS NOT DISTINCT FROM: true only when equal
            return self.comparison("=", node.this, node.expression, False)
        if isinstance(node, exp.NullSafeNEQ) and negated:
            return self.comparison("=", node.this, node.expression, False)
        if isinstance(node, exp.Between):
            return self.between(node, negated)
        if isinstance(node, exp.In):
            return self.in_list(node, negated)
        return EVERYTHING

    # -- leaves ---------------------------------------------------------------------------------------------
    def comparison(self, op: str, left: exp.Expression, right: exp.Expression, negated: bool) -> Bounds:
        if negated:
            op = _NEGATE[op]
        target = self.target(left)
        if target is None:
            target, left, right, op = self.target(right), right, left, _MIRROR[op]
            if target is None:
                return EVERYTHING
        kind, unit = target
        if kind != "eventtime":
            literal = _string(right)
            return Bounds(**{kind: frozenset([literal])}) if op == "=" and literal is not None else EVERYTHING
        span = self.instant(right)
        if span is None or op == "<>":
            return EVERYTHING
        return Bounds(eventtime=_normalize([_compare(op, span, unit)]))

    def between(self, node: exp.Between, negated: bool) -> Bounds:
        target = self.target(node.this)
        if target is None or target[0] != "eventtime":
            return EVERYTHING
        unit = target[1]
        low, high = self.instant(node.args.get("low")), self.instant(node.args.get("high"))
        if low is None or high is None:
            return EVERYTHING
        if negated:  # NOT BETWEEN: below low or above high (either order when SYMMETRIC: give up)
            if node.args.get("symmetric"):
                return EVERYTHING
            return Bounds(eventtime=_normalize([_compare("<", low, unit), _compare(">", high, unit)]))
        forward = _meet([_compare(">=", low, unit)], [_compare("<=", high, unit)])
        if node.args.get("symmetric"):
            forward += _meet([_compare(">=", high, unit)], [_compare("<=", low, unit)])
        return Bounds(eventtime=_normalize(forward))

    def in_list(self, node: exp.In, negated: bool) -> Bounds:
        target = self.target(node.this)
        extra = {k for k, v in node.args.items() if v and k not in ("this", "expressions")}
        if negated or target is None or extra:  # NOT IN, IN (subquery), IN UNNEST(...)
            return EVERYTHING
        kind, unit = target
        items = node.expressions
        if kind != "eventtime":
            literals = [_string(e) for e in items]
            return EVERYTHING if None in literals else Bounds(**{kind: frozenset(literals)})
        spans = [self.instant(e) for e in items]
        if None in spans:
            return EVERYTHING
        return Bounds(eventtime=_normalize([_compare("=", s, unit) for s in spans]))

    # -- operands -------------------------------------------------------------------------------------------
    def column(self, node: exp.Expression) -> str | None:
        """The lower-case column name if `node` is a column of our alias."""
        if isinstance(node, exp.Column) and node.table.lower() == self.alias:
            return node.name.lower()
        return None

    def target(self, node: exp.Expression) -> tuple[str, int] | None:
        """("eventtime", unit) for eventtime or a floor of it (date(eventtime), CAST(eventtime AS DATE),
        date_trunc('hour', eventtime)); (column, 0) for a value column; None for anything else."""
        while isinstance(node, exp.Paren):
            node = node.this
        name = self.column(node)
        if name in STAT_COLUMNS or name == "eventid":
            return name, 0
        if name == "eventtime":
            return "eventtime", 1
        if isinstance(node, exp.Date) and self.column(node.this) == "eventtime" \
                and not node.args.get("zone") and not node.expressions:
            return "eventtime", DAY
        if isinstance(node, exp.Cast) and self.column(node.this) == "eventtime":
            if node.to.this in _DATE_TYPES:
                return "eventtime", DAY
            if node.to.this in _TIMESTAMP_TYPES and _precision(node.to) >= 6:  # TIMESTAMP(0) may round up
                return "eventtime", 1
        if isinstance(node, (exp.TimestampTrunc, exp.DateTrunc)) and self.column(node.this) == "eventtime":
            unit = _TRUNC_UNITS.get(_unit_name(node.args.get("unit")))
            if unit and not node.args.get("zone"):
                return "eventtime", unit
        return None

    def instant(self, node: exp.Expression | None) -> Interval | None:
        """The microsecond range [a, b] a timestamp expression can denote (a < b when the literal has more
        precision than a microsecond, or is cast to less precision than it is written with), or None."""
        while isinstance(node, exp.Paren):
            node = node.this
        if node is None:
            return None
        if isinstance(node, exp.Literal) and node.is_string:
            return _parse_timestamp(node.this)
        if isinstance(node, (exp.CurrentTimestamp, exp.Localtimestamp)) and not node.args.get("sysdate"):
            slack = 0 if node.this is None else SECOND  # current_timestamp(p) may be rounded to p digits
            return self.now - slack, self.now + slack
        if isinstance(node, exp.CurrentDate) and node.this is None:
            day = _floor(self.now, DAY)
            return day, day
        if isinstance(node, (exp.FromISO8601Timestamp, exp.FromISO8601Date)):
            span = self.instant(node.this) if isinstance(node.this, exp.Literal) else None
            if span is None or isinstance(node, exp.FromISO8601Timestamp):
                return span
            return _floor(span[0], DAY), _floor(span[1], DAY)
        if isinstance(node, exp.Cast):
            inner = self.instant(node.this)
            if inner is None:
                return None
            if node.to.this in _DATE_TYPES:
                return _floor(inner[0], DAY), _floor(inner[1], DAY)
            if node.to.this in _TIMESTAMP_TYPES:
                step = 10 ** (6 - min(_precision(node.to), 6))  # CAST(x AS TIMESTAMP(p)) may round x
                return _floor(inner[0], step), -_floor(-inner[1], step)
            return None
        if isinstance(node, (exp.Add, exp.Sub)):
            base, delta = node.this, node.expression
            if isinstance(node, exp.Add) and isinstance(base, exp.Interval):  # INTERVAL '1' DAY + now()
                base, delta = delta, base
            span, step = self.instant(base), _interval(delta)
            if span is None or step is None:
                return None
            step = step if isinstance(node, exp.Add) else -step
            return span[0] + step, span[1] + step
        if isinstance(node, exp.DateAdd):  # date_add('day', -1, now())
            span, amount, unit = self.instant(node.this), _integer(node.expression), \
                _UNITS.get(_unit_name(node.args.get("unit")))
            if span is None or amount is None or unit is None:
                return None
            return span[0] + amount * unit, span[1] + amount * unit
        return None


# -- literal parsing ----------------------------------------------------------------------------------------

_TS_RE = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[T ](\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|UTC|[+-]\d{2}(?::?\d{2})?|[A-Za-z][A-Za-z0-9_/+-]*)?\s*$")


def _parse_timestamp(text: str) -> Interval | None:
    """A Trino / CloudTrail Lake timestamp string as a microsecond range; naive times are UTC."""
    m = _TS_RE.match(text)
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    try:
        tz = _zone(zone)
        if tz is None:
            return None
        when = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
                        tzinfo=tz)
    except (ValueError, OverflowError):
        return None
    # A wall time that a DST change makes ambiguous could mean either instant: allow both.
    earliest, latest = sorted((_micros(when), _micros(when.replace(fold=1))))
    fraction = fraction or ""
    micros = int(fraction[:6].ljust(6, "0"))
    sub_micro = fraction[6:].strip("0") != ""  # nanoseconds: the value lies strictly between two microseconds
    return earliest + micros, latest + micros + (1 if sub_micro else 0)


def _zone(zone: str | None):
    if zone is None or zone.upper() in ("Z", "UTC"):
        return timezone.utc
    if zone[0] in "+-":
        digits = zone[1:].replace(":", "")
        minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) > 2 else 0)
        return timezone(timedelta(minutes=minutes if zone[0] == "+" else -minutes))
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo(zone)
    except (ValueError, KeyError, OSError, ImportError):
        return None


def _precision(to: exp.DataType) -> int:
    """The fractional digits of a TIMESTAMP(p) type; Trino's plain TIMESTAMP is TIMESTAMP(3)."""
    params = to.expressions
    if not params:
        return 3
    value = params[0].this if isinstance(params[0], exp.DataTypeParam) else params[0]
    try:
        return int(value.this if isinstance(value, exp.Expression) else value)
    except (TypeError, ValueError):
        return 0


def _interval(node: exp.Expression) -> int | None:
    """INTERVAL 'n' DAY|HOUR|MINUTE|SECOND|... in microseconds (months and years vary: None)."""
    if not isinstance(node, exp.Interval):
        return None
    unit_name = _unit_name(node.args.get("unit"))
    amount = node.this
    if unit_name is None and isinstance(amount, exp.Literal):  # INTERVAL '2 hours'
        parts = str(amount.this).split()
        if len(parts) != 2:
            return None
        amount, unit_name = exp.Literal.string(parts[0]), parts[1].upper().rstrip("S")
    count, unit = _integer(amount), _UNITS.get(unit_name or "")
    return None if count is None or unit is None else count * unit


def _integer(node: exp.Expression | None) -> int | None:
    if isinstance(node, exp.Neg):
        inner = _integer(node.this)
        return None if inner is None else -inner
    if isinstance(node, exp.Literal):
        try:
            return int(str(node.this).strip())
        except ValueError:
            return None
    return None


def _unit_name(node: exp.Expression | None) -> str | None:
    if node is None:
        return None
    name = node.name if isinstance(node, (exp.Var, exp.Literal, exp.Identifier)) else None
    return name.upper().rstrip("S") if name else None


def _string(node: exp.Expression) -> str | None:
    while isinstance(node, exp.Paren):
        node = node.this
    return node.this if isinstance(node, exp.Literal) and node.is_string else None


# -- interval and set algebra -------------------------------------------------------------------------------

def _floor(value: int, unit: int) -> int:
    return value - value % unit


def _compare(op: str, span: Interval, unit: int) -> Interval:
    """The eventtime range for which `floor_unit(eventtime) op V` can be true, V somewhere in span [a, b].

    With unit 1 this is the plain comparison on microseconds. With a unit (date(eventtime), date_trunc) the
    literal is also allowed to be truncated to that unit first, so both Trino's coercion (date -> timestamp)
    and an engine that compares at date granularity are covered."""
    a, b = _floor(span[0], unit), span[1]
    if op == ">=":
        return a, HIGH
    if op == ">":
        return a + unit, HIGH
    if op == "<=":
        return LOW, _floor(b, unit) + unit - 1
    if op == "<":
        return LOW, -_floor(-b, unit) - 1
    return a, _floor(b, unit) + unit - 1  # "="


def _normalize(intervals: Iterable[Interval]) -> tuple[Interval, ...]:
    """Sorted, disjoint, non-adjacent intervals clamped to the int64 range."""
    merged: list[list[int]] = []
    for lo, hi in sorted((max(lo, LOW), min(hi, HIGH)) for lo, hi in intervals):
        if lo > hi:
            continue
        if merged and lo <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return tuple((lo, hi) for lo, hi in merged)


def _meet(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    b = list(b)
    return [(max(x[0], y[0]), min(x[1], y[1])) for x in a for y in b]


def _intersect(parts: list[Bounds]) -> Bounds:
    out = {}
    for f in fields(Bounds):
        given = [v for v in (getattr(p, f.name) for p in parts) if v is not None]
        if not given:
            out[f.name] = None
        elif f.name == "eventtime":
            acc: Iterable[Interval] = given[0]
            for other in given[1:]:
                acc = _normalize(_meet(acc, other))
            out[f.name] = _normalize(acc)
        else:
            out[f.name] = frozenset.intersection(*given)
    return Bounds(**out)


def _union(parts: list[Bounds]) -> Bounds:
    """Per-column union: a box around all sides. An impossible side contributes nothing."""
    parts = [p for p in parts if not p.impossible]
    if not parts:
        return NOTHING
    out = {}
    for f in fields(Bounds):
        given = [getattr(p, f.name) for p in parts]
        if any(v is None for v in given):
            out[f.name] = None
        elif f.name == "eventtime":
            out[f.name] = _normalize(i for v in given for i in v)
        else:
            out[f.name] = frozenset().union(*given)
    return Bounds(**out)


# -- describe -----------------------------------------------------------------------------------------------

def _micros(when: datetime) -> int:
    delta = when - EPOCH
    return (delta.days * 86400 + delta.seconds) * SECOND + delta.microseconds


def _format(us: int) -> str:
    try:
        when = EPOCH + timedelta(microseconds=us)
    except OverflowError:
        return f"{us} us since 1970-01-01"
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{when.microsecond:06d}" if when.microsecond else text


def _lower(lo: int) -> tuple[str, str]:
    """(">", x) reads better than (">=", x + 1 us) when the bound came from `> x`."""
    return (">", _format(lo - 1)) if (lo - 1) % SECOND == 0 else (">=", _format(lo))


def _upper(hi: int) -> tuple[str, str]:
    """("<", next second) reads better than ("<=", ...59.999999) when the bound came from `< x`."""
    return ("<", _format(hi + 1)) if (hi + 1) % SECOND == 0 else ("<=", _format(hi))


def _describe_time(intervals: tuple[Interval, ...]) -> list[str]:
    if not intervals:
        return ["eventtime: no value can match"]
    if len(intervals) == 1:
        lo, hi = intervals[0]
        lines = [f"eventtime {' '.join(_lower(lo))}"] if lo > LOW else []
        if hi < HIGH:
            lines.append(f"eventtime {' '.join(_upper(hi))}")
        return lines
    parts = []
    for lo, hi in intervals:
        op, text = _upper(hi) if hi < HIGH else ("<=", "+inf")
        start, low = _lower(lo) if lo > LOW else (">=", "-inf")
        parts.append(f"{'(' if start == '>' else '['}{low}, {text}{')' if op == '<' else ']'}")
    return [f"eventtime in {_abbreviate(parts, ' OR ')}"]


def _abbreviate(items: list[str], sep: str) -> str:
    """EXPLAIN stays readable for a 3,000-value IN list: the first few items and a count of the rest."""
    if len(items) <= DESCRIBE_ITEMS:
        return sep.join(items)
    return sep.join(items[:DESCRIBE_ITEMS]) + f"{sep}... ({len(items) - DESCRIBE_ITEMS} more)"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


# -- Bounds x segment table -> PruneResult ------------------------------------------------------------------

def prune(segments: pa.Table, b: Bounds) -> PruneResult:
    """Keep the segments whose manifest statistics can match `b`; vectorised over the whole table."""
    n = segments.num_rows
    keep = np.ones(n, dtype=bool)
    if b.eventtime is not None:
        keep &= _time_mask(segments, b.eventtime)
    for column in _PRUNE_ORDER:
        allowed = b.values(column)
        if allowed is None:
            continue
        alive = np.flatnonzero(keep)
        if len(alive) == 0:
            break
        # Value sets are the costly part (every list element is hashed): test only what is still alive.
        part = segments if len(alive) == n else segments.select(_stat_fields(column)).take(alive)
        keep[alive] = _value_mask(part, column, allowed)
    if b.eventid is not None and "eventid_bloom" in segments.column_names:
        alive = np.flatnonzero(keep)
        if len(alive) and len(b.eventid) <= MAX_BLOOM_KEYS:
            filters = segments.column("eventid_bloom")
            keep[alive] = bloom.may_contain(filters if len(alive) == n else filters.take(alive), sorted(b.eventid))
        elif not b.eventid:
            keep[:] = False
    kept = segments if keep.all() else segments.filter(pa.array(keep))
    rows, size = _total(segments, "rows"), _total(segments, "bytes")
    kept_rows, kept_size = _total(kept, "rows"), _total(kept, "bytes")
    return PruneResult(segments=kept, considered=n, skipped=n - kept.num_rows, bytes_considered=size,
                       bytes_skipped=size - kept_size, rows_considered=rows, rows_skipped=rows - kept_rows,
                       bounds=b)


# Cheapest and most selective first: the account is one string per segment, event names are many.
_PRUNE_ORDER = ("recipientaccountid", "eventname", *(c for c in STAT_COLUMNS
                                                    if c not in ("recipientaccountid", "eventname")))


def _stat_fields(column: str) -> list[str]:
    return [f"{column}_values", f"{column}_min", f"{column}_max"] + \
        (["account"] if column == "recipientaccountid" else [])


def _total(table: pa.Table, column: str) -> int:
    return int(pc.sum(table.column(column)).as_py() or 0) if table.num_rows else 0


def _int64(column: pa.ChunkedArray, fill: int) -> np.ndarray:
    return pc.fill_null(column.cast(pa.int64()), fill).to_numpy()


def _time_mask(segments: pa.Table, intervals: tuple[Interval, ...]) -> np.ndarray:
    """A segment [emin, emax] is kept when some interval overlaps it. The intervals are sorted and disjoint,
    so the only candidate is the first one ending at or after emin: one binary search per segment."""
    if not intervals:
        return np.zeros(segments.num_rows, dtype=bool)
    lo_col, hi_col = segments.column("eventtime_min"), segments.column("eventtime_max")
    if lo_col.null_count or hi_col.null_count:  # fall back to the partition date, then to "anything"
        day = pc.strptime(segments.column("date"), format="%Y-%m-%d", unit="us", error_is_null=True)
        day = day.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        lo_col = pc.coalesce(lo_col.cast(pa.int64()), day)
        hi_col = pc.coalesce(hi_col.cast(pa.int64()), pc.add(day, DAY - 1))
    emin, emax = _int64(lo_col, LOW), _int64(hi_col, HIGH)
    los = np.array([lo for lo, _ in intervals], dtype=np.int64)
    his = np.array([hi for _, hi in intervals], dtype=np.int64)
    first = np.searchsorted(his, emin, side="left")
    inside = first < len(his)
    return inside & (los[np.minimum(first, len(his) - 1)] <= emax)


def _value_mask(segments: pa.Table, column: str, allowed: frozenset[str]) -> np.ndarray:
    """Value set when the manifest has one, else min/max; unknown statistics keep the segment. An empty
    value set means every row is NULL there, and `c = 'x'` / `c IN (...)` is never true for NULL."""
    n = segments.num_rows
    if not allowed:
        return np.zeros(n, dtype=bool)
    value_set = pa.array(sorted(allowed), pa.string())
    lists = segments.column(f"{column}_values").combine_chunks()
    hits = pc.fill_null(pc.is_in(pc.list_flatten(lists), value_set=value_set), False)
    by_values = np.zeros(n, dtype=bool)
    by_values[pc.list_parent_indices(lists).to_numpy()[hits.to_numpy(zero_copy_only=False)]] = True
    has_values = lists.is_valid().to_numpy(zero_copy_only=False)
    mask = by_values
    if not has_values.all():
        mask = np.where(has_values, by_values, _range_mask(segments, column, sorted(allowed)))
    if column == "recipientaccountid":  # the partition value: rows with NULL or '' are under __none__
        partitions = value_set if "" not in allowed else pa.array(sorted(allowed | {NO_ACCOUNT}), pa.string())
        account = segments.column("account")
        in_partition = pc.or_(pc.is_in(account, value_set=partitions), pc.is_null(account))  # unknown: keep
        mask &= in_partition.to_numpy(zero_copy_only=False)
    return mask


def _range_mask(segments: pa.Table, column: str, allowed: list[str]) -> np.ndarray:
    low, high = segments.column(f"{column}_min"), segments.column(f"{column}_max")
    checks = [(v, v) for v in allowed] if len(allowed) <= MAX_RANGE_CHECKS else [(allowed[0], allowed[-1])]
    mask = None
    for first, last in checks:  # [min, max] overlaps [first, last]; NULL statistics -> keep
        part = pc.and_kleene(pc.less_equal(low, pa.scalar(last)), pc.greater_equal(high, pa.scalar(first)))
        mask = part if mask is None else pc.or_kleene(mask, part)
    return pc.fill_null(mask, True).to_numpy(zero_copy_only=False)
