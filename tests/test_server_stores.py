"""Event data store and tag operations of `lake serve`, driven through boto3 (botocore parses every response
with the service model) and the real AWS CLI."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("boto3")

from botocore.exceptions import ClientError  # noqa: E402

from lake.api_tags import MAX_TAGS, TAG_RESOURCES, tags_for  # noqa: E402
from lake.apicore import ApiError  # noqa: E402
from tests.server_fixture import *  # noqa: E402,F401,F403
from tests.server_fixture import (ACCOUNT_A, ACCOUNT_B, AUDIT_STORE, PRINCIPALS, REGION,  # noqa: E402
                                  audit_events)

ACTIVITY_SELECTORS = [{"Name": "external", "FieldSelectors": [{"Field": "eventCategory",
                                                               "Equals": ["ActivityAuditLog"]}]}]


def store_paginator(client):
    """botocore ships no paginator for ListEventDataStores (its model has NextToken/MaxResults but no
    paginators-1 entry); this is the one it would have, run by botocore's own Paginator machinery."""
    from botocore.paginate import Paginator

    config = {"input_token": "NextToken", "output_token": "NextToken", "limit_key": "MaxResults",
              "result_key": "EventDataStores"}
    return Paginator(client.list_event_data_stores, config, client.meta.service_model.operation_model(
        "ListEventDataStores"))


def names(client) -> list[str]:
    return [s["Name"] for s in client.list_event_data_stores()["EventDataStores"] if s["Name"] != AUDIT_STORE]


def test_store_lifecycle(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    created = c.create_event_data_store(Name="orders", RetentionPeriod=90, MultiRegionEnabled=False,
                                        TagsList=[{"Key": "env", "Value": "test"}])
    arn = created["EventDataStoreArn"]
    assert arn.startswith(f"arn:aws:cloudtrail:{REGION}:{ACCOUNT_A}:eventdatastore/")
    assert created["Name"] == "orders" and created["Status"] == "ENABLED"
    assert created["RetentionPeriod"] == 90 and created["MultiRegionEnabled"] is False
    assert created["TerminationProtectionEnabled"] is True and created["OrganizationEnabled"] is False
    assert created["BillingMode"] == "EXTENDABLE_RETENTION_PRICING"
    assert created["TagsList"] == [{"Key": "env", "Value": "test"}]
    assert created["AdvancedEventSelectors"][0]["FieldSelectors"] == [{"Field": "eventCategory",
                                                                       "Equals": ["Management"]}]
    assert isinstance(created["CreatedTimestamp"], datetime) and created["CreatedTimestamp"] >= before

    store_id = arn.rsplit("/", 1)[1]
    for ref in (arn, store_id):
        got = c.get_event_data_store(EventDataStore=ref)
        assert got["EventDataStoreArn"] == arn and got["Name"] == "orders" and got["RetentionPeriod"] == 90
    assert c.list_event_data_stores()["EventDataStores"][-1] == {"EventDataStoreArn": arn, "Name": "orders"}

    upd = c.update_event_data_store(EventDataStore=arn, Name="orders-v2", RetentionPeriod=120,
                                    TerminationProtectionEnabled=False)
    assert upd["Name"] == "orders-v2" and upd["RetentionPeriod"] == 120
    assert upd["TerminationProtectionEnabled"] is False and upd["UpdatedTimestamp"] >= upd["CreatedTimestamp"]
    assert server.lake.store("orders-v2").id == store_id

    c.stop_event_data_store_ingestion(EventDataStore=arn)
    assert c.get_event_data_store(EventDataStore=arn)["Status"] == "STOPPED_INGESTION"
    with pytest.raises(c.exceptions.InvalidEventDataStoreStatusException):
        c.stop_event_data_store_ingestion(EventDataStore=arn)
    c.start_event_data_store_ingestion(EventDataStore=arn)
    assert c.get_event_data_store(EventDataStore=arn)["Status"] == "ENABLED"
    with pytest.raises(c.exceptions.InvalidEventDataStoreStatusException):
        c.start_event_data_store_ingestion(EventDataStore=arn)

    with pytest.raises(c.exceptions.InvalidEventDataStoreStatusException):
        c.restore_event_data_store(EventDataStore=arn)
    c.delete_event_data_store(EventDataStore=arn)
    assert c.get_event_data_store(EventDataStore=arn)["Status"] == "PENDING_DELETION"
    assert "orders-v2" in names(c)  # still listed while restorable
    with pytest.raises(c.exceptions.InactiveEventDataStoreException):
        c.delete_event_data_store(EventDataStore=arn)
    with pytest.raises(c.exceptions.InactiveEventDataStoreException):
        c.update_event_data_store(EventDataStore=arn, RetentionPeriod=30)
    with pytest.raises(c.exceptions.InvalidEventDataStoreStatusException):
        c.start_event_data_store_ingestion(EventDataStore=arn)
    restored = c.restore_event_data_store(EventDataStore=arn)
    assert restored["Status"] == "ENABLED" and restored["Name"] == "orders-v2"


def test_create_errors(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    c.create_event_data_store(Name="dup")
    with pytest.raises(c.exceptions.EventDataStoreAlreadyExistsException):
        c.create_event_data_store(Name="dup")
    with pytest.raises(c.exceptions.InvalidParameterException) as e:
        c.create_event_data_store(Name="fixed", BillingMode="FIXED_RETENTION_PRICING", RetentionPeriod=3000)
    assert "2557" in str(e.value)
    with pytest.raises(c.exceptions.InvalidEventSelectorsException):
        c.create_event_data_store(Name="badsel", AdvancedEventSelectors=[
            {"FieldSelectors": [{"Field": "noSuchField", "Equals": ["x"]}]}])
    with pytest.raises(c.exceptions.InvalidTagParameterException):
        c.create_event_data_store(Name="badtag", TagsList=[{"Key": "aws:reserved", "Value": "x"}])
    with pytest.raises(c.exceptions.InvalidTagParameterException):
        c.create_event_data_store(Name="duptag", TagsList=[{"Key": "k", "Value": "1"}, {"Key": "k", "Value": "2"}])
    assert names(c) == ["dup"]


def test_update_errors(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    arn = c.create_event_data_store(Name="upd-1")["EventDataStoreArn"]
    c.create_event_data_store(Name="upd-2")
    with pytest.raises(c.exceptions.EventDataStoreAlreadyExistsException):
        c.update_event_data_store(EventDataStore=arn, Name="upd-2")
    with pytest.raises(c.exceptions.InvalidParameterException):
        c.update_event_data_store(EventDataStore=arn)  # nothing to change
    with pytest.raises(c.exceptions.InvalidEventSelectorsException):
        c.update_event_data_store(EventDataStore=arn, AdvancedEventSelectors=[
            {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Nope"]}]}])
    sel = [{"Name": "writes", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                                                 {"Field": "readOnly", "Equals": ["false"]}]}]
    assert c.update_event_data_store(EventDataStore=arn, AdvancedEventSelectors=sel)["AdvancedEventSelectors"] == sel


def test_not_found_and_invalid_arn(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    missing = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT_A}:eventdatastore/00000000-0000-0000-0000-000000000000"
    for ref in (missing, "00000000-0000-0000-0000-000000000000"):
        with pytest.raises(c.exceptions.EventDataStoreNotFoundException):
            c.get_event_data_store(EventDataStore=ref)
    with pytest.raises(c.exceptions.EventDataStoreARNInvalidException):
        c.get_event_data_store(EventDataStore="arn:aws:s3:::bucket/key")
    for op in (c.update_event_data_store, c.delete_event_data_store, c.restore_event_data_store,
               c.start_event_data_store_ingestion, c.stop_event_data_store_ingestion):
        kwargs = {"EventDataStore": missing}
        if op == c.update_event_data_store:
            kwargs["RetentionPeriod"] = 30
        with pytest.raises(c.exceptions.EventDataStoreNotFoundException):
            op(**kwargs)


def test_ingestion_needs_a_cloudtrail_store(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    arn = c.create_event_data_store(Name="external-events",
                                    AdvancedEventSelectors=ACTIVITY_SELECTORS)["EventDataStoreArn"]
    with pytest.raises(c.exceptions.InvalidEventDataStoreCategoryException):
        c.stop_event_data_store_ingestion(EventDataStore=arn)


def test_create_stopped(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    out = c.create_event_data_store(Name="later", StartIngestion=False)
    assert out["Status"] == "STOPPED_INGESTION"


def test_list_pagination(server, cloudtrail_client):
    c = cloudtrail_client("bob")
    want = [f"page-store-{i}" for i in range(7)]
    for n in want:
        c.create_event_data_store(Name=n)
    pages = list(store_paginator(c).paginate(PaginationConfig={"PageSize": 3}))
    assert [len(p["EventDataStores"]) for p in pages] == [3, 3, 1]
    assert [s["Name"] for p in pages for s in p["EventDataStores"]] == want
    assert "NextToken" not in pages[-1]
    first = c.list_event_data_stores(MaxResults=5)
    rest = c.list_event_data_stores(MaxResults=5, NextToken=first["NextToken"])
    assert [s["Name"] for s in first["EventDataStores"] + rest["EventDataStores"]] == want
    limited = store_paginator(c).paginate(PaginationConfig={"MaxItems": 4, "PageSize": 3}).build_full_result()
    assert [s["Name"] for s in limited["EventDataStores"]] == want[:4]
    resumed = store_paginator(c).paginate(PaginationConfig={"PageSize": 3, "StartingToken": limited["NextToken"]})
    assert [s["Name"] for s in resumed.build_full_result()["EventDataStores"]] == want[4:]
    with pytest.raises(c.exceptions.InvalidNextTokenException):
        c.list_event_data_stores(NextToken="this-is-not-a-token")


def test_account_scoping(server, cloudtrail_client):
    a, b, admin = cloudtrail_client("alice"), cloudtrail_client("bob"), cloudtrail_client("admin")
    arn_a = a.create_event_data_store(Name="alpha", TerminationProtectionEnabled=False)["EventDataStoreArn"]
    arn_b = b.create_event_data_store(Name="bravo", TerminationProtectionEnabled=False)["EventDataStoreArn"]
    server.lake.create_store("from-python")  # no API owner: the lake's default account (A)
    assert f":{ACCOUNT_A}:" in arn_a and f":{ACCOUNT_B}:" in arn_b
    assert names(a) == ["alpha", "from-python"]
    assert names(b) == ["bravo"]
    assert names(admin) == ["alpha", "bravo", "from-python"]
    for client, foreign in ((a, arn_b), (b, arn_a)):
        calls = [lambda: client.get_event_data_store(EventDataStore=foreign),
                 lambda: client.update_event_data_store(EventDataStore=foreign, RetentionPeriod=30),
                 lambda: client.delete_event_data_store(EventDataStore=foreign),
                 lambda: client.stop_event_data_store_ingestion(EventDataStore=foreign),
                 lambda: client.add_tags(ResourceId=foreign, TagsList=[{"Key": "x", "Value": "y"}]),
                 lambda: client.list_tags(ResourceIdList=[foreign])]
        for call in calls:
            with pytest.raises(client.exceptions.EventDataStoreNotFoundException):
                call()
    with pytest.raises(b.exceptions.EventDataStoreNotFoundException):
        b.get_event_data_store(EventDataStore="from-python")
    # nothing was changed by the refused calls
    assert a.get_event_data_store(EventDataStore=arn_a)["Status"] == "ENABLED"
    assert admin.get_event_data_store(EventDataStore=arn_b)["RetentionPeriod"] == 366
    admin.delete_event_data_store(EventDataStore=arn_b)
    assert b.get_event_data_store(EventDataStore=arn_b)["Status"] == "PENDING_DELETION"


def test_tags_on_stores(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    arn = c.create_event_data_store(Name="tagged", TagsList=[{"Key": "a", "Value": "1"}])["EventDataStoreArn"]
    c.add_tags(ResourceId=arn, TagsList=[{"Key": "b", "Value": "2"}, {"Key": "a", "Value": "changed"}])
    listed = c.list_tags(ResourceIdList=[arn])["ResourceTagList"]
    paged = c.get_paginator("list_tags").paginate(ResourceIdList=[arn]).build_full_result()
    assert paged["ResourceTagList"] == listed
    assert listed == [{"ResourceId": arn, "TagsList": [{"Key": "a", "Value": "changed"}, {"Key": "b", "Value": "2"}]}]
    assert server.lake.store("tagged").metadata["TagsList"] == listed[0]["TagsList"]  # persisted on the store
    c.remove_tags(ResourceId=arn, TagsList=[{"Key": "a"}])
    assert c.list_tags(ResourceIdList=[arn])["ResourceTagList"][0]["TagsList"] == [{"Key": "b", "Value": "2"}]
    version = server.lake.store("tagged").snapshot().version
    c.remove_tags(ResourceId=arn, TagsList=[{"Key": "not-there"}])  # no change, no commit
    assert server.lake.store("tagged").snapshot().version == version
    with pytest.raises(c.exceptions.TagsLimitExceededException):
        c.add_tags(ResourceId=arn, TagsList=[{"Key": f"k{i}", "Value": "v"} for i in range(MAX_TAGS)])
    with pytest.raises(c.exceptions.InvalidTagParameterException):
        c.add_tags(ResourceId=arn, TagsList=[{"Key": "aws:cloudtrail", "Value": "v"}])
    with pytest.raises(c.exceptions.InvalidTagParameterException):
        c.add_tags(ResourceId=arn, TagsList=[{"Key": "bad<key>", "Value": "v"}])
    with pytest.raises(c.exceptions.CloudTrailARNInvalidException):
        c.add_tags(ResourceId="not-an-arn", TagsList=[{"Key": "k", "Value": "v"}])
    with pytest.raises(c.exceptions.ResourceTypeNotSupportedException):
        c.list_tags(ResourceIdList=[f"arn:aws:cloudtrail:{REGION}:{ACCOUNT_A}:dashboard/my-dashboard"])
    with pytest.raises(c.exceptions.ResourceNotFoundException):  # trails are taggable; this one does not exist
        c.list_tags(ResourceIdList=[f"arn:aws:cloudtrail:{REGION}:{ACCOUNT_A}:trail/my-trail"])
    with pytest.raises(ClientError) as e:
        c.list_tags(ResourceIdList=[arn] * 21)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    c.update_event_data_store(EventDataStore=arn, TerminationProtectionEnabled=False)
    c.delete_event_data_store(EventDataStore=arn)
    with pytest.raises(c.exceptions.InactiveEventDataStoreException):
        c.add_tags(ResourceId=arn, TagsList=[{"Key": "k", "Value": "v"}])


def test_tags_on_registered_resource_kinds(server, cloudtrail_client, monkeypatch):
    chan_a = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT_A}:channel/11111111-aaaa"
    chan_b = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT_B}:channel/22222222-bbbb"

    def resolver(ctx, arn):
        if arn not in (chan_a, chan_b):
            raise ApiError("ChannelNotFoundException", f"channel {arn} not found")
        return arn.split(":")[4]
    monkeypatch.setitem(TAG_RESOURCES, "channel", resolver)
    a, b = cloudtrail_client("alice"), cloudtrail_client("bob")
    a.add_tags(ResourceId=chan_a, TagsList=[{"Key": "owner", "Value": "alice"}])
    assert a.list_tags(ResourceIdList=[chan_a])["ResourceTagList"][0]["TagsList"] == [{"Key": "owner",
                                                                                        "Value": "alice"}]
    assert tags_for(server.lake, chan_a) == [{"Key": "owner", "Value": "alice"}]
    with pytest.raises(b.exceptions.ResourceNotFoundException):
        b.list_tags(ResourceIdList=[chan_a])
    with pytest.raises(a.exceptions.ChannelNotFoundException):
        a.add_tags(ResourceId=chan_a[:-4] + "zzzz", TagsList=[{"Key": "k", "Value": "v"}])
    a.remove_tags(ResourceId=chan_a, TagsList=[{"Key": "owner"}])
    assert tags_for(server.lake, chan_a) == []


def test_store_operations_are_audited(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    arn = c.create_event_data_store(Name="aud", TerminationProtectionEnabled=False)["EventDataStoreArn"]
    c.add_tags(ResourceId=arn, TagsList=[{"Key": "k", "Value": "v"}])
    c.list_tags(ResourceIdList=[arn])
    c.remove_tags(ResourceId=arn, TagsList=[{"Key": "k"}])
    c.update_event_data_store(EventDataStore=arn, RetentionPeriod=30)
    c.stop_event_data_store_ingestion(EventDataStore=arn)
    c.start_event_data_store_ingestion(EventDataStore=arn)
    c.get_event_data_store(EventDataStore=arn)
    c.delete_event_data_store(EventDataStore=arn)
    c.restore_event_data_store(EventDataStore=arn)
    with pytest.raises(c.exceptions.EventDataStoreNotFoundException):
        c.get_event_data_store(EventDataStore=arn[:-4] + "0000")
    calls = ["CreateEventDataStore", "AddTags", "RemoveTags", "UpdateEventDataStore", "StopEventDataStoreIngestion",
             "StartEventDataStoreIngestion", "DeleteEventDataStore", "RestoreEventDataStore"]
    # each call audited once, at a time no earlier than the call before it (eventTime has whole seconds, and
    # the events of one second are stored in segment order, not call order)
    events = sorted(audit_events(server), key=lambda e: (e["eventTime"], calls.index(e["eventName"])))
    assert [e["eventName"] for e in events] == calls
    assert all(e.get("errorCode") is None for e in events)
    assert events[3]["responseElements"]["RetentionPeriod"] == 30
    assert events[1]["requestParameters"] == {"ResourceId": arn, "TagsList": [{"Key": "k", "Value": "v"}]}


def test_aws_cli_store_commands(server, aws_run):
    out = aws_run("alice", "cloudtrail", "create-event-data-store", "--name", "cli-store",
                  "--retention-period", "30", "--no-termination-protection-enabled")
    arn = out["EventDataStoreArn"]
    assert out["RetentionPeriod"] == 30
    listed = aws_run("alice", "cloudtrail", "list-event-data-stores")
    assert {"EventDataStoreArn": arn, "Name": "cli-store"} in listed["EventDataStores"]
    got = aws_run("alice", "cloudtrail", "get-event-data-store", "--event-data-store", arn)
    assert got["Name"] == "cli-store" and got["Status"] == "ENABLED"
    assert aws_run("bob", "cloudtrail", "list-event-data-stores")["EventDataStores"] == []
    proc = aws_run("bob", "cloudtrail", "get-event-data-store", "--event-data-store", arn, check=False)
    assert proc.returncode != 0 and "EventDataStoreNotFoundException" in proc.stderr
    aws_run("alice", "cloudtrail", "add-tags", "--resource-id", arn, "--tags-list", "Key=team,Value=blue")
    tags = aws_run("alice", "cloudtrail", "list-tags", "--resource-id-list", arn)
    assert tags["ResourceTagList"][0]["TagsList"] == [{"Key": "team", "Value": "blue"}]
    aws_run("alice", "cloudtrail", "delete-event-data-store", "--event-data-store", arn)
    assert server.lake.store("cli-store").status == "PENDING_DELETION"
    ev = [e for e in audit_events(server) if e["eventName"] == "CreateEventDataStore"]
    assert ev and "aws-cli" in ev[0]["userAgent"]


def test_aws_cli_endpoint_from_environment(server, aws_cli):
    """AWS_ENDPOINT_URL_CLOUDTRAIL instead of --endpoint-url, as docs/server.md shows."""
    cred = PRINCIPALS["bob"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=cred.access_key_id, AWS_SECRET_ACCESS_KEY=cred.secret_access_key,
               AWS_DEFAULT_REGION=REGION, AWS_ENDPOINT_URL_CLOUDTRAIL=server.url, AWS_CONFIG_FILE=os.devnull,
               AWS_SHARED_CREDENTIALS_FILE=os.devnull, AWS_PAGER="")
    proc = subprocess.run([aws_cli, "cloudtrail", "create-event-data-store", "--name", "env-store", "--output",
                           "json"], env=env, capture_output=True, text=True, timeout=180)
    if proc.returncode != 0 and ("amazonaws.com" in proc.stderr or "endpoint" in proc.stderr.lower()):
        pytest.skip(f"this AWS CLI does not read AWS_ENDPOINT_URL_<SERVICE>: {proc.stderr.strip()[-200:]}")
    assert proc.returncode == 0, proc.stderr
    assert f":{ACCOUNT_B}:" in json.loads(proc.stdout)["EventDataStoreArn"]
