"""CloudTrail Insights (lake/insights.py, lake/api_insights.py): detection of spikes, error spikes and drops on a
small synthetic store, the Start/End records against AWS's examples (golden, skipped without ../shared), the
EDS Put/GetInsightSelectors and ListInsightsMetricData handlers, the incremental runner and the CLI."""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import orjson
import polars as pl
import pytest

from lake import insights as I
from lake.apicore import ApiContext, ApiError, Principal
from lake.lake import Lake

from tests.conftest import EXTERNAL

ACCOUNT = "111111111111"
REGION = "us-east-1"
T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)          # a Monday
DAYS = 9
BURST_AT = T0 + timedelta(days=8, hours=10, minutes=7)    # 5 minutes of 20 calls/min on a 1/min API
SPIKE_AT = T0 + timedelta(days=8, hours=14, minutes=30)   # 6 minutes of 12 AccessDenied/min
SILENCE_AT = T0 + timedelta(days=8, hours=3)              # 40 minutes without the 3/min heartbeat
AWS_EXAMPLES = EXTERNAL / "awsdocs-cloudtrail-user-guide-examples"


def _rec(t: datetime, source: str, name: str, *, read_only: bool = False, error: str | None = None,
         user: str = "arn:aws:iam::111111111111:user/app", agent: str = "aws-cli/2.0") -> dict:
    r = {"eventVersion": "1.08", "eventTime": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventSource": source,
         "eventName": name, "awsRegion": REGION, "sourceIPAddress": "10.0.0.1", "userAgent": agent,
         "userIdentity": {"type": "IAMUser", "arn": user, "accountId": ACCOUNT, "principalId": "AIDAX"},
         "eventID": str(uuid.UUID(int=random.getrandbits(128))), "eventType": "AwsApiCall",
         "readOnly": read_only, "managementEvent": True, "recipientAccountId": ACCOUNT,
         "eventCategory": "Management"}
    if error:
        r["errorCode"] = error
        r["errorMessage"] = "denied"
    return r


def _events() -> list[dict]:
    random.seed(7)
    out = []
    for m in range(DAYS * 1440):
        t = T0 + timedelta(minutes=m)
        out.append(_rec(t + timedelta(seconds=5), "ec2.amazonaws.com", "CreateTags"))
        if not (SILENCE_AT <= t < SILENCE_AT + timedelta(minutes=40)):
            out += [_rec(t + timedelta(seconds=s), "ssm.amazonaws.com", "UpdateInstanceInformation",
                         user="arn:aws:sts::111111111111:assumed-role/ssm/i-1", agent="amazon-ssm-agent")
                    for s in (10, 30, 50)]
        if m % 7 == 0:
            out.append(_rec(t + timedelta(seconds=20), "s3.amazonaws.com", "ListBuckets", read_only=True,
                            error="AccessDenied" if m % 91 == 0 else None))
        if BURST_AT <= t < BURST_AT + timedelta(minutes=5):
            out += [_rec(t + timedelta(seconds=s), "ec2.amazonaws.com", "CreateTags",
                         user=f"arn:aws:iam::111111111111:user/burst{s % 3}") for s in range(20, 39)]
        if SPIKE_AT <= t < SPIKE_AT + timedelta(minutes=6):
            out += [_rec(t + timedelta(seconds=s), "s3.amazonaws.com", "ListBuckets", read_only=True,
                         error="AccessDenied", user="arn:aws:iam::111111111111:user/mallory")
                    for s in range(30, 42)]
    return out


@pytest.fixture(scope="module")
def lake_with_events(tmp_path_factory):
    lake = Lake(str(tmp_path_factory.mktemp("ins") / "lake"))
    st = lake.create_store("src", retention_days=3653)
    res = st.append(_events(), source="import")
    assert not res.rejected
    return lake, st


@pytest.fixture(scope="module")
def found(lake_with_events):
    lake, st = lake_with_events
    rep = I.run(lake, st, T0 + timedelta(days=7, hours=1), T0 + timedelta(days=DAYS), destination=None)
    dest = lake.store("src-insights")
    rows = dest.scan().select("eventjson").collect()["eventjson"].to_list()
    return rep, [orjson.loads(r) for r in rows]


def _pairs(recs: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in recs:
        out.setdefault(r["sharedEventID"], {})[r["insightDetails"]["state"]] = r
    return out


# ---------------------------------------------------------------------------------------------- detection

def test_finds_burst_error_spike_and_silence_only(found):
    rep, recs = found
    pairs = _pairs(recs)
    got = sorted((p["Start"]["insightDetails"]["insightType"], p["Start"]["insightDetails"]["eventName"],
                  p["Start"]["eventTime"]) for p in pairs.values())
    assert got == sorted([
        ("ApiCallRateInsight", "CreateTags", BURST_AT.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("ApiErrorRateInsight", "ListBuckets", SPIKE_AT.strftime("%Y-%m-%dT%H:%M:%SZ")),
        ("ApiCallRateInsight", "UpdateInstanceInformation", SILENCE_AT.strftime("%Y-%m-%dT%H:%M:%SZ")),
    ]), got
    assert rep.insights == 3 and rep.events_stored == 6
    for p in pairs.values():
        assert set(p) == {"Start", "End"}
        assert p["Start"]["eventID"] != p["End"]["eventID"]


def test_statistics_and_attributions(found):
    _, recs = found
    by = {(p["Start"]["insightDetails"]["eventName"]): p for p in _pairs(recs).values()}
    burst = by["CreateTags"]
    st = burst["Start"]["insightDetails"]["insightContext"]["statistics"]
    assert st["insightDuration"] == 5 and st["baselineDuration"] == 10080
    assert st["insight"]["average"] == pytest.approx(20.0)
    assert st["baseline"]["average"] == pytest.approx(1.0)
    assert burst["End"]["eventTime"] == (BURST_AT + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs = {a["attribute"]: a for a in burst["Start"]["insightDetails"]["insightContext"]["attributions"]}
    assert [a for a in attrs] == ["userIdentityArn", "userAgent", "errorCode"]
    assert attrs["errorCode"]["insight"] == [{"value": "null", "average": pytest.approx(20.0)}]
    users = attrs["userIdentityArn"]["insight"]
    assert len(users) == 4 and users[0]["average"] >= users[-1]["average"]
    assert attrs["userIdentityArn"]["baseline"][0] == {"value": "arn:aws:iam::111111111111:user/app",
                                                       "average": pytest.approx(1.0)}
    err = by["ListBuckets"]["Start"]["insightDetails"]
    assert err["errorCode"] == "AccessDenied" and err["insightType"] == "ApiErrorRateInsight"
    assert err["insightContext"]["statistics"]["insightDuration"] == 6
    top = {a["attribute"]: a for a in err["insightContext"]["attributions"]}["userIdentityArn"]["insight"][0]
    assert top["value"].endswith("user/mallory")
    drop = by["UpdateInstanceInformation"]["Start"]["insightDetails"]["insightContext"]["statistics"]
    assert drop["insightDuration"] == 40 and drop["insight"]["average"] == 0.0
    assert drop["baseline"]["average"] == pytest.approx(3.0, rel=0.01)


def test_rerun_adds_no_duplicates(lake_with_events, found):
    lake, st = lake_with_events
    rep = I.run(lake, st, T0 + timedelta(days=7, hours=1), T0 + timedelta(days=DAYS))
    assert rep.insights == 3 and rep.events_stored == 0
    assert lake.store("src-insights").scan().select(pl.len()).collect().item() == 6


def test_quiet_seasonal_series_gives_nothing():
    """A strongly diurnal, clustered series (office hours, bursts of 4 calls) raises no Insight."""
    rng = random.Random(3)
    n = 9 * 1440
    x = [0] * n
    for m in range(n):
        hour = (m // 60) % 24
        rate = 0.8 if 9 <= hour < 18 else 0.02
        if rng.random() < rate / 4:
            x[m] = 4
    import numpy as np
    assert I.detect_series(np.array(x), 8 * 1440, I.CALL, I.Params()) == []


def test_bad_range_is_one_line_error(lake_with_events):
    lake, st = lake_with_events
    with pytest.raises(I.InsightsError, match="not after"):
        I.find(st, T0, T0)


# ---------------------------------------------------------------------------------------------- golden

def _shape(v):
    """Keys at every level and value types (numbers are one type: AWS writes 664 and 0.6 alike)."""
    if isinstance(v, dict):
        return {k: _shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_shape(v[0])] if v else []
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def _aws_insights() -> list[dict]:
    if not AWS_EXAMPLES.is_dir():
        pytest.skip(f"AWS documentation examples not present at {AWS_EXAMPLES}")
    doc = json.loads((AWS_EXAMPLES / "view-insights-events-cli__lookup-events-insight-response-1.json").read_text())
    return doc["Events"]


def test_golden_structure_matches_aws_lookup_example(found):
    aws = _aws_insights()
    _, recs = found
    ours = {r["insightDetails"]["state"]: r for r in recs
            if r["insightDetails"]["eventName"] == "CreateTags"}
    for ex in aws:
        mine = ours[ex["insightDetails"]["state"]]
        assert list(mine) == list(ex)                     # same top-level keys in the same order
        assert _shape(mine) == _shape(ex)
        ints = mine["insightDetails"]["insightContext"]["statistics"]
        assert isinstance(ints["insightDuration"], int) and isinstance(ints["baselineDuration"], int)
    # the error-rate Insight differs only by insightDetails.errorCode
    err = next(r for r in recs if r["insightDetails"]["insightType"] == "ApiErrorRateInsight")
    d = dict(err["insightDetails"])
    assert d.pop("errorCode") == "AccessDenied"
    assert _shape({**err, "insightDetails": d}) == _shape(aws[0])


def test_golden_log_file_example_keys_are_present(found):
    if not AWS_EXAMPLES.is_dir():
        pytest.skip(f"AWS documentation examples not present at {AWS_EXAMPLES}")
    recs = json.loads((AWS_EXAMPLES / "cloudtrail-log-file-examples__log-file-example-7.json").read_text())["Records"]
    _, ours = found
    mine = {r["insightDetails"]["state"]: r for r in ours if r["insightDetails"]["eventName"] == "CreateTags"}

    def subset(ex, me, where):
        if isinstance(ex, dict):
            assert isinstance(me, dict), where
            for k, v in ex.items():
                assert k in me, f"{where}.{k}"
                subset(v, me[k], f"{where}.{k}")
        else:
            assert _shape(ex) == _shape(me), where
    for ex in recs:
        subset(ex, mine[ex["insightDetails"]["state"]], "record")


def test_stored_insight_columns(lake_with_events, found):
    lake, _ = lake_with_events
    df = lake.store("src-insights").scan().select("eventcategory", "eventtype", "sharedeventid",
                                                  "insightdetails").collect()
    assert set(df["eventcategory"]) == {"Insight"} and set(df["eventtype"]) == {"AwsCloudTrailInsight"}
    assert df["sharedeventid"].n_unique() == 3
    row = dict(df["insightdetails"][0])
    assert row["state"] in ("Start", "End") and "insightContext" in row


# ---------------------------------------------------------------------------------------------- API

def _ctx(lake, account: str = "123456789012") -> ApiContext:
    p = Principal("AKIA", f"arn:aws:iam::{account}:user/t", account, frozenset({account, ACCOUNT, "123456789012"}))
    return ApiContext(lake=lake, principal=p, region=REGION, request_id="r")


def test_eds_insight_selectors(tmp_path):
    from lake import api_insights as A
    from lake.apicore import OPERATIONS
    lake = Lake(str(tmp_path / "lake"))
    src, dst = lake.create_store("aaa"), lake.create_store("bbb")
    ctx = _ctx(lake)
    assert OPERATIONS["PutInsightSelectors"] is A.put_insight_selectors
    with pytest.raises(ApiError) as e:
        A.get_insight_selectors(ctx, {"EventDataStore": src.arn})
    assert e.value.code == "InsightNotEnabledException"
    with pytest.raises(ApiError) as e:
        A.put_insight_selectors(ctx, {"EventDataStore": src.arn, "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}]})
    assert e.value.code == "InvalidParameterCombinationException"
    out = A.put_insight_selectors(ctx, {"EventDataStore": src.arn, "InsightsDestination": dst.arn,
                                        "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}]})
    assert out == {"EventDataStoreArn": src.arn, "InsightsDestination": dst.arn,
                   "InsightSelectors": [{"InsightType": "ApiCallRateInsight"}]}
    assert A.get_insight_selectors(ctx, {"EventDataStore": src.arn}) == out
    with pytest.raises(ApiError) as e:
        A.put_insight_selectors(ctx, {"EventDataStore": src.arn, "InsightsDestination": dst.arn,
                                      "InsightSelectors": [{"InsightType": "Bogus"}]})
    assert e.value.code == "InvalidInsightSelectorsException"
    with pytest.raises(ApiError) as e:
        A.put_insight_selectors(ctx, {"EventDataStore": src.arn, "InsightsDestination": dst.arn, "InsightSelectors":
                                      [{"InsightType": "ApiCallRateInsight", "EventCategories": ["Data"]}]})
    assert e.value.code == "InvalidParameterCombinationException"
    A.put_insight_selectors(ctx, {"EventDataStore": src.arn, "InsightSelectors": []})
    with pytest.raises(ApiError):
        A.get_insight_selectors(ctx, {"EventDataStore": src.arn})
    # TrailName requests go to the trail handlers
    with pytest.raises(ApiError) as e:
        A.get_insight_selectors(ctx, {"TrailName": "nope"})
    assert e.value.code == "TrailNotFoundException"


def test_list_insights_metric_data(lake_with_events):
    from lake import api_insights as A
    lake, _ = lake_with_events
    ctx = _ctx(lake, ACCOUNT)
    base = {"EventSource": "ec2.amazonaws.com", "EventName": "CreateTags", "InsightType": "ApiCallRateInsight",
            "StartTime": BURST_AT - timedelta(minutes=2), "EndTime": BURST_AT + timedelta(minutes=6), "Period": 60}
    out = A.list_insights_metric_data(ctx, base)
    assert out["Values"] == [1.0, 1.0, 20.0, 20.0, 20.0, 20.0, 20.0, 1.0]
    assert out["Timestamps"][2] == BURST_AT
    err = A.list_insights_metric_data(ctx, {**base, "InsightType": "ApiErrorRateInsight", "EventName": "ListBuckets",
                                            "EventSource": "s3.amazonaws.com", "ErrorCode": "AccessDenied",
                                            "StartTime": SPIKE_AT, "EndTime": SPIKE_AT + timedelta(minutes=3),
                                            "DataType": "FillWithZeros", "MaxResults": 2})
    assert err["Values"] == [12.0, 12.0] and err["ErrorCode"] == "AccessDenied" and "NextToken" in err
    more = A.list_insights_metric_data(ctx, {**base, "InsightType": "ApiErrorRateInsight", "EventName": "ListBuckets",
                                             "EventSource": "s3.amazonaws.com", "ErrorCode": "AccessDenied",
                                             "StartTime": SPIKE_AT, "EndTime": SPIKE_AT + timedelta(minutes=3),
                                             "DataType": "FillWithZeros", "NextToken": err["NextToken"]})
    assert len(more["Values"]) == 1
    with pytest.raises(ApiError):
        A.list_insights_metric_data(ctx, {**base, "InsightType": "ApiErrorRateInsight"})
    with pytest.raises(ApiError):
        A.list_insights_metric_data(ctx, {**base, "Period": 61})


# ---------------------------------------------------------------------------------------------- runners

def test_incremental_rounds(lake_with_events, tmp_path):
    lake, st = lake_with_events
    dest = lake.create_store("live-insights")
    I.put_config(lake, st, [{"InsightType": "ApiCallRateInsight"}, {"InsightType": "ApiErrorRateInsight"}], dest)
    try:
        assert I.run_incremental(lake, now=T0 + timedelta(days=8)) == []          # first round: cursor only
        reps = I.run_incremental(lake, now=T0 + timedelta(days=8, hours=16))
        assert [r.insights for r in reps] == [3]
        assert I.run_incremental(lake, now=T0 + timedelta(days=8, hours=17))[0].insights == 0
        assert dest.scan().select(pl.len()).collect().item() == 6
    finally:
        I.put_config(lake, st, [], None)
    svc = I.InsightsService(lake, interval=3600).start()
    svc.close()
    assert not svc.thread.is_alive() and svc.rounds >= 1


def test_cli_run(lake_with_events):
    from click.testing import CliRunner
    from lake.cli import Ctx
    lake, st = lake_with_events
    obj = Ctx(lake.uri if hasattr(lake, "uri") else str(lake.storage.uri_of("")), "json")
    obj._lake = lake
    res = CliRunner().invoke(I.insights_cli, ["run", "--store", "src", "--start",
                                              (T0 + timedelta(days=7, hours=1)).isoformat(), "--end",
                                              (T0 + timedelta(days=DAYS)).isoformat(), "--insights-store", "cli-ins"],
                             obj=obj)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["insights"] == 3
    res = CliRunner().invoke(I.insights_cli, ["run", "--store", "src", "--start", "yesterday", "--end", "now"], obj=obj)
    assert res.exit_code == 1 and "--start" in res.output


def test_lookup_events_returns_insights(lake_with_events, found):
    from lake.api_lookup import lookup_events
    lake, _ = lake_with_events
    ctx = _ctx(lake, ACCOUNT)
    ctx.now = T0 + timedelta(days=DAYS)
    out = lookup_events(ctx, {"EventCategory": "insight"})
    assert len(out["Events"]) >= 6
    recs = [json.loads(e["CloudTrailEvent"]) for e in out["Events"]]
    assert {r["eventType"] for r in recs} == {"AwsCloudTrailInsight"}


def test_server_round_trip_with_boto3(tmp_path):
    """The operations through the real server and botocore (shapes, epoch timestamps, trail delegation)."""
    pytest.importorskip("boto3")
    from lake.apiserver import ServerConfig, ServerThread
    from tests.server_fixture import ACCOUNT_A, AUDIT_STORE, PRINCIPALS, REGION as SREGION, boto_client
    import lake.api_insights  # noqa: F401 - registers the EDS flavour (the server loads it once listed)
    srv_lake = Lake(str(tmp_path / "lake"), region=SREGION, account_id=ACCOUNT_A)
    src, dst = srv_lake.create_store("srcstore"), srv_lake.create_store("dststore")
    srv = ServerThread(srv_lake, ServerConfig(credentials=list(PRINCIPALS.values()), audit_store=AUDIT_STORE)).start()
    try:
        ct = boto_client(srv, "cloudtrail")
        out = ct.put_insight_selectors(EventDataStore=src.arn, InsightsDestination=dst.arn,
                                       InsightSelectors=[{"InsightType": "ApiErrorRateInsight"}])
        assert out["EventDataStoreArn"] == src.arn and out["InsightsDestination"] == dst.arn
        got = ct.get_insight_selectors(EventDataStore=src.arn)
        assert got["InsightSelectors"] == [{"InsightType": "ApiErrorRateInsight"}]
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        src.append([_rec(now - timedelta(minutes=3), "iam.amazonaws.com", "CreateUser", error="AccessDenied")
                    | {"recipientAccountId": ACCOUNT_A, "awsRegion": SREGION}], source="import")
        m = ct.list_insights_metric_data(EventSource="iam.amazonaws.com", EventName="CreateUser",
                                         InsightType="ApiErrorRateInsight", ErrorCode="AccessDenied", Period=60,
                                         StartTime=now - timedelta(minutes=5), EndTime=now,
                                         DataType="FillWithZeros")
        assert m["Values"] == [0.0, 0.0, 1.0, 0.0, 0.0]
        assert m["Timestamps"][2] == now - timedelta(minutes=3)
        with pytest.raises(ct.exceptions.TrailNotFoundException):
            ct.get_insight_selectors(TrailName="no-such-trail")
    finally:
        srv.stop()


def test_count_cache_serves_whole_days_and_follows_changes(tmp_path):
    """Whole UTC days come from `_insights/cache`; an append or compaction touching a day recounts it, and the
    result always equals one direct count over the range."""
    lake = Lake(str(tmp_path / "lake"))
    st = lake.create_store("cached", retention_days=3653)
    random.seed(3)
    st.append([_rec(T0 + timedelta(minutes=m, seconds=7), "ec2.amazonaws.com", "CreateTags",
                    error="AccessDenied" if m % 13 == 0 else None) for m in range(0, 3 * 1440, 3)], source="import")
    lo, hi = T0 + timedelta(hours=5), T0 + timedelta(days=2, hours=20)   # partial, 1 whole day, partial

    def direct():
        return I._counts(I._base_filter(st.scan(None, lo, hi), lo, hi), set(I.INSIGHT_TYPES), I.MANAGEMENT)

    def canon(df):
        return df.sort(I._KEYS + ["minute"], nulls_last=True).to_dicts()

    first = I.minute_counts(st, lo, hi)
    cached = [f.path for f in lake.storage.list(I.CACHE_DIR)]
    assert len(cached) == 1 and cached[0].endswith("2026-03-03.parquet")
    assert canon(first) == canon(direct())
    assert canon(I.minute_counts(st, lo, hi)) == canon(first)
    st.append([_rec(T0 + timedelta(days=1, hours=12, seconds=1), "ec2.amazonaws.com", "CreateTags")], source="import")
    after = I.minute_counts(st, lo, hi)
    assert after["n"].sum() == first["n"].sum() + 1 and canon(after) == canon(direct())


def test_runs_report_progress_per_day(tmp_path):
    """`lake insights run` shows a bar: one step per whole day counted."""
    lake = Lake(str(tmp_path / "lake"))
    st = lake.create_store("prog", retention_days=3653)
    st.append([_rec(T0 + timedelta(hours=h), "ec2.amazonaws.com", "CreateTags") for h in range(0, 24 * 10, 5)],
              source="import")
    seen = []
    I.run(lake, st, T0 + timedelta(days=8), T0 + timedelta(days=9), progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_incremental_round_skips_a_store_pending_deletion(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    st = lake.create_store("doomed", termination_protection=False)
    st.append([_rec(T0, "ec2.amazonaws.com", "CreateTags")], source="import")
    I.put_config(lake, st, [{"InsightType": "ApiCallRateInsight"}], lake.create_store("doomed-ins"))
    assert I.run_incremental(lake, now=T0 + timedelta(days=1)) == []     # cursor set
    st.delete()
    assert I.run_incremental(lake, now=T0 + timedelta(days=2)) == []     # no InactiveStore from the round
