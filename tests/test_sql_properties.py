"""Property-based tests of the SQL engine: hypothesis builds random valid SELECT queries over the schema and
runs them against the generated store `gen`. Lake must either return DuckDB's answer (the oracle in
tests/sql_oracle.py) or refuse the query with a clean SqlError; any other exception is a bug.

The queries use filters (comparisons, LIKE, IN, BETWEEN, IS [NOT] NULL, AND/OR/NOT) on string, boolean and
timestamp columns and struct paths, GROUP BY with aggregates, DISTINCT, simple CASE and COALESCE, and ORDER BY
with LIMIT only over a total order (all group keys, all DISTINCT columns, or the unique eventid), so that every
answer is determined. Literals come from the values the generator writes, so filters select something.

The default run is small and fixed (60 derandomized examples); `LAKE_SLOW=1` runs the slow variant: 600
random ones.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake.errors import SqlError
from tests import sql_oracle as so

SLOW = os.environ.get("LAKE_SLOW") == "1"
STORE = "gen"

# column expression -> literal pool (values that occur in the generated data, plus some that do not)
STRINGS: dict[str, list[str]] = {
    "eventname": ["GetObject", "AssumeRole", "ConsoleLogin", "Decrypt", "PutItem", "DescribeInstances", "NoSuchApi"],
    "eventsource": ["s3.amazonaws.com", "kms.amazonaws.com", "sts.amazonaws.com", "iam.amazonaws.com", "x.example"],
    "awsregion": ["us-east-1", "eu-west-1", "ap-south-1"],
    "errorcode": ["AccessDenied", "VpceAccessDenied", "ThrottlingException", "NoSuchKey"],
    "eventcategory": ["Management", "Data", "NetworkActivity", "Insight"],
    "eventtype": ["AwsApiCall", "AwsVpceEvent", "AwsServiceEvent", "AwsConsoleSignIn"],
    "sourceipaddress": ["AWS Internal", "10.60.160.22", "203.0.113.233", "lambda.amazonaws.com"],
    "useridentity.type": ["AssumedRole", "IAMUser", "AWSService", "Root", "SAMLUser"],
    "useridentity.arn": ["arn:aws:iam::372869212137:user/ci-deployer", "arn:aws:iam::372869212137:user/bob.nakamura"],
    "useridentity.sessioncontext.sessionissuer.username": ["order-processor-exec-role", "okta-admin",
                                                            "github-actions-deploy", "monitoring-readonly"],
    "tlsdetails.tlsversion": ["TLSv1.2", "TLSv1.3"],
    "requestparameters['bucketName']": ["example-backups-372869212137-eu-west-1",
                                        "example-app-assets-372869212137-eu-west-1"],
}
BOOLEANS = ["readonly", "managementevent"]
TIMESTAMPS = ["eventtime", "useridentity.sessioncontext.attributes.creationdate"]
# Group keys: low-cardinality columns and expressions.
GROUP_KEYS = ["eventsource", "awsregion", "errorcode", "eventcategory", "eventtype", "useridentity.type",
              "tlsdetails.tlsversion", "readonly", "managementevent", "date(eventtime)", "hour(eventtime)",
              "date_trunc('hour', eventtime)", "useridentity.sessioncontext.sessionissuer.username"]


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@st.composite
def timestamps(draw) -> str:
    day = draw(st.integers(0, 3))
    hour = draw(st.integers(0, 23))
    minute = draw(st.sampled_from([0, 15, 30, 59]))
    text = f"2024-03-0{1 + day if day < 3 else 3} {hour:02d}:{minute:02d}:00"
    return draw(st.sampled_from([_quote(text), f"TIMESTAMP {_quote(text)}"]))


@st.composite
def string_predicate(draw) -> str:
    col = draw(st.sampled_from(sorted(STRINGS)))
    pool = STRINGS[col]
    kind = draw(st.sampled_from(["cmp", "like", "in", "not_in", "between", "null", "not_null"]))
    if kind == "cmp":
        return f"{col} {draw(st.sampled_from(['=', '<>', '<', '>', '<=', '>=']))} {_quote(draw(st.sampled_from(pool)))}"
    if kind == "like":
        v = draw(st.sampled_from(pool))
        cut = draw(st.integers(1, max(1, len(v) - 1)))
        pattern = draw(st.sampled_from([v[:cut] + "%", "%" + v[cut:], "%" + v[1:cut] + "%",
                                        v[:cut] + "_" * (len(v) - cut)]))
        neg = draw(st.booleans())
        return f"{col} {'NOT ' if neg else ''}LIKE {_quote(pattern)}"
    if kind in ("in", "not_in"):
        vals = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        return f"{col} {'NOT ' if kind == 'not_in' else ''}IN ({', '.join(map(_quote, vals))})"
    if kind == "between":
        a, b = sorted(draw(st.lists(st.sampled_from(pool), min_size=2, max_size=2)))
        return f"{col} BETWEEN {_quote(a)} AND {_quote(b)}"
    return f"{col} IS {'NOT ' if kind == 'not_null' else ''}NULL"


@st.composite
def bool_predicate(draw) -> str:
    col = draw(st.sampled_from(BOOLEANS))
    return draw(st.sampled_from([col, f"{col} = true", f"{col} = false", f"NOT {col}", f"{col} IS NULL",
                                 f"{col} IS NOT NULL"]))


@st.composite
def time_predicate(draw) -> str:
    col = draw(st.sampled_from(TIMESTAMPS))
    if draw(st.booleans()):
        a, b = draw(timestamps()), draw(timestamps())
        return f"{col} BETWEEN {a} AND {b}"
    return f"{col} {draw(st.sampled_from(['<', '>', '<=', '>=']))} {draw(timestamps())}"


def atoms() -> st.SearchStrategy[str]:
    return st.one_of(string_predicate(), bool_predicate(), time_predicate())


predicates = st.recursive(
    atoms(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["AND", "OR"]), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        inner.map(lambda p: f"NOT ({p})"),
    ),
    max_leaves=4,
)


@st.composite
def value_expression(draw) -> str:
    """A projected value: a column, a struct path, or simple CASE / COALESCE / lower over them."""
    col, other = draw(st.sampled_from(sorted(STRINGS))), draw(st.sampled_from(sorted(STRINGS)))
    return draw(st.sampled_from([
        col, f"lower({col})", f"length({col})", f"coalesce({col}, {other}, {_quote('none')})",
        f"CASE WHEN {draw(string_predicate())} THEN {_quote('yes')} ELSE {col} END",
    ]))


@st.composite
def aggregate(draw) -> str:
    col = draw(st.sampled_from(sorted(STRINGS)))
    return draw(st.sampled_from([
        "count(*)", f"count({col})", f"count(DISTINCT {col})", f"min({col})", f"max({col})",
        f"sum(length({col}))", f"avg(length({col}))", f"count_if({draw(atoms())})", "min(eventtime)", "max(eventtime)",
    ]))


def _where(draw) -> str:
    return f" WHERE {draw(predicates)}" if draw(st.integers(0, 4)) else ""


def _order(draw, n: int) -> str:
    """ORDER BY every output position 1..n (a total order over distinct rows), with random directions."""
    keys = []
    for i in range(1, n + 1):
        d = draw(st.sampled_from(["", " ASC", " DESC"]))
        nulls = draw(st.sampled_from(["", " NULLS FIRST", " NULLS LAST"]))
        keys.append(f"{i}{d}{nulls}")
    return " ORDER BY " + ", ".join(keys)


@st.composite
def grouped_query(draw) -> str:
    keys = draw(st.lists(st.sampled_from(GROUP_KEYS), min_size=1, max_size=2, unique=True))
    aggs = draw(st.lists(aggregate(), min_size=1, max_size=3))
    select = ", ".join([f"{k} AS k{i}" for i, k in enumerate(keys)] + [f"{a} AS a{i}" for i, a in enumerate(aggs)])
    sql = f"SELECT {select} FROM {STORE}{_where(draw)} GROUP BY {', '.join(str(i + 1) for i in range(len(keys)))}"
    if draw(st.booleans()):
        sql += f" HAVING count(*) > {draw(st.integers(0, 50))}"
    if draw(st.booleans()):
        sql += _order(draw, len(keys))
        if draw(st.booleans()):
            sql += f" LIMIT {draw(st.integers(1, 20))}"
    return sql


@st.composite
def distinct_query(draw) -> str:
    cols = draw(st.lists(value_expression(), min_size=1, max_size=3, unique=True))
    select = ", ".join(f"{c} AS c{i}" for i, c in enumerate(cols))
    sql = f"SELECT DISTINCT {select} FROM {STORE}{_where(draw)}"
    if draw(st.booleans()):
        sql += _order(draw, len(cols)) + f" LIMIT {draw(st.integers(1, 30))}"
    return sql


@st.composite
def row_query(draw) -> str:
    cols = draw(st.lists(value_expression(), min_size=1, max_size=3))
    select = ", ".join(["eventid"] + [f"{c} AS c{i}" for i, c in enumerate(cols)] + ["eventtime"])
    sql = f"SELECT {select} FROM {STORE} WHERE {draw(predicates)}"
    if draw(st.booleans()):
        sql += f" ORDER BY eventid{draw(st.sampled_from(['', ' DESC']))} LIMIT {draw(st.integers(1, 25))}"
    return sql


@st.composite
def global_query(draw) -> str:
    aggs = draw(st.lists(aggregate(), min_size=1, max_size=4))
    return f"SELECT {', '.join(f'{a} AS a{i}' for i, a in enumerate(aggs))} FROM {STORE}{_where(draw)}"


queries = st.one_of(grouped_query(), distinct_query(), row_query(), global_query())


@pytest.fixture(scope="module")
def lake_and_oracle(tmp_path_factory):
    """The lake shared with test_sql_differential.py and a DuckDB oracle over its `gen` store."""
    lk, _ = so.build_lake(tmp_path_factory.getbasetemp() / "sql-lake")
    return lk, so.Oracle(lk, [STORE])


def _check(lk, oracle, sql: str) -> None:
    from lake.query import run

    expected = oracle.run(sql)  # a failure here is a bug of the generator, not of Lake
    try:
        got = run(lk, sql).df
    except SqlError as e:
        assert "\n" not in str(e), f"SqlError message is not one line: {e!s}"
        return
    so.compare(so.to_arrow(got), expected)


def _lake_or_skip():
    try:
        import lake.query  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name == "lake.query":
            pytest.skip("the SQL engine (lake.query) is not in this tree yet")
        raise


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None,
          derandomize=True)  # the same 60 queries every run, so CI is reproducible; the slow run explores
@given(sql=queries)
def test_random_queries_match_duckdb_or_fail_cleanly(lake_and_oracle, sql):
    _lake_or_skip()
    _check(*lake_and_oracle, sql)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="600 random queries; set LAKE_SLOW=1")
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(sql=queries)
def test_random_queries_long_run(lake_and_oracle, sql):
    _lake_or_skip()
    _check(*lake_and_oracle, sql)


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(sql=queries)
def test_generated_queries_run_in_duckdb(lake_and_oracle, sql):
    """The generator only builds queries the oracle accepts (a guard for the test itself)."""
    lake_and_oracle[1].run(sql)
