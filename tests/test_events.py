"""The event model on real CloudTrail data: every record with an eventTime round-trips, on a local
directory and on S3; the rest are rejected with a reason and lose nothing beside them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import orjson
import pyarrow as pa
import pytest

import lake
from lake.events import convert, convert_raw
from lake.timeparse import parse_timestamps

NOW = datetime(2024, 3, 1, tzinfo=timezone.utc)  # with 3,653 days of retention every dated record fits


def _has_time(rec) -> bool:
    t = rec.get("eventTime") if isinstance(rec, dict) else None
    return isinstance(t, str) and parse_timestamps([t])[0] is not None


def _case_collides(o) -> bool:
    if isinstance(o, dict):
        low = [k.lower() for k in o]
        return len(low) != len(set(low)) or any(_case_collides(v) for v in o.values())
    if isinstance(o, list):
        return any(_case_collides(v) for v in o)
    return False


def _expected(records: list) -> list[dict]:
    """What the store must hold: dated records, first occurrence of each (eventID, account, date)."""
    seen, out = set(), []
    for r in records:
        if not _has_time(r):
            continue
        day = parse_timestamps([r["eventTime"]])[0].date()
        key = (r.get("eventID"), r.get("recipientAccountId"), day)
        if key[0] is not None and key in seen:
            continue
        seen.add(key)
        out.append(r)
    return out


def _canon(obj) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def test_external_round_trip(external, lake_uri):
    lk = lake.connect(lake_uri)
    for name, records in external.items():
        st = lk.create_store(f"ext-{name}", retention_days=3653)
        result = st.append(records, source="import", now=NOW)
        expected = _expected(records)
        undated = [i for i, r in enumerate(records) if not _has_time(r)]
        assert sorted(r.index for r in result.rejected) == undated, name
        assert all(r.code in ("MissingEventTime", "InvalidEventTime") for r in result.rejected)
        assert result.expired == 0
        assert result.appended == len(expected), name
        table = st.to_arrow()
        assert table.num_rows == len(expected)
        stored = sorted(_canon(orjson.loads(j)) for j in table.column("eventjson").to_pylist())
        assert stored == sorted(_canon(r) for r in expected), f"{name}: eventjson does not round-trip"


def test_otrf_records_without_eventtime_are_rejected(external, local_uri):
    st = lake.connect(local_uri).create_store("otrf", retention_days=3653)
    records = external["otrf"]
    result = st.append(records, source="import", now=NOW)
    assert result.appended == 0
    assert len(result.rejected) == len(records) == 103
    assert {r.code for r in result.rejected} == {"MissingEventTime"}
    assert all("eventTime" in r.message for r in result.rejected)


def test_case_colliding_keys_survive(external):
    colliding = [r for r in external["invictus"] if _case_collides(r)]
    assert len(colliding) == 8
    conv = convert(colliding, field_caps=False)
    assert conv.table.num_rows == 8 and not conv.rejects
    for rec, json_text, params in zip(colliding, conv.table.column("eventjson").to_pylist(),
                                      conv.table.column("requestparameters").to_pylist()):
        assert orjson.loads(json_text) == rec
        keys = [k for k, _ in params]
        for k, v in rec["requestParameters"].items():
            assert k in keys
            stored = dict(params)[k]
            assert stored == (v if isinstance(v, str) else orjson.dumps(v).decode())
        if "tagging" in rec["requestParameters"]:
            assert "Tagging" in keys and "tagging" in keys


def _base(**extra) -> dict:
    rec = {"eventVersion": "1.11", "eventTime": "2024-01-02T03:04:05Z", "eventSource": "s3.amazonaws.com",
           "eventName": "GetObject", "awsRegion": "us-east-1", "eventID": "e1", "recipientAccountId": "111122223333",
           "userIdentity": {"type": "AssumedRole", "arn": "arn:aws:sts::111122223333:assumed-role/R/s",
                            "accountId": "111122223333", "principalId": "AROA:s", "accessKeyId": "ASIA1",
                            "sessionContext": {"sessionIssuer": {"arn": "arn:aws:iam::111122223333:role/R",
                                                                 "userName": "R", "type": "Role"},
                                               "attributes": {"creationDate": "20131102T010628Z",
                                                              "mfaAuthenticated": "true"}}}}
    rec.update(extra)
    return rec


@pytest.mark.parametrize("version", ["1.0", "1.01", "1.02", "1.03", "1.04", "1.05", "1.06", "1.07", "1.08",
                                     "1.09", "1.10", "1.11", "1.9", "2.0"])
def test_every_event_version_is_accepted(version):
    conv = convert([_base(eventVersion=version, futureField={"x": 1})])
    assert conv.table.num_rows == 1
    assert orjson.loads(conv.table.column("eventjson")[0].as_py())["futureField"] == {"x": 1}


@pytest.mark.parametrize("text,expected", [
    ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05"),
    ("2024-01-02 03:04:05", "2024-01-02T03:04:05"),
    ("2024-01-02 03:04:05.123456789", "2024-01-02T03:04:05.123456"),
    ("2024-01-02T03:04:05.5Z", "2024-01-02T03:04:05.500000"),
    ("2024-01-02T05:04:05+02:00", "2024-01-02T03:04:05"),
])
def test_eventtime_variants(text, expected):
    conv = convert([_base(eventTime=text)])
    got = conv.table.column("eventtime")[0].as_py()
    assert got.tzinfo is not None
    assert got.replace(tzinfo=None).isoformat(timespec="microseconds").startswith(expected)


def test_bad_records_are_rejected_and_lose_nothing_beside_them():
    good = [_base(eventID=f"g{i}") for i in range(3)]
    batch = [good[0], b"{not json", _base(eventTime="redacted"), [1, 2], good[1],
             {k: v for k, v in _base().items() if k != "eventTime"}, good[2]]
    conv = convert(batch)
    assert conv.table.column("eventid").to_pylist() == ["g0", "g1", "g2"]
    assert [(r.index, r.code) for r in conv.rejects] == [
        (1, "InvalidJson"), (2, "InvalidEventTime"), (3, "NotAnObject"), (5, "MissingEventTime")]
    assert all("\n" not in r.message for r in conv.rejects)


def test_columns_follow_the_lake_schema():
    rec = _base(requestParameters={"bucketName": "b", "n": 5, "flag": True, "nested": {"a": [1, 2]}, "nil": None},
                responseElements=None, additionalEventData={},
                resources=[{"accountId": "1", "type": "AWS::S3::Object", "ARN": "arn:aws:s3:::b/k"}],
                tlsDetails={"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                            "clientProvidedHostHeader": "s3.amazonaws.com", "keyExchange": "x25519"},
                readOnly=True, managementEvent=False, eventCategory="Data")
    row = convert([rec]).table.to_pylist()[0]
    assert dict(row["requestparameters"]) == {"bucketName": "b", "n": "5", "flag": "true",
                                              "nested": '{"a":[1,2]}', "nil": None}
    assert row["responseelements"] is None and row["additionaleventdata"] == []
    assert row["resources"] == [{"accountid": "1", "type": "AWS::S3::Object", "arn": "arn:aws:s3:::b/k",
                                 "arnprefix": None}]
    assert row["tlsdetails"]["keyexchange"] == "x25519"
    ui = row["useridentity"]
    assert ui["sessioncontext"]["sessionissuer"]["username"] == "R"
    assert ui["sessioncontext"]["attributes"]["creationdate"] == datetime(2013, 11, 2, 1, 6, 28, tzinfo=timezone.utc)
    assert row["useridentity_arn"] == ui["arn"] and row["sessionissuer_arn"] == "arn:aws:iam::111122223333:role/R"
    assert row["useridentity_accesskeyid"] == "ASIA1" and row["readonly"] is True
    assert row["eventcategory"] == "Data"


def test_category_is_inferred_for_old_records():
    old = _base(eventVersion="1.05")
    old.pop("eventCategory", None)
    data = {**old, "eventID": "e2", "managementEvent": False}
    vpce = {**old, "eventID": "e3", "eventType": "AwsVpceEvent"}
    cats = convert([old, data, vpce]).table.column("eventcategory").to_pylist()
    assert cats == ["Management", "Data", "NetworkActivity"]


def test_odd_value_types_do_not_break_a_batch():
    weird = _base(eventID="w", userIdentity={"type": 5, "sessionContext": {"attributes": {"mfaAuthenticated": False}}},
                  resources=[{"ARN": 7, "type": None}, "junk"], tlsDetails="nope", readOnly="false",
                  requestParameters=["not", "an", "object"])
    conv = convert([_base(), weird])
    assert conv.table.num_rows == 2
    row = conv.table.to_pylist()[1]
    assert row["useridentity"]["type"] == "5"
    assert row["useridentity"]["sessioncontext"]["attributes"]["mfaauthenticated"] == "false"
    assert row["resources"][0]["arn"] == "7" and row["readonly"] is False
    assert row["requestparameters"] is None and row["tlsdetails"] is None
    assert orjson.loads(row["eventjson"]) == weird


def test_struct_arrays_have_schema_types():
    from lake.schema import EVENT_SCHEMA
    t = convert([_base()]).table
    assert t.schema == EVENT_SCHEMA
    assert isinstance(t.column("requestparameters").type, pa.MapType)


def _by_eventjson(table: pa.Table) -> list:
    rows = table.to_pylist()
    return sorted(rows, key=lambda r: (r["eventjson"], str(r["eventtime"])))


def _raw_texts(records: list) -> list[bytes]:
    return [orjson.dumps(r) for r in records]


@pytest.mark.parametrize("seed", [1, 2])
def test_fast_raw_path_equals_dict_path_on_generated_data(tmp_path, seed):
    """The import path (Arrow JSON reader + batched free-form decoding) and the dict path build the same
    rows for the same texts: every column, nested maps included."""
    from lake.datagen import generate_dataset
    from lake.importer import split_raw

    generate_dataset(str(tmp_path), events=3000, days=2, accounts=2, regions=2, seed=seed)
    raws = [r for p in sorted(tmp_path.rglob("*.json.gz")) for r in split_raw(p.read_bytes(), p.name)]
    assert len(raws) >= 3000
    fast = convert_raw(raws)
    slow = convert(raws, field_caps=False)
    assert not fast.rejects and not slow.rejects
    assert fast.table.schema == slow.table.schema
    assert _by_eventjson(fast.table) == _by_eventjson(slow.table)


def test_fast_raw_path_equals_dict_path_on_external_data(external):
    for name, records in external.items():
        raws = _raw_texts([r for r in records if isinstance(r, dict)])
        fast, slow = convert_raw(raws), convert(raws, field_caps=False)
        assert sorted((r.index, r.code) for r in fast.rejects) == sorted((r.index, r.code) for r in slow.rejects)
        assert _by_eventjson(fast.table) == _by_eventjson(slow.table), name


def test_free_form_values_keep_their_json_text():
    """Strings stay as-is (unescaped), everything else becomes compact JSON; non-objects give a null map."""
    rec = {"eventVersion": "1.08", "eventTime": "2024-01-01T00:00:00Z", "eventID": "e1",
           "eventSource": "s3.amazonaws.com", "eventName": "GetObject", "recipientAccountId": "111122223333",
           "requestParameters": {"a": "x\"y", "b": 1, "c": None, "d": [1, {"e": True}], "f": {"g": "h"}},
           "responseElements": "a string", "additionalEventData": [1, 2], "serviceEventDetails": {}}
    for conv in (convert_raw([orjson.dumps(rec)]), convert([rec])):
        row = conv.table.to_pylist()[0]
        assert dict(row["requestparameters"]) == {"a": 'x"y', "b": "1", "c": None, "d": '[1,{"e":true}]',
                                                   "f": '{"g":"h"}'}
        assert row["responseelements"] is None and row["additionaleventdata"] is None
        assert row["serviceeventdetails"] == []


def test_web_identity_attributes_follow_their_record_through_sorting_and_rejects():
    """The one map inside userIdentity is filled in after the batch is filtered and sorted."""
    def rec(n: int, t: str | None, attrs: dict | None) -> dict:
        web = {} if attrs is None else {"federatedProvider": "accounts.google.com", "attributes": attrs}
        r = {"eventVersion": "1.08", "eventID": f"e{n}", "eventName": "GetCallerIdentity",
             "eventSource": "sts.amazonaws.com", "recipientAccountId": "111122223333",
             "userIdentity": {"type": "AssumedRole", "sessionContext": {"webIdFederationData": web}}}
        return r if t is None else {**r, "eventTime": t}
    recs = [rec(0, "2024-01-03T00:00:00Z", None), rec(1, None, {"x": "lost"}),
            rec(2, "2024-01-02T00:00:00Z", {"aud": "a", "n": 1}), rec(3, "2024-01-01T00:00:00Z", None)]
    raws = [orjson.dumps(r) for r in recs]
    raws[2] = json.dumps(recs[2]).encode()  # `"key": value` spacing, kept as received
    fast = convert_raw(raws)
    assert [r.code for r in fast.rejects] == ["MissingEventTime"]
    got = {row["eventid"]: row["useridentity"]["sessioncontext"]["webidfederationdata"]["attributes"]
           for row in fast.table.to_pylist()}
    assert got == {"e0": None, "e2": [("aud", "a"), ("n", "1")], "e3": None}
