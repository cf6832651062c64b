"""Insights on a trail's data events (lake/trail_insights.py): detection over the data events the trail logs
(not management events, not data events its selectors leave out, not other accounts), the records
(sourceEventCategory Data), delivery by that trail only under CloudTrail-Insight, ListInsightsData and
ListInsightsMetricData with TrailName through the real server and boto3, the incremental rounds and the CLI."""

from __future__ import annotations

import gzip
import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from click.testing import CliRunner

from lake import insights as I
from lake import trail_insights as TI
from lake.delivery import Deliverer
from lake.lake import Lake
from lake.storage import Storage
from lake.trails import TrailCatalog, map_bucket

A, OTHER = "111111111111", "222222222222"
REGION = "us-east-1"
T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)           # a Monday
DAYS = 9
BURST_AT = T0 + timedelta(days=8, hours=10, minutes=7)     # 5 minutes of 30 GetObject/min on a 3/min API
SPIKE_AT = T0 + timedelta(days=8, hours=15, minutes=30)    # 6 minutes of 12 AccessDenied PutObject/min
S3_DATA = [{"Name": "S3 objects", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                                                     {"Field": "resources.type", "Equals": ["AWS::S3::Object"]}]}]
BOTH = [{"InsightType": "ApiCallRateInsight", "EventCategories": ["Data"]},
        {"InsightType": "ApiErrorRateInsight", "EventCategories": ["Data"]}]


def _data(t: datetime, name: str, *, account: str = A, error: str | None = None, rtype: str = "AWS::S3::Object",
          user: str = "arn:aws:sts::111111111111:assumed-role/app/i-1") -> dict:
    r = {"eventVersion": "1.09", "eventTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventSource": "s3.amazonaws.com",
         "eventName": name, "awsRegion": REGION, "sourceIPAddress": "10.0.0.1", "userAgent": "aws-sdk-java",
         "userIdentity": {"type": "AssumedRole", "arn": user, "accountId": account},
         "eventID": str(uuid.UUID(int=random.getrandbits(128))), "eventType": "AwsApiCall",
         "readOnly": name.startswith("Get"), "managementEvent": False, "recipientAccountId": account,
         "eventCategory": "Data",
         "resources": [{"type": rtype, "ARN": "arn:aws:s3:::bucket/key" if rtype == "AWS::S3::Object"
                        else "arn:aws:lambda:us-east-1:111111111111:function:f"}]}
    if error:
        r["errorCode"], r["errorMessage"] = error, "Access Denied"
    return r


def _events() -> list[dict]:
    random.seed(11)
    out = []
    for m in range(DAYS * 1440):
        t = T0 + timedelta(minutes=m)
        out += [_data(t + timedelta(seconds=s), "GetObject") for s in (5, 25, 45)]
        if m % 5 == 0:
            out.append(_data(t + timedelta(seconds=15), "PutObject", error="AccessDenied" if m % 600 == 0 else None))
        if BURST_AT <= t < BURST_AT + timedelta(minutes=5):
            out += [_data(t + timedelta(seconds=s), "GetObject", user="arn:aws:iam::111111111111:user/exfil")
                    for s in range(30, 57)]
            # the same burst in a data type the trail does not log, and in another account: not counted
            out += [_data(t + timedelta(seconds=s), "Invoke", rtype="AWS::Lambda::Function") for s in range(30)]
            out += [_data(t + timedelta(seconds=s), "GetObject", account=OTHER) for s in range(30)]
        if SPIKE_AT <= t < SPIKE_AT + timedelta(minutes=6):
            out += [_data(t + timedelta(seconds=s), "PutObject", error="AccessDenied",
                          user="arn:aws:iam::111111111111:user/mallory") for s in range(40, 52)]
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("ti")
    lake = Lake(str(root / "lake"), region=REGION, account_id=A)
    st = lake.create_store("datastore", retention_days=3653)
    res = st.append(_events(), source="import")
    assert not res.rejected
    map_bucket(lake, "trail-bucket", str(root / "bucket"))
    cat = TrailCatalog(lake)
    t = cat.create("datatrail", "trail-bucket", owner=A, region=REGION)
    t = cat.put_event_selectors(t, advanced=S3_DATA)
    t = cat.put_insight_selectors(t, BOTH)
    t = cat.set_logging(t, True)
    rep = TI.run(lake, t, T0 + timedelta(days=8), T0 + timedelta(days=9))
    return lake, st, t, rep, root


def _stored(lake, t) -> list[dict]:
    return [orjson.loads(j) for j in TI.insights_store(lake, t).to_arrow().column("eventjson").to_pylist()]


def test_detects_the_burst_and_the_error_spike_of_the_logged_data_events_only(world):
    lake, _, t, rep, _ = world
    recs = _stored(lake, t)
    starts = sorted((r["insightDetails"]["insightType"], r["insightDetails"]["eventName"], r["eventTime"])
                    for r in recs if r["insightDetails"]["state"] == "Start")
    # the failing PutObject calls are also a call-rate spike: data call rates count every call (reference 9.1)
    assert starts == [("ApiCallRateInsight", "GetObject", BURST_AT.strftime("%Y-%m-%dT%H:%M:%SZ")),
                      ("ApiCallRateInsight", "PutObject", SPIKE_AT.strftime("%Y-%m-%dT%H:%M:%SZ")),
                      ("ApiErrorRateInsight", "PutObject", SPIKE_AT.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    assert rep.insights == 3 and rep.events_stored == 6 and rep.insights_store == "datatrail-data-insights"
    assert {r["recipientAccountId"] for r in recs} == {A}  # the other account's burst is not the trail's


def test_records_are_cloudtrail_insights_marked_as_data(world):
    lake, _, t, _, _ = world
    recs = _stored(lake, t)
    by_shared: dict[str, list] = {}
    for r in recs:
        by_shared.setdefault(r["sharedEventID"], []).append(r)
        assert r["eventType"] == "AwsCloudTrailInsight" and r["eventCategory"] == "Insight"
        assert r["insightDetails"]["sourceEventCategory"] == "Data"
        assert set(r) == {"eventVersion", "eventTime", "awsRegion", "eventID", "eventType", "recipientAccountId",
                          "sharedEventID", "insightDetails", "eventCategory"}
    assert sorted(len(v) for v in by_shared.values()) == [2, 2, 2]
    burst = next(r for r in recs if r["insightDetails"]["eventName"] == "GetObject"
                 and r["insightDetails"]["state"] == "Start")
    stats = burst["insightDetails"]["insightContext"]["statistics"]
    assert stats["insight"]["average"] == pytest.approx(30.0) and stats["baseline"]["average"] == pytest.approx(3.0)
    users = burst["insightDetails"]["insightContext"]["attributions"][0]
    assert users["attribute"] == "userIdentityArn"
    assert users["insight"][0]["value"] == "arn:aws:iam::111111111111:user/exfil"


def test_read_calls_count_for_data_events():
    """Management call rate counts writes only; data call rate counts reads too (reference 9.1)."""
    import polars as pl
    df = pl.DataFrame({"readonly": [True, False, None]})
    assert df.filter(I._call_expr(I.Scope("Data"))).height == 3
    assert df.filter(I._call_expr(I.MANAGEMENT)).height == 2


def test_rerun_adds_nothing_and_management_only_trail_finds_nothing(world):
    lake, _, t, _, _ = world
    again = TI.run(lake, t, T0 + timedelta(days=8), T0 + timedelta(days=9))
    assert again.insights == 3 and again.events_stored == 0
    cat = TrailCatalog(lake)
    other = cat.create("mgmttrail", "trail-bucket", owner=A, region=REGION)
    other = cat.put_insight_selectors(other, [{"InsightType": "ApiCallRateInsight"}])
    with pytest.raises(I.InsightsError, match="no insight selector for data events"):
        TI.run(lake, other, T0 + timedelta(days=8), T0 + timedelta(days=9))
    cat.delete(other)


def _fresh(root) -> tuple[Lake, object]:
    """A lake of its own with the data store and the data trail (logging, nothing detected yet)."""
    lk = Lake(str(root / "lake"), region=REGION, account_id=A)
    lk.create_store("datastore", retention_days=3653).append(_events(), source="import")
    map_bucket(lk, "trail-bucket", str(root / "bucket"))
    cat = TrailCatalog(lk)
    tr = cat.set_logging(cat.put_insight_selectors(cat.put_event_selectors(
        cat.create("datatrail", "trail-bucket", owner=A, region=REGION), advanced=S3_DATA), BOTH), True)
    return lk, tr


def test_delivered_by_its_trail_only(tmp_path):
    lake, t = _fresh(tmp_path)
    cat = TrailCatalog(lake)
    mgmt = cat.set_logging(cat.put_insight_selectors(cat.create("watcher", "trail-bucket", owner=A, region=REGION,
                                                                prefix="watcher"),
                                                     [{"InsightType": "ApiCallRateInsight"}]), True)
    # Insights committed while both trails log (and follow every store): only the data trail delivers them
    assert TI.run(lake, t, T0 + timedelta(days=8), T0 + timedelta(days=9)).events_stored == 6
    Deliverer(lake, t).run_once()
    Deliverer(lake, mgmt).run_once()
    dest = Storage(str(tmp_path / "bucket"))
    files = {f.path: gzip.decompress(dest.read(f.path)) for f in dest.list("")
             if f.path.endswith(".json.gz") and "Digest" not in f.path}
    mine = [k for k in files if k.startswith("AWSLogs/")]
    theirs = [k for k in files if k.startswith("watcher/")]
    assert mine and all("/CloudTrail-Insight/" in k for k in mine)
    recs = [r for k in mine for r in json.loads(files[k])["Records"]]
    assert {r["insightDetails"]["sourceEventCategory"] for r in recs} == {"Data"} and len(recs) == 6
    assert sorted(r["eventID"] for r in recs) == sorted(r["eventID"] for r in _stored(lake, t))
    assert not any(json.loads(files[k])["Records"] for k in theirs)


def test_incremental_rounds(tmp_path):
    lk, tr = _fresh(tmp_path)
    assert TI.run_incremental(lk, now=T0 + timedelta(days=8, hours=9)) == []   # first round: cursor only
    reps = TI.run_incremental(lk, now=T0 + timedelta(days=8, hours=13))
    assert [r.insights for r in reps] == [1]                                    # the burst ended in the window
    reps = TI.run_incremental(lk, now=T0 + timedelta(days=8, hours=18))
    assert [r.insights for r in reps] == [2]                                    # the failing PutObject calls
    names = sorted(r["insightDetails"]["eventName"] for r in _stored(lk, tr))
    assert names == ["GetObject"] * 2 + ["PutObject"] * 4


def test_cli_run_with_trail(world):
    from lake.cli import Ctx
    lake, *_ = world
    obj = Ctx(lake.uri, "json")
    obj._lake = lake
    r = CliRunner().invoke(I.insights_cli, ["run", "--trail", "datatrail", "--start", "2026-03-10T00:00:00Z",
                                            "--end", "2026-03-11T00:00:00Z"], obj=obj)
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["insights"] == 3
    r = CliRunner().invoke(I.insights_cli, ["run", "--start", "2026-03-10", "--end", "2026-03-11"], obj=obj)
    assert r.exit_code == 1 and "exactly one of --store" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(I.insights_cli, ["run", "--trail", "datatrail", "--insights-store", "x", "--start",
                                            "2026-03-10", "--end", "2026-03-11"], obj=obj)
    assert r.exit_code == 1 and "--insights-store applies to --store" in r.output


def test_server_list_insights_data_and_metric_data(world):
    """ListInsightsData and ListInsightsMetricData(TrailName) through the real server and boto3."""
    pytest.importorskip("boto3")
    from lake.apiserver import ServerConfig, ServerThread
    from tests.server_fixture import ACCOUNT_A, AUDIT_STORE, PRINCIPALS, REGION as SREGION, boto_client
    lake, _, t, _, _ = world
    assert (ACCOUNT_A, SREGION) == (A, REGION)
    srv = ServerThread(lake, ServerConfig(credentials=list(PRINCIPALS.values()), audit_store=AUDIT_STORE)).start()
    try:
        ct = boto_client(srv, "cloudtrail")
        window = dict(StartTime=T0 + timedelta(days=8), EndTime=T0 + timedelta(days=9))
        out = ct.list_insights_data(InsightSource=t.arn, DataType="InsightsEvents", **window)
        assert len(out["Events"]) == 6 and "NextToken" not in out
        times = [e["EventTime"] for e in out["Events"]]
        assert times == sorted(times, reverse=True)
        assert {e["EventName"] for e in out["Events"]} == {"GetObject", "PutObject"}
        assert all(json.loads(e["CloudTrailEvent"])["insightDetails"]["sourceEventCategory"] == "Data"
                   for e in out["Events"])
        only = ct.list_insights_data(InsightSource="datatrail", DataType="InsightsEvents",
                                     Dimensions={"EventName": "PutObject"}, **window)
        assert {e["EventName"] for e in only["Events"]} == {"PutObject"} and len(only["Events"]) == 4
        page1 = ct.list_insights_data(InsightSource=t.arn, DataType="InsightsEvents", MaxResults=3, **window)
        page2 = ct.list_insights_data(InsightSource=t.arn, DataType="InsightsEvents", MaxResults=3,
                                      NextToken=page1["NextToken"], **window)
        assert [e["EventId"] for e in page1["Events"] + page2["Events"]] == [e["EventId"] for e in out["Events"]]
        m = ct.list_insights_metric_data(TrailName="datatrail", EventSource="s3.amazonaws.com", EventName="GetObject",
                                         InsightType="ApiCallRateInsight", Period=60, DataType="FillWithZeros",
                                         StartTime=BURST_AT - timedelta(minutes=1),
                                         EndTime=BURST_AT + timedelta(minutes=6))
        assert m["Values"] == [3.0, 30.0, 30.0, 30.0, 30.0, 30.0, 3.0]  # the trail's S3 data events of account A
        e = ct.list_insights_metric_data(TrailName="datatrail", EventSource="s3.amazonaws.com", EventName="PutObject",
                                         InsightType="ApiErrorRateInsight", ErrorCode="AccessDenied", Period=3600,
                                         StartTime=SPIKE_AT.replace(minute=0), EndTime=SPIKE_AT.replace(minute=0)
                                         + timedelta(hours=1))
        assert e["Values"] == [72.0]
        with pytest.raises(ct.exceptions.TrailNotFoundException):
            ct.list_insights_data(InsightSource="no-such-trail", DataType="InsightsEvents")
    finally:
        srv.stop()


def test_lookup_events_leaves_data_insights_to_list_insights_data(world):
    from lake.api_lookup import lookup
    from lake.apicore import ApiContext, Principal
    lake, *_ = world
    ctx = ApiContext(lake=lake, principal=Principal("AKIA", f"arn:aws:iam::{A}:user/t", A, frozenset({A})),
                     region=REGION, request_id="r", now=T0 + timedelta(days=9))
    out, _ = lookup(ctx, {"EventCategory": "insight"})
    assert out["Events"] == []
    assert len(lookup(ctx, {})[0]["Events"]) == 0  # data events are not event history either


def test_a_store_pending_deletion_is_left_out(tmp_path):
    lk, tr = _fresh(tmp_path)
    gone = lk.create_store("goner", termination_protection=False)
    gone.append([_data(T0 + timedelta(days=8, hours=1), "GetObject")], source="import")
    gone.delete()
    assert [s.name for s in TI.source_stores(lk, tr)] == ["datastore"]
    assert TI.run(lk, tr, T0 + timedelta(days=8), T0 + timedelta(days=9)).insights == 3
