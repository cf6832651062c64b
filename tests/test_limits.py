"""Tests for lake.limits: size modes, per-field caps, truncation order and EventTooLarge."""

from __future__ import annotations

import copy

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lake.limits import (
    FIELD_CAPS,
    LARGE,
    MAX_EVENT_BYTES,
    OMIT,
    STANDARD,
    TRUNCATE,
    TRUNCATION_ORDER,
    EventTooLarge,
    apply_size_limits,
    event_size,
    omitted_marker,
)

KB = 1024
EVENT_ID = "1f3e2a4b-0000-4000-8000-000000000001"


def base_record(**fields) -> dict:
    record = {
        "eventVersion": "1.11",
        "userIdentity": {"type": "IAMUser", "accountId": "123456789012", "userName": "alice"},
        "eventTime": "2024-01-01T00:00:00Z",
        "eventSource": "s3.amazonaws.com",
        "eventName": "PutObject",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "192.0.2.1",
        "userAgent": "aws-cli/2.13.5",
        "requestParameters": {"bucketName": "b"},
        "responseElements": None,
        "requestID": "REQ1",
        "eventID": EVENT_ID,
        "eventType": "AwsApiCall",
        "recipientAccountId": "123456789012",
    }
    record.update(fields)
    return record


def obj_of_json_size(n: int) -> dict:
    """An object whose compact JSON is exactly n bytes: {"k":"xxx…"} has 8 bytes of overhead."""
    obj = {"k": "x" * (n - 8)}
    assert len(orjson.dumps(obj)) == n
    return obj


def snapshot(record: dict) -> bytes:
    return orjson.dumps(record)


# --- fast path ---------------------------------------------------------------------------------------------------


def test_fast_path_returns_same_object_standard():
    record = base_record()
    out, touched = apply_size_limits(record)
    assert out is record and touched == []
    out, touched = apply_size_limits(record, STANDARD, size=event_size(record))
    assert out is record and touched == []


def test_fast_path_with_tiny_size_hint_skips_field_inspection():
    # The hint is trusted as an upper bound: a record claimed to be <= 1 KB cannot hold an over-cap field,
    # so nothing is inspected (a deliberately bogus object would blow up if it were serialised).
    class Boom:
        pass

    record = {"eventID": "e", "requestParameters": Boom()}
    out, touched = apply_size_limits(record, STANDARD, size=100)
    assert out is record and touched == []


def test_medium_event_with_fields_under_caps_is_untouched():
    record = base_record(
        requestParameters=obj_of_json_size(100 * KB),  # exactly at the cap: not over
        userAgent="u" * KB,
        additionalEventData=obj_of_json_size(28 * KB),
    )
    out, touched = apply_size_limits(record, STANDARD, size=event_size(record))
    assert out is record and touched == []


def test_large_mode_ignores_caps_when_event_fits():
    record = base_record(userAgent="u" * 5000, requestParameters=obj_of_json_size(300 * KB))
    out, touched = apply_size_limits(record, LARGE)
    assert out is record and touched == []


def test_pessimistic_size_hint_is_harmless():
    record = base_record()
    for mode in (STANDARD, LARGE):
        out, touched = apply_size_limits(record, mode, size=5 * 1024 * 1024)
        assert out is record and touched == []


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown event size mode"):
        apply_size_limits(base_record(), "Huge")


# --- caps in Standard mode ---------------------------------------------------------------------------------------


STRING_FIELDS = [n for n, c in FIELD_CAPS.items() if c.action == TRUNCATE and n != "edgeDeviceDetails"]
OBJECT_FIELDS = [n for n, c in FIELD_CAPS.items() if c.action == OMIT or n == "edgeDeviceDetails"]


def test_cap_table():
    assert set(STRING_FIELDS) == {"userAgent", "errorCode", "errorMessage", "requestID", "annotation"}
    assert all(FIELD_CAPS[n].max_bytes == KB for n in STRING_FIELDS)
    assert {n: FIELD_CAPS[n].max_bytes for n in OBJECT_FIELDS} == {
        "requestParameters": 100 * KB,
        "responseElements": 100 * KB,
        "serviceEventDetails": 100 * KB,
        "additionalEventData": 28 * KB,
        "edgeDeviceDetails": 28 * KB,
        "eventContext": 28 * KB,
    }
    assert set(TRUNCATION_ORDER) | {"edgeDeviceDetails"} == set(FIELD_CAPS)


@pytest.mark.parametrize("name", STRING_FIELDS)
def test_string_cap_truncates_in_standard_mode(name):
    at_cap = base_record(**{name: "a" * KB})
    out, touched = apply_size_limits(at_cap)
    assert out is at_cap and touched == []

    record = base_record(**{name: "a" * (KB + 1)})
    before = snapshot(record)
    out, touched = apply_size_limits(record)
    assert touched == [name]
    assert out[name] == "a" * KB
    assert snapshot(record) == before  # input not mutated
    assert {k: v for k, v in out.items() if k != name} == {k: v for k, v in record.items() if k != name}


@pytest.mark.parametrize("name", OBJECT_FIELDS)
def test_object_cap_omits_in_standard_mode(name):
    cap = FIELD_CAPS[name].max_bytes
    at_cap = base_record(**{name: obj_of_json_size(cap)})
    out, touched = apply_size_limits(at_cap, size=event_size(at_cap))
    assert out is at_cap and touched == []

    record = base_record(**{name: obj_of_json_size(cap + 1)})
    before = snapshot(record)
    out, touched = apply_size_limits(record, size=event_size(record))
    assert touched == [name]
    assert out[name] == {"omitted": True, "originalSize": cap + 1} == omitted_marker(cap + 1)
    assert snapshot(record) == before
    assert event_size(out) < event_size(record)


def test_standard_applies_caps_even_to_small_events_and_reports_in_aws_order():
    record = base_record(
        errorMessage="m" * 2000,
        annotation="n" * 2000,
        edgeDeviceDetails=obj_of_json_size(30 * KB),
        requestID="r" * 1500,
    )
    assert event_size(record) < MAX_EVENT_BYTES[STANDARD]
    out, touched = apply_size_limits(record)
    assert touched == ["annotation", "requestID", "errorMessage", "edgeDeviceDetails"]
    assert len(out["errorMessage"]) == KB and len(out["annotation"]) == KB and len(out["requestID"]) == KB
    assert out["edgeDeviceDetails"]["omitted"] is True


def test_truncate_field_holding_a_non_string_is_omitted():
    record = base_record(userAgent={"weird": "u" * 2000})
    out, touched = apply_size_limits(record)
    assert touched == ["userAgent"]
    assert out["userAgent"] == omitted_marker(len(orjson.dumps(record["userAgent"])))


def test_null_and_absent_fields_are_fine():
    record = base_record(responseElements=None, requestParameters=None)
    record.pop("userAgent")
    out, touched = apply_size_limits(record)
    assert out is record and touched == []


# --- UTF-8 truncation --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "char, expected_chars",
    [("é", 512), ("€", 341), ("😀", 256), ("a", 1024)],
)
def test_multibyte_truncation_examples(char, expected_chars):
    record = base_record(userAgent=char * 1100)
    out, touched = apply_size_limits(record)
    assert touched == ["userAgent"]
    assert out["userAgent"] == char * expected_chars
    assert len(out["userAgent"].encode()) <= KB


def test_mixed_width_truncation_stops_before_a_split_character():
    text = "a" * 1022 + "😀" + "b" * 10  # the emoji straddles the 1024-byte boundary
    out, _ = apply_size_limits(base_record(errorMessage=text))
    assert out["errorMessage"] == "a" * 1022


NO_SURROGATES = st.characters(blacklist_categories=("Cs",))


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(alphabet=NO_SURROGATES, min_size=200, max_size=1500))
def test_utf8_truncation_never_splits_a_character(text):
    record = base_record(errorMessage=text)
    out, touched = apply_size_limits(record)
    encoded = text.encode("utf-8")
    if len(encoded) <= KB:
        assert out is record and touched == []
        return
    result = out["errorMessage"]
    raw = result.encode("utf-8")  # would raise if a character were split
    assert len(raw) <= KB
    assert text.startswith(result)
    # maximal: the next character would not have fit
    assert len(raw) + len(text[len(result)].encode("utf-8")) > KB


# --- Large mode truncation order ---------------------------------------------------------------------------------


def test_large_mode_leaves_900kb_event_alone():
    record = base_record(requestParameters=obj_of_json_size(900 * KB), userAgent="u" * 4000, annotation="a" * 2000)
    assert event_size(record) <= MAX_EVENT_BYTES[LARGE]
    out, touched = apply_size_limits(record, LARGE, size=event_size(record))
    assert out is record and touched == []


def test_large_mode_truncates_in_documented_order_until_it_fits():
    record = base_record(
        annotation="small annotation",  # under cap: never touched
        userAgent="u" * 2000,  # over cap, early in the order
        responseElements=obj_of_json_size(150 * KB),
        requestParameters=obj_of_json_size(1100 * KB),
        errorMessage="m" * 2000,  # over cap, but after requestParameters in the order
        edgeDeviceDetails=obj_of_json_size(40 * KB),  # not in the order: never touched in Large mode
    )
    assert event_size(record) > 1200 * KB
    before = snapshot(record)
    out, touched = apply_size_limits(record, LARGE)
    assert touched == ["userAgent", "responseElements", "requestParameters"]
    assert out["annotation"] == "small annotation"
    assert out["userAgent"] == "u" * KB
    assert out["responseElements"]["omitted"] is True
    assert out["requestParameters"] == omitted_marker(1100 * KB)
    assert out["errorMessage"] == record["errorMessage"]
    assert out["edgeDeviceDetails"] is record["edgeDeviceDetails"]
    assert event_size(out) <= MAX_EVENT_BYTES[LARGE]
    assert snapshot(record) == before


def test_large_mode_stops_as_soon_as_it_fits():
    record = base_record(
        additionalEventData=obj_of_json_size(300 * KB),
        requestParameters=obj_of_json_size(900 * KB),
    )
    out, touched = apply_size_limits(record, LARGE)
    assert touched == ["additionalEventData"]
    assert out["requestParameters"] is record["requestParameters"]  # still over its cap, but the event fits now
    assert event_size(out) <= MAX_EVENT_BYTES[LARGE]


def test_large_mode_raises_when_truncation_is_not_enough():
    record = base_record(eventName="E" * (1100 * KB), userAgent="u" * 5000)
    with pytest.raises(EventTooLarge) as info:
        apply_size_limits(record, LARGE)
    assert info.value.truncated == ["userAgent"]
    assert info.value.mode == LARGE and info.value.limit == 1024 * 1024
    assert info.value.size == event_size(record) - 5000 + KB


# --- EventTooLarge -----------------------------------------------------------------------------------------------


def test_untruncatable_event_raises_event_too_large_in_standard_mode():
    record = base_record(eventName="E" * (300 * KB))
    with pytest.raises(EventTooLarge) as info:
        apply_size_limits(record)
    err = info.value
    assert err.code == "EventTooLarge" and EventTooLarge.code == "EventTooLarge"
    assert isinstance(err, ValueError)
    message = str(err)
    assert "\n" not in message
    assert message == (
        f"event {EVENT_ID} is {event_size(record):,} bytes after truncation; the Standard limit is 262,144 bytes"
    )


def test_standard_mode_raises_even_after_applying_caps():
    record = base_record(eventName="E" * (255 * KB), userAgent="u" * (20 * KB))
    with pytest.raises(EventTooLarge) as info:
        apply_size_limits(record, size=event_size(record))
    assert info.value.truncated == ["userAgent"]
    assert info.value.size == event_size(record) - 20 * KB + KB


def test_standard_caps_can_make_a_large_event_fit():
    record = base_record(requestParameters=obj_of_json_size(400 * KB))
    out, touched = apply_size_limits(record)
    assert touched == ["requestParameters"]
    assert event_size(out) <= MAX_EVENT_BYTES[STANDARD]


def test_message_for_odd_event_ids_stays_one_short_line():
    for event_id in (None, "x" * 10_000, "a\nb", 12345):
        record = base_record(eventName="E" * (300 * KB), eventID=event_id)
        with pytest.raises(EventTooLarge) as info:
            apply_size_limits(record)
        message = str(info.value)
        assert "\n" not in message and len(message) < 200


# --- case-sensitive keys -----------------------------------------------------------------------------------------


def test_keys_differing_only_by_case_survive():
    params = {"bucketName": "b", "Tagging": "", "tagging": "k=v", "key": "K", "Key": "k"}
    record = base_record(requestParameters=params, UserAgent="upper-case twin of userAgent " * 100)
    for mode in (STANDARD, LARGE):
        out, touched = apply_size_limits(record, mode)
        assert out is record and touched == []
    # Also when another field gets truncated, the object is carried over as-is.
    record2 = dict(record, userAgent="u" * 3000)
    out, touched = apply_size_limits(record2)
    assert touched == ["userAgent"]
    assert out["requestParameters"] is params
    assert out["requestParameters"] == {"bucketName": "b", "Tagging": "", "tagging": "k=v", "key": "K", "Key": "k"}
    assert out["UserAgent"] == record["UserAgent"]


# --- properties --------------------------------------------------------------------------------------------------

CHARS = ["a", "é", "€", "😀", '"', "\n"]
SIZES = st.one_of(
    st.integers(0, 2 * KB),
    st.integers(20 * KB, 40 * KB),
    st.integers(90 * KB, 130 * KB),
    st.integers(200 * KB, 700 * KB),
)


@st.composite
def values(draw):
    kind = draw(st.sampled_from(["str", "obj", "null", "num", "list"]))
    if kind == "null":
        return None
    if kind == "num":
        return draw(st.integers(-(2**63), 2**63 - 1))  # orjson serialises 64-bit integers
    n = draw(SIZES)
    char = draw(st.sampled_from(CHARS))
    text = char * (n // len(char.encode()))
    if kind == "str":
        return text
    if kind == "list":
        return [text]
    return {"k": text, "K": draw(st.sampled_from(CHARS))}


@st.composite
def records(draw):
    names = draw(st.lists(st.sampled_from(sorted(FIELD_CAPS) + ["eventName", "other"]), unique=True, max_size=6))
    record = {"eventID": draw(st.sampled_from([EVENT_ID, "x"]))}
    for name in names:
        record[name] = draw(values())
    return record


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(records(), st.sampled_from([STANDARD, LARGE]), st.booleans())
def test_property_fits_or_raises_and_never_mutates(record, mode, pass_size):
    before = copy.deepcopy(record)
    before_bytes = snapshot(record)
    size = event_size(record)
    limit = MAX_EVENT_BYTES[mode]
    try:
        out, touched = apply_size_limits(record, mode, size=size if pass_size else None)
    except EventTooLarge as err:
        assert err.code == "EventTooLarge"
        assert err.size > limit
        assert size > limit  # only events that started too large can end too large
    else:
        assert event_size(out) <= limit
        if not touched:
            assert out is record
        else:
            assert out is not record
            assert set(out) == set(record)
            for name in out:
                if name in touched:
                    assert FIELD_CAPS[name] and out[name] != record[name]
                else:
                    assert out[name] is record[name]
        if mode == LARGE:
            assert touched == [n for n in TRUNCATION_ORDER if n in touched]
            if size <= limit:
                assert out is record
        else:
            for name, cap in FIELD_CAPS.items():
                if name in out:
                    value = out[name]
                    measured = (
                        len(value.encode()) if isinstance(value, str) and cap.action == TRUNCATE
                        else len(orjson.dumps(value))
                    )
                    assert measured <= cap.max_bytes
        # idempotent: a stored record passes again unchanged
        again, again_touched = apply_size_limits(out, mode)
        assert again is out and again_touched == []
    assert record == before
    assert snapshot(record) == before_bytes
