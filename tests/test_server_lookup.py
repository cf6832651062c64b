"""LookupEvents (issue 6 point 3): event history from the lake.

The handler is tested directly with an `ApiContext` (every filter against an oracle computed from the
records themselves, pagination, what a lookup reads, account scoping, errors), then end to end through boto3
(with its paginator) and the real `aws` CLI against a server on loopback (`tests/server_fixture.py`).
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest

import lake
from lake import api_lookup, api_stores  # noqa: F401 - importing registers the handlers
from lake.apicore import OPERATIONS, ApiContext, Principal
from tests.server_fixture import expect
from lake.generate import records as gen_records

ACCT_A, ACCT_B = "111111111111", "222222222222"
A = Principal("AKIAAAAAAAAAAAAAAAAA", f"arn:aws:iam::{ACCT_A}:user/alice", ACCT_A, frozenset({ACCT_A}))
B = Principal("AKIABBBBBBBBBBBBBBBB", f"arn:aws:iam::{ACCT_B}:user/bob", ACCT_B, frozenset({ACCT_B}))
NOW = datetime.now(timezone.utc).replace(microsecond=0)


# ---- helpers shared with the query and import tests -------------------------------------------------------

def make_ctx(lk, principal: Principal = A, *, now: datetime | None = None, services: dict | None = None) -> ApiContext:
    c = ApiContext(lake=lk, principal=principal, region="us-east-1", request_id=str(uuid.uuid4()),
                   services=services if services is not None else {})
    if now is not None:
        c.now = now
    return c


def create_store(lk, principal: Principal, name: str, services: dict | None = None, **params) -> lake.store.Store:
    """A store owned by the principal's account, made the way the API makes it."""
    out = OPERATIONS["CreateEventDataStore"](make_ctx(lk, principal, services=services),
                                             {"Name": name, "TerminationProtectionEnabled": False,
                                              "RetentionPeriod": 3653, **params})
    return lk.store(out["EventDataStoreArn"])


def username(rec: dict) -> str | None:
    ui = rec.get("userIdentity") or {}
    if ui.get("userName"):
        return ui["userName"]
    if ui.get("type") in ("AssumedRole", "FederatedUser"):
        if ui.get("arn"):
            return ui["arn"].split("/")[-1]
        pid = ui.get("principalId") or ""
        return pid.split(":")[-1] if ":" in pid else None
    if ui.get("type") == "Root":
        return "root"
    return None


def category(rec: dict) -> str:
    from lake.events import infer_category
    return infer_category(rec)


def etime(rec: dict) -> datetime:
    return datetime.fromisoformat(rec["eventTime"].replace("Z", "+00:00"))


def oracle(recs: list[dict], pred=lambda r: True, *, cat: str = "Management", start=None, end=None,
           now: datetime = NOW) -> list[str]:
    """EventIds LookupEvents must return, newest first (ties: eventID descending), each once."""
    lo = max(start, now - timedelta(days=90)) if start else now - timedelta(days=90)
    hi = end or now
    keep = {}
    for r in recs:
        if category(r) == cat and lo <= etime(r) <= hi and pred(r):
            keep[r["eventID"]] = etime(r)
    return [k for k, _ in sorted(keep.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)]


def all_pages(c: ApiContext, params: dict) -> tuple[list[dict], list[api_lookup.LookupStats]]:
    events, stats, token = [], [], None
    for _ in range(10_000):
        p = dict(params, **({"NextToken": token} if token else {}))
        out, st = api_lookup.lookup(c, p)
        events += out["Events"]
        stats.append(st)
        token = out.get("NextToken")
        if not token:
            return events, stats
    raise AssertionError("pagination does not end")


@pytest.fixture
def lk(tmp_path):
    return lake.connect(str(tmp_path / "lake"), account_id=ACCT_A)


@pytest.fixture
def recs():
    """Records over 30 days, some older than the 90-day window, plus a root event and an insight."""
    rs = gen_records(3000, seed=7, days=30, accounts=2, end=NOW)
    rng = random.Random(3)
    old = gen_records(50, seed=8, days=5, accounts=1, end=NOW - timedelta(days=100))
    root = dict(rs[0], eventID=str(uuid.UUID(int=rng.getrandbits(128))), eventName="ConsoleLogin",
                eventSource="signin.amazonaws.com", eventCategory="Management", managementEvent=True,
                userIdentity={"type": "Root", "principalId": ACCT_A, "arn": f"arn:aws:iam::{ACCT_A}:root",
                              "accountId": ACCT_A},
                resources=[{"type": "AWS::IAM::Role", "ARN": f"arn:aws:iam::{ACCT_A}:role/Admin"}])
    insight = {"eventVersion": "1.08", "eventTime": (NOW - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "awsRegion": "us-east-1", "eventID": str(uuid.UUID(int=rng.getrandbits(128))),
               "eventType": "AwsCloudTrailInsight", "recipientAccountId": ACCT_A, "sharedEventID": "x",
               "insightDetails": {"state": "Start", "eventSource": "ec2.amazonaws.com",
                                  "eventName": "RunInstances", "insightType": "ApiCallRateInsight"},
               "eventCategory": "Insight"}
    return rs + old + [root, insight]


@pytest.fixture
def loaded(lk, recs):
    st = create_store(lk, A, "history")
    res = st.append(recs, source="import")
    assert not res.rejected
    return st


# ---- the handler, directly ----------------------------------------------------------------------------------

def test_default_page_is_the_newest_management_events(lk, recs, loaded):
    out = OPERATIONS["LookupEvents"](make_ctx(lk, now=NOW), {})
    want = oracle(recs)
    assert [e["EventId"] for e in out["Events"]] == want[:50]
    assert out.get("NextToken")
    by_id = {r["eventID"]: r for r in recs}
    for e in out["Events"]:
        r = by_id[e["EventId"]]
        assert json.loads(e["CloudTrailEvent"]) == r
        assert e["EventName"] == r["eventName"] and e["EventSource"] == r["eventSource"]
        assert e["EventTime"] == etime(r)
        assert e.get("ReadOnly") == ({True: "true", False: "false"}.get(r.get("readOnly")))
        assert e.get("AccessKeyId") == r["userIdentity"].get("accessKeyId")
        assert e.get("Username") == username(r)
        assert e["Resources"] == [{"ResourceType": x["type"], "ResourceName": x["ARN"]}
                                  for x in r.get("resources", [])]


def test_pages_concatenate_to_the_whole_history_without_rescanning(lk, recs, loaded):
    events, stats = all_pages(make_ctx(lk, now=NOW), {"MaxResults": 50})
    ids = [e["EventId"] for e in events]
    assert ids == oracle(recs)
    assert len(ids) == len(set(ids))
    segments = loaded.snapshot().segments.num_rows
    assert segments >= 40  # 30 days x 2 accounts
    # each page opens only the segments around its position, never all of them again
    assert max(s.segments_opened for s in stats) <= 8, [s.segments_opened for s in stats]
    assert sum(s.segments_opened for s in stats) <= 3 * segments


def test_small_pages_and_ties(lk):
    st = create_store(lk, A, "ties")
    t = (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recs = [dict(gen_records(1, seed=i, end=NOW)[0], eventTime=t, eventCategory="Management",
                 managementEvent=True) for i in range(23)]
    st.append(recs, source="import")
    events, _ = all_pages(make_ctx(lk, now=NOW), {"MaxResults": 4})
    assert [e["EventId"] for e in events] == sorted((r["eventID"] for r in recs), reverse=True)


@pytest.mark.parametrize("key,value_of,pred", [
    ("EventName", lambda r: "RunInstances", lambda r, v: r["eventName"] == v),
    ("EventSource", lambda r: "iam.amazonaws.com", lambda r, v: r["eventSource"] == v),
    ("ReadOnly", lambda r: "false", lambda r, v: r.get("readOnly") is False),
    ("Username", lambda r: "carol", lambda r, v: username(r) == v),
    ("Username", lambda r: "root", lambda r, v: username(r) == v),
    ("AccessKeyId", lambda r: r["userIdentity"]["accessKeyId"], lambda r, v: r["userIdentity"].get("accessKeyId") == v),
    ("ResourceType", lambda r: "AWS::IAM::Role", lambda r, v: any(x["type"] == v for x in r.get("resources", []))),
    ("ResourceName", lambda r: f"arn:aws:iam::{ACCT_A}:role/Admin",
     lambda r, v: any(x["ARN"] == v for x in r.get("resources", []))),
    ("ResourceName", lambda r: "Admin", lambda r, v: any(x["ARN"].endswith("/Admin") for x in r.get("resources", []))),
])
def test_each_lookup_attribute(lk, recs, loaded, key, value_of, pred):
    sample = next(r for r in recs if category(r) == "Management" and etime(r) > NOW - timedelta(days=30))
    value = value_of(sample)
    events, _ = all_pages(make_ctx(lk, now=NOW), {"LookupAttributes": [{"AttributeKey": key, "AttributeValue": value}]})
    want = oracle(recs, lambda r: pred(r, value))
    assert want, "the oracle should find something"
    assert [e["EventId"] for e in events] == want


def test_event_id_lookup_reads_at_most_a_couple_of_segments(lk, recs, loaded):
    c = make_ctx(lk, now=NOW)
    segments = loaded.snapshot().segments.num_rows
    for r in random.Random(1).sample([r for r in recs if category(r) == "Management"
                                      and etime(r) > NOW - timedelta(days=90)], 20):
        out, st = api_lookup.lookup(c, {"LookupAttributes": [{"AttributeKey": "EventId",
                                                               "AttributeValue": r["eventID"]}]})
        assert [e["EventId"] for e in out["Events"]] == [r["eventID"]]
        assert "NextToken" not in out
        assert st.segments_considered == segments
        assert st.segments_opened <= 2, st
    out, st = api_lookup.lookup(c, {"LookupAttributes": [{"AttributeKey": "EventId",
                                                           "AttributeValue": str(uuid.uuid4())}]})
    assert out["Events"] == [] and st.segments_opened <= 2


def test_data_events_are_not_event_history(lk, recs, loaded):
    data = next(r for r in recs if category(r) == "Data" and etime(r) > NOW - timedelta(days=30))
    out = OPERATIONS["LookupEvents"](make_ctx(lk, now=NOW), {"LookupAttributes": [
        {"AttributeKey": "EventId", "AttributeValue": data["eventID"]}]})
    assert out["Events"] == []


def test_narrow_time_range_reads_only_its_segments(lk, recs, loaded):
    start, end = NOW - timedelta(days=10, hours=3), NOW - timedelta(days=10)
    events, stats = all_pages(make_ctx(lk, now=NOW), {"StartTime": start.timestamp(), "EndTime": end.isoformat()})
    assert [e["EventId"] for e in events] == oracle(recs, start=start, end=end)
    assert all(start <= e["EventTime"] <= end for e in events)
    assert stats[0].segments_kept <= 4 and stats[0].segments_opened <= 4


def test_window_is_ninety_days(lk, recs, loaded):
    old = [r for r in recs if etime(r) < NOW - timedelta(days=90) and category(r) == "Management"]
    assert old
    c = make_ctx(lk, now=NOW)
    out = OPERATIONS["LookupEvents"](c, {"LookupAttributes": [{"AttributeKey": "EventId",
                                                               "AttributeValue": old[0]["eventID"]}]})
    assert out["Events"] == []
    out = OPERATIONS["LookupEvents"](c, {"StartTime": NOW - timedelta(days=400),
                                         "EndTime": NOW - timedelta(days=95)})
    assert out["Events"] == []
    # the window is a server setting (e.g. for historical data); the default is CloudTrail's 90 days
    c2 = make_ctx(lk, now=NOW, services={"lookup_window_days": 365})
    out = OPERATIONS["LookupEvents"](c2, {"LookupAttributes": [{"AttributeKey": "EventId",
                                                                "AttributeValue": old[0]["eventID"]}]})
    assert [e["EventId"] for e in out["Events"]] == [old[0]["eventID"]]


def test_insight_category(lk, recs, loaded):
    out = OPERATIONS["LookupEvents"](make_ctx(lk, now=NOW), {"EventCategory": "insight"})
    assert [e["EventId"] for e in out["Events"]] == oracle(recs, cat="Insight")
    assert len(out["Events"]) == 1
    assert json.loads(out["Events"][0]["CloudTrailEvent"])["eventType"] == "AwsCloudTrailInsight"


def test_duplicates_across_stores_appear_once(lk, recs, loaded):
    other = create_store(lk, A, "history-copy")
    other.append(recs[:1500], source="import")
    events, _ = all_pages(make_ctx(lk, now=NOW), {"MaxResults": 50})
    assert [e["EventId"] for e in events] == oracle(recs)


def test_accounts_see_only_their_stores(lk, recs, loaded):
    mine = gen_records(40, seed=99, days=2, accounts=1, end=NOW)
    for r in mine:
        r["eventCategory"], r["managementEvent"] = "Management", True
    create_store(lk, B, "bobs").append(mine, source="import")
    b_events, _ = all_pages(make_ctx(lk, B, now=NOW), {})
    assert [e["EventId"] for e in b_events] == oracle(mine)
    a_events, _ = all_pages(make_ctx(lk, A, now=NOW), {})
    assert not {e["EventId"] for e in a_events} & {r["eventID"] for r in mine}
    # a principal allowed both accounts sees both
    both = Principal("AKIABOTH", f"arn:aws:iam::{ACCT_A}:user/admin", ACCT_A, frozenset({ACCT_A, ACCT_B}))
    all_events, _ = all_pages(make_ctx(lk, both, now=NOW), {})
    assert len(all_events) == len(a_events) + len(b_events)
    # and B cannot page through A's history with A's token
    out = OPERATIONS["LookupEvents"](make_ctx(lk, A, now=NOW), {})
    expect("InvalidNextTokenException", OPERATIONS["LookupEvents"], make_ctx(lk, B, now=NOW),
           {"NextToken": out["NextToken"]})


def test_pending_deletion_stores_are_not_read(lk, recs, loaded):
    loaded.delete()
    assert OPERATIONS["LookupEvents"](make_ctx(lk, now=NOW), {})["Events"] == []


@pytest.mark.parametrize("params,code", [
    ({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "a"},
                           {"AttributeKey": "EventSource", "AttributeValue": "b"}]}, "InvalidLookupAttributesException"),
    ({"LookupAttributes": [{"AttributeKey": "Region", "AttributeValue": "a"}]}, "InvalidLookupAttributesException"),
    ({"LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": ""}]}, "InvalidLookupAttributesException"),
    ({"LookupAttributes": [{"AttributeKey": "ReadOnly", "AttributeValue": "yes"}]}, "InvalidLookupAttributesException"),
    ({"MaxResults": 0}, "InvalidMaxResultsException"),
    ({"MaxResults": 51}, "InvalidMaxResultsException"),
    ({"StartTime": NOW, "EndTime": NOW - timedelta(days=1)}, "InvalidTimeRangeException"),
    ({"StartTime": "yesterday"}, "InvalidTimeRangeException"),
    ({"EventCategory": "management"}, "InvalidEventCategoryException"),
    ({"NextToken": "garbage"}, "InvalidNextTokenException"),
])
def test_errors(lk, loaded, params, code):
    expect(code, OPERATIONS["LookupEvents"], make_ctx(lk, now=NOW), params)


def test_token_is_bound_to_its_filters_and_survives_a_restart(lk, recs, loaded):
    c = make_ctx(lk, now=NOW)
    out = OPERATIONS["LookupEvents"](c, {"MaxResults": 5})
    expect("InvalidNextTokenException", OPERATIONS["LookupEvents"], c,
           {"MaxResults": 5, "NextToken": out["NextToken"],
            "LookupAttributes": [{"AttributeKey": "EventName", "AttributeValue": "RunInstances"}]})
    tampered = out["NextToken"][:-2] + ("00" if not out["NextToken"].endswith("00") else "11")
    expect("InvalidNextTokenException", OPERATIONS["LookupEvents"], c, {"NextToken": tampered})
    api_lookup._KEYS.clear()  # a new server process reads the key the lake keeps
    again = OPERATIONS["LookupEvents"](make_ctx(lake.connect(lk.uri, account_id=ACCT_A), now=NOW),
                                       {"MaxResults": 5, "NextToken": out["NextToken"]})
    assert [e["EventId"] for e in again["Events"]] == oracle(recs)[5:10]


def test_external_data(external, tmp_path):
    """Every real data set in one store: the history is each distinct management event once, newest first,
    and each one round-trips (CloudTrailEvent is the stored record, EventId lookups find it)."""
    lk = lake.connect(str(tmp_path / "ext"), account_id=ACCT_A)
    st = create_store(lk, A, "external")
    recs = [r for rs in external.values() for r in rs]
    st.append(recs, source="import")
    c = make_ctx(lk, now=NOW, services={"lookup_window_days": 365 * 30})
    events, stats = all_pages(c, {"MaxResults": 50})
    got = [(e["EventTime"], e["EventId"]) for e in events if e.get("EventId")]
    want = lk.sql(f'SELECT DISTINCT eventtime, eventid FROM "{st.id}" WHERE eventcategory = \'Management\' '
                  "AND eventid IS NOT NULL ORDER BY eventtime DESC, eventid DESC")
    assert got == list(zip(want["eventtime"].to_list(), want["eventid"].to_list()))
    assert len(got) > 1000
    by_id: dict[str, list[dict]] = {}
    for r in recs:
        if isinstance(r, dict) and isinstance(r.get("eventID"), str):
            by_id.setdefault(r["eventID"], []).append(r)
    events = [e for e in events if e.get("EventId")]
    for e in events:
        rec = json.loads(e["CloudTrailEvent"])
        assert rec in by_id[e["EventId"]]
        assert e.get("EventName") == rec.get("eventName")
        assert e.get("Username") == username(rec)
    copies = {}
    for e in events:
        copies.setdefault(e["EventId"], []).append(e["EventTime"])
    for e in random.Random(5).sample(events, 25):
        out, s = api_lookup.lookup(c, {"LookupAttributes": [{"AttributeKey": "EventId", "AttributeValue": e["EventId"]}]})
        assert [x["EventTime"] for x in out["Events"]] == copies[e["EventId"]]
        assert s.segments_opened <= 2 * len(copies[e["EventId"]]) + 1
    # an assumed-role session shows its session name, as CloudTrail's console does
    roles = [(e, json.loads(e["CloudTrailEvent"])["userIdentity"]) for e in events
             if (json.loads(e["CloudTrailEvent"]).get("userIdentity") or {}).get("type") == "AssumedRole"]
    assert len(roles) > 100
    assert all(e["Username"] == ui["arn"].split("/")[-1] for e, ui in roles if ui.get("arn"))


# ---- end to end: boto3 and the aws CLI against `lake serve` on loopback ----------------------------------

from tests.server_fixture import *  # noqa: E402,F401,F403 - server, cloudtrail_client, aws_run, ...

HOUR_AGO = NOW - timedelta(hours=1)


def _history(server, owner: Principal, name: str, recs: list[dict]):
    st = create_store(server.lake, owner, name)
    assert not st.append(recs, source="import").rejected
    return st


def test_boto3_lookup_events_and_paginator(server, cloudtrail_client, monkeypatch):
    recs = gen_records(700, seed=11, days=10, accounts=2, end=HOUR_AGO)
    st = _history(server, A, "e2e-history", recs)
    client = cloudtrail_client("alice")
    now = datetime.now(timezone.utc)
    window = {"StartTime": now - timedelta(days=20), "EndTime": HOUR_AGO}
    first = client.lookup_events(MaxResults=10, **window)
    assert len(first["Events"]) == 10 and first["NextToken"]
    assert all(isinstance(e["EventTime"], datetime) and e["EventTime"].tzinfo for e in first["Events"])
    pages = list(client.get_paginator("lookup_events").paginate(**window, PaginationConfig={"PageSize": 50}))
    ids = [e["EventId"] for p in pages for e in p["Events"]]
    assert ids == oracle(recs, now=now, start=window["StartTime"], end=HOUR_AGO)
    assert len(pages) > 2 and all(len(p["Events"]) <= 50 for p in pages)
    by_id = {r["eventID"]: r for r in recs}
    for e in pages[1]["Events"]:
        assert json.loads(e["CloudTrailEvent"]) == by_id[e["EventId"]]
        assert e["EventTime"] == etime(by_id[e["EventId"]])
    # an EventId lookup through the server opens at most a couple of segments
    seen: list[api_lookup.LookupStats] = []
    real = api_lookup.lookup

    def spy(ctx, params):
        out, stats = real(ctx, params)
        seen.append(stats)
        return out, stats

    monkeypatch.setattr(api_lookup, "lookup", spy)
    ev = client.lookup_events(LookupAttributes=[{"AttributeKey": "EventId", "AttributeValue": ids[7]}])["Events"]
    assert [e["EventId"] for e in ev] == [ids[7]]
    assert seen[-1].segments_considered >= st.snapshot().segments.num_rows >= 20
    assert seen[-1].segments_opened <= 2
    got = client.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "RunInstances"}],
                               StartTime=now - timedelta(days=3), EndTime=HOUR_AGO)["Events"]
    assert [e["EventId"] for e in got] == oracle(recs, lambda r: r["eventName"] == "RunInstances",
                                                  start=now - timedelta(days=3), end=HOUR_AGO, now=now)[:50]
    assert cloudtrail_client("bob").lookup_events(**window)["Events"] == []  # A's events are not B's
    assert len(cloudtrail_client("admin").lookup_events(MaxResults=5, **window)["Events"]) == 5
    with pytest.raises(client.exceptions.InvalidLookupAttributesException):
        client.lookup_events(LookupAttributes=[{"AttributeKey": "EventName", "AttributeValue": "a"},
                                               {"AttributeKey": "EventSource", "AttributeValue": "b"}])
    with pytest.raises(client.exceptions.InvalidNextTokenException):
        client.lookup_events(NextToken="not-a-token")
    with pytest.raises(client.exceptions.InvalidTimeRangeException):
        client.lookup_events(StartTime=now, EndTime=now - timedelta(days=1))
    with pytest.raises(client.exceptions.InvalidMaxResultsException):
        client.lookup_events(MaxResults=51)


def test_aws_cli_lookup_events(server, aws_run):
    recs = gen_records(400, seed=12, days=3, accounts=1, end=HOUR_AGO)
    _history(server, A, "cli-history", recs)
    now = datetime.now(timezone.utc)
    out = aws_run("alice", "cloudtrail", "lookup-events", "--max-items", "30",
                  "--lookup-attributes", "AttributeKey=ReadOnly,AttributeValue=true",
                  "--end-time", HOUR_AGO.isoformat())
    want = oracle(recs, lambda r: r.get("readOnly") is True, end=HOUR_AGO, now=now)
    assert len(want) > 30 and [e["EventId"] for e in out["Events"]] == want[:30]
    assert out.get("NextToken")  # the CLI's --max-items resume token
    everything = aws_run("alice", "cloudtrail", "lookup-events", "--end-time", HOUR_AGO.isoformat(),
                         "--page-size", "20")
    assert [e["EventId"] for e in everything["Events"]] == oracle(recs, end=HOUR_AGO, now=now)
    assert json.loads(everything["Events"][0]["CloudTrailEvent"])["eventID"] == everything["Events"][0]["EventId"]


def test_external_data_through_the_server(server, cloudtrail_client, external):
    st = create_store(server.lake, A, "external")
    recs = [r for rs in external.values() for r in rs]
    st.append(recs, source="import")
    server.state.services["lookup_window_days"] = 365 * 30  # the real data is years old
    client = cloudtrail_client("alice")
    pages = list(client.get_paginator("lookup_events").paginate(
        EndTime=HOUR_AGO, PaginationConfig={"PageSize": 50}))
    events = [e for p in pages for e in p["Events"] if e.get("EventId")]
    want = server.lake.sql(f'SELECT DISTINCT eventtime, eventid FROM "{st.id}" WHERE eventcategory = '
                           "'Management' AND eventid IS NOT NULL ORDER BY eventtime DESC, eventid DESC")
    assert [(e["EventTime"], e["EventId"]) for e in events] == \
        list(zip(want["eventtime"].to_list(), want["eventid"].to_list()))
    for name in sorted({e["Username"] for e in events if e.get("Username")})[:15]:
        got = [x for p in client.get_paginator("lookup_events").paginate(
            EndTime=HOUR_AGO, LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": name}])
            for x in p["Events"]]
        assert [x["EventId"] for x in got] == [e["EventId"] for e in events if e.get("Username") == name]
