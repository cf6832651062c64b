"""Channels, resource policies and PutAuditEvents (issue 6 point 3).

Two layers: the handlers called directly with an `ApiContext` (fast, every rule and error name), and the same
flows end to end through boto3's `cloudtrail`/`cloudtrail-data` clients and the real `aws` CLI against a
server on loopback (`tests/server_fixture.py`), where botocore checks every response against the model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from datetime import datetime, timedelta, timezone

import pyarrow.compute as pc
import pytest

import lake
from lake import api_channels as api
from lake import channels as ch
from lake.apicore import ApiContext, Principal
from tests.server_fixture import expect

ALICE_ACCT, BOB_ACCT = "111111111111", "222222222222"
ALICE = Principal("AKIAALICE0000000000A", f"arn:aws:iam::{ALICE_ACCT}:user/alice", ALICE_ACCT,
                  frozenset({ALICE_ACCT}))
BOB = Principal("AKIABOB00000000000BB", f"arn:aws:iam::{BOB_ACCT}:user/bob", BOB_ACCT, frozenset({BOB_ACCT}))
ACTIVITY = [{"Name": "integrations", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}]


# ---- helpers ----------------------------------------------------------------------------------------------

def ctx(lk, principal: Principal = ALICE) -> ApiContext:
    return ApiContext(lake=lk, principal=principal, region="us-east-1", request_id=str(uuid.uuid4()))


def event_data(n: int = 0, *, account: str = ALICE_ACCT, **over) -> dict:
    d = {"version": "0.01", "UID": f"uid-{n}", "userIdentity": {"type": "CustomUser", "principalId": f"user-{n}",
                                                                 "details": {"team": "blue"}},
         "eventSource": "app.example.com", "eventName": "DocumentOpened",
         "eventTime": (datetime.now(timezone.utc) - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ"),
         "requestParameters": {"doc": f"d{n}"}, "sourceIPAddress": "192.0.2.7", "recipientAccountId": account}
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def audit_event(n: int = 0, **over) -> dict:
    return {"id": f"e{n}", "eventData": json.dumps(event_data(n, **over))}


@pytest.fixture
def lk(tmp_path):
    return lake.connect(str(tmp_path / "lake"), account_id=ALICE_ACCT)


@pytest.fixture
def store(lk):
    return lk.create_store("integrations", selectors=ACTIVITY)


@pytest.fixture
def channel(lk, store) -> dict:
    return api.create_channel(ctx(lk), {"Name": "app", "Source": "Custom", "Destinations": [
        {"Type": "EVENT_DATA_STORE", "Location": store.arn}]})


def put(lk, channel_arn, events, principal=ALICE, external_id=None) -> dict:
    params = {"channelArn": channel_arn, "auditEvents": events}
    if external_id is not None:
        params["externalId"] = external_id
    return api.put_audit_events(ctx(lk, principal), params)


# ---- channels ---------------------------------------------------------------------------------------------

def test_channel_lifecycle(lk, store):
    out = api.create_channel(ctx(lk), {"Name": "app", "Source": "Custom", "Tags": [{"Key": "team", "Value": "a"}],
                                       "Destinations": [{"Type": "EVENT_DATA_STORE", "Location": store.id}]})
    arn = out["ChannelArn"]
    cid = arn.rsplit("/", 1)[1]
    assert arn == f"arn:aws:cloudtrail:us-east-1:{ALICE_ACCT}:channel/{cid}" and uuid.UUID(cid)
    assert out["Destinations"] == [{"Type": "EVENT_DATA_STORE", "Location": store.arn}]  # id -> full ARN
    assert out["Tags"] == [{"Key": "team", "Value": "a"}]
    for ref in (arn, cid):
        got = api.get_channel(ctx(lk), {"Channel": ref})
        assert (got["Name"], got["Source"], got["ChannelArn"]) == ("app", "Custom", arn)
    assert api.list_channels(ctx(lk), {})["Channels"] == [{"ChannelArn": arn, "Name": "app"}]
    second = lk.create_store("integrations-2", selectors=ACTIVITY)
    upd = api.update_channel(ctx(lk), {"Channel": arn, "Name": "app2", "Destinations": [
        {"Type": "EVENT_DATA_STORE", "Location": store.arn}, {"Type": "EVENT_DATA_STORE", "Location": second.arn}]})
    assert upd["Name"] == "app2" and len(upd["Destinations"]) == 2
    # the old name is free again, the new one is taken
    api.create_channel(ctx(lk), {"Name": "app", "Source": "Custom", "Destinations": [
        {"Type": "EVENT_DATA_STORE", "Location": store.arn}]})
    expect("ChannelAlreadyExistsException", api.create_channel, ctx(lk), {
        "Name": "app2", "Source": "Custom", "Destinations": [{"Type": "EVENT_DATA_STORE", "Location": store.arn}]})
    assert api.delete_channel(ctx(lk), {"Channel": arn}) == {}
    expect("ChannelNotFoundException", api.get_channel, ctx(lk), {"Channel": arn})
    expect("ChannelNotFoundException", api.delete_channel, ctx(lk), {"Channel": arn})
    expect("ChannelNotFoundException", api.update_channel, ctx(lk), {"Channel": arn, "Name": "zzz"})
    assert [c["Name"] for c in api.list_channels(ctx(lk), {})["Channels"]] == ["app"]


def test_create_channel_validation(lk, store):
    mgmt = lk.create_store("management")  # default selectors: management events only
    dest = [{"Type": "EVENT_DATA_STORE", "Location": store.arn}]
    cases = [
        ("InvalidEventDataStoreCategoryException", {"Destinations": [{"Type": "EVENT_DATA_STORE",
                                                                      "Location": mgmt.arn}]}),
        ("EventDataStoreNotFoundException", {"Destinations": [{"Type": "EVENT_DATA_STORE", "Location":
                                             store.arn.replace(store.id, str(uuid.uuid4()))}]}),
        ("EventDataStoreARNInvalidException", {"Destinations": [{"Type": "EVENT_DATA_STORE",
                                                                 "Location": "arn:aws:s3:::bucket"}]}),
        ("InvalidParameterException", {"Destinations": [{"Type": "AWS_SERVICE", "Location": "config"}]}),
        ("InvalidParameterException", {"Destinations": dest * 2}),
        ("InvalidParameterException", {"Name": "x"}),
        ("InvalidSourceException", {"Source": " "}),
    ]
    for code, over in cases:
        expect(code, api.create_channel, ctx(lk), {"Name": "good", "Source": "Custom", "Destinations": dest, **over})
    # a store another account owns is invisible
    expect("EventDataStoreNotFoundException", api.create_channel, ctx(lk, BOB),
           {"Name": "bobs", "Source": "Custom", "Destinations": dest})
    # a store pending deletion is inactive
    doomed = lk.create_store("doomed", selectors=ACTIVITY, termination_protection=False)
    doomed.delete()
    expect("InactiveEventDataStoreException", api.create_channel, ctx(lk), {
        "Name": "good", "Source": "Custom", "Destinations": [{"Type": "EVENT_DATA_STORE", "Location": doomed.arn}]})
    # one channel per partner source; any number of Custom ones
    api.create_channel(ctx(lk), {"Name": "okta-1", "Source": "Okta", "Destinations": dest})
    expect("ChannelAlreadyExistsException", api.create_channel, ctx(lk),
           {"Name": "okta-2", "Source": "Okta", "Destinations": dest})
    for i in range(24):
        api.create_channel(ctx(lk), {"Name": f"custom-{i}", "Source": "Custom", "Destinations": dest})
    expect("ChannelMaxLimitExceededException", api.create_channel, ctx(lk),
           {"Name": "one-too-many", "Source": "Custom", "Destinations": dest})
    assert api.list_channels(ctx(lk), {})["Channels"].__len__() == 25


def test_channels_are_private_to_their_account(lk, channel):
    arn = channel["ChannelArn"]
    expect("ChannelNotFoundException", api.get_channel, ctx(lk, BOB), {"Channel": arn})
    expect("ChannelNotFoundException", api.update_channel, ctx(lk, BOB), {"Channel": arn, "Name": "mine"})
    expect("ChannelNotFoundException", api.delete_channel, ctx(lk, BOB), {"Channel": arn})
    expect("ResourceNotFoundException", api.get_resource_policy, ctx(lk, BOB), {"ResourceArn": arn})
    assert api.list_channels(ctx(lk, BOB), {})["Channels"] == []
    # an ARN naming another region or account for the same id is not the channel
    expect("ChannelNotFoundException", api.get_channel, ctx(lk), {"Channel": arn.replace("us-east-1", "eu-west-1")})
    expect("ChannelARNInvalidException", api.get_channel, ctx(lk), {"Channel": "arn:aws:s3:::nope"})


def test_list_channels_pages(lk, store):
    dest = [{"Type": "EVENT_DATA_STORE", "Location": store.arn}]
    names = [f"ch-{i:02d}" for i in range(7)]
    for n in names:
        api.create_channel(ctx(lk), {"Name": n, "Source": "Custom", "Destinations": dest})
    seen, token = [], None
    while True:
        page = api.list_channels(ctx(lk), {"MaxResults": 3, **({"NextToken": token} if token else {})})
        assert len(page["Channels"]) <= 3
        seen += [c["Name"] for c in page["Channels"]]
        token = page.get("NextToken")
        if not token:
            break
    assert seen == names
    token = api.list_channels(ctx(lk), {"MaxResults": 3})["NextToken"]
    expect("InvalidNextTokenException", api.list_channels, ctx(lk), {"NextToken": token[:-2] + "xx"})
    expect("InvalidNextTokenException", api.list_channels, ctx(lk, BOB), {"NextToken": token})


# ---- resource policies -------------------------------------------------------------------------------------

def policy(channel_arn: str, principals, effect="Allow", condition=None, **over) -> str:
    st = {"Sid": "s", "Effect": effect, "Principal": {"AWS": principals}, "Action": "cloudtrail-data:PutAuditEvents",
          "Resource": channel_arn, **({"Condition": condition} if condition else {})}
    st.update(over)
    return json.dumps({"Version": "2012-10-17", "Statement": [st]})


def test_resource_policy_operations(lk, channel, store):
    arn = channel["ChannelArn"]
    expect("ResourcePolicyNotFoundException", api.get_resource_policy, ctx(lk), {"ResourceArn": arn})
    expect("ResourcePolicyNotFoundException", api.delete_resource_policy, ctx(lk), {"ResourceArn": arn})
    text = policy(arn, [f"arn:aws:iam::{BOB_ACCT}:root"])
    assert api.put_resource_policy(ctx(lk), {"ResourceArn": arn, "ResourcePolicy": text}) == {
        "ResourceArn": arn, "ResourcePolicy": text}
    assert api.get_resource_policy(ctx(lk), {"ResourceArn": arn})["ResourcePolicy"] == text
    assert api.delete_resource_policy(ctx(lk), {"ResourceArn": arn}) == {}
    expect("ResourcePolicyNotFoundException", api.get_resource_policy, ctx(lk), {"ResourceArn": arn})
    bad = [
        "not json", "[]", json.dumps({"Statement": []}), json.dumps({"Version": "2012-10-17"}),
        json.dumps({"Version": "2012-10-17", "Statement": []}),
        policy(arn, [BOB_ACCT], Action="cloudtrail:*"),
        policy(arn, [BOB_ACCT], Resource="arn:aws:cloudtrail:us-east-1:111111111111:channel/other"),
        policy(arn, [BOB_ACCT], Effect="Maybe"),
        policy(arn, []),
        policy(arn, ["bob"]),
        policy(arn, [BOB_ACCT], condition={"NumericEquals": {"cloudtrail:ExternalId": "1"}}),
        policy(arn, [BOB_ACCT], condition={"StringEquals": {"aws:SourceIp": "1.2.3.4"}}),
        policy(arn, [BOB_ACCT], NotAction="x"),
        json.dumps({"Version": "2012-10-17", "Statement": [json.loads(policy(arn, [BOB_ACCT]))["Statement"][0]] * 21}),
        policy(arn, [f"{100000000000 + i}" for i in range(51)]),
    ]
    for text in bad:
        expect("ResourcePolicyNotValidException", api.put_resource_policy, ctx(lk),
               {"ResourceArn": arn, "ResourcePolicy": text})
    expect("ResourceTypeNotSupportedException", api.put_resource_policy, ctx(lk),
           {"ResourceArn": store.arn, "ResourcePolicy": policy(store.arn, [BOB_ACCT])})
    expect("ResourceARNNotValidException", api.get_resource_policy, ctx(lk), {"ResourceArn": "channel/abc"})
    expect("ResourceNotFoundException", api.get_resource_policy, ctx(lk),
           {"ResourceArn": arn.rsplit("/", 1)[0] + "/" + str(uuid.uuid4())})


def test_resource_policy_allows_and_denies_other_accounts(lk, channel):
    arn = channel["ChannelArn"]
    # without a policy only the owner may put
    expect("ChannelInsufficientPermission", put, lk, arn, [audit_event(1)], BOB)
    assert len(put(lk, arn, [audit_event(1)])["successful"]) == 1
    api.put_resource_policy(ctx(lk), {"ResourceArn": arn, "ResourcePolicy": policy(
        arn, [f"arn:aws:iam::{BOB_ACCT}:root"], condition={"StringEquals": {"cloudtrail:ExternalId": "ext-42"}})})
    expect("ChannelInsufficientPermission", put, lk, arn, [audit_event(2)], BOB)              # no external id
    expect("ChannelInsufficientPermission", put, lk, arn, [audit_event(2)], BOB, "wrong-1")   # wrong one
    out = put(lk, arn, [audit_event(2)], BOB, "ext-42")
    assert [s["id"] for s in out["successful"]] == ["e2"] and out["failed"] == []
    # events name the channel owner as recipient even when another account sends them
    out = put(lk, arn, [audit_event(3, account=BOB_ACCT)], BOB, "ext-42")
    assert out["failed"][0]["errorCode"] == "InvalidRecipient"
    # a principal ARN rather than the whole account; another user of that account is not allowed
    carol = Principal("AKIACAROL00000000000", f"arn:aws:iam::{BOB_ACCT}:user/carol", BOB_ACCT,
                      frozenset({BOB_ACCT}))
    api.put_resource_policy(ctx(lk), {"ResourceArn": arn, "ResourcePolicy": policy(arn, [BOB.arn])})
    assert put(lk, arn, [audit_event(4)], BOB)["successful"]
    expect("ChannelInsufficientPermission", put, lk, arn, [audit_event(5)], carol)
    # an explicit Deny applies to the owner too
    api.put_resource_policy(ctx(lk), {"ResourceArn": arn, "ResourcePolicy": policy(arn, "*", effect="Deny")})
    expect("ChannelInsufficientPermission", put, lk, arn, [audit_event(6)], ALICE)
    api.delete_resource_policy(ctx(lk), {"ResourceArn": arn})
    assert put(lk, arn, [audit_event(7)], ALICE)["successful"]
    expect("ChannelInsufficientPermission", put, lk, arn, [audit_event(8)], BOB)


# ---- PutAuditEvents -------------------------------------------------------------------------------------------

def test_put_audit_events_stores_activity_records(lk, channel, store):
    arn = channel["ChannelArn"]
    events = [audit_event(i) for i in range(5)]
    events[0]["eventDataChecksum"] = base64.b64encode(hashlib.sha256(events[0]["eventData"].encode()).digest()).decode()
    events[1]["eventDataChecksum"] = hashlib.sha256(events[1]["eventData"].encode()).hexdigest()
    out = put(lk, arn, events)
    assert out["failed"] == []
    assert [s["id"] for s in out["successful"]] == [f"e{i}" for i in range(5)]
    ids = [s["eventID"] for s in out["successful"]]
    assert len(set(ids)) == 5 and all(uuid.UUID(i) for i in ids)
    df = lk.sql(f"SELECT eventid, eventcategory, eventtype, recipientaccountid, awsregion FROM integrations "
                f"ORDER BY eventid")
    assert sorted(df["eventid"].to_list()) == sorted(ids)
    assert set(df["eventcategory"]) == {"ActivityAuditLog"} and set(df["eventtype"]) == {"ActivityLog"}
    assert set(df["recipientaccountid"]) == {ALICE_ACCT} and set(df["awsregion"]) == {"us-east-1"}
    one = lk.sql(f"SELECT count(*) AS n FROM integrations WHERE eventid = '{ids[3]}'")
    assert one["n"].to_list() == [1]
    table = store.to_arrow()
    rec = json.loads(table.filter(pc.equal(table["eventid"], ids[2]))["eventjson"][0].as_py())
    assert rec["eventData"] == event_data(2) | {"eventTime": rec["eventData"]["eventTime"]}
    assert rec["metadata"]["channelARN"] == arn and rec["metadata"]["ingestionTime"].endswith("Z")
    assert rec["eventTime"] == rec["eventData"]["eventTime"]
    assert (rec["eventCategory"], rec["eventType"], rec["eventVersion"]) == ("ActivityAuditLog", "ActivityLog",
                                                                             ch.ACTIVITY_EVENT_VERSION)
    status = api.get_channel(ctx(lk), {"Channel": arn})["IngestionStatus"]
    assert status["LatestIngestionSuccessEventID"] == ids[-1] and status["LatestIngestionSuccessTime"] > 0


def test_put_audit_events_per_event_failures(lk, channel, store):
    arn = channel["ChannelArn"]
    good = audit_event(0)
    big = "x" * (101 * 1024)
    cases = {
        "bad-json": ({"eventData": "{not json"}, "InvalidData"),
        "not-object": ({"eventData": "[1, 2]"}, "InvalidData"),
        "checksum": ({"eventData": good["eventData"], "eventDataChecksum": base64.b64encode(b"0" * 32).decode()},
                     "InvalidChecksum"),
        "missing": ({"eventData": json.dumps(event_data(eventName=None))}, "FieldNotFound"),
        "missing-principal": ({"eventData": json.dumps(event_data(userIdentity={"type": "t"}))}, "FieldNotFound"),
        "wrong-type": ({"eventData": json.dumps(event_data(eventName=5))}, "InvalidData"),
        "unknown-field": ({"eventData": json.dumps(event_data(colour="red"))}, "InvalidData"),
        "long-name": ({"eventData": json.dumps(event_data(eventName="n" * 1025))}, "FieldTooLong"),
        "big-params": ({"eventData": json.dumps(event_data(requestParameters={"b": big}))}, "FieldTooLong"),
        "big-event": ({"eventData": json.dumps(event_data(requestParameters={"b": "y" * 90_000},
                                                          responseElements={"b": "z" * 90_000},
                                                          additionalEventData={"b": "w" * 25_000},
                                                          userIdentity={"type": "t", "principalId": "p",
                                                                        "details": {"b": "v" * 80_000}}))},
                      "FieldTooLong"),
        "recipient": ({"eventData": json.dumps(event_data(account=BOB_ACCT))}, "InvalidRecipient"),
        "time": ({"eventData": json.dumps(event_data(eventTime="yesterday"))}, "InvalidData"),
        "too-old": ({"eventData": json.dumps(event_data(eventTime="2001-01-01T00:00:00Z"))}, "InvalidData"),
        "ip": ({"eventData": json.dumps(event_data(sourceIPAddress="not-an-ip"))}, "InvalidData"),
    }
    events = [{"id": "ok-1", **{k: v for k, v in good.items() if k != "id"}}]
    events += [{"id": k, **v} for k, (v, _) in cases.items()]
    out = put(lk, arn, events)
    assert [s["id"] for s in out["successful"]] == ["ok-1"]
    got = {f["id"]: f["errorCode"] for f in out["failed"]}
    assert got == {k: code for k, (_, code) in cases.items()}
    assert all(0 < len(f["errorMessage"]) <= 1024 and "\n" not in f["errorMessage"] for f in out["failed"])
    assert store.snapshot().rows == 1
    assert api.get_channel(ctx(lk), {"Channel": arn})["IngestionStatus"]["LatestIngestionErrorCode"]


def test_put_audit_events_request_errors(lk, channel, store):
    arn = channel["ChannelArn"]
    expect("DuplicatedAuditEventId", put, lk, arn, [audit_event(1), audit_event(2), audit_event(1)])
    expect("ValidationException", put, lk, arn, [audit_event(i) for i in range(101)])
    expect("ValidationException", put, lk, arn, [])
    expect("ValidationException", put, lk, arn, [{"id": "bad id!", "eventData": "{}"}])
    huge = [{"id": f"h{i}", "eventData": json.dumps(event_data(i, requestParameters={"b": "q" * 60_000}))}
            for i in range(20)]
    e = expect("ValidationException", put, lk, arn, huge)
    assert "1 MB" in e.message
    expect("ChannelNotFound", put, lk, arn.rsplit("/", 1)[0] + "/" + str(uuid.uuid4()), [audit_event(1)])
    expect("InvalidChannelARN", put, lk, "arn:aws:s3:::bucket", [audit_event(1)])
    assert store.snapshot().rows == 0
    # the channel id alone works too
    assert put(lk, arn.rsplit("/", 1)[1], [audit_event(1)])["successful"]


def test_put_audit_events_every_destination_and_inactive_ones(lk, store):
    other = lk.create_store("integrations-b", selectors=ACTIVITY, termination_protection=False)
    arn = api.create_channel(ctx(lk), {"Name": "two", "Source": "Custom", "Destinations": [
        {"Type": "EVENT_DATA_STORE", "Location": store.arn},
        {"Type": "EVENT_DATA_STORE", "Location": other.arn}]})["ChannelArn"]
    ids = {s["eventID"] for s in put(lk, arn, [audit_event(i) for i in range(3)])["successful"]}
    for st in (store, other):
        assert set(st.to_arrow()["eventid"].to_pylist()) == ids
    other.delete()  # pending deletion: skipped, the other destination still receives
    assert len(put(lk, arn, [audit_event(9)])["successful"]) == 1
    assert store.snapshot().rows == 4
    store.update(termination_protection=False)
    store.delete()
    out = put(lk, arn, [audit_event(10)])
    assert out["successful"] == [] and out["failed"][0]["errorCode"] == "InternalFailure"


def test_concurrent_puts_store_each_acknowledged_event_once(lk, channel, store):
    arn = channel["ChannelArn"]
    acked: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            for r in range(6):
                out = put(lk, arn, [audit_event(i) | {"id": f"c{k}-{r}-{i}"} for i in range(25)])
                assert out["failed"] == []
                with lock:
                    acked.extend(s["eventID"] for s in out["successful"])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(acked) == 8 * 6 * 25 == len(set(acked))
    stored = lk.sql("SELECT eventid FROM integrations")["eventid"].to_list()
    assert sorted(stored) == sorted(acked)
    # group commit: far fewer commits than requests
    assert store.snapshot().version < 8 * 6


def test_channel_catalog_survives_racing_updates(lk, channel, store):
    """Two catalog writers updating the same channel: both changes land (create-only versions)."""
    arn = channel["ChannelArn"]
    cat = ch.ChannelCatalog(lk)
    text = policy(arn, [BOB_ACCT])
    barrier = threading.Barrier(2)

    def rename():
        barrier.wait()
        cat.update(arn, name="renamed")

    def set_policy():
        barrier.wait()
        cat.put_policy(arn, text)

    ts = [threading.Thread(target=rename), threading.Thread(target=set_policy)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    got = cat.get(arn)
    assert got.name == "renamed" and got.policy == text


def test_checksum_forms():
    data = '{"a": 1}'
    d = hashlib.sha256(data.encode()).digest()
    assert ch.checksum_matches(data, base64.b64encode(d).decode())
    assert ch.checksum_matches(data, d.hex().upper())
    assert not ch.checksum_matches(data, base64.b64encode(d[:-1] + b"x").decode())
    assert not ch.checksum_matches(data, "%%%")


# ---- end to end: boto3 and the AWS CLI against a server on loopback ------------------------------------------

from tests.server_fixture import *  # noqa: E402,F401,F403 - server, cloudtrail_client, data_client, aws_cli, aws_run
from tests.server_fixture import ACCOUNT_A, ACCOUNT_B, audit_events  # noqa: E402


def _code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def _e2e_event(n: int, account: str = ACCOUNT_A, **over) -> dict:
    return {"id": f"e{n}", "eventData": json.dumps(event_data(n, account=account, **over))}


@pytest.fixture
def wired(server, cloudtrail_client):
    """An ActivityAuditLog store made through the API and a channel to it, both owned by alice's account."""
    ct = cloudtrail_client("alice")
    store_arn = ct.create_event_data_store(Name="integrations", AdvancedEventSelectors=ACTIVITY,
                                           TerminationProtectionEnabled=False)["EventDataStoreArn"]
    arn = ct.create_channel(Name="app", Source="Custom", Tags=[{"Key": "team", "Value": "blue"}],
                            Destinations=[{"Type": "EVENT_DATA_STORE", "Location": store_arn}])["ChannelArn"]
    return ct, store_arn, arn


def test_e2e_channel_operations(server, cloudtrail_client, wired):
    from botocore.exceptions import ClientError

    ct, store_arn, arn = wired
    assert arn.startswith(f"arn:aws:cloudtrail:us-east-1:{ACCOUNT_A}:channel/")
    got = ct.get_channel(Channel=arn)
    assert (got["Name"], got["Source"], got["Destinations"]) == (
        "app", "Custom", [{"Type": "EVENT_DATA_STORE", "Location": store_arn}])
    assert ct.list_tags(ResourceIdList=[arn])["ResourceTagList"][0]["TagsList"] == [{"Key": "team", "Value": "blue"}]
    for i in range(4):
        ct.create_channel(Name=f"more-{i}", Source="Custom",
                          Destinations=[{"Type": "EVENT_DATA_STORE", "Location": store_arn}])
    # botocore has no paginator for ListChannels (it has none in its paginator model): page by hand
    assert not ct.can_paginate("list_channels")
    pages, kw = [], {"MaxResults": 2}
    while True:
        pages.append(ct.list_channels(**kw))
        if "NextToken" not in pages[-1]:
            break
        kw["NextToken"] = pages[-1]["NextToken"]
    assert len(pages) == 3
    assert [c["Name"] for p in pages for c in p["Channels"]] == ["app"] + [f"more-{i}" for i in range(4)]
    with pytest.raises(ClientError) as e:
        ct.list_channels(NextToken="not-a-token")
    assert _code(e) == "InvalidNextTokenException"
    assert ct.update_channel(Channel=arn, Name="app-renamed")["Name"] == "app-renamed"
    with pytest.raises(ClientError) as e:
        ct.create_channel(Name="more-0", Source="Custom",
                          Destinations=[{"Type": "EVENT_DATA_STORE", "Location": store_arn}])
    assert _code(e) == "ChannelAlreadyExistsException"
    mgmt = ct.create_event_data_store(Name="mgmt")["EventDataStoreArn"]
    with pytest.raises(ClientError) as e:
        ct.create_channel(Name="wrong", Source="Custom", Destinations=[{"Type": "EVENT_DATA_STORE", "Location": mgmt}])
    assert _code(e) == "InvalidEventDataStoreCategoryException"
    with pytest.raises(ClientError) as e:
        cloudtrail_client("bob").get_channel(Channel=arn)
    assert _code(e) == "ChannelNotFoundException"
    assert cloudtrail_client("bob").list_channels()["Channels"] == []
    assert len(cloudtrail_client("admin").list_channels()["Channels"]) == 5  # admin sees account A
    ct.delete_channel(Channel=arn)
    with pytest.raises(ClientError) as e:
        ct.get_channel(Channel=arn)
    assert _code(e) == "ChannelNotFoundException"
    # mutating channel calls are audited as management events
    names = [r["eventName"] for r in audit_events(server)]
    assert {"CreateChannel", "UpdateChannel", "DeleteChannel"} <= set(names)


def test_e2e_put_audit_events(server, cloudtrail_client, data_client, wired):
    from botocore.exceptions import ClientError

    ct, store_arn, arn = wired
    dc = data_client("alice")
    good = [_e2e_event(i) for i in range(3)]
    good[0]["eventDataChecksum"] = base64.b64encode(hashlib.sha256(good[0]["eventData"].encode()).digest()).decode()
    bad = [{"id": "json", "eventData": "{oops"},
           {"id": "sum", "eventData": good[1]["eventData"], "eventDataChecksum": "AAAA"},
           {"id": "big", "eventData": json.dumps(event_data(9, requestParameters={"b": "x" * 110_000}))}]
    out = dc.put_audit_events(channelArn=arn, auditEvents=good + bad)
    assert [s["id"] for s in out["successful"]] == ["e0", "e1", "e2"]
    assert {f["id"]: f["errorCode"] for f in out["failed"]} == {"json": "InvalidData", "sum": "InvalidChecksum",
                                                                 "big": "FieldTooLong"}
    ids = [s["eventID"] for s in out["successful"]]
    df = server.lake.sql("SELECT eventid, eventcategory FROM integrations")
    assert sorted(df["eventid"].to_list()) == sorted(ids) and set(df["eventcategory"]) == {"ActivityAuditLog"}
    # whole-request errors, with the model's exception names
    with pytest.raises(ClientError) as e:
        dc.put_audit_events(channelArn=arn, auditEvents=[_e2e_event(1), _e2e_event(1)])
    assert _code(e) == "DuplicatedAuditEventId"
    with pytest.raises(ClientError) as e:
        dc.put_audit_events(channelArn=arn.rsplit("/", 1)[0] + "/" + str(uuid.uuid4()), auditEvents=good)
    assert _code(e) == "ChannelNotFound"
    with pytest.raises(ClientError) as e:  # botocore checks no list maximum: the server refuses 101 events
        dc.put_audit_events(channelArn=arn, auditEvents=[_e2e_event(i) for i in range(101)])
    assert _code(e) == "ValidationException"
    huge = [{"id": f"h{i}", "eventData": json.dumps(event_data(i, requestParameters={"b": "q" * 60_000}))}
            for i in range(20)]
    with pytest.raises(ClientError) as e:
        dc.put_audit_events(channelArn=arn, auditEvents=huge)
    assert _code(e) == "ValidationException" and e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    status = ct.get_channel(Channel=arn)["IngestionStatus"]
    assert status["LatestIngestionSuccessEventID"] == ids[-1]
    assert isinstance(status["LatestIngestionSuccessTime"], datetime)
    # PutAuditEvents is audited as a data event on the channel
    put_events = [r for r in audit_events(server) if r["eventName"] == "PutAuditEvents"]
    assert {r["eventCategory"] for r in put_events} == {"Data"}
    ok = [r for r in put_events if "errorCode" not in r]
    assert len(ok) == 1 and ok[0]["resources"][0]["ARN"] == arn
    assert {r["errorCode"] for r in put_events if "errorCode" in r} == {"DuplicatedAuditEventId", "ChannelNotFound",
                                                                        "ValidationException"}


def test_e2e_resource_policy_cross_account(cloudtrail_client, data_client, wired):
    from botocore.exceptions import ClientError

    ct, store_arn, arn = wired
    bob = data_client("bob")
    with pytest.raises(ClientError) as e:
        bob.put_audit_events(channelArn=arn, auditEvents=[_e2e_event(1)])
    assert _code(e) == "ChannelInsufficientPermission"
    with pytest.raises(ClientError) as e:
        ct.get_resource_policy(ResourceArn=arn)
    assert _code(e) == "ResourcePolicyNotFoundException"
    with pytest.raises(ClientError) as e:
        ct.put_resource_policy(ResourceArn=arn, ResourcePolicy='{"Statement": "nope"}')
    assert _code(e) == "ResourcePolicyNotValidException"
    text = policy(arn, [f"arn:aws:iam::{ACCOUNT_B}:root"],
                  condition={"StringEquals": {"cloudtrail:ExternalId": "partner-7"}})
    assert ct.put_resource_policy(ResourceArn=arn, ResourcePolicy=text)["ResourcePolicy"] == text
    assert ct.get_resource_policy(ResourceArn=arn)["ResourcePolicy"] == text
    with pytest.raises(ClientError) as e:
        bob.put_audit_events(channelArn=arn, auditEvents=[_e2e_event(1)])
    assert _code(e) == "ChannelInsufficientPermission"
    out = bob.put_audit_events(channelArn=arn, externalId="partner-7", auditEvents=[_e2e_event(1)])
    assert [s["id"] for s in out["successful"]] == ["e1"]
    with pytest.raises(ClientError) as e:  # bob may put, but the channel stays invisible to his account
        cloudtrail_client("bob").get_channel(Channel=arn)
    assert _code(e) == "ChannelNotFoundException"
    ct.delete_resource_policy(ResourceArn=arn)
    with pytest.raises(ClientError) as e:
        bob.put_audit_events(channelArn=arn, externalId="partner-7", auditEvents=[_e2e_event(2)])
    assert _code(e) == "ChannelInsufficientPermission"


def test_e2e_aws_cli_put_audit_events(server, aws_run, wired):
    ct, store_arn, arn = wired
    payload = json.dumps([_e2e_event(i) for i in range(3)])
    out = aws_run("alice", "cloudtrail-data", "put-audit-events", "--channel-arn", arn, "--audit-events", payload)
    assert [s["id"] for s in out["successful"]] == ["e0", "e1", "e2"] and out["failed"] == []
    got = aws_run("alice", "cloudtrail", "get-channel", "--channel", arn)
    assert got["Name"] == "app"
    listed = aws_run("alice", "cloudtrail", "list-channels")
    assert [c["ChannelArn"] for c in listed["Channels"]] == [arn]
    ids = sorted(s["eventID"] for s in out["successful"])
    assert sorted(server.lake.sql("SELECT eventid FROM integrations")["eventid"].to_list()) == ids
    proc = aws_run("bob", "cloudtrail-data", "put-audit-events", "--channel-arn", arn, "--audit-events", payload,
                   check=False)
    assert proc.returncode != 0 and "ChannelInsufficientPermission" in proc.stderr


def test_load_smoke(tmp_path, capsys):
    """The load benchmark in its 5-second smoke mode: every acknowledged event is stored exactly once."""
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    if str(repo) not in sys.path:
        sys.path.insert(0, str(repo))
    from benchmarks import putaudit_load

    fig = putaudit_load.main(["--seconds", "5", "--clients", "8", "--batch", "20", "--workdir", str(tmp_path),
                              "--json", str(tmp_path / "fig.json")])
    assert json.loads((tmp_path / "fig.json").read_text()) == fig
    assert fig["events_acknowledged"] > 0 and fig["missing"] == 0 and fig["stored_more_than_once"] == 0
    assert fig["request_errors"] == 0 and fig["events_failed"] == 0
    assert fig["latency_ms"]["p99"] >= fig["latency_ms"]["p50"] > 0


def test_event_time_forms_are_stored_in_utc(lk, channel, store):
    base = (datetime.now(timezone.utc) - timedelta(hours=1)).replace(microsecond=0)
    plus2 = base.astimezone(timezone(timedelta(hours=2)))
    forms = {"canonical": base.strftime("%Y-%m-%dT%H:%M:%SZ"), "fraction": base.strftime("%Y-%m-%dT%H:%M:%S.250Z"),
             "offset": plus2.isoformat(), "space": base.strftime("%Y-%m-%d %H:%M:%S"),
             "bad-day": base.strftime("%Y-02-30T%H:%M:%SZ")}
    out = put(lk, channel["ChannelArn"], [{"id": k, "eventData": json.dumps(event_data(eventTime=v))}
                                          for k, v in forms.items()])
    assert [f["id"] for f in out["failed"]] == ["bad-day"]
    recs = [json.loads(x) for x in store.to_arrow()["eventjson"].to_pylist()]
    assert {r["eventTime"] for r in recs} == {base.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert sorted(r["eventData"]["eventTime"] for r in recs) == sorted(v for k, v in forms.items() if k != "bad-day")


def test_leftover_name_claims_are_taken_over(lk, store):
    """A crash can leave a name claim behind: after a delete or rename that did not release it, or before a
    creation wrote its channel. Such claims do not block the name (the last only once it is a minute old)."""
    import os
    import time

    cat = ch.ChannelCatalog(lk)
    dest = [{"Type": "EVENT_DATA_STORE", "Location": store.arn}]
    first = cat.create(name="app", source="Okta", destinations=dest, owner=ALICE_ACCT, region="us-east-1")
    cat._change(first.arn, lambda doc: {"ChannelId": doc["ChannelId"], "Deleted": True})  # delete, no release
    again = cat.create(name="app", source="Okta", destinations=dest, owner=ALICE_ACCT, region="us-east-1")
    cat._change(again.arn, lambda doc: {**doc, "Name": "renamed"})  # rename, old name not released
    assert cat.create(name="app", source="Custom", destinations=dest, owner=ALICE_ACCT, region="us-east-1")
    claim = cat._name_claim(ALICE_ACCT, "ghost")
    assert lk.storage.create(claim, str(uuid.uuid4()).encode())  # a creation that died before its channel
    with pytest.raises(ch.ChannelExists):
        cat.create(name="ghost", source="Custom", destinations=dest, owner=ALICE_ACCT, region="us-east-1")
    old = time.time() - 120
    os.utime(lk.storage.full(claim), (old, old))
    assert cat.create(name="ghost", source="Custom", destinations=dest, owner=ALICE_ACCT, region="us-east-1")
