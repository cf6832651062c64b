"""The query engine's own contract (what the DuckDB differential corpus cannot check): table references by
name/id/ARN, one-line errors with positions, read-only refusal before anything runs, pruning visible in
EXPLAIN data and statistics, cancellation, Trino semantics polars does not have by default."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

import lake
from lake.errors import QueryCancelled, ReadOnlyError, SqlError
from lake.query import explain, run

T0 = datetime(2024, 3, 1, tzinfo=timezone.utc)


def _rec(i: int, day: int, **kw) -> dict:
    r = {
        "eventVersion": "1.08", "eventID": f"00000000-0000-0000-0000-{i:012d}",
        "eventTime": (T0 + timedelta(days=day, minutes=i % 1440)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "s3.amazonaws.com" if i % 3 else "iam.amazonaws.com",
        "eventName": ["GetObject", "PutObject", "DeleteBucket", "CreateUser"][i % 4],
        "awsRegion": "us-east-1" if i % 2 else "eu-west-1", "recipientAccountId": "111111111111",
        "userIdentity": {"type": "AssumedRole", "arn": f"arn:aws:sts::111111111111:assumed-role/r{i % 5}/s",
                         "sessionContext": {"sessionIssuer": {"userName": f"r{i % 5}", "type": "Role"}}},
        "requestParameters": {"bucketName": f"b{i % 7}", "n": i} if i % 4 != 3 else None,
        "resources": [{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::b{i % 7}/k{i}"}],
        "errorCode": "AccessDenied" if i % 10 == 0 else None, "managementEvent": i % 3 == 0,
        "readOnly": i % 2 == 0, "eventType": "AwsApiCall",
    }
    r.update(kw)
    return r


@pytest.fixture(scope="module")
def lk(tmp_path_factory):
    root = tmp_path_factory.mktemp("sqlengine")
    lk = lake.connect(str(root))
    st = lk.create_store("trail-30d", retention_days=3653)
    st.append([_rec(i, i % 30) for i in range(3000)], source="import")
    lk.create_store("empty")
    return lk


def test_store_by_name_id_and_arn_unquoted(lk):
    st = lk.store("trail-30d")
    for ref in ("trail-30d", st.id, st.arn, '"trail-30d"'):
        df = lk.sql(f"SELECT count(*) AS n FROM {ref}")
        assert df["n"][0] == 3000, ref


def test_identifiers_case_insensitive_and_struct_paths(lk):
    a = lk.sql("SELECT userIdentity.sessionContext.sessionIssuer.userName AS u, count(*) AS n FROM trail-30d "
               "WHERE eventTime >= '2024-03-02 00:00:00' GROUP BY 1 ORDER BY u")
    b = lk.sql("select USERIDENTITY.SESSIONCONTEXT.SESSIONISSUER.USERNAME as u, COUNT(*) as n from trail-30d "
               "where EVENTTIME >= timestamp '2024-03-02 00:00:00' group by 1 order by u")
    assert a.equals(b)
    assert a["u"].to_list() == [f"r{i}" for i in range(5)]


def test_flat_routing_equals_struct_path(lk):
    a = lk.sql("SELECT count(*) AS n FROM trail-30d WHERE userIdentity.arn LIKE '%r1/%'")
    b = lk.sql("SELECT count(*) AS n FROM trail-30d t WHERE t.useridentity.arn LIKE '%r1/%'")
    assert a["n"][0] == b["n"][0] == 600


def test_map_access_forms(lk):
    df = lk.sql("SELECT requestParameters['bucketName'] AS a, element_at(requestparameters, 'bucketName') AS b "
                "FROM trail-30d WHERE eventid = '00000000-0000-0000-0000-000000000008'")
    assert df.row(0) == ("b1", "b1")
    df = lk.sql("SELECT requestParameters['n'] AS n, requestParameters['missing'] AS m FROM trail-30d "
                "WHERE eventid = '00000000-0000-0000-0000-000000000008'")
    assert df.row(0) == ("8", None)  # numbers kept as JSON text, absent keys NULL


@pytest.mark.parametrize("sql,kind", [
    ("INSERT INTO trail-30d SELECT * FROM trail-30d", "INSERT"),
    ("UPDATE trail-30d SET eventname = 'x'", "UPDATE"),
    ("DELETE FROM trail-30d", "DELETE"),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "MERGE"),
    ("CREATE TABLE x AS SELECT 1", "CREATE"),
    ("DROP TABLE trail-30d", "DROP"),
    ("ALTER TABLE trail-30d ADD COLUMN x VARCHAR", "ALTER"),
    ("SELECT 1; SELECT 2", "only one"),
    ("TRUNCATE TABLE trail-30d", "TRUNCATE"),
])
def test_writes_refused_before_running(lk, sql, kind):
    before = lk.store("trail-30d").snapshot().version
    with pytest.raises(ReadOnlyError) as e:
        lk.sql(sql)
    assert kind.lower() in str(e.value).lower() and "\n" not in str(e.value)
    assert lk.store("trail-30d").snapshot().version == before


@pytest.mark.parametrize("sql,needle", [
    ("SELECT eventname FROM trail-30d WHERE", "line 1"),
    ("SELECT nosuchcolumn FROM trail-30d", "nosuchcolumn"),
    ("SELECT eventname FROM nosuchstore", "nosuchstore"),
    ("SELECT frobnicate(eventname) FROM trail-30d", "frobnicate"),
    ("SELECT count(*) FROM trail-30d WHERE count(*) > 1", "WHERE"),
    ("SELECT CAST(eventname AS BIGINT) FROM trail-30d", "CAST"),
    ("SELECT eventname FROM trail-30d WHERE eventtime > 'not a time'", "not a timestamp"),
    ("", "empty"),
])
def test_errors_are_one_line(lk, sql, needle):
    with pytest.raises(SqlError) as e:
        lk.sql(sql)
    msg = str(e.value)
    assert "\n" not in msg and needle.lower() in msg.lower()


def test_syntax_error_caret(lk):
    sql = "SELECT eventname\nFROM trail-30d\nWHERE eventname = = 'x'"
    with pytest.raises(SqlError) as e:
        lk.sql(sql)
    assert e.value.line == 3
    caret = e.value.caret(sql)
    assert caret.splitlines()[0] == "WHERE eventname = = 'x'" and caret.splitlines()[1].strip() == "^"


def test_one_day_query_reads_only_that_day(lk):
    sql = ("SELECT count(*) AS n FROM trail-30d WHERE eventtime >= '2024-03-05 00:00:00' "
           "AND eventtime < '2024-03-06 00:00:00'")
    r = run(lk, sql)
    assert r.df["n"][0] == 100
    (scan,) = r.scans
    assert scan.segments == 1 and scan.segments_skipped == 29
    assert r.stats.EventsScanned == 100 and r.stats.SegmentsSkipped == 29
    text = explain(lk, sql)
    assert "1 of 30 segments (29 skipped)" in text


def test_outer_join_side_not_pruned_by_where(lk):
    # b's rows are NULL-extended: pruning b by the WHERE clause would change the answer
    df = lk.sql("SELECT count(*) AS n FROM trail-30d a LEFT JOIN trail-30d b ON a.eventid = b.eventid "
                "AND b.eventname = 'nothing' WHERE a.eventtime < '2024-03-02 00:00:00' AND b.eventid IS NULL")
    assert df["n"][0] == 100


def test_empty_store_and_statistics(lk):
    r = run(lk, "SELECT eventname, count(*) FROM empty GROUP BY 1")
    assert r.df.height == 0 and r.stats.EventsScanned == 0
    assert lk.sql("SELECT count(*) AS n FROM empty")["n"][0] == 0
    assert lk.sql("SELECT sum(1) AS s FROM empty")["s"][0] is None


def test_trino_null_semantics(lk):
    df = lk.sql("SELECT 1 IN (2, NULL) AS a, 1 IN (1, NULL) AS b, NULL IN (1) AS c, 7 / 2 AS d, -7 / 2 AS e, "
                "-7 % 2 AS f, greatest(1, NULL) AS g, NULLIF(1, 1) AS h, 1 IS DISTINCT FROM NULL AS i")
    assert df.row(0) == (None, True, None, 3, -3, -1, None, None, True)


def test_not_in_subquery_with_null(lk):
    df = lk.sql("SELECT count(*) AS n FROM trail-30d WHERE eventname NOT IN "
                "(SELECT errorcode FROM trail-30d)")  # errorcode has NULLs: NOT IN is never true
    assert df["n"][0] == 0


def test_correlated_subqueries(lk):
    df = lk.sql("SELECT count(*) AS n FROM trail-30d a WHERE EXISTS (SELECT 1 FROM trail-30d b "
                "WHERE b.eventid = a.eventid AND b.errorcode = 'AccessDenied')")
    assert df["n"][0] == 300
    df = lk.sql("SELECT a.eventid, (SELECT count(*) FROM trail-30d b WHERE b.eventname = a.eventname) AS c, "
                "(SELECT count(*) FROM trail-30d b WHERE b.eventname = 'x' || a.eventname) AS z "
                "FROM trail-30d a WHERE a.eventtime < '2024-03-01 00:10:00' ORDER BY 1")
    assert df["c"].to_list() == [750] * 3 and df["z"].to_list() == [0] * 3


def test_windows_and_ranks(lk):
    df = lk.sql("SELECT eventname, n, rank() OVER (ORDER BY n DESC) AS r, dense_rank() OVER (ORDER BY n DESC) AS d, "
                "row_number() OVER (ORDER BY eventname) AS rn, sum(n) OVER (ORDER BY n DESC) AS running "
                "FROM (SELECT eventname, count(*) AS n FROM trail-30d WHERE errorcode IS NULL OR eventname <> "
                "'GetObject' GROUP BY 1) ORDER BY eventname")
    rows = {r[0]: r[1:] for r in df.iter_rows()}
    assert rows["GetObject"][0] == 600  # 750 minus the 150 AccessDenied GetObjects
    assert rows["CreateUser"][1] == rows["DeleteBucket"][1] == rows["PutObject"][1] == 1
    assert rows["CreateUser"][4] == 2250  # peers share the running sum (RANGE frame)
    assert rows["GetObject"][1] == 4 and rows["GetObject"][2] == 2


def test_unnest_resources(lk):
    df = lk.sql("SELECT r.type AS t, count(*) AS n FROM trail-30d CROSS JOIN UNNEST(resources) AS t(r) GROUP BY 1")
    assert df.row(0) == ("AWS::S3::Object", 3000)


def test_set_operations(lk):
    assert lk.sql("SELECT eventname FROM trail-30d UNION SELECT eventname FROM trail-30d").height == 4
    assert lk.sql("SELECT eventname FROM trail-30d UNION ALL SELECT eventname FROM trail-30d").height == 6000
    assert lk.sql("SELECT eventname FROM trail-30d EXCEPT SELECT 'GetObject'").height == 3
    assert lk.sql("SELECT eventname FROM trail-30d INTERSECT SELECT 'GetObject'").height == 1


def test_explain_statement_and_python_api(lk):
    df = lk.sql("EXPLAIN SELECT count(*) FROM trail-30d WHERE eventtime > '2024-03-29 00:00:00'")
    assert any("segments" in line for line in df["plan"].to_list())
    assert isinstance(lk.sql("SELECT 1 AS x", arrow=True).num_rows, int)


def test_cancel(lk):
    ev = threading.Event()
    ev.set()
    with pytest.raises(QueryCancelled):
        run(lk, "SELECT count(*) FROM trail-30d a CROSS JOIN trail-30d b", cancel=ev)


def test_timestamps_compare_with_strings_and_intervals(lk):
    now = datetime(2024, 3, 31, tzinfo=timezone.utc)
    r = run(lk, "SELECT count(*) AS n FROM trail-30d WHERE eventtime > current_timestamp - INTERVAL '2' DAY", now=now)
    assert r.df["n"][0] == 200 and r.scans[0].segments == 2
    df = lk.sql("SELECT count(*) AS n FROM trail-30d WHERE eventtime BETWEEN '2024-03-01' AND '2024-03-01 23:59:59'")
    assert df["n"][0] == 100
    assert isinstance(lk.sql("SELECT CAST(eventtime AS DATE) AS d FROM trail-30d LIMIT 1")["d"].dtype, pl.Date)


def test_last_value_keeps_nulls_and_peers(lk):
    # default RANGE frame: the value at the current row's last peer, NULL included (not the last non-NULL)
    df = lk.sql("SELECT o, last_value(v) OVER (ORDER BY o) AS lv FROM (VALUES (1, 'a'), (2, 'b'), (2, 'b'), "
                "(3, CAST(NULL AS VARCHAR))) AS t(o, v) ORDER BY o")
    assert df["lv"].to_list() == ["a", "b", "b", None]
