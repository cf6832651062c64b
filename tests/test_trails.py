"""Trails API (lake/trails.py, lake/api_trails.py): the handlers called directly with an ApiContext, and the
same operations through a live `lake serve` with real boto3 clients."""

from __future__ import annotations

import botocore.session
import pytest

import lake.api_trails as api
from lake.apicore import OPERATIONS, ApiContext, ApiError, Principal
from lake.lake import Lake
from lake.trails import (DEFAULT_EVENT_SELECTORS, TrailCatalog, basic_to_advanced, bucket_target, check_name,
                         map_bucket, InvalidTrailName)

A, B = "111111111111", "222222222222"
MODEL = botocore.session.get_session().get_service_model("cloudtrail")


def principal(account: str, allowed: set[str] | None = None) -> Principal:
    return Principal(f"AKIA{account}", f"arn:aws:iam::{account}:user/u{account}", account,
                     frozenset(allowed or {account}))


@pytest.fixture
def lk(tmp_path):
    lake = Lake(str(tmp_path / "lake"), region="us-east-1", account_id=A)
    for bucket in ("bucket-one", "bucket-two"):
        map_bucket(lake, bucket, str(tmp_path / bucket))
    return lake


def call(lake, op: str, params: dict, *, account: str = A, region: str = "us-east-1",
         allowed: set[str] | None = None) -> dict:
    ctx = ApiContext(lake=lake, principal=principal(account, allowed), region=region, request_id="req-1")
    out = OPERATIONS[op](ctx, params)
    check_shape(MODEL.operation_model(op).output_shape, out, op)
    return out


def error(lake, op: str, params: dict, **kw) -> str:
    with pytest.raises(ApiError) as e:
        call(lake, op, params, **kw)
    assert e.value.code in [s.name for s in MODEL.operation_model(op).error_shapes] + ["InvalidTokenException"], \
        e.value.code
    return e.value.code


def check_shape(shape, value, where: str) -> None:
    """Every member a handler returns exists in the model, with the right JSON kind."""
    if shape is None or value is None:
        return
    t = shape.type_name
    if t == "structure":
        assert isinstance(value, dict), where
        for k, v in value.items():
            assert k in shape.members, f"{where}: {k} is not a member of {shape.name}"
            check_shape(shape.members[k], v, f"{where}.{k}")
    elif t == "list":
        assert isinstance(value, list), where
        for i, v in enumerate(value):
            check_shape(shape.member, v, f"{where}[{i}]")
    elif t == "boolean":
        assert isinstance(value, bool), where
    elif t == "string":
        assert isinstance(value, str), where


# ---- names ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["abc", "My_Trail.1-2", "a" * 128, "1.2.3", "trail-01", "x.y_z-0"])
def test_valid_names(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["ab", "a" * 129, "-abc", "abc-", "_abc", "abc.", "a..b", "a-_b", "my--namespace",
                                  "a._b", "192.168.5.4", "10.0.0.1", "abc!", "ab c", "", "trail/x", "abc\n"])
def test_invalid_names(lk, name):
    with pytest.raises(InvalidTrailName):
        check_name(name)
    assert error(lk, "CreateTrail", {"Name": name, "S3BucketName": "bucket-one"}) == "InvalidTrailNameException"


# ---- create / read / update / delete ---------------------------------------------------------------------------

def test_create_describe_get_list(lk):
    out = call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one", "S3KeyPrefix": "logs",
                                   "IsMultiRegionTrail": True, "EnableLogFileValidation": True})
    arn = f"arn:aws:cloudtrail:us-east-1:{A}:trail/main"
    assert out == {"Name": "main", "S3BucketName": "bucket-one", "S3KeyPrefix": "logs",
                   "IncludeGlobalServiceEvents": True, "IsMultiRegionTrail": True, "TrailARN": arn,
                   "LogFileValidationEnabled": True, "IsOrganizationTrail": False}
    desc = call(lk, "DescribeTrails", {})["trailList"]
    assert desc == [{**out, "HomeRegion": "us-east-1", "HasCustomEventSelectors": False,
                     "HasInsightSelectors": False}]
    assert call(lk, "GetTrail", {"Name": "main"})["Trail"] == desc[0]
    assert call(lk, "GetTrail", {"Name": arn})["Trail"] == desc[0]
    assert call(lk, "DescribeTrails", {"trailNameList": ["main", "nope", arn]})["trailList"] == desc
    assert call(lk, "ListTrails", {}) == {"Trails": [{"TrailARN": arn, "Name": "main", "HomeRegion": "us-east-1"}]}
    status = call(lk, "GetTrailStatus", {"Name": "main"})
    assert status == {"IsLogging": False}


def test_create_errors(lk):
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    assert error(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"}) == "TrailAlreadyExistsException"
    assert error(lk, "CreateTrail", {"Name": "trail2", "S3BucketName": "Bad_Bucket"}) == "InvalidS3BucketNameException"
    assert error(lk, "CreateTrail", {"Name": "trail2", "S3BucketName": "bucket-one", "S3KeyPrefix": "p" * 201}) == \
        "InvalidS3PrefixException"
    assert error(lk, "CreateTrail", {"Name": "trail2", "S3BucketName": "bucket-one", "IsMultiRegionTrail": True,
                                     "IncludeGlobalServiceEvents": False}) == "InvalidParameterCombinationException"
    for i in range(2, 6):
        call(lk, "CreateTrail", {"Name": f"trail{i}", "S3BucketName": "bucket-one"})
    assert error(lk, "CreateTrail", {"Name": "trail6", "S3BucketName": "bucket-one"}) == \
        "MaximumNumberOfTrailsExceededException"
    # another account has its own five
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"}, account=B)


def test_bucket_must_exist_on_s3(lk, s3_env):
    from tests.conftest import make_bucket

    assert bucket_target(lk, "not-mapped-bucket") == ("s3://not-mapped-bucket", None)
    assert error(lk, "CreateTrail", {"Name": "trail1", "S3BucketName": "not-mapped-bucket"}) == \
        "S3BucketDoesNotExistException"
    bucket = make_bucket(s3_env)
    assert call(lk, "CreateTrail", {"Name": "trail1", "S3BucketName": bucket})["S3BucketName"] == bucket


def test_not_found_and_bad_arn(lk):
    assert error(lk, "GetTrail", {"Name": "nothere"}) == "TrailNotFoundException"
    assert error(lk, "GetTrail", {"Name": "arn:aws:cloudtrail:us-east-1:12:trail/x"}) == \
        "CloudTrailARNInvalidException"
    assert error(lk, "DeleteTrail", {"Name": "a..b"}) == "InvalidTrailNameException"
    assert error(lk, "GetTrailStatus", {"Name": f"arn:aws:cloudtrail:us-east-1:{A}:trail/nothere"}) == \
        "TrailNotFoundException"
    assert error(lk, "StartLogging", {"Name": "nothere"}) == "TrailNotFoundException"


def test_update_and_delete(lk):
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one", "S3KeyPrefix": "a"})
    out = call(lk, "UpdateTrail", {"Name": "main", "S3BucketName": "bucket-two", "S3KeyPrefix": "",
                                   "EnableLogFileValidation": True, "IsMultiRegionTrail": True})
    assert out["S3BucketName"] == "bucket-two" and "S3KeyPrefix" not in out
    assert out["LogFileValidationEnabled"] is True and out["IsMultiRegionTrail"] is True
    assert error(lk, "UpdateTrail", {"Name": "main", "IncludeGlobalServiceEvents": False}) == \
        "InvalidParameterCombinationException"
    call(lk, "UpdateTrail", {"Name": "main", "IsMultiRegionTrail": False, "IncludeGlobalServiceEvents": False})
    assert call(lk, "GetTrail", {"Name": "main"})["Trail"]["IncludeGlobalServiceEvents"] is False
    call(lk, "DeleteTrail", {"Name": "main"})
    assert error(lk, "GetTrail", {"Name": "main"}) == "TrailNotFoundException"
    assert call(lk, "ListTrails", {}) == {"Trails": []}
    # the name is free again: a new incarnation
    old = TrailCatalog(lk).history(A, "us-east-1", "main")[0].id
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    assert TrailCatalog(lk).get(A, "us-east-1", "main").id != old


def test_accounts_are_isolated(lk):
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    arn = f"arn:aws:cloudtrail:us-east-1:{A}:trail/main"
    assert call(lk, "DescribeTrails", {}, account=B) == {"trailList": []}
    assert call(lk, "ListTrails", {}, account=B) == {"Trails": []}
    assert error(lk, "GetTrail", {"Name": "main"}, account=B) == "TrailNotFoundException"
    assert error(lk, "GetTrail", {"Name": arn}, account=B) == "TrailNotFoundException"
    assert error(lk, "StopLogging", {"Name": arn}, account=B) == "TrailNotFoundException"
    # a principal of B that may see A (an auditor) finds it by ARN, not by name
    assert call(lk, "GetTrail", {"Name": arn}, account=B, allowed={A, B})["Trail"]["TrailARN"] == arn
    assert error(lk, "GetTrail", {"Name": "main"}, account=B, allowed={A, B}) == "TrailNotFoundException"
    assert len(call(lk, "ListTrails", {}, account=B, allowed={A, B})["Trails"]) == 1


def test_shadow_trails_and_home_region(lk):
    call(lk, "CreateTrail", {"Name": "multi", "S3BucketName": "bucket-one", "IsMultiRegionTrail": True})
    call(lk, "CreateTrail", {"Name": "single", "S3BucketName": "bucket-one"})
    eu = {"region": "eu-west-1"}
    assert [t["Name"] for t in call(lk, "DescribeTrails", {}, **eu)["trailList"]] == ["multi"]
    assert call(lk, "DescribeTrails", {"includeShadowTrails": False}, **eu) == {"trailList": []}
    assert call(lk, "GetTrail", {"Name": "multi"}, **eu)["Trail"]["HomeRegion"] == "us-east-1"
    assert error(lk, "GetTrail", {"Name": "single"}, **eu) == "TrailNotFoundException"
    for op, params in [("UpdateTrail", {"Name": "multi", "S3KeyPrefix": "x"}), ("StartLogging", {"Name": "multi"}),
                       ("DeleteTrail", {"Name": "multi"}),
                       ("PutEventSelectors", {"TrailName": "multi", "EventSelectors": DEFAULT_EVENT_SELECTORS})]:
        assert error(lk, op, params, **eu) == "InvalidHomeRegionException"
    assert len(call(lk, "ListTrails", {}, **eu)["Trails"]) == 2  # ListTrails shows every region's trails
    # a multi-region trail takes its name in every region
    assert error(lk, "CreateTrail", {"Name": "multi", "S3BucketName": "bucket-one"}, **eu) == \
        "TrailAlreadyExistsException"
    call(lk, "CreateTrail", {"Name": "single", "S3BucketName": "bucket-one"}, **eu)


def test_logging_and_status(lk):
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    call(lk, "StartLogging", {"Name": "main"})
    st = call(lk, "GetTrailStatus", {"Name": "main"})
    assert st["IsLogging"] is True and st["StartLoggingTime"] and st["TimeLoggingStarted"].endswith("Z")
    call(lk, "StartLogging", {"Name": "main"})  # idempotent
    call(lk, "StopLogging", {"Name": "main"})
    st = call(lk, "GetTrailStatus", {"Name": "main"})
    assert st["IsLogging"] is False and st["StopLoggingTime"] >= st["StartLoggingTime"]
    assert len(st["TimeLoggingStopped"]) == 20


def test_event_selectors(lk):
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    arn = f"arn:aws:cloudtrail:us-east-1:{A}:trail/main"
    assert call(lk, "GetEventSelectors", {"TrailName": "main"}) == {"TrailARN": arn,
                                                                    "EventSelectors": DEFAULT_EVENT_SELECTORS}
    basic = [{"ReadWriteType": "WriteOnly", "DataResources": [{"Type": "AWS::S3::Object",
                                                               "Values": ["arn:aws:s3:::bucket-x/"]}]}]
    out = call(lk, "PutEventSelectors", {"TrailName": "main", "EventSelectors": basic})
    assert out["EventSelectors"] == [{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True,
                                      "DataResources": basic[0]["DataResources"],
                                      "ExcludeManagementEventSources": []}]
    assert call(lk, "GetTrail", {"Name": "main"})["Trail"]["HasCustomEventSelectors"] is True
    adv = [{"Name": "mgmt", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                                               {"Field": "eventSource", "NotEquals": ["kms.amazonaws.com"]}]},
           {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                               {"Field": "resources.type", "Equals": ["AWS::DynamoDB::Table"]}]},
           {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["NetworkActivity"]},
                               {"Field": "eventSource", "Equals": ["kms.amazonaws.com"]}]}]
    out = call(lk, "PutEventSelectors", {"TrailName": arn, "AdvancedEventSelectors": adv})
    assert out == {"TrailARN": arn, "AdvancedEventSelectors": adv}
    assert call(lk, "GetEventSelectors", {"TrailName": "main"}) == out
    # basic selectors replace advanced ones again
    out = call(lk, "PutEventSelectors", {"TrailName": "main", "EventSelectors": DEFAULT_EVENT_SELECTORS})
    assert "AdvancedEventSelectors" not in out


@pytest.mark.parametrize("params", [
    {},  # neither
    {"EventSelectors": DEFAULT_EVENT_SELECTORS,
     "AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]}]},
    {"EventSelectors": [{"DataResources": [{"Type": "AWS::SNS::Topic", "Values": ["arn:aws:sns"]}]}]},
    {"EventSelectors": [{"DataResources": [{"Type": "AWS::S3::Object", "Values": ["s3://bucket"]}]}]},
    {"EventSelectors": [{"ExcludeManagementEventSources": ["ec2.amazonaws.com"]}]},
    {"EventSelectors": [{}] * 6},
    {"EventSelectors": [{"DataResources": [{"Type": "AWS::S3::Object",
                                            "Values": [f"arn:aws:s3:::b/{i}" for i in range(251)]}]}]},
    {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Insight"]}]}]},
    {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                                                    {"Field": "eventName", "Equals": ["RunInstances"]}]}]},
    {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                                                    {"Field": "eventSource", "Equals": ["ec2.amazonaws.com"]}]}]},
    {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}]}]},
    {"AdvancedEventSelectors": [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                                                    {"Field": "readOnly", "Equals": ["yes"]}]}]},
    {"AdvancedEventSelectors": [{"FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Data"]}, {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
        {"Field": "resources.ARN", "StartsWith": [f"arn:aws:s3:::b{i}/" for i in range(499)]}]}]},
])
def test_invalid_event_selectors(lk, params):
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    assert error(lk, "PutEventSelectors", {"TrailName": "main", **params}) == "InvalidEventSelectorsException"


def test_more_than_five_advanced_selectors_on_a_trail(lk):
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    sels = [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                                {"Field": "resources.type", "Equals": [t]}]}
            for t in ("AWS::S3::Object", "AWS::Lambda::Function", "AWS::DynamoDB::Table", "AWS::SNS::Topic",
                      "AWS::SQS::Queue", "AWS::S3Express::Object")]
    assert len(call(lk, "PutEventSelectors", {"TrailName": "main", "AdvancedEventSelectors": sels})
               ["AdvancedEventSelectors"]) == 6


def test_basic_to_advanced():
    sel = [{"ReadWriteType": "ReadOnly", "IncludeManagementEvents": True,
            "ExcludeManagementEventSources": ["kms.amazonaws.com"],
            "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::b1", "arn:aws:s3:::b2/p"]},
                              {"Type": "AWS::Lambda::Function", "Values": ["arn:aws:lambda"]}]}]
    assert basic_to_advanced(sel) == [
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]},
                            {"Field": "readOnly", "Equals": ["true"]},
                            {"Field": "eventSource", "NotEquals": ["kms.amazonaws.com"]}]},
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                            {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                            {"Field": "readOnly", "Equals": ["true"]},
                            {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::b1/", "arn:aws:s3:::b2/p"]}]},
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                            {"Field": "resources.type", "Equals": ["AWS::Lambda::Function"]},
                            {"Field": "readOnly", "Equals": ["true"]}]}]


def test_insight_selectors(lk):
    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    assert error(lk, "GetInsightSelectors", {"TrailName": "main"}) == "InsightNotEnabledException"
    sel = [{"InsightType": "ApiCallRateInsight"}]
    out = call(lk, "PutInsightSelectors", {"TrailName": "main", "InsightSelectors": sel})
    assert out["InsightSelectors"] == sel
    assert call(lk, "GetInsightSelectors", {"TrailName": "main"})["InsightSelectors"] == sel
    assert call(lk, "GetTrail", {"Name": "main"})["Trail"]["HasInsightSelectors"] is True
    assert error(lk, "PutInsightSelectors", {"TrailName": "main", "InsightSelectors": sel * 2}) == \
        "InvalidInsightSelectorsException"
    call(lk, "PutInsightSelectors", {"TrailName": "main", "InsightSelectors": []})
    assert error(lk, "GetInsightSelectors", {"TrailName": "main"}) == "InsightNotEnabledException"


def test_tags_on_trails(lk):
    arn = call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one",
                                   "TagsList": [{"Key": "team", "Value": "sec"}]})["TrailARN"]
    assert call(lk, "ListTags", {"ResourceIdList": [arn]}) == \
        {"ResourceTagList": [{"ResourceId": arn, "TagsList": [{"Key": "team", "Value": "sec"}]}]}
    call(lk, "AddTags", {"ResourceId": arn, "TagsList": [{"Key": "env", "Value": "prod"}]})
    assert len(call(lk, "ListTags", {"ResourceIdList": [arn]})["ResourceTagList"][0]["TagsList"]) == 2
    with pytest.raises(ApiError) as e:
        call(lk, "ListTags", {"ResourceIdList": [arn]}, account=B)
    assert e.value.code == "ResourceNotFoundException"
    call(lk, "DeleteTrail", {"Name": "main"})
    with pytest.raises(ApiError):
        call(lk, "ListTags", {"ResourceIdList": [arn]})


def test_concurrent_changes_lose_nothing(lk):
    """Two writers changing one trail: both changes land (create-only versions, re-applied on conflict)."""
    import threading

    call(lk, "CreateTrail", {"Name": "main", "S3BucketName": "bucket-one"})
    cat = TrailCatalog(lk)
    t = cat.get(A, "us-east-1", "main")
    barrier = threading.Barrier(2)

    def one(fn):
        barrier.wait()
        fn()
    threads = [threading.Thread(target=one, args=(lambda: cat.set_logging(t, True),)),
               threading.Thread(target=one, args=(lambda: cat.put_insight_selectors(
                   t, [{"InsightType": "ApiErrorRateInsight"}]),))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    now = cat.get(A, "us-east-1", "main")
    assert now.is_logging and now.doc["InsightSelectors"] == [{"InsightType": "ApiErrorRateInsight"}]
    assert now.version == 3


# ---- through `lake serve` with boto3 -------------------------------------------------------------------------

try:
    from tests.server_fixture import cloudtrail_client, server  # noqa: F401 - fixtures
    HAVE_SERVER = True
except ImportError:  # pragma: no cover - the server fixture is written separately
    HAVE_SERVER = False

needs_server = pytest.mark.skipif(not HAVE_SERVER, reason="tests/server_fixture.py is not available")


@needs_server
def test_boto3_trails(server, cloudtrail_client, tmp_path, monkeypatch):
    from botocore.exceptions import ClientError

    monkeypatch.setattr(api, "LIST_TRAILS_PAGE", 2)
    map_bucket(server.lake, "bucket-one", str(tmp_path / "b1"))
    ct = cloudtrail_client("alice")
    for i in range(5):
        ct.create_trail(Name=f"trail-{i}", S3BucketName="bucket-one", IsMultiRegionTrail=i == 0,
                        EnableLogFileValidation=True)
    trails = ct.describe_trails()["trailList"]
    assert sorted(t["Name"] for t in trails) == [f"trail-{i}" for i in range(5)]
    assert trails[0]["HomeRegion"] == "us-east-1" and trails[0]["LogFileValidationEnabled"] is True
    pages = list(ct.get_paginator("list_trails").paginate())
    assert len(pages) == 3 and sum(len(p["Trails"]) for p in pages) == 5
    assert ct.get_trail(Name="trail-0")["Trail"]["IsMultiRegionTrail"] is True

    assert ct.get_trail_status(Name="trail-1")["IsLogging"] is False
    ct.start_logging(Name="trail-1")
    st = ct.get_trail_status(Name="trail-1")
    assert st["IsLogging"] is True and st["StartLoggingTime"].year >= 2024
    ct.stop_logging(Name="trail-1")
    st = ct.get_trail_status(Name="trail-1")
    assert st["IsLogging"] is False and st["StopLoggingTime"] >= st["StartLoggingTime"]

    adv = [{"Name": "s3 writes", "FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Data"]}, {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
        {"Field": "readOnly", "Equals": ["false"]}]}]
    ct.put_event_selectors(TrailName="trail-1", AdvancedEventSelectors=adv)
    got = ct.get_event_selectors(TrailName="trail-1")
    assert got["AdvancedEventSelectors"] == adv and "EventSelectors" not in got
    ct.put_event_selectors(TrailName="trail-1", EventSelectors=[{"ReadWriteType": "ReadOnly"}])
    assert ct.get_event_selectors(TrailName="trail-1")["EventSelectors"][0]["ReadWriteType"] == "ReadOnly"

    with pytest.raises(ClientError) as e:
        ct.create_trail(Name="trail-5", S3BucketName="bucket-one")
    assert e.value.response["Error"]["Code"] == "MaximumNumberOfTrailsExceededException"
    with pytest.raises(ClientError) as e:
        ct.get_trail(Name="-bad")
    assert e.value.response["Error"]["Code"] == "InvalidTrailNameException"
    with pytest.raises(ClientError) as e:
        cloudtrail_client("bob").get_trail_status(Name="trail-1")
    assert e.value.response["Error"]["Code"] == "TrailNotFoundException"
    ct.delete_trail(Name="trail-4")
    assert len(ct.describe_trails()["trailList"]) == 4


# ---- the `lake trails` commands (lake/trails.py trails_cli) --------------------------------------------------

def test_trails_cli(tmp_path):
    import json

    from click.testing import CliRunner

    from lake.cli import Ctx
    from lake.trails import trails_cli

    uri = str(tmp_path / "lake")
    run = lambda *args: CliRunner().invoke(trails_cli, list(args), obj=Ctx(uri, "json"))  # noqa: E731
    assert run("map-bucket", "cli-bucket", str(tmp_path / "dest")).exit_code == 0
    res = run("create", "cli-trail", "--bucket", "cli-bucket", "--prefix", "p", "--validation", "--start")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["LogFileValidationEnabled"] is True
    lake = Lake(uri)
    lake.create_store("cli-store").append([{"eventVersion": "1.08", "eventTime": "2026-11-20T00:00:00Z",
                                            "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
                                            "awsRegion": lake.region, "eventID": "e-1", "eventType": "AwsApiCall",
                                            "recipientAccountId": lake.account_id}], source="import")
    res = run("deliver")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["Events"] == 1
    assert len(list((tmp_path / "dest" / "p" / "AWSLogs").rglob("*.json.gz"))) == 1
    listed = json.loads(run("list").output)
    assert listed[0]["Name"] == "cli-trail" and listed[0]["IsLogging"] is True
    assert listed[0]["Destination"] == str(tmp_path / "dest")
    desc = json.loads(run("describe", "cli-trail").output)
    assert desc["Status"]["IsLogging"] is True and desc["Lake"]["Sources"] == ["live", "import"]
    res = run("configure", "cli-trail", "--sources", "live", "--stores", "cli-store")
    assert res.exit_code == 0 and json.loads(res.output)["Stores"] == [lake.store("cli-store").id]
    res = run("configure", "cli-trail", "--sources", "bogus")
    assert res.exit_code == 1 and "error:" in res.output
    assert run("stop", "cli-trail").exit_code == 0
    assert run("delete", "cli-trail").exit_code == 0
    res = run("describe", "cli-trail")
    assert res.exit_code == 1 and "Unknown trail" in res.output
    assert run("map-bucket", "cli-bucket").exit_code == 2
