"""The C record scanner against the Python converter: the same rows for the same texts, always.

The Python import path (`convert_raw(scanner=False)`: Arrow's JSON reader, msgspec, and the dict converter
for odd batches) is the oracle. Every case runs as one batch and record by record, since the Python path
changes strategy per batch."""

from __future__ import annotations

import json
import os

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from lake import recordscan
from lake.events import compact_json, convert, convert_raw

pytestmark = pytest.mark.skipif(not recordscan.available(),
                                reason="lake._recordscan is not built (no C compiler at install time)")

BASE = {"eventVersion": "1.08", "eventTime": "2024-01-01T00:00:00Z", "eventSource": "s3.amazonaws.com",
        "eventName": "GetObject", "awsRegion": "us-east-1", "recipientAccountId": "111122223333"}


def _rows(conv) -> tuple:
    """Each input record's row (by input position) and the rejects: row order is the writer's business."""
    rows = sorted(zip(conv.indexes, conv.table.to_pylist()), key=lambda p: p[0])
    return rows, [(r.index, r.code, r.message) for r in conv.rejects]


def assert_same(raws: list[bytes]) -> None:
    raws = [compact_json(r) for r in raws]
    assert recordscan.scan(raws) is not None, "the scanner fell back"
    assert _rows(convert_raw(raws)) == _rows(convert_raw(raws, scanner=False))
    for r in raws:
        assert _rows(convert_raw([r])) == _rows(convert_raw([r], scanner=False)), r


def rec(n: int = 0, **fields) -> dict:
    return {**BASE, "eventID": f"e{n}", **fields}


ODD_RECORDS = [
    rec(1, requestParameters={"f": 1.5, "g": 1e-05, "h": 1e16, "i": 100.0, "j": -0.0, "k": 123456789.123}),
    rec(3, requestParameters={"u": "caf\u00e9 \u2028 \U0001F600", "ctl": "a\x01b\tc\nd", "q": 'x"y\\z/'}),
    rec(4, requestParameters={"nested": {"u": "\u00e9", "ctl": "\x01", "list": [1, 2.5, None, True, "s"]}}),
    rec(5, requestParameters={"deep": json.loads("[" * 70 + "1" + "]" * 70)}),
    rec(6, requestParameters={"wide": {f"k{i}": i for i in range(40)}}),
    rec(7, requestParameters={}, responseElements="a string", additionalEventData=[1, 2],
        serviceEventDetails=None, addendum=True, edgeDeviceDetails=3, insightDetails={"a": {}}),
    rec(8, eventName=12, awsRegion=True, userAgent={"a": [1, {"b": 2.0}]}, errorCode=1.25),
    rec(9, readOnly=" TRUE ", managementEvent="false"),
    rec(10, readOnly="yes", managementEvent=1),
    rec(11, readOnly={"a": 1}, managementEvent=[True]),
    rec(12, resources=["not a resource", None, {"ARN": "arn:a", "type": "T", "accountId": "1"}, [1]]),
    rec(13, resources={"ARN": "x"}),
    rec(14, resources="arn:x", tlsDetails="TLSv1.3"),
    rec(15, userIdentity="root"),
    rec(16, userIdentity={"type": "AssumedRole", "sessionContext": {
        "attributes": {"creationDate": "2024-01-01T00:00:00Z", "mfaAuthenticated": False},
        "sessionIssuer": {"type": "Role", "arn": "arn:aws:iam::1:role/r", "accountId": 7},
        "webIdFederationData": {"federatedProvider": "accounts.google.com",
                                "attributes": {"aud": "a", "n": 1, "f": 0.5, "o": {"x": [1]}}}}}),
    rec(17, userIdentity={"sessionContext": {"webIdFederationData": {}}, "onBehalfOf": None}),
    rec(18, userIdentity={"sessionContext": {"webIdFederationData": {"attributes": "not a map"}}}),
    rec(19, eventTime=None),
    rec(20, eventTime="yesterday"),
    rec(21, eventTime="2024-01-01 10:00:00.000000000"),
    rec(22, eventTime=1704067200),
    rec(23, requestParameters={"a": "", "": "empty key", "b": None}, eventName=""),
    rec(24, requestParameters={"Key": "1", "key": "2", "KEY": "3"}),
    rec(25, tlsDetails={"tlsVersion": "TLSv1.2", "cipherSuite": None, "keyExchange": 5}),
    {k: v for k, v in rec(26).items() if k != "eventTime"},
]


def test_odd_records_convert_as_in_python():
    assert_same([msgspec_text(r) for r in ODD_RECORDS])


def test_integers_beyond_64_bits_keep_their_digits():
    """As in the Python import path (msgspec); the dict path's orjson would turn them into floats."""
    text = msgspec_text(rec(2, requestParameters={"big": 123456789012345678901234567890, "neg": -12,
                                                  "n": {"big": -2**70}}))
    assert_same([text])
    row = convert_raw([text]).table.to_pylist()[0]
    assert dict(row["requestparameters"]) == {"big": "123456789012345678901234567890", "neg": "-12",
                                               "n": '{"big":-1180591620717411303424}'}


def test_text_forms_the_python_path_canonicalises():
    """Raw texts whose compact copy would differ from orjson's: the scanner asks the canonical text."""
    head = '{"eventVersion":"1.08","eventTime":"2024-01-01T00:00:00Z","eventID":"%s","eventName":"E",' \
           '"recipientAccountId":"1",'
    texts = [
        '"requestParameters":{"a":{"x":1,"x":2},"b":"\\u00e9\\/"}}',      # duplicate nested key, \\u and \\/
        '"requestParameters":{"a":1,"a":2,"b":3}}',                       # duplicate map key: the last wins
        '"requestParameters":{"a":[1.50, 2E3, -0, 1E-7]}}',               # non-canonical numbers
        '"requestParameters":{"\\u0061":"escaped key","b":{"\\u0062":1}}}',
        '"requestParameters" : { "a" : [ 1 , { "b" : "c" } ] , "d" : "e f" } }',  # spacing
        '"eventName2":"x","userAgent":"tab\\there","requestParameters":{"s":"\\ud83d\\ude00"}}',
        '"userIdentity":{"type":"IAMUser","userName":"\\u00e9l\\u00e8ve"}, "unknown":{"x":[1,2,{"y":null}]}}',
    ]
    raws = [(head % f"t{i}" + t).encode() for i, t in enumerate(texts)]
    raws.append(b'{\n  "eventVersion": "1.08",\n  "eventTime": "2024-01-01T00:00:00Z",\n  "eventID": "pretty",'
                b'\n  "requestParameters": {\n    "a": [1, 2]\n  }\n}\n')
    assert_same(raws)


@pytest.mark.parametrize("text", [
    b'{"eventTime":"2024-01-01T00:00:00Z","eventName":"a","eventName":"b"}',   # duplicated fixed key
    b'{"eventTime":"2024-01-01T00:00:00Z","event\\u004eame":"a"}',             # escaped key
    b'{"eventTime":"2024-01-01T00:00:00Z","eventName":"\\ud800"}',             # lone surrogate
    b'["not", "an", "object"]',
    b'{"eventTime":"2024-01-01T00:00:00Z","eventName":"a"',                    # truncated
    b'{"eventTime":"2024-01-01T00:00:00Z"} trailing',
    b'{"eventTime":"2024-01-01T00:00:00Z","requestParameters":{"a":tru}}',
    b'{"eventTime":"2024-01-01T00:00:00Z","requestParameters":{"a":01}}',
    b'{"eventTime":"2024-01-01T00:00:00Z","requestParameters":{"a":[1e400]}}',  # out of range: rejected
])
def test_records_the_scanner_leaves_to_python(text):
    """The scanner declines (None) rather than guess; convert_raw then gives the Python path's answer."""
    good = orjson.dumps(rec(0))
    assert recordscan.scan([good, text]) is None
    assert _rows(convert_raw([good, text])) == _rows(convert_raw([good, text], scanner=False))


@pytest.mark.parametrize("seed", [3, 4])
def test_generated_logs_convert_as_in_python(tmp_path, seed):
    from lake.datagen import generate_dataset
    from lake.importer import split_raw

    generate_dataset(str(tmp_path), events=3000, days=2, accounts=2, regions=2, seed=seed)
    raws = [r for p in sorted(tmp_path.rglob("*.json.gz")) for r in split_raw(p.read_bytes(), p.name)]
    assert recordscan.scan(raws) is not None
    fast = convert_raw(raws)
    assert _rows(fast) == _rows(convert_raw(raws, scanner=False))
    assert _rows(fast) == _rows(convert(raws, field_caps=False))


def test_external_logs_convert_as_in_python(external):
    for name, records in external.items():
        raws = [orjson.dumps(r) for r in records if isinstance(r, dict)]
        assert recordscan.scan([compact_json(r) for r in raws]) is not None, name
        assert _rows(convert_raw(raws)) == _rows(convert_raw(raws, scanner=False)), name


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                     max_leaves=8)
_keys = st.sampled_from(["eventName", "eventTime", "readOnly", "requestParameters", "responseElements",
                         "userIdentity", "resources", "tlsDetails", "errorCode", "other"])


@settings(max_examples=int(os.environ.get("LAKE_FUZZ_EXAMPLES", "300")), deadline=None)
@given(st.dictionaries(_keys, _json, max_size=6), st.dictionaries(st.text(max_size=4), _json, max_size=4))
def test_random_records_convert_as_in_python(fields, params):
    """Any JSON values in the known fields (and a random free-form object): the scanner either declines or
    agrees with the Python path."""
    r = {**rec(0), **fields, "requestParameters": params}
    text = msgspec_text(r)
    if recordscan.scan([text]) is None:
        return
    assert _rows(convert_raw([text])) == _rows(convert_raw([text], scanner=False))


def msgspec_text(value) -> bytes:
    import msgspec
    return msgspec.json.encode(value)


@settings(max_examples=int(os.environ.get("LAKE_FUZZ_EXAMPLES", "300")), deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 255), st.booleans())
def test_damaged_texts_are_declined_or_converted_as_in_python(pos, byte, cut):
    """One byte changed, or the text cut short: the scanner never crashes, and what it accepts converts as
    the Python path converts it (invalid UTF-8 is caught after the scan and sent there too)."""
    base = msgspec_text(ODD_RECORDS[15])
    pos %= len(base)
    text = base[:pos] if cut else base[:pos] + bytes([byte]) + base[pos + 1:]
    good = msgspec_text(rec(99))
    recordscan.scan([good, text])
    assert _rows(convert_raw([good, text])) == _rows(convert_raw([good, text], scanner=False))


@pytest.mark.parametrize("text", [
    b'{"Records":[{"a":1},{"b":"x y"}]}',
    b'{"Records": [ {"a": 1, "b": [1, 2]} , 7, "s", null ]}',             # spacing kept on one line
    b'{\n  "Records": [\n    {\n      "a": 1,\n      "b": "x y"\n    }\n  ]\n}\n',  # pretty-printed
    b'{"Other":{"x":[1]},"Records":[],"More":true}',
    b'{"Records":[{"a":"\\u00e9\\n"}],"digest":null}',
])
def test_split_gives_what_the_python_reader_gives(text):
    from lake.importer import _split_python

    assert recordscan.split(text) == [compact_json(r) for r in _split_python(text, "f")]


@pytest.mark.parametrize("text", [
    b'{"Records":[{"a":1}],"Records":[]}',   # repeated key
    b'{"Records":{"a":1}}', b'{"records":[]}', b'{"Records":[{"a":1}', b'[{"a":1}]', b'{"a":1}\n{"b":2}\n',
    b'{"Records":[{"a":1}]} trailing',
])
def test_split_declines_other_layouts(text):
    assert recordscan.split(text) is None


def _same_split(files: list[bytes]) -> None:
    from lake.importer import _split_python

    for data in files:
        assert recordscan.split(data) == [compact_json(r) for r in _split_python(data, "f")]


def test_split_on_generated_logs(tmp_path):
    from lake.datagen import generate_dataset
    from lake.trailfiles import decode_bytes

    generate_dataset(str(tmp_path), events=500, days=1, accounts=1, regions=2, seed=5)
    _same_split([decode_bytes(p.read_bytes()) for p in sorted(tmp_path.rglob("*.json.gz"))])


def test_split_on_external_logs(external):
    from lake.trailfiles import decode_bytes, encode_log_file

    _same_split([decode_bytes(encode_log_file([r for r in records if isinstance(r, dict)]))
                 for records in external.values()])
