"""Segment pruning: WHERE clause -> Bounds -> kept segments, never dropping a segment that could match."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import polars as pl
import pyarrow as pa
import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp
from sqlglot.optimizer.qualify import qualify

import lake
from lake.generate import records
from lake.log import SEGMENT_SCHEMA
from lake.pruning import DAY, HOUR, MINUTE, SECOND, Bounds, bounds, prune
from lake.schema import STAT_COLUMNS

UTC = timezone.utc
NOW = datetime(2024, 1, 3, 12, 0, 0, tzinfo=UTC)
SCHEMA = {"events": {"idx": "INT", "eventtime": "TIMESTAMP", "eventversion": "VARCHAR", "readonly": "BOOLEAN",
                     "eventid": "VARCHAR", **{c: "VARCHAR" for c in STAT_COLUMNS}}}


def us(text: str) -> int:
    """Microseconds since the epoch of a naive UTC ISO string."""
    when = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return int((when - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def tree(condition: str, select: str = "SELECT * FROM events AS e") -> exp.Expression:
    return qualify(sqlglot.parse_one(f"{select} WHERE {condition}", read="trino"), schema=SCHEMA, dialect="trino")


def where(condition: str, select: str = "SELECT * FROM events AS e") -> exp.Expression:
    return tree(condition, select).args["where"].this


def b(condition: str, alias: str = "e", now: datetime = NOW) -> Bounds:
    return bounds(where(condition), alias, now)


def segment(path: str, day: str, start: str | None = None, end: str | None = None, *,
            account: str | None = "111111111111", rows: int = 10, size: int = 1000, **stats) -> dict:
    """A SEGMENT_SCHEMA row. A stat given as a list is a value set (min/max derived), a tuple is (min, max)
    with no value set, absent means no statistics at all."""
    row = {"path": path, "rows": rows, "bytes": size, "sha256": "0" * 64, "account": account, "date": day,
           "eventtime_min": datetime.fromisoformat(start or f"{day} 00:00:01").replace(tzinfo=UTC)
           if start != "null" else None,
           "eventtime_max": datetime.fromisoformat(end or f"{day} 23:59:59").replace(tzinfo=UTC)
           if end != "null" else None,
           "version": 1}
    for c in STAT_COLUMNS:
        value = stats.get(c)
        if isinstance(value, list):
            row[f"{c}_values"] = value
            row[f"{c}_min"], row[f"{c}_max"] = (min(value), max(value)) if value else (None, None)
        elif isinstance(value, tuple):
            row[f"{c}_min"], row[f"{c}_max"] = value
    return row


def table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SEGMENT_SCHEMA)


def kept(segments: pa.Table, condition: str, now: datetime = NOW) -> list[str]:
    return prune(segments, b(condition, now=now)).segments.column("path").to_pylist()


DAYS = table(*(segment(f"d{d}", f"2024-01-0{d}") for d in range(1, 6)))

# -- eventtime forms -----------------------------------------------------------------------------------------

JAN1, JAN2, JAN3 = us("2024-01-01"), us("2024-01-02"), us("2024-01-03")
LOW, HIGH = -(2 ** 63), 2 ** 63 - 1


@pytest.mark.parametrize("condition, expected", [
    ("eventtime = '2024-01-01 00:00:00'", (JAN1, JAN1)),
    ("eventtime < '2024-01-02 00:00:00'", (LOW, JAN2 - 1)),
    ("eventtime <= '2024-01-02 00:00:00'", (LOW, JAN2)),
    ("eventtime > '2024-01-01 00:00:00'", (JAN1 + 1, HIGH)),
    ("eventtime >= '2024-01-01 00:00:00'", (JAN1, HIGH)),
    ("eventtime BETWEEN '2024-01-01 00:00:00' AND '2024-01-02 00:00:00'", (JAN1, JAN2)),
    ("'2024-01-01 00:00:00' < eventtime", (JAN1 + 1, HIGH)),
    ("'2024-01-02 00:00:00' >= e.eventtime", (LOW, JAN2)),
    ("'2024-01-01' = eventtime", (JAN1, JAN1)),
    ("eventtime >= '2024-01-01 00:00:00.123'", (JAN1 + 123_000, HIGH)),
    ("eventtime >= '2024-01-01'", (JAN1, HIGH)),
    ("eventtime >= '2024-01-01T00:00:00Z'", (JAN1, HIGH)),
    ("eventtime >= '2024-01-01T00:00:00.5Z'", (JAN1 + 500_000, HIGH)),
    ("eventtime >= '2024-01-01T02:00:00+02:00'", (JAN1, HIGH)),
    ("eventtime >= '2024-01-01 00:00:00 UTC'", (JAN1, HIGH)),
    ("eventtime >= TIMESTAMP '2024-01-01 00:00:00'", (JAN1, HIGH)),
    ("eventtime >= TIMESTAMP '2024-01-01 00:00:00.123'", (JAN1 + 123_000, HIGH)),
    ("eventtime < TIMESTAMP '2024-01-01 01:00:00 Europe/Paris'", (LOW, JAN1 - 1)),
    ("eventtime >= CAST('2024-01-01 00:00:00' AS TIMESTAMP)", (JAN1, HIGH)),
    ("eventtime >= CAST('2024-01-01' AS DATE)", (JAN1, HIGH)),
    ("eventtime >= from_iso8601_timestamp('2024-01-01T00:00:00Z')", (JAN1, HIGH)),
    ("eventtime < from_iso8601_date('2024-01-02')", (LOW, JAN2 - 1)),
    ("date(eventtime) = DATE '2024-01-01'", (JAN1, JAN2 - 1)),
    ("CAST(eventtime AS DATE) = DATE '2024-01-01'", (JAN1, JAN2 - 1)),
    ("date(eventtime) = '2024-01-01'", (JAN1, JAN2 - 1)),
    ("date(eventtime) > DATE '2024-01-01'", (JAN2, HIGH)),
    ("date(eventtime) >= DATE '2024-01-02'", (JAN2, HIGH)),
    ("date(eventtime) < DATE '2024-01-02'", (LOW, JAN2 - 1)),
    ("date(eventtime) <= DATE '2024-01-01'", (LOW, JAN2 - 1)),
    ("date(eventtime) BETWEEN DATE '2024-01-01' AND DATE '2024-01-02'", (JAN1, JAN3 - 1)),
    ("DATE '2024-01-02' > CAST(eventtime AS DATE)", (LOW, JAN2 - 1)),
    ("date_trunc('hour', eventtime) = TIMESTAMP '2024-01-01 10:00:00'", (JAN1 + 10 * HOUR, JAN1 + 11 * HOUR - 1)),
    ("eventtime > current_timestamp - INTERVAL '1' DAY", (us("2024-01-02 12:00:00") + 1, HIGH)),
    ("eventtime >= now() - INTERVAL '2' HOUR", (us("2024-01-03 10:00:00"), HIGH)),
    ("eventtime < now() + INTERVAL '30' MINUTE", (LOW, us("2024-01-03 12:30:00") - 1)),
    ("eventtime >= INTERVAL '1' DAY + now()", (us("2024-01-04 12:00:00"), HIGH)),
    ("eventtime >= date_add('day', -7, now())", (us("2023-12-27 12:00:00"), HIGH)),
    ("eventtime >= current_date", (JAN3, HIGH)),
    ("eventtime >= TIMESTAMP '2024-01-01 00:00:00' - INTERVAL '1' HOUR", (JAN1 - HOUR, HIGH)),
])
def test_eventtime_forms(condition, expected):
    assert b(condition).eventtime == (expected,)


def test_sub_microsecond_and_rounded_literals_stay_conservative():
    # A nanosecond literal lies between two stored microseconds: keep the neighbour on the open side.
    assert b("eventtime < '2024-01-01 00:00:00.0000005'").eventtime == ((LOW, JAN1),)
    assert b("eventtime > '2024-01-01 00:00:00.0000005'").eventtime == ((JAN1 + 1, HIGH),)
    assert b("eventtime >= TIMESTAMP '2024-01-01 00:00:00.123456789'").eventtime == ((JAN1 + 123_456, HIGH),)
    # CAST to TIMESTAMP(0) may round .9 up to the next second.
    assert b("eventtime <= CAST('2024-01-01 00:00:00.9' AS TIMESTAMP(0))").eventtime == ((LOW, JAN1 + SECOND),)
    # current_timestamp(3) may be rounded either way.
    assert b("eventtime <= current_timestamp(3)").eventtime == ((LOW, us("2024-01-03 12:00:01")),)


def test_eventtime_in_list_and_or_of_ranges():
    assert b("eventtime IN ('2024-01-01 00:00:00', '2024-01-03 00:00:00')").eventtime == ((JAN1, JAN1), (JAN3, JAN3))
    got = b("(eventtime >= '2024-01-01' AND eventtime < '2024-01-02') OR date(eventtime) = DATE '2024-01-04'")
    assert got.eventtime == ((JAN1, JAN2 - 1), (us("2024-01-04"), us("2024-01-05") - 1))
    assert kept(DAYS, "(eventtime >= '2024-01-01' AND eventtime < '2024-01-02') "
                      "OR date(eventtime) = DATE '2024-01-04'") == ["d1", "d4"]
    # Adjacent ranges merge.
    assert b("date(eventtime) = DATE '2024-01-01' OR date(eventtime) = DATE '2024-01-02'").eventtime == \
        ((JAN1, JAN3 - 1),)


def test_eventtime_pruning_on_segments():
    assert kept(DAYS, "eventtime >= '2024-01-02' AND eventtime < '2024-01-04'") == ["d2", "d3"]
    assert kept(DAYS, "eventtime BETWEEN '2024-01-02 23:59:59' AND '2024-01-03 00:00:01'") == ["d2", "d3"]
    # d4 ends at 23:59:59 exactly and d5 starts at 00:00:01: the gap between them holds no segment.
    assert kept(DAYS, "eventtime > '2024-01-04 23:59:59' AND eventtime < '2024-01-05 00:00:01'") == []
    assert kept(DAYS, "eventtime >= '2024-01-04 23:59:59' AND eventtime <= '2024-01-05 00:00:01'") == ["d4", "d5"]
    assert kept(DAYS, "eventtime > now() - INTERVAL '1' DAY", now=datetime(2024, 1, 5, 6, tzinfo=UTC)) == ["d4", "d5"]
    assert kept(DAYS, "CAST(eventtime AS DATE) = DATE '2024-01-05'") == ["d5"]


def test_missing_eventtime_statistics_fall_back_to_the_partition_date():
    segs = table(segment("a", "2024-01-01", "null", "null"), segment("b", "2024-01-02", "null", "null"),
                 segment("c", None, "null", "null"))
    assert kept(segs, "date(eventtime) = DATE '2024-01-02'") == ["b", "c"]


# -- value columns -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("column", STAT_COLUMNS)
def test_equality_and_in_on_each_value_column(column):
    segs = table(segment("ab", "2024-01-01", **{column: ["a", "b"]}),
                 segment("c", "2024-01-01", **{column: ["c"]}),
                 segment("range", "2024-01-01", **{column: ("d", "f")}),  # no value set: min/max decide
                 segment("unknown", "2024-01-01"),  # no statistics at all: must be kept
                 segment("allnull", "2024-01-01", **{column: []}))  # only NULLs: `= 'x'` is never true
    account = {"account": None} if column == "recipientaccountid" else {}
    segs = table(*({**r, **account} for r in segs.to_pylist()))
    assert b(f"{column} = 'a'").values(column) == frozenset({"a"})
    assert kept(segs, f"{column} = 'a'") == ["ab", "unknown"]
    assert kept(segs, f"'c' = e.{column}") == ["c", "unknown"]
    assert kept(segs, f"{column} IN ('b', 'e')") == ["ab", "range", "unknown"]
    assert kept(segs, f"{column} IN ('g', 'z')") == ["unknown"]
    assert kept(segs, f"{column} = 'f'") == ["range", "unknown"]


def test_account_partition_prunes_even_without_statistics():
    segs = table(segment("one", "2024-01-01", account="111111111111"),
                 segment("two", "2024-01-01", account="222222222222"),
                 segment("none", "2024-01-01", account="__none__"),
                 segment("nullacct", "2024-01-01", account=None))
    assert kept(segs, "recipientaccountid = '222222222222'") == ["two", "nullacct"]
    assert kept(segs, "recipientaccountid IN ('111111111111', '222222222222')") == ["one", "two", "nullacct"]
    assert kept(segs, "recipientaccountid = ''") == ["none", "nullacct"]  # '' is stored under __none__
    # Stats and partition must both allow it.
    segs = table(segment("one", "2024-01-01", account="111111111111", recipientaccountid=["111111111111"]))
    assert kept(segs, "recipientaccountid = '111111111111'") == ["one"]
    assert kept(segs, "recipientaccountid = '222222222222'") == []


def test_large_in_list_uses_the_hull_for_min_max():
    values = [f"v{i:04d}" for i in range(200)]
    segs = table(segment("inside", "2024-01-01", eventname=("v0100x", "v0100y")),
                 segment("outside", "2024-01-01", eventname=("w", "z")),
                 segment("listed", "2024-01-01", eventname=["v0150"]))
    cond = "eventname IN (" + ", ".join(f"'{v}'" for v in values) + ")"
    assert kept(segs, cond) == ["inside", "listed"]


# -- boolean structure ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("condition", [
    "eventversion = '1.08'",
    "readonly",
    "lower(eventname) = 'a'",
    "eventname <> 'a'",
    "eventname NOT IN ('a', 'b')",
    "eventname LIKE 'Get%'",
    "eventname > 'a'",
    "eventname IS NULL",
    "eventtime IS NOT NULL",
    "eventtime <> '2024-01-01'",
    "eventname = eventsource",
    "eventtime = eventtime",
    "eventtime > 'yesterday'",
    "eventtime > now() - INTERVAL '1' MONTH",
    "to_unixtime(eventtime) > 5",
    "CAST(eventtime AS TIMESTAMP(0)) < TIMESTAMP '2024-01-01 00:00:00'",
    "date(eventtime, 'America/New_York') = DATE '2024-01-01'",
    "eventname IN (SELECT eventname FROM events)",
    "eventtime > (SELECT max(eventtime) FROM events)",
    "EXISTS (SELECT 1 FROM events AS x WHERE x.eventname = 'a')",
    "eventname = 'a' OR readonly",
    "eventtime >= '2024-01-01' OR eventname = 'a'",
    "NOT (eventtime BETWEEN SYMMETRIC '2024-01-01' AND '2024-01-02')",
    "TRUE",
    "NOT FALSE",
])
def test_unprunable_predicates_are_unconstrained(condition):
    result = b(condition)
    assert result.unconstrained
    assert prune(DAYS, result).skipped == 0


def test_and_intersects_or_unions_per_column():
    got = b("(eventname = 'a' AND eventtime >= '2024-01-01') OR (eventname = 'b' AND awsregion = 'r')")
    assert got == Bounds(eventname=frozenset({"a", "b"}))
    got = b("eventname IN ('a', 'b', 'c') AND eventname IN ('b', 'c', 'd') AND awsregion = 'r' "
            "AND eventtime >= '2024-01-01' AND eventtime < '2024-01-02' AND eventtime > '2024-01-01 12:00:00'")
    assert got == Bounds(eventtime=((us("2024-01-01 12:00:00") + 1, JAN2 - 1),),
                         eventname=frozenset({"b", "c"}), awsregion=frozenset({"r"}))
    assert b("(eventname = 'a' OR eventname = 'b') AND readonly").eventname == frozenset({"a", "b"})


def test_contradictions_keep_nothing():
    for condition in ("eventname = 'a' AND eventname = 'b'", "eventtime < '2024-01-01' AND eventtime > '2024-01-02'",
                      "FALSE", "NULL", "NOT TRUE", "eventtime BETWEEN '2024-01-02' AND '2024-01-01'"):
        result = b(condition)
        assert result.impossible, condition
        assert prune(DAYS, result).segments.num_rows == 0
    # An impossible side of an OR adds nothing.
    assert b("(eventname = 'a' AND eventname = 'b') OR awsregion = 'r'") == Bounds(awsregion=frozenset({"r"}))
    assert b("FALSE OR eventname = 'a'") == Bounds(eventname=frozenset({"a"}))


def test_not_is_pushed_down():
    assert b("NOT (eventtime >= '2024-01-02')").eventtime == ((LOW, JAN2 - 1),)
    assert b("NOT eventtime < '2024-01-02'").eventtime == ((JAN2, HIGH),)
    assert b("NOT (eventtime NOT BETWEEN '2024-01-01' AND '2024-01-02')").eventtime == ((JAN1, JAN2),)
    assert b("eventtime NOT BETWEEN '2024-01-01' AND '2024-01-02'").eventtime == ((LOW, JAN1 - 1), (JAN2 + 1, HIGH))
    assert b("NOT (eventname = 'a' OR eventtime < '2024-01-02')") == Bounds(eventtime=((JAN2, HIGH),))
    assert b("NOT (eventname <> 'a' OR eventtime < '2024-01-02')") == \
        Bounds(eventtime=((JAN2, HIGH),), eventname=frozenset({"a"}))
    assert b("NOT NOT eventname = 'a'").eventname == frozenset({"a"})
    assert b("NOT (eventname = 'a' AND awsregion = 'r')").unconstrained
    assert b("eventname IS NOT DISTINCT FROM 'a'").eventname == frozenset({"a"})
    assert b("NOT (eventname IS DISTINCT FROM 'a')").eventname == frozenset({"a"})
    assert b("eventname IS DISTINCT FROM 'a'").unconstrained
    assert kept(DAYS, "NOT (date(eventtime) BETWEEN DATE '2024-01-02' AND DATE '2024-01-04')") == ["d1", "d5"]


def test_only_the_given_alias_counts():
    select = "SELECT * FROM events AS e JOIN events AS o ON e.eventid = o.eventid"
    w = where("o.eventname = 'x' AND e.awsregion = 'r' AND (o.eventtime > '2024-01-01' OR e.eventname = 'y')",
              select)
    assert bounds(w, "e", NOW) == Bounds(awsregion=frozenset({"r"}))
    assert bounds(w, "o", NOW) == Bounds(eventname=frozenset({"x"}))
    assert bounds(w, "other", NOW).unconstrained
    assert bounds(tree("e.eventname = 'x'", select).args["where"], "E", NOW).eventname == frozenset({"x"})
    assert bounds(None, "e").unconstrained


def test_describe_lines():
    got = b("eventtime >= '2024-01-01 00:00:00' AND eventtime < '2024-01-02' AND eventname IN ('b', 'a') "
            "AND awsregion = 'us-east-1'").describe()
    assert got == ["eventtime >= 2024-01-01 00:00:00", "eventtime < 2024-01-02 00:00:00",
                   "eventname IN ('a', 'b')", "awsregion = 'us-east-1'"]
    assert b("eventtime > '2024-01-01 00:00:00.5'").describe() == ["eventtime >= 2024-01-01 00:00:00.500001"]
    assert b("eventtime > '2024-01-01'").describe() == ["eventtime > 2024-01-01 00:00:00"]
    assert b("eventtime <= '2024-01-01'").describe() == ["eventtime <= 2024-01-01 00:00:00"]
    assert b("eventtime NOT BETWEEN '2024-01-01' AND '2024-01-02'").describe() == \
        ["eventtime in [-inf, 2024-01-01 00:00:00) OR (2024-01-02 00:00:00, +inf]"]
    assert b("eventname = 'a' AND eventname = 'b'").describe() == ["eventname: no value can match"]
    assert b("eventname = 'it''s'").describe() == ["eventname = 'it''s'"]
    assert b("readonly").describe() == []


def test_long_or_chains_and_big_in_lists():
    # A generated query with thousands of terms must not recurse per term, and EXPLAIN stays short.
    w = where(" OR ".join(f"eventname = 'n{i:04d}'" for i in range(3000)))
    got = bounds(w, "e", NOW)
    assert len(got.eventname) == 3000
    assert got.describe() == ["eventname IN (" + ", ".join(f"'n{i:04d}'" for i in range(10)) + ", ... (2990 more))"]
    days = " OR ".join(f"date(eventtime) = DATE '2024-01-01' + INTERVAL '{2 * i}' DAY" for i in range(1000))
    got = b(days)
    assert len(got.eventtime) == 1000 and got.eventtime[1] == (JAN3, us("2024-01-04") - 1)
    assert got.describe()[0].endswith("... (990 more)")


def test_where_node_and_naive_now_are_accepted():
    select = tree("eventtime > now() - INTERVAL '1' HOUR")
    assert bounds(select.args["where"], "e", datetime(2024, 1, 1, 1)).eventtime == ((JAN1 + 1, HIGH),)


def test_prune_result_counts():
    segs = table(segment("a", "2024-01-01", rows=5, size=100), segment("b", "2024-01-02", rows=7, size=300),
                 segment("c", "2024-01-03", rows=11, size=500))
    r = prune(segs, b("date(eventtime) = DATE '2024-01-02'"))
    assert r.segments.column("path").to_pylist() == ["b"]
    assert (r.considered, r.skipped, r.bytes_considered, r.bytes_skipped, r.rows_considered, r.rows_skipped) == \
        (3, 2, 900, 600, 23, 16)
    assert r.bounds.eventtime == ((JAN2, JAN3 - 1),)
    assert r.segments.schema == SEGMENT_SCHEMA
    empty = prune(table(), b("eventname = 'a'"))
    assert (empty.considered, empty.skipped, empty.bytes_considered, empty.segments.num_rows) == (0, 0, 0, 0)
    everything = prune(segs, Bounds())
    assert everything.segments.num_rows == 3 and everything.skipped == 0


# -- property: every matching row lies in a kept segment -----------------------------------------------------

BASE = datetime(2024, 1, 1, tzinfo=UTC)
# Instants near day, hour and second boundaries, where off-by-one pruning errors live. Each example draws a
# small pool of them for both its rows and its literals, so rows often sit exactly on (or 1 us beside) a bound.
OFFSETS = sorted({d * DAY + delta for d in range(3) for delta in
                  (0, 1, -1, SECOND, -SECOND, 123_000, 10 * HOUR, 10 * HOUR + 30 * MINUTE, DAY // 2, DAY - 1)})
VALUES = {"recipientaccountid": ["111", "222", "", None], "awsregion": ["us-east-1", "eu-west-1", None],
          "eventsource": ["s3", "ec2", "iam", None], "eventname": ["Get", "Put", "List", "", None],
          "eventcategory": ["Management", "Data", None]}
PROP_NOW = BASE + timedelta(days=2, hours=1)
POOLS = st.lists(st.sampled_from(OFFSETS), min_size=1, max_size=4, unique=True)


def _when(offset: int) -> datetime:
    return BASE + timedelta(microseconds=offset)


def _fmt(when: datetime, style: int) -> str:
    text = when.strftime("%Y-%m-%d %H:%M:%S") + (f".{when.microsecond:06d}" if when.microsecond else "")
    if style == 0:
        return f"'{text}'"
    if style == 1:
        return f"TIMESTAMP '{text}'"
    if style == 2:
        return f"'{when.strftime('%Y-%m-%dT%H:%M:%S')}{f'.{when.microsecond:06d}' if when.microsecond else ''}Z'"
    if style == 3:
        return f"from_iso8601_timestamp('{when.strftime('%Y-%m-%dT%H:%M:%S.%f')}Z')"
    return f"CAST('{text}' AS TIMESTAMP(6))"


@st.composite
def time_atom(draw, pool: list[int]) -> str:
    op = draw(st.sampled_from(["=", "<", "<=", ">", ">="]))
    kind = draw(st.integers(0, 4))
    if kind == 0:  # date(eventtime) op DATE '...'
        day = (BASE + timedelta(days=draw(st.integers(-1, 3)))).strftime("%Y-%m-%d")
        target = draw(st.sampled_from(["date(eventtime)", "CAST(eventtime AS DATE)"]))
        return f"{target} {op} DATE '{day}'"
    if kind == 1:  # relative to now
        n = draw(st.integers(0, 60))
        unit = draw(st.sampled_from(["DAY", "HOUR", "MINUTE"]))
        return f"eventtime {op} now() - INTERVAL '{n}' {unit}"
    literal = _fmt(_when(draw(st.sampled_from(pool))), draw(st.integers(0, 4)))
    if kind == 2:
        high = _fmt(_when(draw(st.sampled_from(pool))), draw(st.integers(0, 4)))
        return f"eventtime {'NOT ' if draw(st.booleans()) else ''}BETWEEN {literal} AND {high}"
    if kind == 3:
        mirror = {"=": "=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
        return f"{literal} {mirror[op]} eventtime"
    return f"eventtime {op} {literal}"


@st.composite
def value_atom(draw) -> str:
    column = draw(st.sampled_from(STAT_COLUMNS))
    choices = [v for v in VALUES[column] if v is not None] + ["zzz"]
    picked = draw(st.lists(st.sampled_from(choices), min_size=1, max_size=3))
    quoted = [f"'{v}'" for v in picked]
    form = draw(st.integers(0, 2))
    if form == 0:
        return f"{column} = {quoted[0]}"
    if form == 1:
        return f"{quoted[0]} = {column}"
    return f"{column} IN ({', '.join(quoted)})"


OPAQUE = st.sampled_from(["lower(eventname) = 'get'", "eventname <> 'Get'", "awsregion NOT IN ('us-east-1')",
                          "eventname IS NULL", "recipientaccountid IS NULL", "eventtime IS NOT NULL", "TRUE",
                          "FALSE", "eventname > 'H'"])


def predicates(pool: list[int]) -> st.SearchStrategy[str]:
    return st.recursive(
        st.one_of(time_atom(pool), time_atom(pool), value_atom(), value_atom(), OPAQUE),
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda p: f"({p[0]} AND {p[1]})"),
            st.tuples(inner, inner).map(lambda p: f"({p[0]} OR {p[1]})"),
            inner.map(lambda p: f"NOT ({p})")),
        max_leaves=5)


@st.composite
def event_rows(draw, pool: list[int]) -> list[dict]:
    n = draw(st.integers(0, 12))
    return [{"idx": i, "eventtime": _when(draw(st.sampled_from(pool)) + draw(st.sampled_from([0, 0, 1, -1]))),
             **{c: draw(st.sampled_from(v)) for c, v in VALUES.items()}} for i in range(n)]


def _segments_of(rows: list[dict], draw) -> tuple[pa.Table, list[str]]:
    """Rows -> segments the way the store cuts them (account x date, then split at random or into single
    rows), with statistics like lake.segments: a value set only up to a (random, small) size, sometimes
    min/max only, sometimes no statistics at all."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        account = r["recipientaccountid"] or "__none__"
        groups.setdefault((account, r["eventtime"].strftime("%Y-%m-%d")), []).append(r)
    entries, owner = [], [""] * len(rows)
    for (account, day), members in sorted(groups.items()):
        members.sort(key=lambda r: r["eventtime"])
        if draw(st.booleans()):
            cuts = list(range(1, len(members)))
        else:
            cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(members) - 1)), max_size=len(members)))))
        for part in (members[i:j] for i, j in zip([0, *cuts], [*cuts, len(members)]) if members[i:j]):
            path = f"s{len(entries)}"
            entry = {"path": path, "rows": len(part), "bytes": 100, "sha256": "", "account": account, "date": day,
                     "version": 1, "eventtime_min": part[0]["eventtime"], "eventtime_max": part[-1]["eventtime"]}
            if draw(st.integers(0, 5)) == 0:
                entry["eventtime_min"] = entry["eventtime_max"] = None
            limit = draw(st.integers(0, 3))
            for c in STAT_COLUMNS:
                present = sorted({r[c] for r in part if r[c] is not None})
                if draw(st.integers(0, 5)) == 0:
                    continue  # statistics absent (e.g. written by an older version)
                entry[f"{c}_min"] = present[0] if present else None
                entry[f"{c}_max"] = present[-1] if present else None
                entry[f"{c}_values"] = present if len(present) <= limit or not present else None
            for r in part:
                owner[r["idx"]] = path
            entries.append(entry)
    return pa.Table.from_pylist(entries, schema=SEGMENT_SCHEMA), owner


_DUCK = duckdb.connect()
_DUCK.execute("SET TimeZone = 'UTC'")


def _matching(rows: list[dict], select: exp.Expression) -> set[int]:
    """Evaluate the query with DuckDB, now() pinned to PROP_NOW, as an independent oracle."""
    events = pa.Table.from_pylist(rows, schema=pa.schema(
        [("idx", pa.int64()), ("eventtime", pa.timestamp("us", tz="UTC")), *[(c, pa.string()) for c in STAT_COLUMNS]]))
    pinned = select.transform(lambda n: exp.cast(exp.Literal.string(PROP_NOW.isoformat()), "TIMESTAMPTZ")
                              if isinstance(n, exp.CurrentTimestamp) else n)
    _DUCK.register("events", events)
    try:
        return {r[0] for r in _DUCK.execute(pinned.sql("duckdb")).fetchall()}
    finally:
        _DUCK.unregister("events")


def check_no_matching_row_is_pruned(data: st.DataObject) -> None:
    pool = data.draw(POOLS)
    rows, predicate = data.draw(event_rows(pool)), data.draw(predicates(pool))
    segs, owner = _segments_of(rows, data.draw)
    select = tree(predicate, "SELECT e.idx FROM events AS e")
    result = prune(segs, bounds(select.args["where"], "e", PROP_NOW))
    kept_paths = set(result.segments.column("path").to_pylist())
    for idx in _matching(rows, select):
        assert owner[idx] in kept_paths, (predicate, rows[idx], result.bounds.describe())


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_no_matching_row_is_pruned(data):
    check_no_matching_row_is_pruned(data)


# -- end to end: a real store --------------------------------------------------------------------------------

def test_one_day_condition_keeps_only_that_days_segments(tmp_path):
    end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    store = lake.connect(str(tmp_path / "lake")).create_store("audit")
    for chunk in range(3):  # several commits, so a day has several segments
        store.append(records(800, seed=chunk, days=30, end=end), source="import")
    segs = store.snapshot().segments
    day = (end - timedelta(days=10)).date()
    nxt = day + timedelta(days=1)
    assert len(set(segs.column("date").to_pylist())) >= 29
    that_day = sorted(p for p, d in zip(segs.column("path").to_pylist(), segs.column("date").to_pylist())
                      if d == day.isoformat())
    assert len(that_day) >= 3
    for condition in (f"eventtime >= '{day} 00:00:00' AND eventtime < '{nxt} 00:00:00'",
                      f"date(eventtime) = DATE '{day}'",
                      f"eventtime BETWEEN TIMESTAMP '{day} 00:00:00' AND TIMESTAMP '{day} 23:59:59.999'"):
        r = prune(segs, bounds(where(condition), "e"))
        assert sorted(r.segments.column("path").to_pylist()) == that_day, condition
        assert r.skipped == segs.num_rows - len(that_day)
        stored = store.scan().filter(pl.col("eventtime").dt.date() == day).select("eventtime").collect().height
        assert r.rows_considered - r.rows_skipped == stored
    r = prune(segs, bounds(where("eventtime > now() - INTERVAL '2' DAY AND recipientaccountid = '111111111111'"),
                           "e", now=end))
    assert r.segments.num_rows and set(r.segments.column("account").to_pylist()) == {"111111111111"}
    assert set(r.segments.column("date").to_pylist()) <= {str((end - timedelta(days=k)).date()) for k in (0, 1, 2)}
