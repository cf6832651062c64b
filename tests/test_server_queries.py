"""StartQuery, DescribeQuery, GetQueryResults, ListQueries, CancelQuery (issue 6 point 3).

Handlers are called directly with an `ApiContext`; query records are checked against `Lake.sql()` (the same
engine, run synchronously) and the result rendering of `lake.resultformat`. End-to-end tests through boto3 and
the `aws` CLI live at the bottom and use `tests/server_fixture.py`.
"""

from __future__ import annotations

import csv
import gzip
import io
import threading
import time
from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

import lake
from lake import api_lookup, api_queries, resultformat  # noqa: F401 - importing registers the handlers
from lake.apicore import OPERATIONS
from lake.errors import QueryCancelled
from lake.generate import records as gen_records
from tests.test_server_lookup import ACCT_A, A, B, create_store, expect, make_ctx

NOW = datetime.now(timezone.utc)


def wait(c, qid: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = OPERATIONS["DescribeQuery"](c, {"QueryId": qid})
        if d["QueryStatus"] not in ("QUEUED", "RUNNING"):
            return d
        assert time.monotonic() < deadline, d
        time.sleep(0.02)


def all_rows(c, qid: str, size: int | None = None) -> list[list[dict]]:
    rows, token = [], None
    while True:
        p = {"QueryId": qid}
        if size:
            p["MaxQueryResults"] = size
        if token:
            p["NextToken"] = token
        out = OPERATIONS["GetQueryResults"](c, p)
        assert out["QueryStatus"] == "FINISHED"
        assert out["QueryStatistics"]["ResultsCount"] == len(out["QueryResultRows"])
        rows += out["QueryResultRows"]
        token = out.get("NextToken")
        if not token:
            return rows


@pytest.fixture
def services():
    s: dict = {}
    yield s
    for svc in s.values():
        getattr(svc, "close", lambda: None)()


@pytest.fixture
def lk(tmp_path):
    return lake.connect(str(tmp_path / "lake"), account_id=ACCT_A)


@pytest.fixture
def store(lk, services):
    st = create_store(lk, A, "events", services)
    st.append(gen_records(800, seed=3, days=4, accounts=2, end=NOW), source="import")
    return st


@pytest.fixture
def c(lk, services):
    return make_ctx(lk, A, services=services)


def test_query_lifecycle_matches_the_engine(lk, store, c):
    sql = (f"SELECT eventname, count(*) AS n, max(eventtime) AS last FROM {store.arn} "
           "GROUP BY eventname ORDER BY n DESC, eventname")
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": sql})["QueryId"]
    d = wait(c, qid)
    assert d["QueryStatus"] == "FINISHED", d
    assert d["QueryString"] == sql
    want = lk.sql(sql)
    st = d["QueryStatistics"]
    assert st["EventsMatched"] == want.height and st["EventsScanned"] == 800 and st["BytesScanned"] > 0
    assert isinstance(st["CreationTime"], datetime) and st["ExecutionTimeInMillis"] >= 0
    rows = all_rows(c, qid)
    assert rows == api_queries.render_rows(want)
    assert rows[0] == [{"eventname": want["eventname"][0]}, {"n": str(want["n"][0])},
                       {"last": resultformat.column_values(want["last"])[0]}]
    out = OPERATIONS["GetQueryResults"](c, {"QueryId": qid, "MaxQueryResults": 1})
    assert out["QueryStatistics"]["TotalResultsCount"] == want.height
    assert out["QueryStatistics"]["BytesScanned"] == st["BytesScanned"]


def test_result_paging_and_value_rendering(lk, store, c):
    sql = (f"SELECT eventid, eventtime, useridentity, requestparameters, readonly, errorcode FROM {store.id} "
           "ORDER BY eventtime DESC, eventid LIMIT 57")
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": sql})["QueryId"]
    assert wait(c, qid)["QueryStatus"] == "FINISHED"
    paged = all_rows(c, qid, size=10)
    assert len(paged) == 57 and paged == all_rows(c, qid)
    df = lk.sql(sql)
    for row, rec in zip(paged, resultformat.records(df)):
        got = {k: v for cell in row for k, v in cell.items()}
        assert all(len(cell) == 1 for cell in row)
        assert list(got) == [k for k, v in rec.items() if v is not None]  # NULLs are left out, order kept
        assert all(isinstance(v, str) for v in got.values())
        assert got["useridentity"] == resultformat.cell_text(rec["useridentity"])
        assert got.get("readonly", "true") in ("true", "false")
    expect("InvalidNextTokenException", OPERATIONS["GetQueryResults"], c, {"QueryId": qid, "NextToken": "abcd.ef"})


def test_statement_checks_are_synchronous(lk, store, c, services):
    start = OPERATIONS["StartQuery"]
    expect("InvalidQueryStatementException", start, c, {"QueryStatement": f"SELEC * FROM {store.id}"})
    expect("InvalidQueryStatementException", start, c, {"QueryStatement": f"SELECT nosuchcolumn FROM {store.id}"})
    expect("InvalidQueryStatementException", start, c, {"QueryStatement": f"DELETE FROM {store.id}"})
    expect("InvalidQueryStatementException", start, c, {"QueryStatement": f"INSERT INTO {store.id} VALUES (1)"})
    expect("InvalidQueryStatementException", start, c, {"QueryStatement": "SELECT 1"})
    expect("EventDataStoreNotFoundException", start, c, {"QueryStatement": "SELECT * FROM no_such_store"})
    expect("InvalidParameterException", start, c, {"QueryAlias": "dashboard-widget"})
    other = create_store(lk, A, "gone", services)
    other.delete()
    expect("InactiveEventDataStoreException", start, c, {"QueryStatement": f"SELECT * FROM {other.id}"})
    assert api_queries.manager(c).records == {}  # nothing was admitted


def test_a_failing_query_reports_its_error(lk, store, c):
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": f"SELECT CAST(eventname AS integer) FROM {store.id}"})["QueryId"]
    d = wait(c, qid)
    assert d["QueryStatus"] == "FAILED" and 4 <= len(d["ErrorMessage"]) <= 1000 and "\n" not in d["ErrorMessage"]
    out = OPERATIONS["GetQueryResults"](c, {"QueryId": qid})
    assert out["QueryStatus"] == "FAILED" and out["QueryResultRows"] == [] and out["ErrorMessage"]


@pytest.fixture
def blocking(monkeypatch):
    """Queries that run until released (or cancelled), to test admission, cancellation and timeouts."""
    release = threading.Event()
    real = api_queries.lake_query.run

    def run(lk, sql, *, cancel=None, now=None, **limits):
        while not release.is_set():
            if cancel is not None and cancel.is_set():
                raise QueryCancelled("the query was cancelled")
            time.sleep(0.01)
        return real(lk, sql, cancel=cancel, now=now, **limits)

    monkeypatch.setattr(api_queries.lake_query, "run", run)
    yield release
    release.set()


def test_at_most_ten_queries_at_once(lk, store, c, blocking):
    sql = f"SELECT count(*) FROM {store.id}"
    ids = [OPERATIONS["StartQuery"](c, {"QueryStatement": sql})["QueryId"] for _ in range(10)]
    e = expect("MaxConcurrentQueriesException", OPERATIONS["StartQuery"], c, {"QueryStatement": sql})
    assert "10" in e.message
    OPERATIONS["CancelQuery"](c, {"QueryId": ids[0]})
    ids.append(OPERATIONS["StartQuery"](c, {"QueryStatement": sql})["QueryId"])  # a slot was freed
    blocking.set()
    assert [wait(c, q)["QueryStatus"] for q in ids[1:]] == ["FINISHED"] * 10
    assert all_rows(c, ids[-1]) == [[{"_col0": "800"}]]


def test_cancel_and_time_out(lk, store, c, blocking):
    sql = f"SELECT count(*) FROM {store.id}"
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": sql})["QueryId"]
    out = OPERATIONS["CancelQuery"](c, {"QueryId": qid})
    assert out == {"QueryId": qid, "QueryStatus": "CANCELLED"}
    assert wait(c, qid)["QueryStatus"] == "CANCELLED"
    expect("InactiveQueryException", OPERATIONS["CancelQuery"], c, {"QueryId": qid})
    assert OPERATIONS["GetQueryResults"](c, {"QueryId": qid})["QueryResultRows"] == []
    api_queries.manager(c).timeout_s = 0.2
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": sql})["QueryId"]
    d = wait(c, qid)
    assert d["QueryStatus"] == "TIMED_OUT" and d["ErrorMessage"]
    expect("QueryIdNotFoundException", OPERATIONS["CancelQuery"], c, {"QueryId": "0" * 8 + "-0000-0000-0000-" + "0" * 12})


def test_list_queries_filters_and_pages(lk, store, c, services):
    other = create_store(lk, A, "other", services)
    sql = f"SELECT count(*) FROM {store.id}"
    ids = [OPERATIONS["StartQuery"](c, {"QueryStatement": sql})["QueryId"] for _ in range(5)]
    bad = OPERATIONS["StartQuery"](c, {"QueryStatement": f"SELECT CAST(eventname AS integer) FROM {store.id}"})["QueryId"]
    for q in ids + [bad]:
        wait(c, q)
    lq = OPERATIONS["ListQueries"]
    seen, token = [], None
    while True:
        out = lq(c, {"EventDataStore": store.arn, "MaxResults": 2, **({"NextToken": token} if token else {})})
        assert len(out["Queries"]) <= 2
        seen += out["Queries"]
        token = out.get("NextToken")
        if not token:
            break
    assert [q["QueryId"] for q in seen] == list(reversed(ids + [bad]))  # newest first
    assert all(isinstance(q["CreationTime"], datetime) for q in seen)
    assert [q["QueryId"] for q in lq(c, {"EventDataStore": store.id, "QueryStatus": "FAILED"})["Queries"]] == [bad]
    assert lq(c, {"EventDataStore": other.arn})["Queries"] == []
    later = datetime.now(timezone.utc) + timedelta(hours=1)
    assert lq(c, {"EventDataStore": store.arn, "StartTime": later})["Queries"] == []
    expect("InvalidDateRangeException", lq, c, {"EventDataStore": store.arn, "StartTime": later,
                                                 "EndTime": later - timedelta(days=1)})
    expect("EventDataStoreNotFoundException", lq, c, {"EventDataStore": "no-such-store"})
    expect("EventDataStoreARNInvalidException", lq, c, {"EventDataStore": "arn:aws:s3:::bucket"})
    expect("InvalidMaxResultsException", lq, c, {"EventDataStore": store.arn, "MaxResults": 0})


def test_records_survive_a_restart(lk, store, c):
    sql = f"SELECT eventname, count(*) AS n FROM {store.id} GROUP BY eventname ORDER BY n DESC, eventname"
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": sql})["QueryId"]
    assert wait(c, qid)["QueryStatus"] == "FINISHED"
    before = all_rows(c, qid)
    fresh = make_ctx(lake.connect(lk.uri, account_id=ACCT_A), A, services={})
    try:
        d = OPERATIONS["DescribeQuery"](fresh, {"QueryId": qid})
        assert d["QueryStatus"] == "FINISHED" and d["QueryStatistics"]["EventsScanned"] == 800
        assert all_rows(fresh, qid, size=3) == before
        assert [q["QueryId"] for q in OPERATIONS["ListQueries"](fresh, {"EventDataStore": store.arn})["Queries"]] == [qid]
        # a query some other (now stopped) server was running is reported as failed
        m = api_queries.manager(c)
        rec = dict(m.records[qid], QueryId="abcdef00-0000-4000-8000-000000000000", QueryStatus="RUNNING",
                   Instance="gone")
        lk.storage.write(f"_queries/{rec['QueryId']}/query.json", __import__("orjson").dumps(rec))
        d = OPERATIONS["DescribeQuery"](fresh, {"QueryId": rec["QueryId"]})
        assert d["QueryStatus"] == "FAILED" and "stopped" in d["ErrorMessage"]
    finally:
        fresh.services["queries"].close()


def test_accounts_see_only_their_queries(lk, store, c, services):
    bc = make_ctx(lk, B, services=services)
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": f"SELECT count(*) FROM {store.id}"})["QueryId"]
    wait(c, qid)
    for op in ("DescribeQuery", "GetQueryResults", "CancelQuery"):
        expect("QueryIdNotFoundException", OPERATIONS[op], bc, {"QueryId": qid})
    expect("EventDataStoreNotFoundException", OPERATIONS["ListQueries"], bc, {"EventDataStore": store.arn})
    expect("EventDataStoreNotFoundException", OPERATIONS["StartQuery"], bc,
           {"QueryStatement": f"SELECT count(*) FROM {store.arn}"})
    bobs = create_store(lk, B, "bobs", services)
    # a join naming a store of another account is refused as a whole
    expect("EventDataStoreNotFoundException", OPERATIONS["StartQuery"], bc,
           {"QueryStatement": f"SELECT count(*) FROM {bobs.id} b JOIN {store.id} a ON a.eventid = b.eventid"})
    q2 = OPERATIONS["StartQuery"](bc, {"QueryStatement": f"SELECT count(*) FROM {bobs.id}"})["QueryId"]
    assert wait(bc, q2)["QueryStatus"] == "FINISHED"
    expect("QueryIdNotFoundException", OPERATIONS["DescribeQuery"], c, {"QueryId": q2})


def _delivered(path: str) -> list[dict]:
    with open(path, "rb") as f:
        return list(csv.DictReader(io.StringIO(gzip.decompress(f.read()).decode())))


def test_delivery_to_a_local_directory_and_the_signing_hook(lk, store, c, tmp_path, monkeypatch):
    calls = []

    def signer(rec, files, write):
        calls.append((rec["QueryId"], [n for n, _ in files]))
        write("result_sign.json", b"{}")

    monkeypatch.setattr(api_queries, "RESULT_SIGNER", signer)
    sql = f"SELECT eventid, eventtime, resources FROM {store.id} ORDER BY eventid LIMIT 20"
    dest = tmp_path / "out"
    c.services["import_roots"] = {ACCT_A: (str(tmp_path),)}  # local delivery only under the account's roots
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": sql, "DeliveryS3Uri": f"file://{dest}"})["QueryId"]
    d = wait(c, qid)
    for _ in range(200):
        d = OPERATIONS["DescribeQuery"](c, {"QueryId": qid})
        if d["DeliveryStatus"] != "PENDING":
            break
        time.sleep(0.02)
    assert d["DeliveryStatus"] == "SUCCESS" and d["DeliveryS3Uri"] == f"file://{dest}"
    created = d["QueryStatistics"]["CreationTime"]
    folder = dest / "AWSLogs" / ACCT_A / "CloudTrail-Lake" / "Query" / created.strftime("%Y/%m/%d") / qid
    rows = _delivered(str(folder / "result_1.csv.gz"))
    assert rows == list(csv.DictReader(io.StringIO(resultformat.to_csv(lk.sql(sql)))))
    assert (folder / "result_sign.json").read_bytes() == b"{}"
    assert calls == [(qid, ["result_1.csv.gz"])]


def test_delivery_to_s3(lk, store, c, s3_env):
    from tests.conftest import make_bucket
    import boto3

    bucket = make_bucket(s3_env)
    sql = f"SELECT eventname, count(*) AS n FROM {store.id} GROUP BY eventname ORDER BY eventname"
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": sql, "DeliveryS3Uri": f"s3://{bucket}/results"})["QueryId"]
    wait(c, qid)
    for _ in range(500):
        d = OPERATIONS["DescribeQuery"](c, {"QueryId": qid})
        if d["DeliveryStatus"] != "PENDING":
            break
        time.sleep(0.02)
    assert d["DeliveryStatus"] == "SUCCESS", d
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    key = (f"results/AWSLogs/{ACCT_A}/CloudTrail-Lake/Query/{d['QueryStatistics']['CreationTime']:%Y/%m/%d}/"
           f"{qid}/result_1.csv.gz")
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).decode()
    assert body == resultformat.to_csv(lk.sql(sql))
    expect("S3BucketDoesNotExistException", OPERATIONS["StartQuery"], c,
           {"QueryStatement": sql, "DeliveryS3Uri": "s3://no-such-bucket-lake-test/x"})
    expect("InvalidS3PrefixException", OPERATIONS["StartQuery"], c,
           {"QueryStatement": sql, "DeliveryS3Uri": "ftp://host/x"})


def test_explain_runs_as_a_query(lk, store, c):
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": f"EXPLAIN SELECT * FROM {store.id} "
                                                          "WHERE eventtime > '2020-01-01'"})["QueryId"]
    assert wait(c, qid)["QueryStatus"] == "FINISHED"
    text = "\n".join(cell["plan"] for row in all_rows(c, qid) for cell in row)
    assert "Lake query plan" in text


def test_results_parquet_keeps_native_types(lk, store, c):
    qid = OPERATIONS["StartQuery"](c, {"QueryStatement": f"SELECT eventtime, resources FROM {store.id} LIMIT 3"})["QueryId"]
    wait(c, qid)
    df = pl.read_parquet(io.BytesIO(lk.storage.read(f"_queries/{qid}/results.parquet")))
    assert df.schema["eventtime"] == pl.Datetime("us", "UTC") and df.height == 3


# ---- end to end: boto3 and the aws CLI against `lake serve` on loopback ----------------------------------

from tests.server_fixture import *  # noqa: E402,F401,F403 - server, cloudtrail_client, aws_run, ...


def _poll(client, qid: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = client.describe_query(QueryId=qid)
        if d["QueryStatus"] not in ("QUEUED", "RUNNING") and d.get("DeliveryStatus") != "PENDING":
            return d
        assert time.monotonic() < deadline, d
        time.sleep(0.05)


def _boto_rows(client, qid: str, size: int) -> tuple[list, list[dict]]:
    """Every row through GetQueryResults pages (botocore has no paginator for it), and the raw pages."""
    rows, pages, token = [], [], None
    while True:
        page = client.get_query_results(QueryId=qid, MaxQueryResults=size, **({"NextToken": token} if token else {}))
        pages.append(page)
        rows += page["QueryResultRows"]
        token = page.get("NextToken")
        if not token:
            return rows, pages


def test_boto3_query_flow(server, cloudtrail_client):
    lk = server.lake
    st = create_store(lk, A, "e2e-queries")
    st.append(gen_records(500, seed=21, days=3, accounts=2, end=NOW), source="import")
    client = cloudtrail_client("alice")
    sql = f"SELECT eventsource, eventname, count(*) AS n FROM {st.arn} GROUP BY 1, 2 ORDER BY n DESC, 1, 2"
    qid = client.start_query(QueryStatement=sql)["QueryId"]
    d = _poll(client, qid)
    assert d["QueryStatus"] == "FINISHED" and d["QueryString"] == sql
    assert d["QueryStatistics"]["EventsScanned"] == 500 and isinstance(d["QueryStatistics"]["CreationTime"], datetime)
    rows, pages = _boto_rows(client, qid, 4)
    assert rows == api_queries.render_rows(lk.sql(sql)) and len(pages) > 1
    assert all(p["QueryStatistics"]["TotalResultsCount"] == len(rows) for p in pages)
    assert [q["QueryId"] for q in client.list_queries(EventDataStore=st.arn)["Queries"]] == [qid]
    assert client.list_queries(EventDataStore=st.arn, QueryStatus="FAILED")["Queries"] == []
    with pytest.raises(client.exceptions.InvalidQueryStatementException):
        client.start_query(QueryStatement=f"SELECT nope FROM {st.arn}")
    with pytest.raises(client.exceptions.InvalidQueryStatementException):
        client.start_query(QueryStatement=f"DROP TABLE {st.id}")
    with pytest.raises(client.exceptions.InactiveQueryException):
        client.cancel_query(QueryId=qid)
    with pytest.raises(client.exceptions.QueryIdNotFoundException):
        client.describe_query(QueryId="00000000-0000-0000-0000-000000000000")
    # account B sees neither the store nor the query
    bob = cloudtrail_client("bob")
    with pytest.raises(bob.exceptions.EventDataStoreNotFoundException):
        bob.start_query(QueryStatement=f"SELECT count(*) FROM {st.arn}")
    with pytest.raises(bob.exceptions.QueryIdNotFoundException):
        bob.get_query_results(QueryId=qid)
    with pytest.raises(bob.exceptions.EventDataStoreNotFoundException):
        bob.list_queries(EventDataStore=st.arn)
    # the admin role may read A's store
    assert _poll(cloudtrail_client("admin"), qid)["QueryStatus"] == "FINISHED"


def test_boto3_cancel_and_concurrency_limit(server, cloudtrail_client, blocking):
    st = create_store(server.lake, A, "e2e-cancel")
    client = cloudtrail_client("alice")
    ids = [client.start_query(QueryStatement=f"SELECT count(*) FROM {st.id}")["QueryId"] for _ in range(10)]
    with pytest.raises(client.exceptions.MaxConcurrentQueriesException):
        client.start_query(QueryStatement=f"SELECT count(*) FROM {st.id}")
    assert client.cancel_query(QueryId=ids[0])["QueryStatus"] == "CANCELLED"
    assert client.describe_query(QueryId=ids[0])["QueryStatus"] == "CANCELLED"
    blocking.set()
    assert {_poll(client, q)["QueryStatus"] for q in ids[1:]} == {"FINISHED"}
    listed = client.list_queries(EventDataStore=st.arn, MaxResults=3)
    assert len(listed["Queries"]) == 3 and listed["NextToken"]
    rest = client.list_queries(EventDataStore=st.arn, MaxResults=1000, NextToken=listed["NextToken"])["Queries"]
    assert {q["QueryId"] for q in listed["Queries"] + rest} == set(ids)


def test_boto3_delivery_to_s3(server, cloudtrail_client, s3_env):
    import boto3

    from tests.conftest import make_bucket

    bucket = make_bucket(s3_env)
    st = create_store(server.lake, A, "e2e-delivery")
    st.append(gen_records(100, seed=22, days=1, accounts=1, end=NOW), source="import")
    client = cloudtrail_client("alice")
    sql = f"SELECT eventid, eventtime FROM {st.id} ORDER BY eventid"
    qid = client.start_query(QueryStatement=sql, DeliveryS3Uri=f"s3://{bucket}/lake")["QueryId"]
    d = _poll(client, qid)
    assert d["DeliveryStatus"] == "SUCCESS" and d["DeliveryS3Uri"] == f"s3://{bucket}/lake"
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    prefix = f"lake/AWSLogs/{ACCT_A}/CloudTrail-Lake/Query/{d['QueryStatistics']['CreationTime']:%Y/%m/%d}/{qid}/"
    # the server signs what it delivers (result_sign.json, issue 7)
    assert sorted(keys) == [prefix + "result_1.csv.gz", prefix + "result_sign.json"]
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read()).decode()
    assert body == resultformat.to_csv(server.lake.sql(sql))


def test_query_records_survive_a_server_restart(server, cloudtrail_client):
    from lake.apiserver import ServerConfig, ServerThread

    st = create_store(server.lake, A, "e2e-restart")
    st.append(gen_records(50, seed=23, days=1, accounts=1, end=NOW), source="import")
    client = cloudtrail_client("alice")
    qid = client.start_query(QueryStatement=f"SELECT eventname, eventid FROM {st.id} ORDER BY eventid")["QueryId"]
    assert _poll(client, qid)["QueryStatus"] == "FINISHED"
    before, _ = _boto_rows(client, qid, 1000)
    server.stop()
    again = ServerThread(lake.connect(server.lake.uri, account_id=ACCT_A),
                         ServerConfig(credentials=list(PRINCIPALS.values()))).start()
    try:
        c2 = boto_client(again, "cloudtrail", "alice")
        assert c2.describe_query(QueryId=qid)["QueryStatus"] == "FINISHED"
        assert _boto_rows(c2, qid, 7)[0] == before
        assert [q["QueryId"] for q in c2.list_queries(EventDataStore=st.arn)["Queries"]] == [qid]
    finally:
        again.stop()


def test_aws_cli_start_query_and_get_query_results(server, aws_run):
    st = create_store(server.lake, A, "cli-queries")
    st.append(gen_records(80, seed=24, days=1, accounts=1, end=NOW), source="import")
    sql = f"SELECT eventname, count(*) AS n FROM {st.id} GROUP BY eventname ORDER BY n DESC, eventname"
    qid = aws_run("alice", "cloudtrail", "start-query", "--query-statement", sql)["QueryId"]
    deadline = time.monotonic() + 60
    while (d := aws_run("alice", "cloudtrail", "describe-query", "--query-id", qid))["QueryStatus"] in ("QUEUED", "RUNNING"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert d["QueryStatus"] == "FINISHED"
    out = aws_run("alice", "cloudtrail", "get-query-results", "--query-id", qid)
    assert out["QueryResultRows"] == api_queries.render_rows(server.lake.sql(sql))
    assert out["QueryStatistics"]["TotalResultsCount"] == len(out["QueryResultRows"])
    page = aws_run("alice", "cloudtrail", "get-query-results", "--query-id", qid, "--max-query-results", "2")
    assert len(page["QueryResultRows"]) == 2 and page["NextToken"]
    listed = aws_run("alice", "cloudtrail", "list-queries", "--event-data-store", st.arn)
    assert [q["QueryId"] for q in listed["Queries"]] == [qid]
    err = aws_run("alice", "cloudtrail", "start-query", "--query-statement", "SELECT * FROM missing_store", check=False)
    assert err.returncode != 0 and "EventDataStoreNotFoundException" in err.stderr
