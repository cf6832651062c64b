"""Data-event aggregation (issue 8 point 3): 5-minute summaries in CloudTrail's aggregated-event format,
checked against AWS's documented example (structure) and against a direct DuckDB group-by (counts)."""

from __future__ import annotations

import glob
import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from click.testing import CliRunner

from lake import aggregation as ag
from lake.lake import Lake
from tests.conftest import EXTERNAL

A = "111122223333"
BASE = datetime(2026, 11, 1, 10, 0, tzinfo=timezone.utc)

# AWS's API_ACTIVITY example (reference section 8, from "CloudTrail record contents for aggregated events").
AWS_EXAMPLE = {
    "eventVersion": "1.0", "accountId": "111122223333", "eventId": "62759c1a-6248-48e1-a6b3-d5fb7e6c4bc0",
    "eventCategory": "Aggregated", "eventType": "AwsAggregatedEvent", "awsRegion": "us-west-2",
    "eventSource": "s3.amazonaws.com",
    "timeWindow": {"windowStart": "2025-11-17T19:20:00Z", "windowEnd": "2025-11-17T19:25:00Z", "windowSize": "PT5M"},
    "summary": {
        "primaryDimension": {"dimension": "eventName", "statistics": [{"name": "PutObject", "value": 1000}],
                             "aggregationType": "Count"},
        "details": [{"dimension": "resourceARN", "statistics": [
            {"name": "arn:aws:s3:::bucket-1", "value": 800}, {"name": "arn:aws:s3:::bucket-2", "value": 150},
            {"name": "arn:aws:s3:::bucket-3", "value": 50}], "aggregationType": "Count"}]}}


def _data_event(r: random.Random, t: datetime, *, bucket: str | None = None, region: str = "us-west-2",
                account: str = A, error: str | None = None, name: str | None = None) -> dict:
    bucket = bucket or r.choice(["bucket-1", "bucket-2", "bucket-3"])
    rec = {"eventVersion": "1.09", "eventTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "eventSource": "s3.amazonaws.com", "eventName": name or r.choice(["PutObject", "GetObject", "HeadObject"]),
           "awsRegion": region, "eventID": str(uuid.UUID(int=r.getrandbits(128))), "eventType": "AwsApiCall",
           "managementEvent": False, "eventCategory": "Data", "recipientAccountId": account, "readOnly": True,
           "userIdentity": {"type": "IAMUser", "principalId": f"AIDA{r.randrange(4)}", "accountId": account,
                            "arn": f"arn:aws:iam::{account}:user/u{r.randrange(4)}"},
           "resources": [{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/k{r.randrange(10**6)}"},
                         {"accountId": account, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}]}
    if error:
        rec["errorCode"] = error
        rec["errorMessage"] = "Access Denied"
    return rec


def _events(seed: int = 1, n: int = 4000, minutes: int = 60) -> list[dict]:
    r = random.Random(seed)
    out = []
    for _ in range(n):
        t = BASE + timedelta(seconds=r.randrange(minutes * 60))
        out.append(_data_event(r, t, region=r.choice(["us-west-2", "eu-west-1"]),
                               account=r.choice([A, "444455556666"]),
                               error=r.choice([None] * 8 + ["AccessDenied", "NoSuchKey"])))
    # a management event and a data event without resources: neither may break the summaries
    out.append({**_data_event(r, BASE), "eventCategory": "Management", "managementEvent": True,
                "eventName": "CreateBucket"})
    nores = _data_event(r, BASE + timedelta(seconds=1), name="ListBuckets")
    del nores["resources"]
    out.append(nores)
    return out


@pytest.fixture
def lk(tmp_path):
    return Lake(str(tmp_path / "lake"), region="us-west-2", account_id=A)


@pytest.fixture
def store(lk):
    st = lk.create_store("data-store")
    res = st.append(_events(), source="import")
    assert not res.rejected
    return st


def _shape(v):
    """The structure of a JSON value: keys (in order) and value types, lists by their first element."""
    if isinstance(v, dict):
        return {k: _shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_shape(v[0])] if v else []
    return type(v).__name__


# ------------------------------------------------------------------------------------------ golden

def _external_examples() -> list[dict]:
    """Aggregated events in the AWS docs examples folder, if any file there holds one."""
    out = []
    for f in sorted(glob.glob(str(EXTERNAL / "awsdocs-cloudtrail-user-guide-examples" / "*.json"))):
        try:
            doc = json.load(open(f))
        except ValueError:
            continue
        recs = doc.get("Records", [doc]) if isinstance(doc, dict) else doc if isinstance(doc, list) else []
        out += [r for r in recs if isinstance(r, dict) and r.get("eventType") == "AwsAggregatedEvent"]
    return out


def _one(store, template: str) -> dict:
    recs = ag.summarise(ag.cube(store.scan(), BASE, BASE + ag.WINDOW), [template], store.id)
    assert recs
    return recs[0]


def test_api_activity_matches_aws_example_structure(store):
    rec = _one(store, "API_ACTIVITY")
    assert _shape(rec) == {**_shape(AWS_EXAMPLE), "summary": {
        "primaryDimension": _shape(AWS_EXAMPLE["summary"]["primaryDimension"]),
        "details": [_shape(AWS_EXAMPLE["summary"]["details"][0])]}}
    assert list(rec) == list(AWS_EXAMPLE)
    assert rec["eventCategory"] == "Aggregated" and rec["eventType"] == "AwsAggregatedEvent"
    assert rec["eventVersion"] == "1.0" and rec["timeWindow"]["windowSize"] == "PT5M"
    assert rec["summary"]["primaryDimension"]["dimension"] == "eventName"
    assert rec["summary"]["details"][0]["dimension"] == "resourceARN"
    uuid.UUID(rec["eventId"])


def test_resource_access_swaps_dimensions(store):
    rec = _one(store, "RESOURCE_ACCESS")
    prim = rec["summary"]["primaryDimension"]
    assert prim["dimension"] == "resourceARN" and prim["statistics"][0]["name"].startswith("arn:aws:s3:::bucket-")
    names = rec["summary"]["details"][0]
    assert names["dimension"] == "eventName"
    assert sum(s["value"] for s in names["statistics"]) == prim["statistics"][0]["value"]  # AWS's invariant
    user = _one(store, "USER_ACTIONS")["summary"]["primaryDimension"]
    assert user["dimension"] == "userIdentityArn" and user["statistics"][0]["name"].startswith("arn:aws:iam::")


@pytest.mark.parametrize("template", ag.TEMPLATES)
def test_golden_against_external_examples(store, template):
    examples = _external_examples()
    if not examples:
        pytest.skip("no aggregated-event example in the external AWS docs examples")
    ours = _shape(_one(store, template))
    for ex in examples:
        assert set(_shape(ex)) <= set(ours) | {"summary"}
        assert list(_shape(ex)["summary"]) == list(ours["summary"])


def test_primary_counts_sum_to_window_total(store):
    """For every window, the API_ACTIVITY primary counts add up to the window's data events."""
    c = ag.cube(store.scan(), BASE, BASE + timedelta(hours=1))
    recs = ag.summarise(c, ["API_ACTIVITY"], store.id)
    assert sum(r["summary"]["primaryDimension"]["statistics"][0]["value"] for r in recs) == 4001
    for r in recs:  # every event here has a bucket: resourceARN detail sums to the primary count
        v = r["summary"]["primaryDimension"]["statistics"][0]["value"]
        det = {d["dimension"]: d for d in r["summary"]["details"]}
        if r["summary"]["primaryDimension"]["statistics"][0]["name"] != "ListBuckets":
            assert sum(s["value"] for s in det["resourceARN"]["statistics"]) == v
        assert sum(s["value"] for s in det["userIdentityArn"]["statistics"]) == v


# ------------------------------------------------------------------------------------------ correctness

def _duckdb_counts(store, dim_sql: str, detail_sql: str | None = None) -> dict:
    duckdb = pytest.importorskip("duckdb")
    files = store.files()
    res = ("coalesce(list_filter(resources, lambda x: x.type <> 'AWS::S3::Object')[1].arn, resources[1].arn)")
    cols = {"eventName": "eventname", "resourceARN": res,
            "userIdentityArn": "coalesce(useridentity_arn, useridentity_principalid)", "errorCode": "errorcode"}
    d = cols[dim_sql]
    keys = (f"strftime(time_bucket(INTERVAL 5 MINUTE, eventtime::TIMESTAMP), '%Y-%m-%dT%H:%M:%SZ'), "
            f"recipientaccountid, awsregion, eventsource, {d}")
    sel = keys + (f", {cols[detail_sql]}" if detail_sql else "")
    where = f"eventcategory = 'Data' AND {d} IS NOT NULL" + (f" AND {cols[detail_sql]} IS NOT NULL"
                                                            if detail_sql else "")
    q = f"SELECT {sel}, count(*) FROM read_parquet({files!r}) WHERE {where} GROUP BY ALL"
    return {tuple(row[:-1]): row[-1] for row in duckdb.sql(q).fetchall()}


def _ours(recs: list[dict], detail: str | None = None) -> dict:
    out = {}
    for r in recs:
        p = r["summary"]["primaryDimension"]["statistics"][0]
        key = (r["timeWindow"]["windowStart"], r["accountId"], r["awsRegion"], r["eventSource"], p["name"])
        if detail is None:
            out[key] = p["value"]
            continue
        for d in r["summary"]["details"]:
            if d["dimension"] == detail:
                out.update({key + (s["name"],): s["value"] for s in d["statistics"]})
    return out


@pytest.mark.parametrize("template", ag.TEMPLATES)
def test_summaries_equal_duckdb_group_by(store, template):
    recs = ag.summarise(ag.cube(store.scan(), BASE, BASE + timedelta(hours=1)), [template], store.id)
    assert _ours(recs) == _duckdb_counts(store, ag.PRIMARY[template])
    for detail in ag.DETAILS[template]:
        assert _ours(recs, detail) == _duckdb_counts(store, ag.PRIMARY[template], detail), detail


def test_error_counts(store):
    recs = ag.summarise(ag.cube(store.scan(), BASE, BASE + timedelta(hours=1)), ["API_ACTIVITY"], store.id)
    errors = sum(s["value"] for r in recs for d in r["summary"]["details"] if d["dimension"] == "errorCode"
                 for s in d["statistics"])
    expected = sum(_duckdb_counts(store, "eventName", "errorCode").values())
    assert errors == expected > 0


def test_day_spans_do_not_change_results(lk):
    """Summarising span by span (bounded memory) gives what one scan of everything gives."""
    st = lk.create_store("spans-store")
    r = random.Random(5)
    st.append([_data_event(r, BASE + timedelta(minutes=r.randrange(3 * 24 * 60))) for _ in range(3000)],
              source="import")
    whole = ag.summarise(ag.cube(st.scan(), BASE, BASE + timedelta(days=3)), ag.TEMPLATES, st.id)
    steps: list = []
    rep = ag.run(st, BASE, BASE + timedelta(days=3), ag.TEMPLATES, span=timedelta(hours=7),
                 progress=lambda done, total: steps.append((done, total)))
    assert rep.spans == 11 and rep.stored == len(whole)
    assert steps == [(n, 11) for n in range(1, 12)]  # the CLI's progress bar: one step per span
    stored = _stored(st)
    assert sorted(stored, key=lambda x: x["eventId"]) == sorted(whole, key=lambda x: x["eventId"])
    again = ag.run(st, BASE, BASE + timedelta(days=3), ag.TEMPLATES, max_events=100)
    assert again.spans == 72 and again.aggregated == len(whole) and again.stored == 0


def test_plan_spans_follow_event_density(lk):
    st = lk.create_store("dense-store")
    r = random.Random(9)
    dense = [_data_event(r, BASE + timedelta(seconds=r.randrange(3600))) for _ in range(900)]
    sparse = [_data_event(r, BASE + timedelta(hours=1, seconds=r.randrange(5 * 3600))) for _ in range(100)]
    st.append(dense, source="import")
    st.append(sparse, source="import")
    spans = ag.plan_spans(st.snapshot().segments, BASE + timedelta(minutes=5), BASE + timedelta(hours=30),
                          max_events=500, span=timedelta(hours=12))
    assert spans[0] == (BASE + timedelta(minutes=5), BASE + timedelta(hours=1))  # the dense hour alone
    assert spans[1] == (BASE + timedelta(hours=1), BASE + timedelta(hours=13))   # then the longest span
    assert spans[-1][1] == BASE + timedelta(hours=30)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def _stored(st) -> list[dict]:
    df = st.scan().filter(ag.pl.col("eventcategory") == "Aggregated").select("eventjson").collect()
    return [orjson.loads(t) for t in df["eventjson"].to_list()]


# ------------------------------------------------------------------------------------------ storage / SQL

def test_stored_queryable_and_idempotent(lk, store):
    rep = ag.run(store, BASE, BASE + timedelta(hours=1), ag.TEMPLATES)
    assert rep.stored == rep.aggregated > 0
    again = ag.run(store, BASE, BASE + timedelta(hours=1), ag.TEMPLATES)
    assert again.aggregated == rep.aggregated and again.stored == 0  # same eventIds: nothing stored twice
    df = lk.sql("SELECT eventid, eventtime, recipientaccountid, awsregion, eventsource, eventtype, eventversion, "
                "json_extract_scalar(element_at(additionaleventdata, 'summary'), '$.primaryDimension.dimension') dim, "
                "json_extract_scalar(element_at(additionaleventdata, 'timeWindow'), '$.windowEnd') wend "
                "FROM \"data-store\" WHERE eventcategory = 'Aggregated'")
    assert df.height == rep.aggregated
    assert set(df["eventtype"]) == {"AwsAggregatedEvent"} and set(df["eventversion"]) == {"1.0"}
    assert set(df["dim"]) == {"eventName", "resourceARN", "userIdentityArn"}
    stored = {r["eventId"]: r for r in _stored(store)}
    row = df.row(0, named=True)
    rec = stored[row["eventid"]]
    assert rec["accountId"] == row["recipientaccountid"] and rec["awsRegion"] == row["awsregion"]
    assert rec["timeWindow"]["windowEnd"] == row["wend"]
    assert row["eventtime"] == datetime.fromisoformat(rec["timeWindow"]["windowStart"].replace("Z", "+00:00"))
    assert "eventTime" not in rec and "additionalEventData" not in rec  # delivered exactly as CloudTrail's
    n = lk.sql("SELECT count(*) n FROM \"data-store\" WHERE eventcategory = 'Data'")["n"][0]
    assert n == 4001


# ------------------------------------------------------------------------------------------ incremental

def test_incremental_rounds_and_late_template(lk, store, monkeypatch):
    monkeypatch.setenv("LAKE_AGGREGATION_LAG", "300")
    ag.set_store_configuration(store, [{"EventCategory": "Data", "Templates": ["API_ACTIVITY"]}])
    # 10:32 now, lag 5 min: windows up to 10:25 are closed
    reps = ag.aggregate_store(lk, store, now=BASE + timedelta(minutes=32))
    assert [r.templates for r in reps] == [["API_ACTIVITY"]] and reps[0].end == "2026-11-01T10:25:00Z"
    first = reps[0].stored
    reps = ag.aggregate_store(lk, store, now=BASE + timedelta(minutes=47))
    assert reps[0].start == "2026-11-01T10:25:00Z" and reps[0].end == "2026-11-01T10:40:00Z"
    ag.set_store_configuration(store, [{"EventCategory": "Data", "Templates": ["API_ACTIVITY", "USER_ACTIONS"]}])
    reps = ag.aggregate_store(lk, store, now=BASE + timedelta(minutes=47))
    assert [r.templates for r in reps] == [["USER_ACTIONS"]] and reps[0].start == "2026-11-01T10:00:00Z"
    reps = ag.aggregate_all(lk, now=BASE + timedelta(hours=2))
    whole = ag.summarise(ag.cube(store.scan(), BASE, BASE + timedelta(hours=1)), ["API_ACTIVITY", "USER_ACTIONS"],
                         store.id)
    assert first > 0 and sorted(r["eventId"] for r in _stored(store)) == sorted(r["eventId"] for r in whole)


def test_service_start_close(lk, store):
    ag.set_store_configuration(store, [{"EventCategory": "Data", "Templates": ["RESOURCE_ACCESS"]}])
    svc = ag.AggregationService(lk, interval=0.05).start()
    try:
        import time
        deadline = time.time() + 30
        while time.time() < deadline and not _stored(store):
            time.sleep(0.05)
    finally:
        svc.close()
    assert not svc.thread.is_alive() and _stored(store)


def test_store_templates_include_trails(lk, store):
    from lake.trails import TrailCatalog, map_bucket

    assert ag.store_templates(lk, store) == []
    map_bucket(lk, "agg-bucket", str(lk.storage.uri) + "-bucket")
    cat = TrailCatalog(lk)
    t = cat.create("agg-trail", "agg-bucket", owner=A, region="us-west-2")
    cat.change(t, lambda d: {**d, "AggregationConfigurations": [{"EventCategory": "Data",
                                                                 "Templates": ["USER_ACTIONS"]}]})
    assert ag.store_templates(lk, store) == ["USER_ACTIONS"]


def test_configuration_validation():
    ok = ag.check_configurations([{"EventCategory": "Data", "Templates": ["API_ACTIVITY", "API_ACTIVITY"]}])
    assert ok == [{"Templates": ["API_ACTIVITY"], "EventCategory": "Data"}]
    assert ag.check_configurations([]) == []
    for bad in ([{"EventCategory": "Management", "Templates": ["API_ACTIVITY"]}],
                [{"EventCategory": "Data", "Templates": []}], [{"EventCategory": "Data", "Templates": ["X"]}],
                [{"EventCategory": "Data", "Templates": ["API_ACTIVITY"]}] * 2, "nope"):
        with pytest.raises(ag.AggregationError):
            ag.check_configurations(bad)


def test_cli_run(lk, store):
    from lake.cli import Ctx

    runner = CliRunner()
    res = runner.invoke(ag.aggregate_cli, ["run", "--store", "data-store", "--start", "2026-11-01T10:00:00Z",
                                           "--end", "2026-11-01T10:10:00Z", "--template", "API_ACTIVITY"],
                        obj=Ctx(lk.storage.uri, "json"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["stored"] > 0
    res = runner.invoke(ag.aggregate_cli, ["run", "--store", "data-store", "--start", "2026-11-01T10:00:00Z",
                                           "--end", "2026-11-01T10:10:00Z"], obj=Ctx(lk.storage.uri, "json"))
    assert res.exit_code == 1 and "no aggregation templates" in res.output


# ------------------------------------------------------------------------------------------ Put/GetEventConfiguration

def _call(lake, op: str, params: dict, region: str = "us-west-2") -> dict:
    import botocore.session
    from botocore.validate import ParamValidator

    from lake import api_aggregation  # noqa: F401 - registers the handlers
    from lake.apicore import OPERATIONS, ApiContext, Principal

    model = botocore.session.get_session().get_service_model("cloudtrail").operation_model(op)
    report = ParamValidator().validate(params, model.input_shape)
    assert not report.has_errors(), report.generate_report()
    ctx = ApiContext(lake=lake, principal=Principal("AKIA", f"arn:aws:iam::{A}:user/a", A, frozenset({A})),
                     region=region, request_id="r")
    out = OPERATIONS[op](ctx, params)
    assert set(out) <= set(model.output_shape.members), out
    return out


def _err(lake, op: str, params: dict) -> str:
    import botocore.session

    from lake.apicore import ApiError

    with pytest.raises(ApiError) as e:
        _call(lake, op, params)
    model = botocore.session.get_session().get_service_model("cloudtrail").operation_model(op)
    assert e.value.code in [s.name for s in model.error_shapes], e.value.code
    return e.value.code


def test_event_configuration_on_store(lk, store):
    cfg = [{"EventCategory": "Data", "Templates": ["API_ACTIVITY", "RESOURCE_ACCESS"]}]
    out = _call(lk, "PutEventConfiguration", {"EventDataStore": store.arn, "AggregationConfigurations": cfg})
    assert out == {"EventDataStoreArn": store.arn, "MaxEventSize": "Standard", "ContextKeySelectors": [],
                   "AggregationConfigurations": [{"Templates": ["API_ACTIVITY", "RESOURCE_ACCESS"],
                                                  "EventCategory": "Data"}]}
    assert _call(lk, "GetEventConfiguration", {"EventDataStore": store.id}) == out
    assert ag.store_templates(lk, store) == ["API_ACTIVITY", "RESOURCE_ACCESS"]
    keys = [{"Type": "TagContext", "Equals": ["env"]}]
    assert _err(lk, "PutEventConfiguration", {"EventDataStore": store.arn, "ContextKeySelectors": keys}) == \
        "InvalidParameterCombinationException"
    out = _call(lk, "PutEventConfiguration", {"EventDataStore": store.arn, "MaxEventSize": "Large",
                                              "ContextKeySelectors": keys})
    assert out["MaxEventSize"] == "Large" and out["ContextKeySelectors"] == keys
    assert out["AggregationConfigurations"] == _call(lk, "GetEventConfiguration",
                                                     {"EventDataStore": store.arn})["AggregationConfigurations"]
    assert _call(lk, "PutEventConfiguration", {"EventDataStore": store.arn,
                                               "AggregationConfigurations": []})["AggregationConfigurations"] == []
    assert _err(lk, "PutEventConfiguration", {"EventDataStore": store.arn, "AggregationConfigurations": [
        {"EventCategory": "Data", "Templates": ["API_ACTIVITY"]}], "TrailName": "x"}) == \
        "InvalidParameterCombinationException"
    assert _err(lk, "GetEventConfiguration", {"EventDataStore": "no-such-store"}) == "EventDataStoreNotFoundException"
    assert _err(lk, "PutEventConfiguration", {"EventDataStore": store.arn}) == "InvalidParameterException"


def test_event_configuration_on_trail(lk, tmp_path):
    from lake.trails import TrailCatalog, map_bucket

    map_bucket(lk, "agg-bucket", str(tmp_path / "bucket"))
    cat = TrailCatalog(lk)
    t = cat.create("agg-trail", "agg-bucket", owner=A, region="us-west-2")
    cfg = [{"EventCategory": "Data", "Templates": ["USER_ACTIONS"]}]
    assert _err(lk, "PutEventConfiguration", {"TrailName": "agg-trail", "AggregationConfigurations": cfg}) == \
        "InvalidParameterCombinationException"  # the trail does not log data events yet
    cat.put_event_selectors(t, advanced=[{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                                                             {"Field": "resources.type",
                                                              "Equals": ["AWS::S3::Object"]}]}])
    out = _call(lk, "PutEventConfiguration", {"TrailName": "agg-trail", "AggregationConfigurations": cfg})
    assert out == {"TrailARN": t.arn, "AggregationConfigurations": cfg}
    assert _call(lk, "GetEventConfiguration", {"TrailName": t.arn}) == out
    assert _err(lk, "PutEventConfiguration", {"TrailName": "agg-trail", "MaxEventSize": "Large"}) == \
        "InvalidParameterCombinationException"
    assert _err(lk, "GetEventConfiguration", {"TrailName": "nope-trail"}) == "TrailNotFoundException"


try:
    from tests.server_fixture import cloudtrail_client, server  # noqa: F401 - fixtures
    HAVE_SERVER = True
except ImportError:  # pragma: no cover
    HAVE_SERVER = False


@pytest.mark.skipif(not HAVE_SERVER, reason="tests/server_fixture.py is not available")
def test_boto3_event_configuration(server, cloudtrail_client):
    from lake import api_aggregation  # noqa: F401 - until the server lists the module in HANDLER_MODULES
    from botocore.exceptions import ClientError

    ct = cloudtrail_client("alice")
    arn = ct.create_event_data_store(Name="agg-eds")["EventDataStoreArn"]
    cfg = [{"EventCategory": "Data", "Templates": ["API_ACTIVITY", "USER_ACTIONS"]}]
    out = ct.put_event_configuration(EventDataStore=arn, AggregationConfigurations=cfg)
    assert out["EventDataStoreArn"] == arn and out["AggregationConfigurations"] == cfg
    got = ct.get_event_configuration(EventDataStore=arn)
    assert got["AggregationConfigurations"] == cfg and got["MaxEventSize"] == "Standard"
    with pytest.raises(ClientError) as e:  # botocore's model: at most one configuration
        ct.put_event_configuration(EventDataStore=arn, AggregationConfigurations=cfg * 2)
    assert e.value.response["Error"]["Code"] in ("InvalidParameterException", "ValidationException")
    with pytest.raises(ClientError) as e:
        cloudtrail_client("bob").get_event_configuration(EventDataStore=arn)
    assert e.value.response["Error"]["Code"] == "EventDataStoreNotFoundException"
