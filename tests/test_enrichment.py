"""Enrichment (issue 8 point 4): ContextKeySelectors, the time-versioned tag registry, IAM global condition keys,
and eventContext queried with SQL ("all events on resources tagged env=prod")."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import orjson
import polars as pl
import pytest
from click.testing import CliRunner

import lake
from lake import enrichment as en
from lake.apicore import ApiError
from lake.api_enrichment import get_store_context, put_store_context
from lake.errors import InvalidParameter

T0 = "2026-01-01T00:00:00Z"
MID = "2026-06-01T00:00:00Z"

PROD_SQL = ("SELECT eventid FROM {s} WHERE json_extract(element_at(eventcontext, 'tagContext'), "
            "'$.resourceTags') LIKE '%\"env\":\"prod\"%' ORDER BY eventid")


def _rec(i: int, when: str, buckets: list[str], **extra) -> dict:
    rec = {
        "eventVersion": "1.11", "eventTime": when, "eventID": f"ev-{i:04d}", "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject", "awsRegion": "eu-west-1", "sourceIPAddress": "198.51.100.7",
        "userAgent": "aws-cli/2", "eventType": "AwsApiCall", "eventCategory": "Data", "managementEvent": False,
        "readOnly": True, "recipientAccountId": "111122223333",
        "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": "arn:aws:iam::111122223333:user/ana",
                         "accountId": "111122223333", "userName": "ana", "accessKeyId": "AKIAEXAMPLE"},
        "resources": [{"ARN": f"arn:aws:s3:::{b}", "type": "AWS::S3::Bucket"} for b in buckets],
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256"},
    }
    rec.update(extra)
    return rec


@pytest.fixture()
def lk(tmp_path):
    return lake.connect(str(tmp_path / "lake"))


def _enriched_store(lk, name="enriched", keys=("env", "team"), cond=("aws:SourceIp", "aws:PrincipalArn")):
    st = lk.create_store(name, max_event_size="Large", termination_protection=False)
    sel = [{"Type": "TagContext", "Equals": list(keys)}]
    if cond:
        sel.append({"Type": "RequestContext", "Equals": list(cond)})
    en.put_event_configuration(st, context_key_selectors=sel)
    return st


def _append(st, records, source="import", now=datetime(2026, 12, 1, tzinfo=timezone.utc)):
    """Enrich as the store.append hook does (idempotent if the hook is wired: enriched records are skipped)."""
    return st.append(en.enrich_for_store(st, records), source=source, now=now)


# ---- selectors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, what", [
    ("x", "must be a list"),
    ([{"Type": "TagContext", "Equals": ["a"]}] * 3, "at most 2"),
    ([{"Type": "Other", "Equals": ["a"]}], "Type must be"),
    ([{"Type": "TagContext", "Equals": []}], "1-50 keys"),
    ([{"Type": "TagContext", "Equals": [f"k{i}" for i in range(51)]}], "1-50 keys"),
    ([{"Type": "TagContext", "Equals": ["k" * 129]}], "1-128"),
    ([{"Type": "TagContext", "Equals": [""]}], "1-128"),
    ([{"Type": "TagContext", "Equals": ["a"]}, {"Type": "TagContext", "Equals": ["b"]}], "given twice"),
    ([{"Type": "RequestContext", "Equals": ["aws:NoSuchKey"]}], "not a supported"),
    ([{"Type": "TagContext", "Equals": ["a"], "Extra": 1}], "exactly Type and Equals"),
])
def test_selector_validation_refuses(bad, what):
    with pytest.raises(InvalidParameter, match=what):
        en.validate_context_key_selectors(bad)


def test_selector_validation_canonicalises():
    out = en.validate_context_key_selectors([
        {"Type": "RequestContext", "Equals": ["AWS:SOURCEIP", "aws:PrincipalArn", "aws:sourceip"]},
        {"Type": "TagContext", "Equals": ["k" * 128] + [f"k{i}" for i in range(49)]}])
    assert out[0] == {"Type": "RequestContext", "Equals": ["aws:SourceIp", "aws:PrincipalArn"]}
    assert len(out[1]["Equals"]) == 50


def test_selectors_require_large(lk):
    st = lk.create_store("standard", termination_protection=False)
    sel = [{"Type": "TagContext", "Equals": ["env"]}]
    with pytest.raises(en.InvalidCombination, match="require MaxEventSize Large") as e:
        en.put_event_configuration(st, context_key_selectors=sel)
    assert e.value.code == "InvalidParameterCombinationException"
    assert "ContextKeySelectors" not in st.metadata
    # one commit sets both
    out = en.put_event_configuration(st, max_event_size="Large", context_key_selectors=sel)
    assert out == {"MaxEventSize": "Large", "ContextKeySelectors": sel}
    # Standard while selectors stay is refused; clearing them with Standard works
    with pytest.raises(en.InvalidCombination):
        en.put_event_configuration(st, max_event_size="Standard")
    assert en.put_event_configuration(st, max_event_size="Standard", context_key_selectors=[]) == \
        {"MaxEventSize": "Standard", "ContextKeySelectors": []}
    assert "ContextKeySelectors" not in st.metadata
    assert en.get_context_key_selectors(st) == []


def test_api_helpers_map_errors(lk):
    st = lk.create_store("apistore", termination_protection=False)
    with pytest.raises(ApiError) as e:
        put_store_context(st, None, [{"Type": "TagContext", "Equals": ["env"]}])
    assert e.value.code == "InvalidParameterCombinationException"
    with pytest.raises(ApiError) as e:
        put_store_context(st, "Large", [{"Type": "Bogus", "Equals": ["env"]}])
    assert e.value.code == "InvalidParameterException"
    put_store_context(st, "Large", [{"Type": "RequestContext", "Equals": ["aws:SourceIp"]}])
    assert get_store_context(st)["ContextKeySelectors"] == [{"Type": "RequestContext", "Equals": ["aws:SourceIp"]}]
    assert en.put_context_key_selectors(st, []) == {"MaxEventSize": "Large", "ContextKeySelectors": []}


# ---- tag registry ------------------------------------------------------------------------------------------

def test_registry_versions_in_time(lk):
    reg = en.TagRegistry(lk)
    arn = "arn:aws:s3:::data"
    reg.load([{"arn": arn, "tags": {"env": "dev"}, "validFrom": T0}])
    reg.load([{"arn": arn, "tags": [{"Key": "env", "Value": "prod"}], "validFrom": MID}])
    at = lambda s: reg.tags_at(arn, en._parse_time(s))  # noqa: E731
    assert at("2025-12-31T23:59:59Z") == {}
    assert at(T0) == {"env": "dev"}
    assert at("2026-05-31T23:59:59Z") == {"env": "dev"}
    assert at(MID) == {"env": "prod"}
    # untagging is an entry with empty tags
    reg.load([{"arn": arn, "tags": {}, "validFrom": "2026-09-01"}])
    assert at("2026-09-02T00:00:00Z") == {}
    assert reg.versions == ["v00000001.json", "v00000002.json", "v00000003.json"]
    # another process sees the same history; versions are create-only files
    assert [h["tags"] for h in en.TagRegistry(lk).history(arn)] == [{"env": "dev"}, {"env": "prod"}, {}]
    assert not lk.storage.create(f"{en.TAGS_PREFIX}/v00000001.json", b"{}")


def test_registry_rejects_bad_entries(lk):
    reg = en.TagRegistry(lk)
    for bad, what in [({"arn": "nope", "tags": {}}, "not an ARN"),
                      ({"arn": "arn:aws:s3:::b", "tags": 5}, "tags must be"),
                      ({"arn": "arn:aws:s3:::b", "tags": {}, "validFrom": "yesterday"}, "not a timestamp")]:
        with pytest.raises(InvalidParameter, match=what):
            reg.load([bad])
    with pytest.raises(InvalidParameter, match="no tag entries"):
        reg.load([])
    assert reg.versions == []


def test_tag_files(lk, tmp_path):
    reg = en.TagRegistry(lk)
    csv_kv = tmp_path / "kv.csv"
    csv_kv.write_text(f"arn,valid_from,key,value\narn:aws:s3:::a,{T0},env,prod\narn:aws:s3:::a,{T0},team,blue\n"
                      f"arn:aws:s3:::b,{T0},env,dev\n")
    assert reg.load_file(str(csv_kv)) == {"version": 1, "entries": 2, "resources": 2}
    csv_json = tmp_path / "j.csv"
    csv_json.write_text('arn,tags,valid_from\narn:aws:s3:::c,"{""env"": ""prod""}",2026-02-01\n')
    reg.load_file(str(csv_json))
    nd = tmp_path / "t.ndjson"
    nd.write_text(json.dumps({"ResourceARN": "arn:aws:s3:::d", "Tags": {"env": "qa"}, "valid_from": T0}) + "\n")
    reg.load_file(str(nd))
    js = tmp_path / "t.json"
    js.write_text(json.dumps({"entries": [{"arn": "arn:aws:s3:::e", "tags": {"env": "prod"}}]}))
    reg.load_file(str(js), now=datetime(2026, 3, 1, tzinfo=timezone.utc))
    t = en._parse_time("2026-04-01T00:00:00Z")
    assert reg.tags_at("arn:aws:s3:::a", t) == {"env": "prod", "team": "blue"}
    assert reg.tags_at("arn:aws:s3:::c", t) == {"env": "prod"}
    assert reg.tags_at("arn:aws:s3:::d", t) == {"env": "qa"}
    assert reg.tags_at("arn:aws:s3:::e", t) == {"env": "prod"}
    assert reg.tags_at("arn:aws:s3:::e", en._parse_time("2026-02-28T00:00:00Z")) == {}
    with pytest.raises(InvalidParameter, match="cannot read tag file"):
        reg.load_file(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.csv"
    bad.write_text("resource,key\nx,y\n")
    with pytest.raises(InvalidParameter, match="'arn' column"):
        reg.load_file(str(bad))


def test_tags_cli(lk, tmp_path):
    from lake.cli import Ctx
    f = tmp_path / "t.json"
    f.write_text(json.dumps([{"arn": "arn:aws:s3:::a", "tags": {"env": "prod"}, "validFrom": T0}]))
    obj = Ctx(lk.uri, "json")
    r = CliRunner().invoke(en.tags_cli, ["load", str(f)], obj=obj)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(en.tags_cli, ["show", "arn:aws:s3:::a", "--at", "2026-02-01T00:00:00Z"], obj=obj)
    assert r.exit_code == 0 and '"prod"' in r.output
    r = CliRunner().invoke(en.tags_cli, ["show", "arn:aws:s3:::zzz"], obj=obj)
    assert r.exit_code == 1 and "no tags recorded" in r.output
    lk.create_store("clistore", termination_protection=False)
    r = CliRunner().invoke(en.tags_cli, ["configure", "clistore", "--tag-keys", "env,team",
                                         "--condition-keys", "aws:SourceIp"], obj=obj)
    assert r.exit_code == 0, r.output
    assert lake.connect(lk.uri).store("clistore").metadata["MaxEventSize"] == "Large"


# ---- condition keys -----------------------------------------------------------------------------------------

def test_condition_keys_iam_user():
    rc = en.request_context(_rec(1, "2026-04-30T15:30:00Z", ["b"]))
    assert rc == {
        "aws:SourceIp": "198.51.100.7", "aws:RequestedRegion": "eu-west-1", "aws:PrincipalAccount": "111122223333",
        "aws:PrincipalArn": "arn:aws:iam::111122223333:user/ana", "aws:PrincipalType": "User",
        "aws:userid": "AIDAEXAMPLE", "aws:username": "ana", "aws:PrincipalIsAWSService": "false",
        "aws:ViaAWSService": "false", "aws:SecureTransport": "true", "aws:CurrentTime": "2026-04-30 15:30:00",
        "aws:EpochTime": "1777563000"}


def test_condition_keys_assumed_role_with_mfa():
    uid = {"type": "AssumedRole", "principalId": "AROAEXAMPLE:sess", "accountId": "111122223333",
           "arn": "arn:aws:sts::111122223333:assumed-role/Admin/sess", "invokedBy": "cloudformation.amazonaws.com",
           "sessionContext": {"sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::111122223333:role/Admin"},
                              "sourceIdentity": "ana",
                              "webIdFederationData": {"federatedProvider": "accounts.google.com"},
                              "attributes": {"creationDate": "2026-04-30T15:00:00Z", "mfaAuthenticated": "true"}}}
    rc = en.request_context(_rec(1, "2026-04-30T15:30:00Z", [], userIdentity=uid,
                                 sourceIPAddress="cloudformation.amazonaws.com"))
    assert rc["aws:PrincipalArn"] == "arn:aws:iam::111122223333:role/Admin"
    assert rc["aws:PrincipalType"] == "AssumedRole" and rc["aws:userid"] == "AROAEXAMPLE:sess"
    assert rc["aws:MultiFactorAuthPresent"] == "true" and rc["aws:MultiFactorAuthAge"] == "1800"
    assert rc["aws:TokenIssueTime"] == "2026-04-30T15:00:00Z"
    assert rc["aws:ViaAWSService"] == "true" and "aws:SourceIp" not in rc
    assert rc["aws:SourceIdentity"] == "ana" and rc["aws:FederatedProvider"] == "accounts.google.com"
    assert "aws:username" not in rc


def test_condition_keys_service_and_root():
    svc = en.request_context({"eventTime": T0, "userIdentity": {"type": "AWSService", "invokedBy": "s3.amazonaws.com"},
                              "sourceIPAddress": "s3.amazonaws.com"})
    assert svc["aws:PrincipalIsAWSService"] == "true" and svc["aws:PrincipalServiceName"] == "s3.amazonaws.com"
    assert json.loads(svc["aws:PrincipalServiceNamesList"]) == ["s3.amazonaws.com"]
    root = en.request_context({"eventTime": T0, "userIdentity": {"type": "Root", "accountId": "1", "arn":
                                                                 "arn:aws:iam::1:root"},
                               "additionalEventData": {"MFAUsed": "Yes"}})
    assert root["aws:PrincipalType"] == "Account" and root["aws:userid"] == "1"
    assert root["aws:MultiFactorAuthPresent"] == "true" and "aws:MultiFactorAuthAge" not in root
    assert en.request_context({}) == {"aws:ViaAWSService": "false"}


# ---- enrich -------------------------------------------------------------------------------------------------

def test_enrich_selects_and_never_mutates(lk):
    reg = en.TagRegistry(lk)
    reg.load([{"arn": "arn:aws:s3:::p", "tags": {"env": "prod", "secret": "x"}, "validFrom": T0},
              {"arn": "arn:aws:iam::111122223333:user/ana", "tags": {"team": "blue"}, "validFrom": T0}])
    md = {"ContextKeySelectors": [{"Type": "TagContext", "Equals": ["env", "team"]},
                                  {"Type": "RequestContext", "Equals": ["aws:SourceIp", "aws:PrincipalOrgID"]}]}
    rec = _rec(1, "2026-03-01T00:00:00Z", ["p", "q"])
    before = orjson.dumps(rec)
    out = en.enrich([rec, orjson.dumps(_rec(2, "2026-03-01T00:00:00Z", ["q"])),
                     {**rec, "eventCategory": "NetworkActivity"}, "not json", {"eventTime": "bad"}], md, reg)
    assert orjson.dumps(rec) == before
    assert out[0]["eventContext"] == {
        "requestContext": {"aws:SourceIp": "198.51.100.7"},
        "tagContext": {"resourceTags": [{"arn": "arn:aws:s3:::p", "tags": {"env": "prod"}}],
                       "principalTags": {"team": "blue"}}}
    assert out[1]["eventContext"]["tagContext"] == {"principalTags": {"team": "blue"}}
    assert "eventContext" not in out[2] and out[3] == "not json" and out[4] == {"eventTime": "bad"}
    # idempotent, and a no-op without selectors
    assert en.enrich(out[:1], md, reg)[0] is out[0]
    assert en.enrich([rec], {}, reg)[0] is rec


def test_strip_event_context():
    plain = '{"eventID":"a"}'
    assert en.strip_event_context(plain) is plain
    assert json.loads(en.strip_event_context('{"eventID":"a","eventContext":{"tagContext":{}}}')) == {"eventID": "a"}
    odd = '{"requestParameters":{"k":"\\"eventContext\\""}}'
    assert en.strip_event_context(odd) == odd


def test_s3_bucket_from_request_parameters():
    rec = _rec(1, T0, [], requestParameters={"bucketName": "logs", "key": "a"})
    assert en.resource_arns(rec) == ["arn:aws:s3:::logs"]


# ---- SQL acceptance -----------------------------------------------------------------------------------------

def test_env_prod_query_with_tags_changed_midway(lk):
    st = _enriched_store(lk)
    reg = en.TagRegistry(lk)
    reg.load([{"arn": "arn:aws:s3:::alpha", "tags": {"env": "dev"}, "validFrom": T0},
              {"arn": "arn:aws:s3:::beta", "tags": {"env": "prod"}, "validFrom": T0},
              {"arn": "arn:aws:s3:::gamma", "tags": {"env": "production"}, "validFrom": T0},
              {"arn": "arn:aws:iam::111122223333:user/ana", "tags": {"env": "prod"}, "validFrom": T0}])
    reg.load([{"arn": "arn:aws:s3:::alpha", "tags": {"env": "prod"}, "validFrom": MID}])
    recs = [_rec(1, "2026-03-01T00:00:00Z", ["alpha"]),          # alpha was dev then
            _rec(2, "2026-07-01T00:00:00Z", ["alpha"]),          # alpha is prod now
            _rec(3, "2026-03-01T00:00:00Z", ["other", "beta"]),  # prod resource in second place
            _rec(4, "2026-03-01T00:00:00Z", ["gamma"]),          # 'production' is not 'prod'
            _rec(5, "2026-03-01T00:00:00Z", ["nothing"])]        # only the principal is tagged prod
    res = _append(st, recs)
    assert res.appended == 5 and not res.rejected
    got = lk.sql(PROD_SQL.format(s=st.id))["eventid"].to_list()
    assert got == ["ev-0002", "ev-0003"]
    # loading new tags later does not rewrite what is stored
    reg.load([{"arn": "arn:aws:s3:::alpha", "tags": {"env": "prod"}, "validFrom": "2025-01-01T00:00:00Z"}])
    assert lake.connect(lk.uri).sql(PROD_SQL.format(s=st.id))["eventid"].to_list() == ["ev-0002", "ev-0003"]
    # principal tags and condition keys are queryable too
    q = (f"SELECT eventid, json_extract_scalar(element_at(eventcontext, 'requestContext'), '$[\"aws:SourceIp\"]') "
         f"AS ip FROM {st.id} WHERE json_extract_scalar(element_at(eventcontext, 'tagContext'), "
         f"'$.principalTags.env') = 'prod' ORDER BY eventid")
    df = lk.sql(q)
    assert df["eventid"].to_list() == [f"ev-000{i}" for i in range(1, 6)]
    assert set(df["ip"].to_list()) == {"198.51.100.7"}
    # the stored JSON keeps eventContext
    js = st.scan().filter(pl.col("eventid") == "ev-0002").select("eventjson").collect()["eventjson"][0]
    assert json.loads(js)["eventContext"]["tagContext"]["resourceTags"][0]["tags"] == {"env": "prod"}


def test_store_without_selectors_is_not_enriched(lk):
    st = lk.create_store("plain", termination_protection=False)
    en.TagRegistry(lk).load([{"arn": "arn:aws:s3:::beta", "tags": {"env": "prod"}, "validFrom": T0}])
    _append(st, [_rec(1, "2026-03-01T00:00:00Z", ["beta"])])
    assert lk.sql(f"SELECT eventcontext FROM {st.id}")["eventcontext"].to_list() == [None]


def test_external_records_enriched(lk, external):
    recs = [r for name in ("invictus", "stratus", "awsdocs") for r in external[name] if isinstance(r, dict)]
    arns = sorted({a for r in recs for a in en.resource_arns(r)})
    if not arns:
        pytest.skip("external records name no resources")
    prod = set(arns[::2])
    reg = en.TagRegistry(lk)
    reg.load([{"arn": a, "tags": {"env": "prod" if a in prod else "dev"}, "validFrom": "2000-01-01T00:00:00Z"}
              for a in arns])
    st = _enriched_store(lk, "external", cond=("aws:SourceIp", "aws:PrincipalAccount", "aws:RequestedRegion"))
    times = [t for t in (en._parse_time(r.get("eventTime")) for r in recs) if t]
    res = _append(st, recs, now=min(times) + timedelta(days=360))  # inside the 366-day retention of the oldest
    assert res.appended > 0
    expected = {r["eventID"] for r in recs
                if r.get("eventCategory") not in en._SKIP_CATEGORIES and en._parse_time(r.get("eventTime"))
                and any(a in prod for a in en.resource_arns(r)) and r.get("eventID")}
    got = set(lk.sql(PROD_SQL.format(s=st.id))["eventid"].to_list())
    assert expected and got == expected
    # every stored management/data event got a requestContext with its region
    df = lk.sql(f"SELECT awsregion, json_extract_scalar(element_at(eventcontext, 'requestContext'), "
                f"'$[\"aws:RequestedRegion\"]') AS rr FROM {st.id} WHERE eventcategory IN ('Management', 'Data')")
    assert df.height > 0 and (df["awsregion"] == df["rr"]).all()
