"""`lake serve` core: the JSON 1.1 and rest-json protocols, SigV4 authentication, input validation against
botocore's model, AWS-shaped errors, anonymous mode, auditing, and the `lake serve` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
boto3 = pytest.importorskip("boto3")

from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

from lake.apicore import DATA_OPERATIONS, ApiError  # noqa: E402
from lake.apiserver import ServerConfig, ServerThread, check_bind, serialize, service_model  # noqa: E402
from lake.lake import Lake  # noqa: E402
from lake.sigv4 import load_credentials, parse_credentials  # noqa: E402
from tests.server_fixture import *  # noqa: E402,F401,F403
from tests.server_fixture import (ACCOUNT_A, ACCOUNT_B, AUDIT_STORE, PRINCIPALS, REGION,  # noqa: E402
                                  audit_events, boto_client, lake_serve_process, signed_request)

NOW = lambda: datetime.now(timezone.utc)  # noqa: E731


def code_of(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


# ---- protocol ----------------------------------------------------------------------------------------------

def test_json11_response_shape(server):
    status, headers, body = signed_request(server, "bob", {}, target="ListEventDataStores")
    assert status == 200
    assert headers["content-type"] == "application/x-amz-json-1.1"
    uuid.UUID(headers["x-amzn-requestid"])
    assert body == {"EventDataStores": []}


def test_unknown_operation(server):
    status, headers, body = signed_request(server, "alice", {}, target="NoSuchOperation")
    assert status == 400 and body["__type"] == "UnknownOperationException"
    assert headers["x-amzn-requestid"] and "NoSuchOperation" in body["message"]
    status, _, body = signed_request(server, "alice", {}, headers={"X-Amz-Target": "Bogus.ListEventDataStores"})
    assert status == 400 and body["__type"] == "UnknownOperationException"
    status, _, body = signed_request(server, "alice", {})  # no X-Amz-Target at all
    assert status == 400 and body["__type"] == "UnknownOperationException"


def test_model_operation_lake_does_not_implement(server):
    import botocore.session

    from lake.apicore import OPERATIONS

    model = botocore.session.get_session().get_service_model("cloudtrail")
    missing = sorted(op for op in model.operation_names if op not in OPERATIONS
                     and not (model.operation_model(op).input_shape
                              and model.operation_model(op).input_shape.required_members))
    assert missing, "every operation is implemented: pick another way to test this"
    status, _, body = signed_request(server, "alice", {}, target=missing[0])
    assert status == 400 and body["__type"] == "UnsupportedOperationException"


def test_unknown_path_is_404(server):
    import urllib3

    r = urllib3.PoolManager().request("GET", server.url + "/nothing/here", retries=False)
    assert r.status == 404 and r.headers["x-amzn-ErrorType"] == "UnknownOperationException"
    h = urllib3.PoolManager().request("GET", server.url + "/health", retries=False)
    assert h.status == 200 and "ListEventDataStores" in json.loads(h.data)["operations"]


@pytest.mark.parametrize("body", [b"{not json", b'{"Name": ', b"\xff\xfe", b"[1, 2]", b'"text"'])
def test_malformed_json_is_serialization_exception(server, body):
    status, headers, resp = signed_request(server, "alice", body, target="CreateEventDataStore")
    assert status == 400
    assert resp["__type"] == "SerializationException" and resp["message"]
    assert headers["x-amzn-requestid"]


def test_empty_body_means_no_parameters(server):
    status, _, body = signed_request(server, "bob", b"", target="ListEventDataStores")
    assert status == 200 and body == {"EventDataStores": []}


@pytest.mark.parametrize("op,params,where", [
    ("ListEventDataStores", {"MaxResults": "ten"}, "maxResults"),
    ("ListEventDataStores", {"MaxResults": 2.5}, "maxResults"),
    ("ListEventDataStores", {"MaxResults": True}, "maxResults"),
    ("CreateEventDataStore", {"Name": 12345}, "name"),
    ("CreateEventDataStore", {"Name": "abc", "TerminationProtectionEnabled": "yes"}, "terminationProtectionEnabled"),
    ("CreateEventDataStore", {"Name": "abc", "TagsList": {"Key": "k"}}, "tagsList"),
    ("CreateEventDataStore", {"Name": "abc", "AdvancedEventSelectors": [{"FieldSelectors": "x"}]},
     "advancedEventSelectors.1.member.fieldSelectors"),
])
def test_wrong_types_are_serialization_exceptions(server, op, params, where):
    status, _, body = signed_request(server, "alice", params, target=op)
    assert status == 400 and body["__type"] == "SerializationException"
    assert f"'{where}'" in body["message"]


@pytest.mark.parametrize("op,params,code,fragment", [
    ("ListEventDataStores", {"MaxResults": 0}, "InvalidMaxResultsException",
     "Value 0 at 'maxResults' failed to satisfy constraint: Member must have value greater than or equal to 1"),
    ("ListEventDataStores", {"MaxResults": 5000}, "InvalidMaxResultsException",
     "Member must have value less than or equal to 1000"),
    ("ListEventDataStores", {"NextToken": "ab"}, "InvalidNextTokenException",
     "Member must have length greater than or equal to 4"),
    ("CreateEventDataStore", {}, "InvalidParameterException",
     "Value null at 'name' failed to satisfy constraint: Member must not be null"),
    ("CreateEventDataStore", {"Name": "ab"}, "InvalidParameterException",
     "Value 'ab' at 'name' failed to satisfy constraint: Member must have length greater than or equal to 3"),
    ("CreateEventDataStore", {"Name": "bad name!"}, "InvalidParameterException",
     "Member must satisfy regular expression pattern"),
    ("CreateEventDataStore", {"Name": "okname", "BillingMode": "CHEAP"}, "InvalidParameterException",
     "Member must satisfy enum value set: [EXTENDABLE_RETENTION_PRICING, FIXED_RETENTION_PRICING]"),
    ("CreateEventDataStore", {"Name": "okname", "RetentionPeriod": 4000}, "InvalidParameterException",
     "Value 4000 at 'retentionPeriod'"),
    ("CreateEventDataStore", {"Name": "okname", "TagsList": [{"Key": ""}]}, "InvalidTagParameterException",
     "at 'tagsList.1.member.key'"),
    ("GetEventDataStore", {"EventDataStore": "has spaces in it"}, "EventDataStoreARNInvalidException",
     "at 'eventDataStore'"),
])
def test_constraint_violations_are_aws_validation_errors(server, op, params, code, fragment):
    status, headers, body = signed_request(server, "alice", params, target=op)
    assert status == 400, body
    assert body["__type"] == code
    assert body["message"].startswith("1 validation error detected: ")
    assert fragment in body["message"]
    assert headers["x-amzn-errortype"] == code


def test_several_violations_are_counted(server):
    status, _, body = signed_request(server, "alice", {"Name": "ab", "RetentionPeriod": 1},
                                     target="CreateEventDataStore")
    assert status == 400 and body["message"].startswith("2 validation errors detected: ")


def test_server_validates_what_boto3_would_not_send(server):
    """With botocore's client-side validation off, the server still refuses, with the modelled exception."""
    import boto3 as b3

    cred = PRINCIPALS["alice"]
    client = b3.session.Session(aws_access_key_id=cred.access_key_id, aws_secret_access_key=cred.secret_access_key,
                                region_name=REGION).client(
        "cloudtrail", endpoint_url=server.url,
        config=Config(parameter_validation=False, retries={"total_max_attempts": 1}))
    with pytest.raises(client.exceptions.InvalidMaxResultsException):
        client.list_event_data_stores(MaxResults=0)
    with pytest.raises(client.exceptions.InvalidParameterException) as e:
        client.create_event_data_store(Name="x")
    assert "at 'name'" in str(e.value)


def test_output_serialisation_follows_the_model():
    shape = service_model("cloudtrail").operation_model("GetEventDataStore").output_shape
    when = datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
    out = serialize(shape, {"Name": "abc", "CreatedTimestamp": when, "UpdatedTimestamp": "2024-05-01T12:00:01Z",
                            "Statistics": {"Events": 3}, "RetentionPeriod": 7, "KmsKeyId": None})
    assert out == {"Name": "abc", "CreatedTimestamp": when.timestamp(), "UpdatedTimestamp": when.timestamp() + 0.75,
                   "RetentionPeriod": 7}
    iso = serialize(shape, {"CreatedTimestamp": when}, iso=True)
    assert iso == {"CreatedTimestamp": "2024-05-01T12:00:00Z"}


# ---- cloudtrail-data (rest-json) ----------------------------------------------------------------------------

def test_rest_json_binding_validation_and_errors(server, monkeypatch):
    seen = {}

    def fake(ctx, params):
        seen.update(params)
        if params["channelArn"].endswith("missing"):
            raise ApiError("ChannelNotFound", "no such channel")
        return {"successful": [{"id": e["id"], "eventID": "e-" + e["id"]} for e in params["auditEvents"]],
                "failed": [], "extra": 1}

    monkeypatch.setitem(DATA_OPERATIONS, "PutAuditEvents", fake)
    arn = f"arn:aws:cloudtrail:{REGION}:{ACCOUNT_A}:channel/abc"
    client = boto_client(server, "cloudtrail-data", "alice")
    out = client.put_audit_events(channelArn=arn, externalId="ext-1",
                                  auditEvents=[{"id": "one", "eventData": "{}"}])
    assert out["successful"] == [{"id": "one", "eventID": "e-one"}] and out["failed"] == []
    assert seen["channelArn"] == arn and seen["externalId"] == "ext-1"
    with pytest.raises(ClientError) as e:
        client.put_audit_events(channelArn=arn[:-3] + "missing", auditEvents=[{"id": "x", "eventData": "{}"}])
    assert code_of(e.value) == "ChannelNotFound" and e.value.response["Error"]["Message"] == "no such channel"
    # raw: the error code travels in x-amzn-ErrorType, the body has the message
    from urllib.parse import quote

    query = f"channelArn={quote(arn, safe='')}"
    status, headers, body = signed_request(server, "alice", {"auditEvents": []}, service="cloudtrail-data",
                                           path="/PutAuditEvents", query=query)
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"
    assert "Member must have length greater than or equal to 1" in body["message"]
    status, headers, body = signed_request(server, "alice", {"auditEvents": [{"id": "x", "eventData": "{}"}]},
                                           service="cloudtrail-data", path="/PutAuditEvents")
    assert status == 400 and "Value null at 'channelArn'" in body["message"]
    status, headers, body = signed_request(server, "alice", b"{oops", service="cloudtrail-data",
                                           path="/PutAuditEvents", query=query)
    assert status == 400 and headers["x-amzn-errortype"] == "SerializationException"


def test_rest_json_auth_errors_are_403(server):
    status, headers, _ = signed_request(server, None, {"auditEvents": []}, service="cloudtrail-data",
                                        path="/PutAuditEvents", query="channelArn=arn:x")
    assert status == 403 and headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"


def test_put_audit_events_without_channels_module(server):
    if "PutAuditEvents" in DATA_OPERATIONS:
        pytest.skip("lake.api_channels provides PutAuditEvents")
    with pytest.raises(ClientError) as e:
        boto_client(server, "cloudtrail-data").put_audit_events(
            channelArn="arn:aws:cloudtrail:us-east-1:111111111111:channel/x",
            auditEvents=[{"id": "a", "eventData": "{}"}])
    assert code_of(e.value) == "UnsupportedOperationException"


# ---- authentication -----------------------------------------------------------------------------------------

def test_wrong_secret_is_refused(server):
    status, _, body = signed_request(server, "alice", {}, target="ListEventDataStores", secret="not-the-secret")
    assert status == 400 and body["__type"] == "InvalidSignatureException"
    assert body["message"].startswith("The request signature we calculated does not match")
    cred = PRINCIPALS["alice"]
    client = boto3.session.Session(aws_access_key_id=cred.access_key_id, aws_secret_access_key="wrong",
                                   region_name=REGION).client("cloudtrail", endpoint_url=server.url,
                                                              config=Config(retries={"total_max_attempts": 1}))
    with pytest.raises(ClientError) as e:
        client.list_event_data_stores()
    assert code_of(e.value) == "InvalidSignatureException"


def test_unknown_key_is_unrecognized_client(server):
    status, _, body = signed_request(server, "alice", {}, target="ListEventDataStores", key_id="AKIANOBODY0000000000")
    assert status == 400 and body["__type"] == "UnrecognizedClientException"
    assert body["message"] == "The security token included in the request is invalid."


def test_unsigned_request_is_refused(server):
    status, _, body = signed_request(server, None, {}, target="ListEventDataStores")
    assert status == 400 and body["__type"] == "MissingAuthenticationTokenException"


def test_tampered_body_is_refused(server):
    def tamper(req):
        req.data = b'{"MaxResults": 2}'
    status, _, body = signed_request(server, "alice", {"MaxResults": 1}, target="ListEventDataStores", tamper=tamper)
    assert status == 400 and body["__type"] == "InvalidSignatureException"


def test_tampered_header_is_refused(server):
    def tamper(req):
        req.headers.replace_header("X-Amz-Target", req.headers["X-Amz-Target"].replace("List", "Get"))
    status, _, body = signed_request(server, "alice", {}, target="ListEventDataStores", tamper=tamper)
    assert status == 400 and body["__type"] == "InvalidSignatureException"


def test_content_sha256_header_must_match_body(server):
    def tamper(req):
        req.data = b"{}"  # the signature covered the declared hash, not these bytes
    status, _, body = signed_request(server, "alice", {"MaxResults": 1}, target="ListEventDataStores",
                                     headers={"X-Amz-Content-SHA256": __import__("hashlib").sha256(
                                         b'{"MaxResults": 1}').hexdigest()}, tamper=tamper)
    assert status == 400 and body["__type"] == "InvalidSignatureException"
    assert "x-amz-content-sha256" in body["message"]


@pytest.mark.parametrize("delta,phrase", [(timedelta(minutes=-20), "Signature expired"),
                                          (timedelta(minutes=20), "Signature not yet current"),
                                          (timedelta(minutes=-6), "Signature expired"),
                                          (timedelta(minutes=6), "Signature not yet current")])
def test_clock_skew_is_refused(server, delta, phrase):
    status, _, body = signed_request(server, "alice", {}, target="ListEventDataStores", when=NOW() + delta)
    assert status == 400 and body["__type"] == "InvalidSignatureException"
    assert body["message"].startswith(phrase)


def test_small_skew_is_accepted(server):
    for delta in (timedelta(minutes=-4), timedelta(minutes=4)):  # AWS's window is 5 minutes either way
        status, _, _ = signed_request(server, "alice", {}, target="ListEventDataStores", when=NOW() + delta)
        assert status == 200


def test_credential_scope_is_checked(server):
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    import urllib3

    cred = PRINCIPALS["alice"]
    for service, region, phrase in [("cloudtrail", "eu-west-1", "valid region"),
                                    ("cloudtrail-data", REGION, "correct service: 'cloudtrail'")]:
        req = AWSRequest(method="POST", url=server.url + "/", data=b"{}",
                         headers={"Content-Type": "application/x-amz-json-1.1",
                                  "X-Amz-Target": "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101."
                                                  "ListEventDataStores"})
        botocore.auth.SigV4Auth(Credentials(cred.access_key_id, cred.secret_access_key), service, region).add_auth(req)
        r = urllib3.PoolManager().request("POST", req.url, body=req.body, headers=dict(req.headers.items()),
                                          retries=False)
        body = json.loads(r.data)
        assert r.status == 400 and body["__type"] == "InvalidSignatureException" and phrase in body["message"]


def test_incomplete_authorization_header(server):
    def tamper(req):
        req.headers.replace_header("Authorization", req.headers["Authorization"].split(", Signature=")[0])
    status, _, body = signed_request(server, "alice", {}, target="ListEventDataStores", tamper=tamper)
    assert status == 400 and body["__type"] == "IncompleteSignatureException"
    assert "'Signature'" in body["message"]

    def tamper2(req):
        req.headers.replace_header("Authorization", "AWS3 whatever")
    status, _, body = signed_request(server, "alice", {}, target="ListEventDataStores", tamper=tamper2)
    assert status == 400 and body["__type"] == "IncompleteSignatureException"


def test_presigned_query_form(server):
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    import urllib3

    cred = PRINCIPALS["bob"]
    req = AWSRequest(method="POST", url=server.url + "/", data=b"",
                     headers={"X-Amz-Target": "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101."
                                              "ListEventDataStores"})
    botocore.auth.SigV4QueryAuth(Credentials(cred.access_key_id, cred.secret_access_key), "cloudtrail", REGION,
                                 expires=60).add_auth(req)
    assert "X-Amz-Signature=" in req.url and "Authorization" not in req.headers
    http = urllib3.PoolManager()
    r = http.request("POST", req.url, body=b"", headers=dict(req.headers.items()), retries=False)
    assert r.status == 200, r.data
    bad = req.url.replace("X-Amz-Expires=60", "X-Amz-Expires=61")
    r = http.request("POST", bad, body=b"", headers=dict(req.headers.items()), retries=False)
    assert r.status == 400 and json.loads(r.data)["__type"] == "InvalidSignatureException"


def test_principals_of_other_accounts_are_isolated(server, cloudtrail_client):
    a, b = cloudtrail_client("alice"), cloudtrail_client("bob")
    arn_b = b.create_event_data_store(Name="bobs-store", TerminationProtectionEnabled=False)["EventDataStoreArn"]
    assert f":{ACCOUNT_B}:" in arn_b
    assert [s["Name"] for s in a.list_event_data_stores()["EventDataStores"]] == [AUDIT_STORE]
    for call in (lambda: a.get_event_data_store(EventDataStore=arn_b),
                 lambda: a.get_event_data_store(EventDataStore=arn_b.rsplit("/", 1)[1]),
                 lambda: a.delete_event_data_store(EventDataStore=arn_b)):
        with pytest.raises(a.exceptions.EventDataStoreNotFoundException):
            call()
    assert b.get_event_data_store(EventDataStore=arn_b)["Status"] == "ENABLED"


# ---- anonymous mode and configuration ------------------------------------------------------------------------

def test_anonymous_mode_on_loopback(tmp_path):
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT_A)
    with ServerThread(lake, ServerConfig(credentials=[PRINCIPALS["bob"]], allow_anonymous=True,
                                         audit_store=AUDIT_STORE)) as srv:
        status, _, body = signed_request(srv, None, {"Name": "anon-store"}, target="CreateEventDataStore")
        assert status == 200 and f":{ACCOUNT_A}:" in body["EventDataStoreArn"]
        # a signature is still checked when present
        status, _, body = signed_request(srv, "bob", {}, target="ListEventDataStores", secret="bad")
        assert body["__type"] == "InvalidSignatureException"
        status, _, body = signed_request(srv, "bob", {}, target="ListEventDataStores")
        assert status == 200 and body["EventDataStores"] == []  # anonymous store is account A's
        ev = [e for e in audit_events(srv) if e["eventName"] == "CreateEventDataStore"]
        assert ev[0]["userIdentity"] == {"type": "Unknown", "principalId": "anonymous", "accountId": ACCOUNT_A}


def test_anonymous_refused_off_loopback_and_no_way_in_refused():
    with pytest.raises(ValueError, match="loopback"):
        check_bind(ServerConfig(allow_anonymous=True), "0.0.0.0")
    with pytest.raises(ValueError, match="no credentials"):
        check_bind(ServerConfig(), "127.0.0.1")
    check_bind(ServerConfig(allow_anonymous=True), "::1")
    check_bind(ServerConfig(credentials=[PRINCIPALS["alice"]]), "0.0.0.0")


def test_anonymous_off_means_unsigned_refused(server):
    status, _, body = signed_request(server, None, {}, target="ListEventDataStores")
    assert body["__type"] == "MissingAuthenticationTokenException"


def test_credentials_files(tmp_path, monkeypatch):
    j = tmp_path / "creds.json"
    j.write_text(json.dumps({"credentials": [{"access_key_id": "AK1", "secret_access_key": "s1",
                                              "principal_arn": "arn:aws:iam::111111111111:user/x",
                                              "allowed_accounts": ["222222222222"]}]}))
    (c,) = load_credentials(str(j))
    assert c.account_id == "111111111111" and c.allowed_accounts == {"111111111111", "222222222222"}
    t = tmp_path / "creds.toml"
    t.write_text('[[credentials]]\naccess_key_id = "AK2"\nsecret_access_key = "s2"\n'
                 'principal_arn = "arn:aws:sts::333333333333:assumed-role/R/s"\n')
    (c2,) = load_credentials(str(t))
    assert c2.account_id == "333333333333" and c2.principal.allowed_accounts == {"333333333333"}
    monkeypatch.setenv("LAKE_SERVE_CREDENTIALS", json.dumps([{"access_key_id": "AK3", "secret_access_key": "s",
                                                             "principal_arn": "arn:aws:iam::444444444444:root"}]))
    assert load_credentials()[0].account_id == "444444444444"
    monkeypatch.setenv("LAKE_SERVE_CREDENTIALS", str(t))
    assert load_credentials()[0].access_key_id == "AK2"
    for bad, phrase in [([{"access_key_id": "A"}], "lacks"), ({"nope": 1}, "expected a list"),
                        ([{"access_key_id": "A", "secret_access_key": "s", "principal_arn": "alice"}], "not an IAM"),
                        ([{"access_key_id": "A", "secret_access_key": "s",
                           "principal_arn": "arn:aws:iam::111111111111:user/a", "allowed_accounts": ["12"]}],
                         "12 digits")]:
        with pytest.raises(ValueError, match=phrase):
            parse_credentials(bad)
    dup = {"access_key_id": "A", "secret_access_key": "s", "principal_arn": "arn:aws:iam::111111111111:user/a"}
    with pytest.raises(ValueError, match="twice"):
        parse_credentials([dup, dup])
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_credentials(str(bad_json))


# ---- auditing -----------------------------------------------------------------------------------------------

def test_audit_records_mutating_calls_only(server, cloudtrail_client):
    c = cloudtrail_client("alice")
    created = c.create_event_data_store(Name="audited", TagsList=[{"Key": "team", "Value": "sec"}])
    request_id = created["ResponseMetadata"]["RequestId"]
    c.get_event_data_store(EventDataStore=created["EventDataStoreArn"])
    c.list_event_data_stores()
    c.list_tags(ResourceIdList=[created["EventDataStoreArn"]])
    with pytest.raises(c.exceptions.EventDataStoreTerminationProtectedException):
        c.delete_event_data_store(EventDataStore=created["EventDataStoreArn"])
    events = audit_events(server)
    assert [e["eventName"] for e in events] == ["CreateEventDataStore", "DeleteEventDataStore"]
    ok, failed = events
    assert ok["eventVersion"] == "1.11"
    assert ok["userIdentity"] == {"type": "IAMUser", "principalId": ok["userIdentity"]["principalId"],
                                  "arn": f"arn:aws:iam::{ACCOUNT_A}:user/alice", "accountId": ACCOUNT_A,
                                  "accessKeyId": PRINCIPALS["alice"].access_key_id, "userName": "alice"}
    assert ok["userIdentity"]["principalId"].startswith("AIDA")
    assert ok["eventSource"] == "cloudtrail.amazonaws.com" and ok["awsRegion"] == REGION
    assert ok["sourceIPAddress"] == "127.0.0.1" and "Boto3" in ok["userAgent"]
    assert ok["requestParameters"]["Name"] == "audited"
    assert ok["requestParameters"]["TagsList"] == [{"Key": "team", "Value": "sec"}]
    assert ok["responseElements"]["EventDataStoreArn"] == created["EventDataStoreArn"]
    assert ok["responseElements"]["CreatedTimestamp"].endswith("Z")  # ISO text, as CloudTrail writes it
    assert ok["requestID"] == request_id
    uuid.UUID(ok["eventID"])
    assert ok["readOnly"] is False and ok["eventType"] == "AwsApiCall" and ok["managementEvent"] is True
    assert ok["recipientAccountId"] == ACCOUNT_A and ok["eventCategory"] == "Management"
    assert "errorCode" not in ok
    assert failed["errorCode"] == "EventDataStoreTerminationProtectedException" and failed["errorMessage"]
    assert failed["responseElements"] is None
    assert failed["requestParameters"] == {"EventDataStore": created["EventDataStoreArn"]}


def test_audit_of_assumed_role_and_validation_failure(server, cloudtrail_client):
    status, _, _ = signed_request(server, "admin", {"Name": "x"}, target="CreateEventDataStore")
    assert status == 400
    (ev,) = audit_events(server)
    uid = ev["userIdentity"]
    assert uid["type"] == "AssumedRole" and uid["arn"] == PRINCIPALS["admin"].principal_arn
    assert uid["principalId"].startswith("AROA") and uid["principalId"].endswith(":admin-session")
    issuer = uid["sessionContext"]["sessionIssuer"]
    assert issuer == {"type": "Role", "principalId": uid["principalId"].split(":")[0],
                      "arn": f"arn:aws:iam::{ACCOUNT_A}:role/LakeAdmin", "accountId": ACCOUNT_A,
                      "userName": "LakeAdmin"}
    assert ev["errorCode"] == "InvalidParameterException" and "at 'name'" in ev["errorMessage"]


def test_audit_events_are_batched_and_flushed_in_background(server, cloudtrail_client):
    c = cloudtrail_client("bob")
    for i in range(3):
        c.create_event_data_store(Name=f"bg-{i}")
    st = server.lake.store(AUDIT_STORE)
    deadline = time.monotonic() + 10
    while st.snapshot().rows < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    snap = st.snapshot()
    assert snap.rows == 3
    assert snap.version <= 3  # one batch (maybe two), not one commit per call: creation is version 0
    events = audit_events(server)
    assert {e["recipientAccountId"] for e in events} == {ACCOUNT_B}


def test_audit_flushed_on_shutdown(tmp_path):
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT_A)
    cfg = ServerConfig(credentials=[PRINCIPALS["alice"]], audit_store=AUDIT_STORE, audit_flush_interval=60)
    with ServerThread(lake, cfg) as srv:
        boto_client(srv, "cloudtrail").create_event_data_store(Name="late-one")
        assert lake.store(AUDIT_STORE).snapshot().rows == 0  # still queued
    assert lake.store(AUDIT_STORE).snapshot().rows == 1


def test_no_audit_store_means_no_auditing(tmp_path):
    lake = Lake(str(tmp_path / "lake"), region=REGION, account_id=ACCOUNT_A)
    with ServerThread(lake, ServerConfig(credentials=[PRINCIPALS["alice"]])) as srv:
        boto_client(srv, "cloudtrail").create_event_data_store(Name="quiet")
        assert srv.state.audit is None
    assert [s.name for s in lake.stores()] == ["quiet"]


# ---- the command ------------------------------------------------------------------------------------------------

def test_lake_serve_command(tmp_path):
    proc, port = lake_serve_process(tmp_path, "--audit-store", "audit", "--log-level", "warning")
    try:
        class Srv:
            url = f"http://127.0.0.1:{port}"
        client = boto_client(Srv, "cloudtrail", "alice")
        client.create_event_data_store(Name="from-cli")
        assert [s["Name"] for s in client.list_event_data_stores()["EventDataStores"]] == ["audit", "from-cli"]
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"lake serve: http://127.0.0.1:{port}" in err
    lake = Lake(str(tmp_path / "lake"))
    assert lake.store("audit").snapshot().rows == 1  # flushed on shutdown


@pytest.mark.parametrize("args,phrase", [(["--allow-anonymous", "--host", "0.0.0.0"], "loopback"),
                                         ([], "no credentials configured")])
def test_lake_serve_refuses_unsafe_configurations(tmp_path, args, phrase):
    env = {k: v for k, v in os.environ.items() if k != "LAKE_SERVE_CREDENTIALS"}
    proc = subprocess.run([sys.executable, "-m", "lake.cli", "--lake", str(tmp_path / "lake"), "serve", *args],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert phrase in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
