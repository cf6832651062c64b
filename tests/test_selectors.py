"""Tests for lake.selectors: validation rules, matching semantics, and polars/oracle agreement."""

from __future__ import annotations

import copy
import glob
import os
import random
from typing import Any

import orjson
import polars as pl
import pytest

from lake.selectors import (
    DEFAULT_SELECTORS,
    RESOURCES_DTYPE,
    SelectorError,
    matches,
    matches_record,
    record_matcher,
    selector_expr,
    validate_selectors,
)

EXTERNAL = "/work/shared/datasets/external"

SCHEMA = {
    "eventcategory": pl.Utf8,
    "eventsource": pl.Utf8,
    "eventname": pl.Utf8,
    "readonly": pl.Boolean,
    "eventtype": pl.Utf8,
    "sessioncredentialfromconsole": pl.Utf8,
    "useridentity_arn": pl.Utf8,
    "errorcode": pl.Utf8,
    "vpcendpointid": pl.Utf8,
    "resources": RESOURCES_DTYPE,
}


def _s(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def to_frame(records: list[dict]) -> pl.DataFrame:
    """Map raw camelCase CloudTrail records onto the lake's normalised column names."""
    rows = []
    for r in records:
        uid = r.get("userIdentity")
        res = r.get("resources")
        ro = r.get("readOnly")
        rows.append(
            {
                "eventcategory": _s(r.get("eventCategory")),
                "eventsource": _s(r.get("eventSource")),
                "eventname": _s(r.get("eventName")),
                "readonly": ro if isinstance(ro, bool) else None,
                "eventtype": _s(r.get("eventType")),
                "sessioncredentialfromconsole": _s(r.get("sessionCredentialFromConsole")),
                "useridentity_arn": _s(uid.get("arn")) if isinstance(uid, dict) else None,
                "errorcode": _s(r.get("errorCode")),
                "vpcendpointid": _s(r.get("vpcEndpointId")),
                "resources": None
                if not isinstance(res, list)
                else [
                    {
                        "accountid": _s(x.get("accountId")),
                        "type": _s(x.get("type")),
                        "arn": _s(x.get("ARN", x.get("arn"))),
                        "arnprefix": _s(x.get("ARNPrefix")),
                    }
                    for x in res
                ],
            }
        )
    return pl.DataFrame(rows, schema=SCHEMA)


def assert_agree(records: list[dict], selectors: list[dict]) -> list[bool]:
    """selector_expr over the frame must equal matches_record per record; returns the verdicts."""
    df = to_frame(records)
    got = df.select(selector_expr(selectors)).to_series().to_list()
    want = [matches_record(r, selectors) for r in records]
    assert None not in got
    mismatches = [(i, records[i], got[i], want[i]) for i in range(len(records)) if got[i] != want[i]]
    assert not mismatches, f"{len(mismatches)} disagreements, first: {mismatches[0]}"
    # lazy path and the matches() convenience agree too
    assert df.lazy().select(selector_expr(selectors)).collect().to_series().to_list() == got
    assert matches(df, selectors).to_list() == got
    return want


def sel(*field_selectors: dict, name: str | None = "s") -> dict:
    out: dict = {"FieldSelectors": list(field_selectors)}
    if name is not None:
        out["Name"] = name
    return out


def cat(*values: str) -> dict:
    return {"Field": "eventCategory", "Equals": list(values)}


def rec(**kw: Any) -> dict:
    base = {"eventCategory": "Management", "eventSource": "s3.amazonaws.com", "eventName": "GetObject"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


DOC_EXAMPLE = [
    {
        "Name": "Log DeleteObject API calls for a specific S3 bucket",
        "FieldSelectors": [
            {"Field": "eventCategory", "Equals": ["Data"]},
            {"Field": "eventName", "Equals": ["DeleteObject"]},
            {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::amzn-s3-demo-bucket"]},
            {"Field": "readOnly", "Equals": ["false"]},
            {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
        ],
    }
]

# ---------------------------------------------------------------- validation


def test_default_selectors_valid_and_management_only() -> None:
    assert validate_selectors(DEFAULT_SELECTORS) == DEFAULT_SELECTORS
    assert matches_record(rec(), DEFAULT_SELECTORS)
    assert not matches_record(rec(eventCategory="Data"), DEFAULT_SELECTORS)


def test_normalisation_is_canonical_deep_copy() -> None:
    raw = [
        {
            "FieldSelectors": [
                {"Field": "EVENTCATEGORY", "Equals": "Data"},
                {"Field": "resources.arn", "NotEquals": ["arn:x"], "StartsWith": ["arn:"]},
                {"Field": "Resources.Type", "Equals": ("AWS::S3::Object",)},
                {"Field": "useridentity.ARN", "EndsWith": ["/bob"], "Equals": None},
            ]
        }
    ]
    before = copy.deepcopy(raw)
    out = validate_selectors(raw)
    assert raw == before  # input untouched
    assert out == [
        {
            "FieldSelectors": [
                {"Field": "eventCategory", "Equals": ["Data"]},
                {"Field": "resources.ARN", "StartsWith": ["arn:"], "NotEquals": ["arn:x"]},
                {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                {"Field": "userIdentity.arn", "EndsWith": ["/bob"]},
            ]
        }
    ]
    out[0]["FieldSelectors"][0]["Equals"].append("Management")
    assert validate_selectors(raw)[0]["FieldSelectors"][0]["Equals"] == ["Data"]
    assert validate_selectors(DOC_EXAMPLE) == DOC_EXAMPLE


def test_wildcard_is_literal_not_error() -> None:
    s = [sel(cat("Management"), {"Field": "eventName", "Equals": ["Get*"]})]
    validate_selectors(s)
    assert not matches_record(rec(eventName="GetObject"), s)
    assert matches_record(rec(eventName="Get*"), s)


M = cat("Management")

INVALID: list[tuple[str, Any, str]] = [
    ("not a list", {"FieldSelectors": [M]}, "must be a list"),
    ("zero selectors", [], "1 to 5 selectors"),
    ("six selectors", [sel(M)] * 6, "1 to 5 selectors"),
    ("selector not object", ["x"], "selector[0]: must be an object"),
    ("unknown selector key", [{"FieldSelectors": [M], "Foo": 1}], "unknown key"),
    ("no field selectors", [{"Name": "n", "FieldSelectors": []}], "FieldSelectors must be a non-empty list"),
    ("missing field selectors", [{"Name": "n"}], "FieldSelectors must be a non-empty list"),
    ("name too long", [sel(M, name="x" * 1001)], "Name is 1001 characters"),
    ("name not string", [sel(M, name=3)], "Name must be a string"),  # type: ignore[arg-type]
    (
        "too many values",
        [sel(M, {"Field": "eventName", "Equals": [f"e{i}" for i in range(500)]})],
        "501 condition values",
    ),
    ("value too long", [sel(M, {"Field": "eventName", "Equals": ["x" * 2049]})], "1 to 2048 characters"),
    ("empty value", [sel(M, {"Field": "eventName", "Equals": [""]})], "1 to 2048 characters"),
    ("non-string value", [sel(M, {"Field": "eventName", "Equals": [1]})], "values must be strings"),
    ("empty value list", [sel(M, {"Field": "eventName", "Equals": []})], "non-empty list of strings"),
    ("no eventCategory", [sel({"Field": "eventName", "Equals": ["x"]})], "exactly one eventCategory"),
    ("two eventCategory", [sel(M, cat("Data"))], "exactly one eventCategory"),
    (
        "eventCategory NotEquals",
        [sel({"Field": "eventCategory", "NotEquals": ["Data"]})],
        "operator NotEquals is not supported; eventCategory allows only Equals",
    ),
    ("bad category", [sel(cat("Aggregated"))], "invalid value 'Aggregated'"),
    ("category case-sensitive", [sel(cat("management"))], "invalid value 'management'"),
    ("unknown field", [sel(M, {"Field": "awsRegion", "Equals": ["us-east-1"]})], "unknown Field"),
    ("missing Field", [sel(M, {"Equals": ["x"]})], "Field is required"),
    ("field selector not object", [sel(M, "eventName")], "FieldSelectors[1]: must be an object"),
    (
        "readOnly StartsWith",
        [sel(M, {"Field": "readOnly", "StartsWith": ["t"]})],
        "readOnly allows only Equals",
    ),
    ("readOnly value", [sel(M, {"Field": "readOnly", "Equals": ["True"]})], "allowed: true, false"),
    (
        "resources.type NotEquals",
        [sel(cat("Data"), {"Field": "resources.type", "NotEquals": ["AWS::S3::Object"]})],
        "resources.type allows only Equals",
    ),
    (
        "two resources.type",
        [
            sel(
                cat("Data"),
                {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                {"Field": "resources.type", "Equals": ["AWS::Lambda::Function"]},
            )
        ],
        "at most one resources.type",
    ),
    (
        "sessionCredentialFromConsole StartsWith",
        [sel(M, {"Field": "sessionCredentialFromConsole", "StartsWith": ["t"]})],
        "allows only Equals, NotEquals",
    ),
    (
        "errorCode NotEquals",
        [
            sel(
                cat("NetworkActivity"),
                {"Field": "eventSource", "Equals": ["kms.amazonaws.com"]},
                {"Field": "errorCode", "NotEquals": ["VpceAccessDenied"]},
            )
        ],
        "errorCode allows only Equals",
    ),
    (
        "errorCode value",
        [
            sel(
                cat("NetworkActivity"),
                {"Field": "eventSource", "Equals": ["kms.amazonaws.com"]},
                {"Field": "errorCode", "Equals": ["AccessDenied"]},
            )
        ],
        "allowed: VpceAccessDenied",
    ),
    ("no operator", [sel(M, {"Field": "eventName"})], "at least one operator"),
    ("only None operator", [sel(M, {"Field": "eventName", "Equals": None})], "at least one operator"),
    ("unknown operator", [sel(M, {"Field": "eventName", "Contains": ["x"]})], "unknown operator"),
    ("operator key case", [sel(M, {"Field": "eventName", "equals": ["x"]})], "unknown operator"),
    (
        "resources.ARN with Management",
        [sel(M, {"Field": "resources.ARN", "StartsWith": ["arn:"]})],
        "not allowed with eventCategory Management",
    ),
    (
        "resources.type with Management",
        [sel(M, {"Field": "resources.type", "Equals": ["AWS::S3::Object"]})],
        "not allowed with eventCategory Management",
    ),
    (
        "resources with mixed categories",
        [sel(cat("Data", "Management"), {"Field": "resources.ARN", "StartsWith": ["arn:"]})],
        "not allowed with eventCategory Management",
    ),
    (
        "errorCode with Management",
        [sel(M, {"Field": "errorCode", "Equals": ["VpceAccessDenied"]})],
        "not allowed with eventCategory Management",
    ),
    (
        "vpcEndpointId with Data",
        [sel(cat("Data"), {"Field": "vpcEndpointId", "Equals": ["vpce-1"]})],
        "not allowed with eventCategory Data",
    ),
    (
        "readOnly with NetworkActivity",
        [
            sel(
                cat("NetworkActivity"),
                {"Field": "eventSource", "Equals": ["kms.amazonaws.com"]},
                {"Field": "readOnly", "Equals": ["true"]},
            )
        ],
        "not allowed with eventCategory NetworkActivity",
    ),
    ("NetworkActivity without eventSource", [sel(cat("NetworkActivity"))], "require an eventSource"),
    (
        "NetworkActivity eventSource StartsWith",
        [sel(cat("NetworkActivity"), {"Field": "eventSource", "StartsWith": ["kms"]})],
        "eventSource supports only Equals",
    ),
    (
        "Insight with another field",
        [sel(cat("Insight"), {"Field": "eventName", "Equals": ["x"]})],
        "eventCategory Insight allows no other field selectors",
    ),
    (
        "ActivityAuditLog with another field",
        [sel(cat("ActivityAuditLog"), {"Field": "eventSource", "Equals": ["x"]})],
        "eventCategory ActivityAuditLog allows no other field selectors",
    ),
]


@pytest.mark.parametrize("selectors,needle", [(s, n) for _, s, n in INVALID], ids=[i for i, _, _ in INVALID])
def test_validation_errors(selectors: Any, needle: str) -> None:
    with pytest.raises(SelectorError) as exc:
        validate_selectors(selectors)
    msg = str(exc.value)
    assert needle in msg
    assert "\n" not in msg
    assert isinstance(exc.value, ValueError)


def test_error_names_selector_and_field() -> None:
    bad = [
        sel(M, name="first"),
        sel(M, {"Field": "eventname", "Equals": ["ok"]}, {"Field": "readonly", "Equals": ["yes"]}, name="second"),
    ]
    with pytest.raises(SelectorError, match=r"selector\[1\] \('second'\) FieldSelectors\[2\] \(readOnly\)"):
        validate_selectors(bad)


def test_valid_edge_cases() -> None:
    ok = [
        sel(M, {"Field": "eventName", "Equals": [f"e{i}" for i in range(499)]}),  # 500 values exactly
    ]
    validate_selectors(ok)
    validate_selectors([sel(M, name="x" * 1000)])
    validate_selectors([sel(M, {"Field": "eventName", "Equals": ["x" * 2048]})])
    validate_selectors([sel(cat(c)) for c in ("Insight", "ConfigurationItem", "Evidence", "ActivityAuditLog")])
    validate_selectors(
        [
            sel(
                cat("NetworkActivity"),
                {"Field": "eventSource", "Equals": ["kms.amazonaws.com"]},
                {"Field": "errorCode", "Equals": ["VpceAccessDenied"]},
                {"Field": "vpcEndpointId", "NotStartsWith": ["vpce-0"]},
                {"Field": "eventName", "NotEquals": ["ListKeys"]},
            ),
            sel(M, {"Field": "sessionCredentialFromConsole", "NotEquals": ["true"]}),
            sel(cat("Data")),  # all data events: resources.type is optional here
        ]
    )
    with pytest.raises(SelectorError):  # selector_expr / matches_record validate too
        selector_expr([])
    with pytest.raises(SelectorError):
        matches_record(rec(), [sel(cat("Nope"))])


# ---------------------------------------------------------------- semantics


def test_doc_example() -> None:
    base = dict(
        eventCategory="Data",
        eventName="DeleteObject",
        readOnly=False,
        resources=[
            {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::amzn-s3-demo-bucket"},
            {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::amzn-s3-demo-bucket/key.txt"},
        ],
    )
    records = [
        rec(**base),
        rec(**{**base, "eventName": "GetObject"}),
        rec(**{**base, "readOnly": True}),
        rec(**{**base, "readOnly": None}),  # readOnly absent -> Equals 'false' fails
        rec(**{**base, "eventCategory": "Management"}),
        rec(**{**base, "resources": [{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::other/key"}]}),
        rec(**{**base, "resources": [{"type": "AWS::S3::Object", "arn": "arn:aws:s3:::amzn-s3-demo-bucket2/k"}]}),
    ]
    assert assert_agree(records, DOC_EXAMPLE) == [True, False, False, False, False, False, True]


def test_selectors_or_and_conditions_and() -> None:
    s = [
        sel(M, {"Field": "eventSource", "Equals": ["iam.amazonaws.com"]}, {"Field": "readOnly", "Equals": ["false"]}),
        sel(M, {"Field": "eventName", "StartsWith": ["Delete", "Remove"]}),
    ]
    records = [
        rec(eventSource="iam.amazonaws.com", eventName="CreateUser", readOnly=False),  # sel 0
        rec(eventSource="iam.amazonaws.com", eventName="GetUser", readOnly=True),  # neither
        rec(eventSource="ec2.amazonaws.com", eventName="DeleteVpc", readOnly=False),  # sel 1
        rec(eventSource="ec2.amazonaws.com", eventName="RemoveTags"),  # sel 1 (alternative value)
        rec(eventSource="ec2.amazonaws.com", eventName="RunInstances", readOnly=False),  # neither
        rec(eventSource="iam.amazonaws.com", eventName="DeleteUser", readOnly=True),  # sel 1 only
    ]
    assert assert_agree(records, s) == [True, False, True, True, False, True]


def test_operators_in_one_field_selector_are_anded() -> None:
    s = [sel(M, {"Field": "eventName", "StartsWith": ["Get"], "EndsWith": ["Policy"], "NotEquals": ["GetPolicy"]})]
    names = ["GetBucketPolicy", "GetPolicy", "GetObject", "PutBucketPolicy"]
    assert assert_agree([rec(eventName=n) for n in names], s) == [True, False, False, False]


def test_negative_operators_must_differ_from_every_value() -> None:
    s = [
        sel(
            M,
            {"Field": "eventSource", "NotEquals": ["kms.amazonaws.com", "rdsdata.amazonaws.com"]},
            {"Field": "eventName", "NotStartsWith": ["Describe", "List"]},
            {"Field": "userIdentity.arn", "NotEndsWith": ["/robot", ":root"]},
        )
    ]
    records = [
        rec(eventSource="kms.amazonaws.com", eventName="Decrypt"),
        rec(eventSource="rdsdata.amazonaws.com", eventName="ExecuteStatement"),
        rec(eventSource="s3.amazonaws.com", eventName="ListBuckets"),
        rec(eventSource="s3.amazonaws.com", eventName="DescribeX"),
        rec(eventSource="s3.amazonaws.com", eventName="PutObject", userIdentity={"arn": "arn:aws:iam::1:root"}),
        rec(eventSource="s3.amazonaws.com", eventName="PutObject", userIdentity={"arn": "arn:aws:iam::1:user/robot"}),
        rec(eventSource="s3.amazonaws.com", eventName="PutObject", userIdentity={"arn": "arn:aws:iam::1:user/alice"}),
        rec(eventSource="s3.amazonaws.com", eventName="PutObject"),  # no userIdentity -> negative holds
    ]
    assert assert_agree(records, s) == [False, False, False, False, False, False, True, True]


def test_null_semantics() -> None:
    pos = [sel(M, {"Field": "sessionCredentialFromConsole", "Equals": ["true"]})]
    neg = [sel(M, {"Field": "sessionCredentialFromConsole", "NotEquals": ["true"]})]
    ro_pos = [sel(M, {"Field": "readOnly", "Equals": ["true", "false"]})]
    ends = [sel(M, {"Field": "eventType", "EndsWith": ["Call"]})]
    not_ends = [sel(M, {"Field": "eventType", "NotEndsWith": ["Call"]})]
    records = [
        rec(sessionCredentialFromConsole="true", readOnly=True, eventType="AwsApiCall"),
        rec(),  # everything optional absent
        rec(eventCategory=None),  # even eventCategory absent
    ]
    assert assert_agree(records, pos) == [True, False, False]
    assert assert_agree(records, neg) == [False, True, False]
    assert assert_agree(records, ro_pos) == [True, False, False]
    assert assert_agree(records, ends) == [True, False, False]
    assert assert_agree(records, not_ends) == [False, True, False]


def test_readonly_boolean_and_string_columns() -> None:
    s = [sel(M, {"Field": "readOnly", "Equals": ["false"]})]
    df_bool = pl.DataFrame({"eventcategory": ["Management"] * 3, "readonly": [False, True, None]})
    df_str = pl.DataFrame({"eventcategory": ["Management"] * 3, "readonly": ["false", "true", None]})
    assert matches(df_bool, s).to_list() == [True, False, False]
    assert matches(df_str, s).to_list() == [True, False, False]
    assert matches_record(rec(readOnly="false"), s)  # tolerate string JSON too


def test_matches_fills_missing_columns_and_expr_alias() -> None:
    s = [
        sel(M, {"Field": "userIdentity.arn", "NotStartsWith": ["arn:aws:sts"]}),
        sel(cat("Data"), {"Field": "resources.ARN", "EndsWith": [".txt"]}),
    ]
    df = pl.DataFrame({"eventcategory": ["Management", "Data", None]})
    assert matches(df, s).to_list() == [True, False, False]
    assert matches(df, s).name == "selector_match"
    out = df.with_columns(selector_expr(DEFAULT_SELECTORS))
    assert out.columns == ["eventcategory", "selector_match"]
    assert df.lazy().filter(selector_expr(DEFAULT_SELECTORS)).collect().height == 1


def test_resources_same_element_semantics() -> None:
    s = [
        sel(
            cat("Data"),
            {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
            {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::bucket-a/"], "NotEndsWith": [".tmp"]},
        )
    ]
    obj_a = {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::bucket-a/k.txt"}
    records = [
        rec(eventCategory="Data", resources=[obj_a]),
        # type and ARN conditions satisfied only by DIFFERENT elements -> no match
        rec(
            eventCategory="Data",
            resources=[
                {"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::bucket-a/k.txt"},
                {"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::bucket-b/k.txt"},
            ],
        ),
        # one good element among bad ones -> match
        rec(
            eventCategory="Data",
            resources=[{"type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::bucket-a"}, obj_a],
        ),
        rec(eventCategory="Data", resources=[{**obj_a, "ARN": "arn:aws:s3:::bucket-a/k.tmp"}]),
        rec(eventCategory="Data", resources=[]),
        rec(eventCategory="Data"),  # no resources at all
        rec(eventCategory="Data", resources=[{"accountId": "1"}]),  # element without type/ARN
        rec(eventCategory="Data", resources=[{"type": "AWS::S3::Object", "arn": "arn:aws:s3:::bucket-a/x"}]),
    ]
    assert assert_agree(records, s) == [True, False, True, False, False, False, False, True]


def test_resources_only_negative_conditions_need_an_element() -> None:
    s = [sel(cat("Data"), {"Field": "resources.ARN", "NotStartsWith": ["arn:aws:s3:::secret"]})]
    records = [
        rec(eventCategory="Data", resources=[{"type": "T", "ARN": "arn:aws:s3:::public/x"}]),
        rec(eventCategory="Data", resources=[{"type": "T", "ARN": "arn:aws:s3:::secret/x"}]),
        rec(eventCategory="Data", resources=[{"type": "T"}]),  # element with null ARN: negative holds
        rec(eventCategory="Data", resources=[]),
        rec(eventCategory="Data"),
    ]
    assert assert_agree(records, s) == [True, False, True, False, False]


def test_network_activity_selector() -> None:
    s = [
        sel(
            cat("NetworkActivity"),
            {"Field": "eventSource", "Equals": ["kms.amazonaws.com"]},
            {"Field": "errorCode", "Equals": ["VpceAccessDenied"]},
            {"Field": "vpcEndpointId", "StartsWith": ["vpce-"]},
        )
    ]
    denied = {
        "eventCategory": "NetworkActivity",
        "eventSource": "kms.amazonaws.com",
        "eventName": "ListKeys",
        "errorCode": "VpceAccessDenied",
        "eventType": "AwsVpceEvent",
        "vpcEndpointId": "vpce-EXAMPLE08c1b6b9b7",
    }
    ok = {k: v for k, v in denied.items() if k != "errorCode"}
    assert assert_agree([denied, ok, {**denied, "eventSource": "s3.amazonaws.com"}], s) == [True, False, False]


def test_other_categories() -> None:
    s = [sel(cat("Insight", "ActivityAuditLog"))]
    records = [{"eventCategory": c} for c in ("Insight", "ActivityAuditLog", "Management", "Evidence")]
    assert assert_agree(records, s) == [True, True, False, False]


def test_record_matcher_reuses_validation() -> None:
    f = record_matcher(DEFAULT_SELECTORS)
    assert f(rec()) and not f(rec(eventCategory="Insight"))


# ---------------------------------------------------------------- property-style agreement

_POOL = {
    "eventCategory": ["Management", "Data", "NetworkActivity", "Insight", None],
    "eventSource": ["s3.amazonaws.com", "kms.amazonaws.com", "iam.amazonaws.com", None],
    "eventName": ["GetObject", "PutObject", "DeleteObject", "ListKeys", "Decrypt", None],
    "readOnly": [True, False, None],
    "eventType": ["AwsApiCall", "AwsServiceEvent", "AwsVpceEvent", None],
    "sessionCredentialFromConsole": ["true", None],
    "errorCode": ["VpceAccessDenied", "AccessDenied", None],
    "vpcEndpointId": ["vpce-111", "vpce-222", "AWS Internal", None],
}
_ARNS = ["arn:aws:s3:::a/x.txt", "arn:aws:s3:::a/y.tmp", "arn:aws:s3:::b/x.txt", "arn:aws:kms:us-east-1:1:key/k", None]
_TYPES = ["AWS::S3::Object", "AWS::S3::Bucket", "AWS::KMS::Key", None]
_USER_ARNS = ["arn:aws:iam::1:user/alice", "arn:aws:sts::1:assumed-role/R/s", "arn:aws:iam::1:root"]

_VALUES = {
    "eventSource": ["s3.amazonaws.com", "kms.amazonaws.com", "s3.", "iam", ".com"],
    "eventName": ["GetObject", "PutObject", "Get", "Object", "Decrypt", "List"],
    "eventType": ["AwsApiCall", "Aws", "Event"],
    "resources.ARN": ["arn:aws:s3:::a/", "arn:aws:s3:::a/x.txt", ".txt", ".tmp", "arn:aws:kms"],
    "userIdentity.arn": ["arn:aws:iam::1:", "alice", "/s", "arn:aws:iam::1:root"],
    "vpcEndpointId": ["vpce-", "vpce-111", "Internal"],
}
_OPS = ["Equals", "StartsWith", "EndsWith", "NotEquals", "NotStartsWith", "NotEndsWith"]


def _random_record(rng: random.Random) -> dict:
    r: dict = {}
    for key, pool in _POOL.items():
        v = rng.choice(pool)
        if v is not None:
            r[key] = v
    if rng.random() < 0.7:
        r["userIdentity"] = {"type": "IAMUser"}
        if rng.random() < 0.8:
            r["userIdentity"]["arn"] = rng.choice(_USER_ARNS)
    if rng.random() < 0.7:
        res = []
        for _ in range(rng.randint(0, 3)):
            e: dict = {"accountId": "1"}
            if (t := rng.choice(_TYPES)) is not None:
                e["type"] = t
            if (a := rng.choice(_ARNS)) is not None:
                e["ARN" if rng.random() < 0.8 else "arn"] = a
            res.append(e)
        r["resources"] = res
    return r


def _random_field_selector(rng: random.Random, field: str) -> dict:
    if field == "readOnly":
        return {"Field": field, "Equals": rng.sample(["true", "false"], rng.randint(1, 2))}
    if field == "sessionCredentialFromConsole":
        return {"Field": field, rng.choice(["Equals", "NotEquals"]): [rng.choice(["true", "false"])]}
    if field == "resources.type":
        return {"Field": field, "Equals": rng.sample([t for t in _TYPES if t], rng.randint(1, 2))}
    if field == "errorCode":
        return {"Field": field, "Equals": ["VpceAccessDenied"]}
    fs: dict = {"Field": field}
    for op in rng.sample(_OPS, rng.randint(1, 2)):
        fs[op] = rng.sample(_VALUES[field], rng.randint(1, 2))
    return fs


_FIELDS_BY_CAT = {
    "Management": ["eventSource", "eventName", "readOnly", "eventType", "sessionCredentialFromConsole", "userIdentity.arn"],
    "Data": [
        "eventSource", "eventName", "readOnly", "eventType", "sessionCredentialFromConsole", "userIdentity.arn",
        "resources.type", "resources.ARN", "resources.ARN",
    ],
    "NetworkActivity": ["eventName", "errorCode", "vpcEndpointId"],
}


def _random_selectors(rng: random.Random) -> list[dict]:
    out = []
    for _ in range(rng.randint(1, 3)):
        c = rng.choice(["Management", "Data", "Data", "NetworkActivity", "Insight"])
        fsels = [cat(c)]
        if c == "NetworkActivity":
            fsels.append({"Field": "eventSource", "Equals": [rng.choice(["kms.amazonaws.com", "s3.amazonaws.com"])]})
        if c != "Insight":
            fields = rng.sample(_FIELDS_BY_CAT[c], rng.randint(0, 3))
            if fields.count("resources.type") > 1:
                fields = [f for f in fields if f != "resources.type"] + ["resources.type"]
            fsels += [_random_field_selector(rng, f) for f in fields]
        out.append(sel(*fsels))
    return out


def test_property_expr_agrees_with_oracle() -> None:
    rng = random.Random(20240601)
    records = [_random_record(rng) for _ in range(300)]
    df = to_frame(records)
    hits = 0
    for _ in range(60):
        s = _random_selectors(rng)
        validate_selectors(s)
        got = df.select(selector_expr(s)).to_series().to_list()
        want = [matches_record(r, s) for r in records]
        assert got == want, s
        hits += sum(want)
    assert 0 < hits < 300 * 60  # the generator exercises both outcomes


# ---------------------------------------------------------------- real records


@pytest.fixture(scope="module")
def real_records() -> list[dict]:
    if not os.path.isdir(EXTERNAL):
        pytest.skip(f"{EXTERNAL} not present")
    records: list[dict] = []
    for path in sorted(glob.glob(f"{EXTERNAL}/invictus-ir-aws_dataset/CloudTrail/*.json")):
        with open(path, "rb") as fh:
            records.extend(orjson.loads(fh.read())["Records"])
    for path in sorted(glob.glob(f"{EXTERNAL}/stratus-red-team-detonation-logs/**/*.json", recursive=True)):
        with open(path, "rb") as fh:
            data = orjson.loads(fh.read())
        if isinstance(data, list):
            records.extend(data)
    if not records:
        pytest.skip("no external CloudTrail records found")
    return records


REAL_SELECTORS = [
    DEFAULT_SELECTORS,
    [sel(M, {"Field": "readOnly", "Equals": ["false"]}), sel(M, {"Field": "eventSource", "StartsWith": ["iam."]})],
    [sel(M, {"Field": "eventSource", "NotEquals": ["kms.amazonaws.com", "ec2.amazonaws.com"]},
         {"Field": "eventName", "NotStartsWith": ["Describe", "List", "Get"]})],
    [sel(M, {"Field": "userIdentity.arn", "EndsWith": [":root"], "NotStartsWith": ["arn:aws:iam::000"]})],
    [sel(M, {"Field": "sessionCredentialFromConsole", "Equals": ["true"]}, {"Field": "eventType", "Equals": ["AwsApiCall"]})],
    [sel(M, {"Field": "sessionCredentialFromConsole", "NotEquals": ["true"]})],
]

# Real datasets hold only management events; relabel a copy as Data to exercise resources.*.
REAL_DATA_SELECTORS = [
    [sel(cat("Data"), {"Field": "resources.type", "Equals": ["AWS::KMS::Key"]})],
    [sel(cat("Data"), {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::"], "NotEndsWith": ["-logs"]})],
    [sel(cat("Data"), {"Field": "resources.type", "Equals": ["AWS::S3::Bucket"]},
         {"Field": "resources.ARN", "EndsWith": ["a", "e", "1"]}, {"Field": "readOnly", "Equals": ["true"]})],
    [sel(cat("Data"), {"Field": "resources.ARN", "NotStartsWith": ["arn:aws:iam"]}), sel(M)],
]


def test_real_records_agree(real_records: list[dict]) -> None:
    for s in REAL_SELECTORS:
        verdicts = assert_agree(real_records, s)
        if s is DEFAULT_SELECTORS:
            assert sum(verdicts) == sum(r.get("eventCategory") == "Management" for r in real_records)
    relabelled = [{**r, "eventCategory": "Data"} for r in real_records]
    some_hit = False
    for s in REAL_DATA_SELECTORS:
        some_hit |= any(assert_agree(relabelled, s))
    assert some_hit
