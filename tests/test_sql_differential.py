"""Differential tests of the SQL engine: every corpus query (tests/sqlcorpus) runs through Lake and through the
DuckDB oracle (tests/sql_oracle.py) over the same Parquet segments, and the answers must be equal.

Stores (built once per session): `ext` (every external real data set, skipped when ../shared is absent),
`gen` (20k generated events over 3 days, management, data and network activity events) and `gen2` (5k events,
the same accounts, overlapping gen by one day). A query written with `$EDS_ID` runs on ext and on gen.

Also here: the corpus itself is checked (size, unique names, every feature exercised at least twice, every
query runs in DuckDB with a determined answer), and statements that would change data are refused with
ReadOnlyError before anything runs.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from lake.errors import ReadOnlyError
from tests import sql_oracle as so

CORPUS = so.load_corpus()
CASES = [pytest.param(q, ds, id=f"{q.area}/{q.name}@{ds}") for q in CORPUS for ds in q.datasets()]
# Entries whose empty answer is the point of the query.
EXPECTED_EMPTY = {"misc_limit_zero"}

# Each feature of the issue, as a pattern over the corpus text; each must occur in at least two queries.
FEATURES: dict[str, str] = {
    "struct path 4 deep": r"useridentity\.sessioncontext\.sessionissuer\.username",
    "tlsDetails.tlsVersion": r"tlsdetails\.tlsversion",
    "camelCase identifier": r"(?-i:\beventTime\b|\beventName\b|\buserIdentity\b)",
    "element_at on map": r"element_at\((requestparameters|additionaleventdata|responseelements)",
    "map subscript": r"(requestparameters|additionaleventdata|responseelements)\['",
    "map_keys": r"\bmap_keys\(", "map_values": r"\bmap_values\(", "cardinality": r"\bcardinality\(",
    "json_extract": r"\bjson_extract\(", "json_extract_scalar": r"\bjson_extract_scalar\(",
    "json_parse": r"\bjson_parse\(", "json_format": r"\bjson_format\(", "json_array_get": r"\bjson_array_get\(",
    "json_array_length": r"\bjson_array_length\(", "json_array_contains": r"\bjson_array_contains\(",
    "is_json_scalar": r"\bis_json_scalar\(",
    "CROSS JOIN UNNEST(resources)": r"cross join unnest\([a-z.]*resources\) as \w+\(r\)", "r.type": r"\br\.type\b",
    "contains": r"\bcontains\(", "array_distinct": r"\barray_distinct\(", "array_sort": r"\barray_sort\(",
    "array_max": r"\barray_max\(", "array_min": r"\barray_min\(", "slice": r"\bslice\(",
    "transform lambda": r"\btransform\([^)]*->", "filter lambda": r"\bfilter\([^)]*->",
    "eventtime vs string": r"eventtime\s*(<|>|<=|>=|=|between)\s*'\d{4}-", "TIMESTAMP literal": r"timestamp '\d{4}",
    "current_timestamp": r"\bcurrent_timestamp\b", "now()": r"\bnow\(\)", "INTERVAL": r"\binterval '",
    "date()": r"(?<![_\w])date\(", "date_add": r"\bdate_add\(", "date_diff": r"\bdate_diff\(",
    "date_trunc": r"\bdate_trunc\(", "date_format": r"\bdate_format\(",
    "from_iso8601_timestamp": r"\bfrom_iso8601_timestamp\(", "to_iso8601": r"\bto_iso8601\(",
    "year": r"\byear\(", "month": r"\bmonth\(", "day": r"\bday\(", "hour": r"\bhour\(", "minute": r"\bminute\(",
    "second": r"\bsecond\(", "day_of_week": r"\bday_of_week\(", "day_of_year": r"\bday_of_year\(",
    "week": r"\bweek\(", "CAST(eventTime AS DATE)": r"cast\(eventtime as date\)",
    "lower": r"\blower\(", "upper": r"\bupper\(", "length": r"\blength\(", "substr": r"\bsubstr\(",
    "split_part": r"\bsplit_part\(", "replace": r"\breplace\(", "concat": r"\bconcat\(", "||": r"\|\|",
    "strpos": r"\bstrpos\(", "trim": r"\btrim\(", "regexp_like": r"\bregexp_like\(",
    "regexp_extract": r"\bregexp_extract\(", "regexp_replace": r"\bregexp_replace\(",
    "LIKE ESCAPE": r"\blike '[^']*' escape '", "starts_with": r"\bstarts_with\(",
    "count": r"\bcount\(\*\)", "count(DISTINCT)": r"\bcount\(distinct ", "sum": r"\bsum\(", "avg": r"\bavg\(",
    "min": r"\bmin\(", "max": r"\bmax\(", "approx_distinct": r"\bapprox_distinct\(",
    "arbitrary": r"\barbitrary\(", "count_if": r"\bcount_if\(", "array_agg": r"\barray_agg\(",
    "array_agg DISTINCT": r"\barray_agg\(distinct ", "max_by": r"\bmax_by\(", "min_by": r"\bmin_by\(",
    "GROUP BY ordinals": r"group by \d", "GROUP BY expression": r"group by [a-z_]+\(", "HAVING": r"\bhaving\b",
    "row_number": r"\brow_number\(\)", "rank": r"(?<!dense_)\brank\(\)", "dense_rank": r"\bdense_rank\(\)",
    "lag": r"\blag\(", "lead": r"\blead\(",
    "aggregate OVER (PARTITION BY .. ORDER BY ..)":
        r"\b(count|sum|min|max|avg)\([^()]*\) over \(partition by [^()]* order by",
    "WITH": r"^\s*with\b", "derived table": r"\bfrom \(\s*select", "IN (subquery)": r"\bin \(select",
    "EXISTS": r"\bexists \(", "scalar subquery": r"[,=(]\s*\(select (count|max|min)",
    "correlated subquery": r"\(select [^;]*where [^;]*= (e|l|p|x)\.",
    "inner join": r"(?<!left )(?<!right )(?<!full )(?<!outer )(?<!cross )\bjoin\b", "left join": r"\bleft join\b",
    "right join": r"\bright join\b", "full join": r"\bfull (outer )?join\b",
    "join across stores": r"\bgen2?\b[^;]*\bjoin\b[^;]*\bgen2\b|\bext\b[^;]*\bjoin\b[^;]*\bgen\b",
    "UNION": r"\bunion\s+select", "UNION ALL": r"\bunion all\b", "EXCEPT": r"\bexcept\b", "INTERSECT": r"\bintersect\b",
    "CASE": r"\bcase\b", "COALESCE": r"\bcoalesce\(", "CAST": r"(?<!try_)\bcast\(", "TRY_CAST": r"\btry_cast\(",
    "GREATEST": r"\bgreatest\(", "LEAST": r"\bleast\(", "IS DISTINCT FROM": r"\bis distinct from\b",
    "IS NOT DISTINCT FROM": r"\bis not distinct from\b", "BETWEEN": r"\bbetween\b",
    "NULLS FIRST": r"\bnulls first\b", "NULLS LAST": r"\bnulls last\b", "LIMIT": r"\blimit \d",
    "OFFSET": r"\boffset \d",
}


def feature_counts(queries: list[so.CorpusQuery]) -> dict[str, int]:
    """How many corpus queries use each feature."""
    texts = [" ".join(q.sql.split()) for q in queries]
    return {name: sum(1 for t in texts if re.search(pat, t, re.IGNORECASE | re.MULTILINE)) for name, pat in
            FEATURES.items()}


@pytest.fixture(scope="session")
def sql_lake(tmp_path_factory):
    """(lake, store names), built once and shared with test_sql_properties.py; see sql_oracle.build_lake."""
    return so.build_lake(tmp_path_factory.getbasetemp() / "sql-lake")


@pytest.fixture(scope="session")
def oracle(sql_lake):
    return so.Oracle(*sql_lake)


def _bound(q: so.CorpusQuery, ds: str, names: list[str]) -> tuple[str, str | None]:
    sql, override = q.bind(ds)
    missing = sorted(so.tables_of(sql) - set(names))
    if missing:
        pytest.skip(f"store(s) {', '.join(missing)} not built (external data absent?)")
    return sql, override


# ---- the corpus ---------------------------------------------------------------------------------------------

def test_corpus_size_names_and_feature_coverage():
    assert len(CORPUS) >= 150, f"the corpus has {len(CORPUS)} queries, the issue asks for at least 150"
    counts = feature_counts(CORPUS)
    thin = {name: n for name, n in counts.items() if n < 2}
    assert not thin, f"features used by fewer than two corpus queries: {thin}"
    per_area = Counter(q.area for q in CORPUS)
    assert all(n >= 8 for n in per_area.values()), per_area


@pytest.mark.parametrize("q,ds", CASES)
def test_oracle_runs(q, ds, oracle, sql_lake):
    """DuckDB answers every corpus query, the outermost ORDER BY keys are output columns (so the order can be
    compared) and no LIMIT/OFFSET cuts through rows that tie on the sort keys."""
    sql, override = _bound(q, ds, sql_lake[1])
    expected = oracle.run(sql, override)
    if expected.order_keys is not None:
        assert None not in expected.order_keys, "an ORDER BY key is not an output column"
    tie = oracle.limit_boundary_ties(sql, override)
    assert tie is None, tie


def test_corpus_queries_return_rows(oracle, sql_lake):
    """A query that finds nothing on every store checks little: each must return rows somewhere."""
    empty = []
    for q in CORPUS:
        if q.name in EXPECTED_EMPTY:
            continue
        rows = 0
        for ds in q.datasets():
            sql, override = q.bind(ds)
            if not so.tables_of(sql) <= set(sql_lake[1]):
                rows = -1  # not checkable here
                break
            rows += oracle.run(sql, override).table.num_rows
        if rows == 0:
            empty.append(q.name)
    assert not empty, f"queries with no rows on any store: {empty}"


# ---- Lake against the oracle ----------------------------------------------------------------------------------

def _lake_answer(lk, sql: str):
    try:
        from lake.query import run
    except ModuleNotFoundError as e:
        if e.name == "lake.query":
            pytest.skip("the SQL engine (lake.query) is not in this tree yet")
        raise
    return run(lk, sql).df


@pytest.mark.parametrize("q,ds", CASES)
def test_lake_matches_duckdb(q, ds, oracle, sql_lake):
    lk, names = sql_lake
    sql, override = _bound(q, ds, names)
    expected = oracle.run(sql, override)
    got = _lake_answer(lk, sql)
    so.compare(so.to_arrow(got), expected, unordered_lists=q.unordered_lists)


# ---- writes are refused -------------------------------------------------------------------------------------------

REFUSED = {
    "insert": "INSERT INTO gen (eventname) VALUES ('x')",
    "insert_select": "INSERT INTO gen SELECT * FROM gen2",
    "update": "UPDATE gen SET eventname = 'x' WHERE eventname = 'ConsoleLogin'",
    "delete": "DELETE FROM gen WHERE eventname = 'ConsoleLogin'",
    "delete_all_lowercase": "delete from gen",
    "merge": "MERGE INTO gen t USING gen2 s ON t.eventid = s.eventid WHEN MATCHED THEN DELETE",
    "create_table_as": "CREATE TABLE copy AS SELECT * FROM gen",
    "create_view": "CREATE VIEW v AS SELECT * FROM gen",
    "drop_table": "DROP TABLE gen",
    "alter_table": "ALTER TABLE gen ADD COLUMN extra varchar",
    "truncate": "TRUNCATE TABLE gen",
    "select_then_delete": "SELECT count(*) FROM gen; DELETE FROM gen",
    "several_selects": "SELECT count(*) FROM gen; SELECT count(*) FROM gen2",
    "explain_analyze_insert": "EXPLAIN ANALYZE INSERT INTO gen SELECT * FROM gen2",
    "explain_analyze_delete": "EXPLAIN ANALYZE DELETE FROM gen",
    "comment_then_delete": "/* cleanup */ -- old events\nDELETE FROM gen WHERE eventtime < '2024-03-02 00:00:00'",
}


def _tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory):
    """A separate small lake, so that a write that got through could not spoil the shared one."""
    from datetime import datetime, timezone

    from lake import connect
    from lake.generate import records

    root = tmp_path_factory.mktemp("readonly-lake")
    lk = connect(str(root / "lake"))
    end = datetime(2024, 3, 4, tzinfo=timezone.utc)
    for name, seed in (("gen", 1), ("gen2", 2)):
        lk.create_store(name, retention_days=3653).append(records(200, seed=seed, end=end), source="import",
                                                          now=end)
    return lk, root / "lake"


@pytest.mark.parametrize("sql", list(REFUSED.values()), ids=list(REFUSED))
def test_write_statements_are_refused_before_running(sql, small_lake):
    lk, root = small_lake
    before = _tree_state(root)
    files = lk.store("gen").files()
    with pytest.raises(ReadOnlyError) as err:
        _lake_answer(lk, sql)
    assert "\n" not in str(err.value), "errors are one line"
    assert _tree_state(root) == before, "the lake changed"
    assert lk.store("gen").files() == files
