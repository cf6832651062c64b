"""Tests for lake.store / lake.lake: CloudTrail Lake event data store semantics (reference sections 6.1, 6.2).

Lifecycle (create, get by name/id/ARN, list, update, delete, restore) runs on a local directory and on S3 (moto);
the rest runs on a local directory. Ingestion covers selectors (live vs import), dedupe, size modes, rejected
records and the read-only guarantee.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import orjson
import pytest

import lake.store as store_mod
from lake import limits
from lake.errors import (
    AlreadyExists,
    InactiveStore,
    InvalidParameter,
    LakeError,
    NotFound,
    ReadOnlyError,
    TerminationProtected,
)
from lake.lake import Lake
from lake.log import parse_iso
from lake.store import AppendResult, Store

ACCOUNT = "111111111111"
MGMT_AND_DATA = [{"Name": "all", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management", "Data"]}]}]
S3_OBJECTS = [{"Name": "S3 objects", "FieldSelectors": [
    {"Field": "eventCategory", "Equals": ["Data"]},
    {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
]}]
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def rec(event_id: str | None = None, *, when: datetime | None = None, account: str = ACCOUNT,
        category: str = "Management", **extra) -> dict:
    """A minimal CloudTrail record an hour ago (inside every retention period)."""
    when = when or datetime.now(timezone.utc) - timedelta(hours=1)
    r = {
        "eventVersion": "1.11",
        "userIdentity": {"type": "IAMUser", "accountId": account, "arn": f"arn:aws:iam::{account}:user/alice",
                         "userName": "alice"},
        "eventTime": _iso(when),
        "eventSource": "iam.amazonaws.com",
        "eventName": "ListRoles",
        "awsRegion": "us-east-1",
        "sourceIPAddress": "192.0.2.1",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": None,
        "responseElements": None,
        "requestID": str(uuid.uuid4()),
        "eventID": event_id if event_id is not None else str(uuid.uuid4()),
        "readOnly": True,
        "eventType": "AwsApiCall",
        "managementEvent": category == "Management",
        "recipientAccountId": account,
        "eventCategory": category,
    }
    r.update(extra)
    return r


def s3_object_event(event_id: str, **extra) -> dict:
    fields = {"eventSource": "s3.amazonaws.com", "eventName": "GetObject",
              "resources": [{"accountId": ACCOUNT, "type": "AWS::S3::Object", "ARN": "arn:aws:s3:::bkt/key"}]}
    return rec(event_id, category="Data", **{**fields, **extra})


def lambda_event(event_id: str) -> dict:
    return rec(event_id, category="Data", eventSource="lambda.amazonaws.com", eventName="Invoke",
               resources=[{"accountId": ACCOUNT, "type": "AWS::Lambda::Function",
                           "ARN": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:f"}])


def stored_ids(st: Store) -> list[str]:
    return sorted(st.to_arrow().column("eventid").to_pylist())


def checksums(st: Store) -> Counter:
    return Counter(hashlib.sha256(j.encode()).hexdigest() for j in st.to_arrow().column("eventjson").to_pylist())


@pytest.fixture
def lk(local_uri) -> Lake:
    return Lake(local_uri)


# ---- lifecycle (local and S3) ------------------------------------------------------------------------

def test_lifecycle(lake_uri):
    lk = Lake(lake_uri)
    assert lk.stores() == []
    st = lk.create_store("trail-events", selectors=MGMT_AND_DATA, retention_days=30)
    md = st.metadata
    assert md["Name"] == "trail-events" and md["Status"] == "ENABLED"
    assert md["RetentionPeriod"] == 30 and md["TerminationProtectionEnabled"] is True
    assert md["CreatedTimestamp"] == md["UpdatedTimestamp"]
    assert re.fullmatch(UUID_RE, st.id)
    assert md["EventDataStoreArn"] == f"arn:aws:cloudtrail:us-east-1:123456789012:eventdatastore/{st.id}"
    other = lk.create_store("other", termination_protection=False)

    # get by name, id and ARN; list is oldest first
    for ref in ("trail-events", st.id, st.arn):
        assert lk.store(ref).id == st.id
    assert [s.name for s in lk.stores()] == ["trail-events", "other"]

    r = st.append([rec("e1"), s3_object_event("e2")])
    assert (r.appended, r.rejected, r.duplicates, r.not_selected) == (2, [], 0, 0)
    assert st.describe()["Statistics"]["Events"] == 2

    # update: retention, selectors, rename; UpdatedTimestamp moves
    md2 = st.update(retention_days=90, name="renamed-events")
    assert md2["RetentionPeriod"] == 90 and md2["Name"] == "renamed-events"
    assert md2["UpdatedTimestamp"] > md["UpdatedTimestamp"]
    assert lk.store("renamed-events").id == st.id
    with pytest.raises(NotFound):
        lk.store("trail-events")

    # stop / start ingestion
    assert st.stop_ingestion()["Status"] == "STOPPED_INGESTION"
    with pytest.raises(InactiveStore):
        st.append([rec("e3")])
    assert st.start_ingestion()["Status"] == "ENABLED"

    # delete: refused under termination protection, then pending, then restored
    with pytest.raises(TerminationProtected):
        st.delete()
    assert st.status == "ENABLED"
    st.update(termination_protection=False)
    deleted = st.delete()
    assert deleted["Status"] == "PENDING_DELETION" and deleted["DeletionTime"]
    with pytest.raises(InactiveStore):
        st.append([rec("e4")])
    with pytest.raises(InactiveStore):
        st.scan()
    assert {s.id for s in lk.stores()} == {st.id, other.id}  # still listed within the 7 days
    restored = st.restore()
    assert restored["Status"] == "ENABLED" and "DeletionTime" not in restored
    assert stored_ids(st) == ["e1", "e2"]
    assert st.scan().collect().height == 2

    # everything is persisted: a fresh Lake on the same URI sees the same state
    again = Lake(lake_uri)
    st2 = again.store(st.arn)
    assert st2.metadata == st.metadata
    assert stored_ids(st2) == ["e1", "e2"]
    assert [s.name for s in again.stores()] == ["renamed-events", "other"]
    other2 = again.store("other")
    other2.delete()
    assert Lake(lake_uri).store("other").status == "PENDING_DELETION"


# ---- names and ARNs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["abc", "a" * 128, "A.b_c-9", "...", "0-0", "my.store_name-1"])
def test_valid_names(lk, name):
    st = lk.create_store(name)
    assert st.name == name
    assert lk.store(name).id == st.id


@pytest.mark.parametrize("name", ["", "ab", "a" * 129, "has space", "a/b", "x:y", "ümlaut", "tab\tname",
                                  "semi;colon", "new\nline", "trailing-newline\n", "\nleading", None])
def test_invalid_names(lk, name):
    with pytest.raises(InvalidParameter):
        lk.create_store(name)
    assert lk.stores() == []


def test_duplicate_name_refused(lk):
    first = lk.create_store("dup-name")
    with pytest.raises(AlreadyExists) as e:
        lk.create_store("dup-name")
    assert isinstance(e.value, LakeError) and "dup-name" in str(e.value)
    assert [s.id for s in lk.stores()] == [first.id]


def test_rename_frees_old_name_and_refuses_taken_names(lk):
    a = lk.create_store("alpha")
    b = lk.create_store("beta")
    with pytest.raises(AlreadyExists):
        a.update(name="beta")
    assert a.name == "alpha" and lk.store("beta").id == b.id
    with pytest.raises(InvalidParameter):
        a.update(name="x")
    assert lk.store("alpha").id == a.id

    a.update(name="gamma")
    assert lk.store("gamma").id == a.id
    c = lk.create_store("alpha")  # the old name is free again
    assert lk.store("alpha").id == c.id != a.id
    a.update(name="gamma")  # renaming to its own name is a no-op, not a conflict
    assert lk.store("gamma").id == a.id


def test_failed_rename_claims_nothing(lk):
    st = lk.create_store("first-name")
    with pytest.raises(InvalidParameter):
        st.update(name="second-name", retention_days=1)
    assert st.name == "first-name"
    assert lk.create_store("second-name").name == "second-name"  # not left claimed by the failed update
    st.update(termination_protection=False)
    st.delete()
    with pytest.raises(InactiveStore):
        st.update(name="third-name")
    assert lk.create_store("third-name").name == "third-name"


def test_rename_through_a_stale_handle_frees_the_current_name(local_uri):
    """Another writer renamed the store since this handle last read it: the name that is released is the one
    the committed change replaced, not the handle's cached one."""
    l1, l2 = Lake(local_uri), Lake(local_uri)
    st = l1.create_store("name-a")
    assert st.name == "name-a"  # cached in this handle
    l2.store("name-a").update(name="name-b")
    st.update(name="name-c")
    assert Lake(local_uri).store("name-c").id == st.id
    for gone in ("name-a", "name-b"):
        with pytest.raises(NotFound):
            Lake(local_uri).store(gone)
    assert l2.create_store("name-b").id != st.id


def test_arn_format_and_lookup(lk, monkeypatch):
    st = lk.create_store("arn-store")
    assert re.fullmatch(rf"arn:aws:cloudtrail:us-east-1:123456789012:eventdatastore/{UUID_RE}", st.arn)
    assert st.arn.endswith("/" + st.id) and st.metadata["EventDataStoreId"] == st.id
    monkeypatch.setenv("LAKE_REGION", "eu-west-1")
    monkeypatch.setenv("LAKE_ACCOUNT_ID", "999999999999")
    lk2 = Lake(lk.uri)
    st2 = lk2.create_store("arn-store-2")
    assert st2.arn == f"arn:aws:cloudtrail:eu-west-1:999999999999:eventdatastore/{st2.id}"
    lk3 = Lake(lk.uri, region="ap-south-1", account_id="000000000001")
    assert lk3.create_store("arn-store-3").arn.startswith("arn:aws:cloudtrail:ap-south-1:000000000001:")
    for ref in ("nope-store", str(uuid.uuid4()), f"arn:aws:cloudtrail:us-east-1:123456789012:eventdatastore/"
                f"{uuid.uuid4()}", "", "not an arn", st.arn + "\n", st.arn + "/..", "arn-store\n",
                "arn:aws:cloudtrail:us-east-1:123456789012:eventdatastore/../" + st.id):
        with pytest.raises(NotFound):
            lk.store(ref)


# ---- retention and billing -------------------------------------------------------------------------------

@pytest.mark.parametrize("days", [7, 8, 366, 2557, 3653])
def test_retention_in_range(lk, days):
    assert lk.create_store("ret-ok", retention_days=days).metadata["RetentionPeriod"] == days


@pytest.mark.parametrize("days", [6, 0, -1, 3654, 10**6, "many", 1.5j])
def test_retention_out_of_range(lk, days):
    with pytest.raises(InvalidParameter):
        lk.create_store("ret-bad", retention_days=days)
    assert lk.stores() == []
    lk.create_store("ret-bad")  # the name was not claimed by the failed attempt


def test_retention_defaults_and_fixed_pricing(lk):
    assert lk.create_store("ext").metadata["RetentionPeriod"] == 366
    fixed = lk.create_store("fixed", billing_mode="FIXED_RETENTION_PRICING")
    assert fixed.metadata["RetentionPeriod"] == 2557
    assert fixed.metadata["BillingMode"] == "FIXED_RETENTION_PRICING"
    with pytest.raises(InvalidParameter):
        lk.create_store("fixed-2558", billing_mode="FIXED_RETENTION_PRICING", retention_days=2558)
    with pytest.raises(InvalidParameter):
        fixed.update(retention_days=3000)
    assert fixed.metadata["RetentionPeriod"] == 2557
    with pytest.raises(InvalidParameter):
        lk.create_store("bad-billing", billing_mode="FREE")
    # FIXED -> EXTENDABLE is allowed and lifts the cap
    md = fixed.update(billing_mode="EXTENDABLE_RETENTION_PRICING", retention_days=3653)
    assert (md["BillingMode"], md["RetentionPeriod"]) == ("EXTENDABLE_RETENTION_PRICING", 3653)


def test_extendable_to_fixed_refused(lk):
    st = lk.create_store("ext-store", retention_days=100)
    version = st.snapshot().version
    with pytest.raises(InvalidParameter, match="EXTENDABLE"):
        st.update(billing_mode="FIXED_RETENTION_PRICING")
    with pytest.raises(InvalidParameter):
        st.update(billing_mode="FIXED_RETENTION_PRICING", retention_days=30)
    md = st.metadata
    assert (md["BillingMode"], md["RetentionPeriod"]) == ("EXTENDABLE_RETENTION_PRICING", 100)
    assert st.snapshot().version == version  # nothing committed
    for bad in (6, 3654):
        with pytest.raises(InvalidParameter):
            st.update(retention_days=bad)
    assert st.metadata["RetentionPeriod"] == 100


def test_update_needs_a_setting(lk):
    st = lk.create_store("upd-store")
    with pytest.raises(InvalidParameter):
        st.update()
    with pytest.raises(InvalidParameter):
        st.update(max_event_size="Huge")
    assert st.update(max_event_size="Large")["MaxEventSize"] == "Large"


def test_events_older_than_retention_are_not_stored(lk):
    st = lk.create_store("short", retention_days=7)
    old = datetime.now(timezone.utc) - timedelta(days=8)
    r = st.append([rec("new"), rec("old", when=old)])
    assert (r.appended, r.expired) == (1, 1)
    assert stored_ids(st) == ["new"]


# ---- termination protection, delete, restore -------------------------------------------------------------

def test_termination_protection(lk):
    st = lk.create_store("protected")
    assert st.metadata["TerminationProtectionEnabled"] is True
    with pytest.raises(TerminationProtected, match="termination protection"):
        st.delete()
    assert st.status == "ENABLED"
    assert st.update(termination_protection=False)["TerminationProtectionEnabled"] is False
    assert st.delete()["Status"] == "PENDING_DELETION"
    unprotected = lk.create_store("unprotected", termination_protection=False)
    assert unprotected.delete()["Status"] == "PENDING_DELETION"


def test_pending_deletion_refuses_everything_but_restore(lk):
    st = lk.create_store("doomed", termination_protection=False, selectors=MGMT_AND_DATA)
    st.append([rec("keep-me")])
    before = checksums(st)
    md = st.delete()
    deletion_time = md["DeletionTime"]
    assert abs(parse_iso(deletion_time) - datetime.now(timezone.utc)) < timedelta(minutes=1)
    assert st.delete()["DeletionTime"] == deletion_time  # deleting again changes nothing
    for source in ("live", "import"):
        with pytest.raises(InactiveStore):
            st.append([rec("more")], source=source)
    with pytest.raises(InactiveStore):
        st.scan()
    with pytest.raises(InactiveStore):
        st.update(retention_days=30)
    with pytest.raises(InactiveStore):
        st.stop_ingestion()
    with pytest.raises(InactiveStore):
        st.start_ingestion()
    assert lk.store("doomed").status == "PENDING_DELETION"  # still reachable by name for restore
    st.restore()
    assert st.status == "ENABLED" and checksums(st) == before
    with pytest.raises(InvalidParameter):
        st.restore()  # not pending any more
    assert st.append([rec("more")]).appended == 1


def test_restore_keeps_stopped_ingestion(lk):
    st = lk.create_store("stopped-then-deleted", termination_protection=False)
    st.stop_ingestion()
    st.delete()
    md = st.restore()
    assert md["Status"] == "STOPPED_INGESTION"
    assert "StatusBeforeDeletion" not in md
    with pytest.raises(InactiveStore):
        st.append([rec("x")])


def test_expired_deletion(lk):
    st = lk.create_store("expiring", termination_protection=False)
    live = lk.create_store("alive")
    far = datetime.now(timezone.utc) + timedelta(days=3650)
    assert not st.expired_deletion(now=far)  # not deleted: never expires
    deleted_at = parse_iso(st.delete()["DeletionTime"])
    assert not st.expired_deletion()
    assert not st.expired_deletion(now=deleted_at + timedelta(days=6, hours=23))
    assert st.expired_deletion(now=deleted_at + timedelta(days=7))
    assert st.expired_deletion(now=deleted_at + timedelta(days=30))
    assert not live.expired_deletion(now=deleted_at + timedelta(days=30))


def test_expired_stores_disappear(lk, monkeypatch):
    st = lk.create_store("gone-soon", termination_protection=False)
    keep = lk.create_store("keeper")
    st.delete()
    assert {s.name for s in lk.stores()} == {"gone-soon", "keeper"}

    real = datetime

    class Later(real):
        @classmethod
        def now(cls, tz=None):
            return real.now(tz) + timedelta(days=8)

    monkeypatch.setattr(store_mod, "datetime", Later)
    assert [s.id for s in lk.stores()] == [keep.id]
    assert {s.id for s in lk.stores(include_expired=True)} == {st.id, keep.id}
    with pytest.raises(NotFound):
        lk.store("gone-soon")
    assert lk.store("gone-soon", include_expired=True).id == st.id
    with pytest.raises(InactiveStore):
        st.restore()
    with pytest.raises(AlreadyExists):  # the name stays taken until vacuum purges the store
        lk.create_store("gone-soon")


# ---- ingestion on/off ------------------------------------------------------------------------------------

def test_stop_start_ingestion(lk):
    st = lk.create_store("ingest", selectors=MGMT_AND_DATA)
    v = st.stop_ingestion()
    assert v["Status"] == "STOPPED_INGESTION"
    version = st.snapshot().version
    st.stop_ingestion()  # already stopped: no new commit
    assert st.snapshot().version == version
    with pytest.raises(InactiveStore, match="start-ingestion"):
        st.append([rec("live-1")])
    r = st.append([rec("imported-1"), s3_object_event("imported-2")], source="import")
    assert r.appended == 2
    assert st.scan().collect().height == 2  # stopped stores stay queryable
    st.start_ingestion()
    assert st.append([rec("live-1")]).appended == 1
    assert stored_ids(st) == ["imported-1", "imported-2", "live-1"]
    with pytest.raises(InvalidParameter):
        st.append([rec("x")], source="firehose")


def test_create_without_ingestion(lk):
    st = lk.create_store("no-ingest", start_ingestion=False)
    assert st.status == "STOPPED_INGESTION"
    with pytest.raises(InactiveStore):
        st.append([rec("a")])
    assert st.append([rec("a")], source="import").appended == 1


def test_ingestion_toggle_only_for_cloudtrail_categories(lk):
    insights = lk.create_store("insights", selectors=[
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Insight"]}]}])
    with pytest.raises(InvalidParameter):
        insights.stop_ingestion()
    assert insights.status == "ENABLED"


# ---- selectors --------------------------------------------------------------------------------------------

def _mixed_batch() -> list[dict]:
    return [
        s3_object_event("s3-get"),
        rec("mgmt"),
        lambda_event("lambda"),
        s3_object_event("s3-put", eventName="PutObject", readOnly=False),
        rec("s3-bucket", category="Data", eventSource="s3.amazonaws.com", eventName="ListObjects",
            resources=[{"accountId": ACCOUNT, "type": "AWS::S3::Bucket", "ARN": "arn:aws:s3:::bkt"}]),
        rec("no-resources", category="Data", eventSource="s3.amazonaws.com", eventName="GetObject"),
    ]


def test_live_append_applies_selectors(lk):
    st = lk.create_store("s3-objects", selectors=S3_OBJECTS)
    r = st.append(_mixed_batch())
    assert (r.appended, r.not_selected, r.rejected) == (2, 4, [])
    assert stored_ids(st) == ["s3-get", "s3-put"]
    assert r.as_dict()["not_selected"] == 4


def test_default_selectors_keep_management_only(lk):
    st = lk.create_store("mgmt-only")
    assert st.metadata["AdvancedEventSelectors"][0]["FieldSelectors"] == [
        {"Field": "eventCategory", "Equals": ["Management"]}]
    r = st.append(_mixed_batch())
    assert (r.appended, r.not_selected) == (1, 5)
    assert stored_ids(st) == ["mgmt"]


def test_import_ignores_selectors(lk):
    st = lk.create_store("imports", selectors=S3_OBJECTS)
    r = st.append(_mixed_batch(), source="import")
    assert (r.appended, r.not_selected) == (6, 0)
    assert len(stored_ids(st)) == 6


def test_selector_update_applies_to_later_appends_only(lk):
    st = lk.create_store("narrowing", selectors=MGMT_AND_DATA)
    st.append(_mixed_batch())
    before = checksums(st)
    assert sum(before.values()) == 6
    md = st.update(selectors=S3_OBJECTS)
    assert md["AdvancedEventSelectors"][0]["Name"] == "S3 objects"
    assert checksums(st) == before  # selectors never remove stored events
    r = st.append([rec("mgmt-2"), s3_object_event("s3-2")])
    assert (r.appended, r.not_selected) == (1, 1)


@pytest.mark.parametrize("selectors", [
    [],
    "not a list",
    [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]}] * 6,
    [{"FieldSelectors": []}],
    [{"FieldSelectors": [{"Field": "eventName", "Equals": ["GetObject"]}]}],  # no eventCategory
    [{"FieldSelectors": [{"Field": "eventCategory", "NotEquals": ["Data"]}]}],
    [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Nope"]}]}],
    [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}, {"Field": "bogus", "Equals": ["x"]}]}],
    [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]},
                         {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                         {"Field": "resources.type", "Equals": ["AWS::Lambda::Function"]}]}],
    [{"FieldSelectors": [{"Field": "eventCategory", "Equals": []}]}],
    [{"Name": 5, "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}]}],
    [{"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Data"]}], "Extra": 1}],
])
def test_invalid_selectors(lk, selectors):
    with pytest.raises(InvalidParameter):
        lk.create_store("bad-selectors", selectors=selectors)
    assert lk.stores() == []
    st = lk.create_store("bad-selectors")  # the failed create did not claim the name
    version = st.snapshot().version
    with pytest.raises(InvalidParameter):
        st.update(selectors=selectors)
    assert st.snapshot().version == version


# ---- dedupe ---------------------------------------------------------------------------------------------

def test_dedupe_within_and_across_batches(lk):
    st = lk.create_store("dedupe", selectors=MGMT_AND_DATA)
    r = st.append([rec("a"), rec("b"), rec("a"), rec("c"), rec("b"), rec("a")])
    assert (r.appended, r.duplicates) == (3, 3)
    r = st.append([rec("a"), rec("d"), rec("c")])
    assert (r.appended, r.duplicates) == (1, 2)
    r = st.append([rec("a"), rec("d")], source="import")
    assert (r.appended, r.duplicates, r.version) == (0, 2, None)
    assert stored_ids(st) == ["a", "b", "c", "d"]
    assert st.describe()["Statistics"]["Events"] == 4


def test_dedupe_key_is_event_id_and_account(lk):
    st = lk.create_store("dedupe-key", selectors=MGMT_AND_DATA)
    r = st.append([rec("same", account="111111111111"), rec("same", account="222222222222")])
    assert (r.appended, r.duplicates) == (2, 0)
    # the first occurrence in a batch wins
    r = st.append([rec("first-wins", eventName="First"), rec("first-wins", eventName="Second")])
    assert (r.appended, r.duplicates) == (1, 1)
    t = st.to_arrow()
    names = dict(zip(t.column("eventid").to_pylist(), t.column("eventname").to_pylist()))
    assert names["first-wins"] == "First"
    # records without an eventID are keyed by their text (issue 15): the same record is one event, another
    # record is not a duplicate of it
    no_id = rec("x")
    del no_id["eventID"]
    r = st.append([no_id, dict(no_id), {**no_id, "eventName": "Other"}])
    assert (r.appended, r.duplicates) == (2, 1)
    assert st.append([dict(no_id)]).duplicates == 1


def test_duplicate_with_other_date_is_kept(lk):
    """ARCHITECTURE.md section 5: a re-delivery has the same eventTime; a different date is kept."""
    st = lk.create_store("dedupe-dates", selectors=MGMT_AND_DATA)
    now = datetime.now(timezone.utc)
    st.append([rec("dated", when=now - timedelta(days=3))])
    r = st.append([rec("dated", when=now - timedelta(days=1))])
    assert r.appended == 1


# ---- size modes -------------------------------------------------------------------------------------------

def _huge_params(event_id: str) -> dict:
    return rec(event_id, requestParameters={"blob": "x" * 300_000})


def _huge_uncapped(event_id: str) -> dict:
    return rec(event_id, userIdentity={"type": "IAMUser", "accountId": ACCOUNT, "junk": "y" * 300_000})


def test_standard_store_shrinks_or_rejects_300kb_events(lk):
    st = lk.create_store("standard", selectors=MGMT_AND_DATA)
    assert st.metadata["MaxEventSize"] == "Standard"
    r = st.append([_huge_params("omitted"), _huge_uncapped("too-big"), rec("small")])
    # requestParameters is over its 100 KB cap: omitted (limits.py choice 2), the event is stored
    assert r.appended == 2 and r.truncated == 1
    assert [(x.index, x.code) for x in r.rejected] == [(1, "EventTooLarge")]
    assert "too-big" in r.rejected[0].message and "\n" not in r.rejected[0].message
    t = st.to_arrow()
    row = {eid: i for i, eid in enumerate(t.column("eventid").to_pylist())}["omitted"]
    stored = orjson.loads(t.column("eventjson")[row].as_py())
    assert stored["requestParameters"] == limits.omitted_marker(len(orjson.dumps({"blob": "x" * 300_000})))
    assert len(t.column("eventjson")[row].as_py()) <= limits.MAX_EVENT_BYTES["Standard"]
    assert sorted(t.column("eventid").to_pylist()) == ["omitted", "small"]


def test_large_store_keeps_300kb_events(lk):
    st = lk.create_store("large", selectors=MGMT_AND_DATA, max_event_size="Large")
    records = [_huge_params("params"), _huge_uncapped("uncapped")]
    r = st.append(records)
    assert (r.appended, r.truncated, r.rejected) == (2, 0, [])
    t = st.to_arrow()
    by_id = dict(zip(t.column("eventid").to_pylist(), t.column("eventjson").to_pylist()))
    for record in records:
        assert orjson.loads(by_id[record["eventID"]]) == record
    r = st.append([rec("too-big-for-1mb", userIdentity={"junk": "z" * 1_100_000})])
    assert [x.code for x in r.rejected] == ["EventTooLarge"] and r.appended == 0


def test_field_caps_apply_to_live_not_import(lk):
    st = lk.create_store("caps", selectors=MGMT_AND_DATA)
    agent = "a" * 2000
    st.append([rec("live-agent", userAgent=agent)])
    st.append([rec("import-agent", userAgent=agent)], source="import")
    t = st.to_arrow()
    ua = dict(zip(t.column("eventid").to_pylist(), t.column("useragent").to_pylist()))
    assert ua["live-agent"] == "a" * 1024
    assert ua["import-agent"] == agent
    # imports still respect the whole-event limit of the store's size mode
    r = st.append([_huge_params("import-huge")], source="import")
    assert r.appended == 1 and r.truncated == 1


# ---- rejected records ---------------------------------------------------------------------------------------

def test_rejected_records_never_stop_the_batch(lk):
    st = lk.create_store("rejects", selectors=MGMT_AND_DATA)
    no_time = rec("no-time")
    del no_time["eventTime"]
    batch = [
        rec("ok-1"),
        no_time,
        rec("bad-time", eventTime="yesterday at noon"),
        42,
        ["not", "a", "record"],
        b"{not json",
        "[1, 2]",
        orjson.dumps(rec("ok-bytes")),
        rec("null-time", eventTime=None),
        rec("ok-2"),
    ]
    r = st.append(batch)
    assert r.appended == 3
    assert [(x.index, x.code) for x in r.rejected] == [
        (1, "MissingEventTime"), (2, "InvalidEventTime"), (3, "NotAnObject"), (4, "NotAnObject"),
        (5, "InvalidJson"), (6, "NotAnObject"), (8, "MissingEventTime")]
    for x in r.rejected:
        assert x.message and "\n" not in x.message
        assert x.as_dict() == {"index": x.index, "code": x.code, "message": x.message, "location": ""}
    assert stored_ids(st) == ["ok-1", "ok-2", "ok-bytes"]
    d = r.as_dict()
    assert orjson.loads(orjson.dumps(d)) == d and len(d["rejected"]) == 7


def test_all_rejected_commits_nothing(lk):
    st = lk.create_store("nothing", selectors=MGMT_AND_DATA)
    version = st.snapshot().version
    r = st.append([1, "x", {"eventID": "no-time"}], location="file.json")
    assert isinstance(r, AppendResult) and r.version is None and r.appended == 0
    assert [x.location for x in r.rejected] == ["file.json"] * 3
    assert st.snapshot().version == version
    assert st.append([]).appended == 0


# ---- read-only ------------------------------------------------------------------------------------------------

def test_events_are_read_only(lk):
    st = lk.create_store("immutable", selectors=MGMT_AND_DATA)
    st.append([rec("a"), rec("b")])
    before = checksums(st)
    version = st.snapshot().version
    for call in (lambda: st.update_events(), lambda: st.update_events("a", {"eventName": "x"}),
                 lambda: st.update_events(eventid="a"), lambda: st.delete_events(),
                 lambda: st.delete_events(["a"]), lambda: st.delete_events(where="eventid = 'a'")):
        with pytest.raises(ReadOnlyError) as e:
            call()
        assert isinstance(e.value, LakeError) and e.value.code == "UnsupportedOperationException"
    assert checksums(st) == before and st.snapshot().version == version


def test_store_has_no_other_way_to_mutate_events(lk):
    """The public surface of Store: any new method must be reviewed here. Only `append` adds events; the
    metadata operations never touch them."""
    public = {n for n in dir(Store) if not n.startswith("_")}
    assert public == {
        # reading
        "snapshot", "metadata", "name", "arn", "status", "describe", "expired_deletion", "files", "scan",
        "scan_files",
        "to_arrow",
        # metadata lifecycle
        "update", "delete", "restore", "start_ingestion", "stop_ingestion",
        # the only way in
        "append",
        # guards that always raise ReadOnlyError
        "update_events", "delete_events",
    }
    st = lk.create_store("surface", selectors=MGMT_AND_DATA, termination_protection=False)
    st.append([rec("a"), s3_object_event("b")])
    before = checksums(st)
    st.update(retention_days=3653, selectors=S3_OBJECTS, name="surface-2", max_event_size="Large")
    st.stop_ingestion()
    st.start_ingestion()
    st.delete()
    st.restore()
    assert checksums(st) == before


def test_creation_that_died_before_claiming_its_name_is_invisible_and_vacuumed(local_uri):
    """Commit 0 is written before the name is claimed: a crash in between leaves no dangling name."""
    from datetime import datetime, timedelta, timezone

    from lake.log import Log
    from lake.maintenance import vacuum
    from lake.verify import verify

    lk = Lake(local_uri)
    lk.create_store("kept-store")
    Log(lk.storage, "stores/dead-0000").try_commit(None, "CREATE", metadata={
        "Name": "ghost", "EventDataStoreId": "dead-0000", "Status": "ENABLED", "CreatedTimestamp": "x"})
    assert [s.name for s in Lake(local_uri).stores()] == ["kept-store"]
    assert verify(lk)["ok"]
    lk.create_store("ghost")  # the name was never taken
    later = datetime.now(timezone.utc) + timedelta(days=8)
    report = vacuum(lk, dry_run=False, now=later, grace=timedelta(days=7))
    assert any(d["reason"] == "aborted-create" for d in report["details"])
    assert "dead-0000" not in lk.storage.list_dirs("stores")
    assert sorted(s.name for s in Lake(local_uri).stores()) == ["ghost", "kept-store"]
