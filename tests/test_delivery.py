"""Trail delivery (lake/delivery.py): CloudTrail log files from the stores' commits, to a local directory and to
S3 (moto), with the exact key layout, envelope and record bytes, the trail's selectors and region rules, the
50 MB split, Insight / network activity prefixes, logging windows, and exactly-once delivery across crashes."""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from lake.delivery import (Deliverer, DeliveryService, deliver_all, envelope, split_records, unique_string,
                           windows_of)
from lake.lake import Lake
from lake.storage import Storage
from lake.trails import TrailCatalog, map_bucket

A, B = "111111111111", "222222222222"
KEY_RE = re.compile(
    r"^(?:(?P<prefix>.+)/)?AWSLogs/(?:(?P<org>o-[a-z0-9]{10,32})/)?(?P<acct>\d{12})/"
    r"(?P<kind>CloudTrail|CloudTrail-Insight|CloudTrail-NetworkActivity)/(?P<region>[a-z0-9-]+)/"
    r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P=acct)_(?P=kind)_(?P=region)_(?P<ts>\d{8}T\d{4}Z)_"
    r"(?P<u>[A-Za-z0-9]{16})\.json\.gz$")


# ---- helpers -------------------------------------------------------------------------------------------------

_SEQ = [0]


def ev(*, account: str = A, region: str = "us-east-1", source: str = "ec2.amazonaws.com",
       name: str = "DescribeInstances", category: str = "Management", read_only: bool = True, **extra) -> dict:
    """One CloudTrail record. Its eventTime is 10 minutes ago: recent enough for any store's retention, too old to
    count as the time Lake received it when it comes through the API (then the commit's time counts)."""
    _SEQ[0] += 1
    rec = {"eventVersion": "1.09",
           "userIdentity": {"type": "IAMUser", "principalId": "AIDAEXAMPLE", "arn": f"arn:aws:iam::{account}:user/u",
                            "accountId": account, "userName": "u"},
           "eventTime": (datetime.now(timezone.utc) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ"),
           "eventSource": source, "eventName": name, "awsRegion": region, "sourceIPAddress": "192.0.2.1",
           "userAgent": "test", "requestParameters": {"n": _SEQ[0]}, "responseElements": None,
           "requestID": str(uuid.uuid4()), "eventID": str(uuid.uuid4()), "readOnly": read_only,
           "eventType": "AwsApiCall", "managementEvent": category == "Management", "recipientAccountId": account,
           "eventCategory": category}
    if category == "NetworkActivity":
        for k in ("userAgent", "requestParameters", "responseElements", "readOnly", "managementEvent"):
            rec.pop(k)
        rec.update(eventType="AwsVpceEvent", vpcEndpointId="vpce-0123", vpcEndpointAccountId=account)
    rec.update(extra)
    return rec


def s3_data(bucket: str, key: str = "k", **kw) -> dict:
    return ev(source="s3.amazonaws.com", name="PutObject", category="Data", read_only=False, resources=[
        {"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{bucket}/{key}"},
        {"accountId": A, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{bucket}"}], **kw)


def insight(kind: str = "ApiCallRateInsight", account: str = A) -> dict:
    _SEQ[0] += 1
    return {"eventVersion": "1.08", "eventTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "awsRegion": "us-east-1", "eventID": str(uuid.uuid4()), "eventType": "AwsCloudTrailInsight",
            "recipientAccountId": account, "sharedEventID": str(uuid.uuid4()),
            "insightDetails": {"state": "Start", "eventSource": "ec2.amazonaws.com", "eventName": "RunInstances",
                               "insightType": kind, "insightContext": {"statistics": {"baseline": {"average": 1}}}},
            "eventCategory": "Insight"}


@pytest.fixture
def lk(tmp_path):
    lake = Lake(str(tmp_path / "lake"), region="us-east-1", account_id=A)
    map_bucket(lake, "trail-bucket", str(tmp_path / "bucket"))
    return lake


def new_trail(lake, name: str = "main", *, start: bool = True, owner: str = A, region: str = "us-east-1", **kw):
    cat = TrailCatalog(lake)
    t = cat.create(name, kw.pop("bucket", "trail-bucket"), owner=owner, region=region, **kw)
    return cat.set_logging(t, True) if start else t


def stored_json(store) -> list[str]:
    return store.to_arrow().column("eventjson").to_pylist()


def delivered(dest: Storage, prefix: str = "") -> dict[str, bytes]:
    """Every log file under the destination: key -> decompressed body."""
    return {f.path: gzip.decompress(dest.read(f.path)) for f in dest.list(prefix)
            if f.path.endswith(".json.gz") and "CloudTrail-Digest" not in f.path}


def all_records(files: dict[str, bytes]) -> list[dict]:
    return [r for body in files.values() for r in json.loads(body)["Records"]]


def local_dest(tmp_path) -> Storage:
    return Storage(str(tmp_path / "bucket"))


# ---- pure helpers ------------------------------------------------------------------------------------------

def test_split_records_respects_the_limit():
    sizes = [10] * 20
    parts = split_records(sizes, 14 + 10 * 5 + 4)  # envelope + 5 records + 4 commas
    assert parts == [(0, 5), (5, 10), (10, 15), (15, 20)]
    assert split_records([100, 1, 1], 50) == [(0, 1), (1, 3)]  # an oversized record goes alone
    assert split_records([], 50) == []
    for a, b in split_records(sizes, 40):
        assert len(envelope([b"x" * 10] * (b - a))) <= 40


def test_unique_string_is_deterministic_alnum():
    u = unique_string("t", "1", A)
    assert re.fullmatch(r"[A-Za-z0-9]{16}", u) and u == unique_string("t", "1", A)
    assert u != unique_string("t", "2", A)


# ---- layout, envelope, bytes ----------------------------------------------------------------------------------

def test_local_delivery_layout_and_bytes(lk, tmp_path):
    t = new_trail(lk, prefix="audit/logs")
    st = lk.create_store("store-one")
    st.append([ev() for _ in range(20)], source="import")
    now = datetime(2031, 2, 3, 4, 5, 59, tzinfo=timezone.utc)
    rep = Deliverer(lk, t).run_once(now)
    assert rep.events == 20 and rep.batches == 1 and rep.error is None
    files = delivered(local_dest(tmp_path))
    assert len(files) == 1
    key, body = next(iter(files.items()))
    m = KEY_RE.match(key)
    assert m, key
    assert m["prefix"] == "audit/logs" and m["org"] is None and m["acct"] == A and m["kind"] == "CloudTrail"
    assert m["region"] == "us-east-1" and (m["y"], m["m"], m["d"]) == ("2031", "02", "03")
    assert m["ts"] == "20310203T0405Z"
    # the body is exactly the envelope around the stored eventjson texts
    stored = stored_json(st)
    assert body == envelope(sorted((s.encode() for s in stored), key=lambda b: body.index(b)))
    assert sorted(json.loads(body)["Records"], key=lambda r: r["eventID"]) == \
        sorted((json.loads(s) for s in stored), key=lambda r: r["eventID"])
    # nothing new: nothing delivered
    assert Deliverer(lk, t).run_once(now + timedelta(minutes=5)).files == []
    assert len(delivered(local_dest(tmp_path))) == 1


def test_s3_delivery(lk, s3_env):
    import boto3

    from tests.conftest import make_bucket

    bucket = make_bucket(s3_env)
    t = new_trail(lk, bucket=bucket)
    st = lk.create_store("store-one")
    recs = [ev() for _ in range(30)] + [ev(account=B) for _ in range(5)]
    st.append(recs, source="import")
    rep = Deliverer(lk, t).run_once()
    assert rep.events == 30
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) == 1 and KEY_RE.match(keys[0])
    body = gzip.decompress(s3.get_object(Bucket=bucket, Key=keys[0])["Body"].read())
    assert sorted(body.count(s.encode()) for s in stored_json(st) if f'"recipientAccountId":"{A}"' in s) == [1] * 30


def test_lake_on_s3_or_local(lake_uri, tmp_path):
    """The lake itself on S3 (state, catalog and segments there) delivering to a directory, and locally."""
    lake = Lake(lake_uri, region="us-east-1", account_id=A)
    map_bucket(lake, "trail-bucket", str(tmp_path / "bucket"))
    t = new_trail(lake, validation=True)
    st = lake.create_store("store-one")
    recs = [ev() for _ in range(7)]
    st.append(recs, source="import")
    Deliverer(lake, t).run_once()
    st.append([ev()], source="import")
    assert Deliverer(lake, t).run_once().events == 1
    assert len(all_records(delivered(local_dest(tmp_path)))) == 8


def test_only_commits_while_logging(lk, tmp_path):
    st = lk.create_store("store-one")
    t = new_trail(lk, start=False)
    cat = TrailCatalog(lk)
    before = [ev() for _ in range(3)]
    st.append(before, source="import")
    t = cat.set_logging(t, True)
    during = [ev() for _ in range(4)]
    st.append(during, source="import")
    t = cat.set_logging(t, False)
    time.sleep(0.01)
    st.append([ev() for _ in range(5)], source="import")
    d = Deliverer(lk, t)
    d.run_once()
    got = {r["eventID"] for r in all_records(delivered(local_dest(tmp_path)))}
    assert got == {r["eventID"] for r in during}
    cat.set_logging(t, True)
    again = [ev() for _ in range(2)]
    st.append(again, source="import")
    Deliverer(lk, t).run_once()
    got = Counter(r["eventID"] for r in all_records(delivered(local_dest(tmp_path))))
    assert set(got) == {r["eventID"] for r in during + again} and set(got.values()) == {1}


def test_api_events_count_from_their_event_time(lk, tmp_path):
    """Events committed through the API shortly after a stop still count if they happened before it (the
    trail's own StopLogging call); events that happened after it do not, whenever committed."""
    st = lk.create_store("store-one")
    t = new_trail(lk)
    time.sleep(1.1)
    just_before = datetime.now(timezone.utc) - timedelta(seconds=1)
    t = TrailCatalog(lk).set_logging(t, False)
    time.sleep(1.1)
    stop = ev(source="cloudtrail.amazonaws.com", name="StopLogging", read_only=False,
              requestParameters={"Name": "main"}, eventTime=just_before.strftime("%Y-%m-%dT%H:%M:%SZ"))
    after = ev(eventTime=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    old = ev()  # eventTime long before the commit: the commit's time counts
    st.append([stop, after, old], source="live")
    st.append([ev(eventTime=just_before.strftime("%Y-%m-%dT%H:%M:%SZ"))], source="import")  # imports: commit time
    Deliverer(lk, t).run_once()
    assert [r["eventID"] for r in all_records(delivered(local_dest(tmp_path)))] == [stop["eventID"]]


def test_sources_and_stores_settings(lk, tmp_path):
    live_store = lk.create_store("live-store")
    other = lk.create_store("other-store")
    t = new_trail(lk, lake_config={"Sources": ["live"], "Stores": ["live-store"]})
    live = [ev() for _ in range(3)]
    live_store.append(live, source="live")
    live_store.append([ev() for _ in range(4)], source="import")
    other.append([ev() for _ in range(5)], source="live")
    Deliverer(lk, t).run_once()
    assert {r["eventID"] for r in all_records(delivered(local_dest(tmp_path)))} == {r["eventID"] for r in live}


def test_compaction_is_not_delivered_again(lk, tmp_path):
    from lake import maintenance

    st = lk.create_store("store-one")
    t = new_trail(lk)
    for _ in range(3):
        st.append([ev() for _ in range(4)], source="import")
    Deliverer(lk, t).run_once()
    assert maintenance.compact(st)["dry_run"] is False
    assert st.snapshot().segments.num_rows == 1
    Deliverer(lk, t).run_once()
    assert len(all_records(delivered(local_dest(tmp_path)))) == 12


# ---- which events ---------------------------------------------------------------------------------------------

def test_selectors_are_applied(lk, tmp_path):
    st = lk.create_store("store-one")
    t = new_trail(lk)
    cat = TrailCatalog(lk)
    t = cat.put_event_selectors(t, basic=[{"ReadWriteType": "WriteOnly", "IncludeManagementEvents": True,
                                           "DataResources": [{"Type": "AWS::S3::Object",
                                                              "Values": ["arn:aws:s3:::wanted"]}]}])
    keep = [ev(read_only=False), s3_data("wanted")]
    drop = [ev(read_only=True), s3_data("unwanted"), ev(category="NetworkActivity", source="kms.amazonaws.com")]
    st.append(keep + drop, source="import")
    Deliverer(lk, t).run_once()
    assert {r["eventID"] for r in all_records(delivered(local_dest(tmp_path)))} == {r["eventID"] for r in keep}


def test_network_activity_and_insight_prefixes(lk, tmp_path):
    st = lk.create_store("store-one")
    t = new_trail(lk)
    cat = TrailCatalog(lk)
    t = cat.put_event_selectors(t, advanced=[
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]},
        {"FieldSelectors": [{"Field": "eventCategory", "Equals": ["NetworkActivity"]},
                            {"Field": "eventSource", "Equals": ["kms.amazonaws.com"]}]}])
    t = cat.put_insight_selectors(t, [{"InsightType": "ApiCallRateInsight"}])
    mgmt, net = ev(), ev(category="NetworkActivity", source="kms.amazonaws.com", name="ListKeys")
    net_other = ev(category="NetworkActivity", source="s3.amazonaws.com", name="ListBuckets")
    calls, errors = insight("ApiCallRateInsight"), insight("ApiErrorRateInsight")
    st.append([mgmt, net, net_other, calls, errors], source="import")
    Deliverer(lk, t).run_once()
    files = delivered(local_dest(tmp_path))
    kinds = {}
    for key, body in files.items():
        m = KEY_RE.match(key)
        assert m, key
        kinds[m["kind"]] = [r["eventID"] for r in json.loads(body)["Records"]]
    assert kinds == {"CloudTrail": [mgmt["eventID"]], "CloudTrail-NetworkActivity": [net["eventID"]],
                     "CloudTrail-Insight": [calls["eventID"]]}


def test_region_and_global_service_rules(lk, tmp_path):
    east, west = ev(), ev(region="eu-west-1")
    iam = ev(source="iam.amazonaws.com", name="ListRoles")
    other_acct = ev(account=B)
    cases = {
        ("single-east", "us-east-1", False, True, False): {east["eventID"], iam["eventID"]},
        ("no-global", "us-east-1", False, False, False): {east["eventID"]},
        ("single-west", "eu-west-1", False, True, False): {west["eventID"]},
        ("multi", "us-east-1", True, True, False): {east["eventID"], west["eventID"], iam["eventID"]},
        ("org", "us-east-1", True, True, True): {e["eventID"] for e in (east, west, iam, other_acct)},
    }
    cat = TrailCatalog(lk)
    trails = {}
    for (name, region, multi, glob_, org) in cases:
        map_bucket(lk, f"bucket-{name}", str(tmp_path / name))
        t = cat.create(name, f"bucket-{name}", owner=A, region=region, multi_region=multi, include_global=glob_,
                       organization=org)
        trails[name] = cat.set_logging(t, True)
    lk.create_store("store-one").append([east, west, iam, other_acct], source="import")
    for (name, region, multi, glob_, org), want in cases.items():
        Deliverer(lk, trails[name]).run_once()
        files = delivered(Storage(str(tmp_path / name)))
        assert {r["eventID"] for r in all_records(files)} == want, name
        for key, body in files.items():
            m = KEY_RE.match(key)
            assert m["org"] == (trails[name].organization_id if org else None)
            assert {(r["recipientAccountId"], r["awsRegion"]) for r in json.loads(body)["Records"]} == \
                {(m["acct"], m["region"])}


def test_split_at_size_limit(lk, tmp_path):
    st = lk.create_store("store-one")
    t = new_trail(lk)
    recs = [ev(requestParameters={"pad": "x" * 500}) for _ in range(40)]
    st.append(recs, source="import")
    Deliverer(lk, t, max_file_bytes=4000).run_once()
    files = delivered(local_dest(tmp_path))
    assert len(files) > 5
    assert all(len(body) <= 4000 for body in files.values())
    assert len({KEY_RE.match(k)["u"] for k in files}) == len(files)
    assert Counter(r["eventID"] for r in all_records(files)) == Counter(r["eventID"] for r in recs)


def test_small_batches_keep_going(lk, tmp_path):
    """A batch budget smaller than the backlog: several batches in one run, everything once."""
    st = lk.create_store("store-one")
    t = new_trail(lk)
    for _ in range(6):
        st.append([ev() for _ in range(5)], source="import")
    rep = Deliverer(lk, t, batch_bytes=1).run_once()
    assert rep.batches == 6
    assert len(all_records(delivered(local_dest(tmp_path)))) == 30


# ---- exactly once -------------------------------------------------------------------------------------------

class Crash(Exception):
    pass


def logging_with_backlog(lake, n: int, **trail_kw):
    """A logging trail and a store holding `n` imported events of about 600 bytes each: (store, trail, records)."""
    t = new_trail(lake, **trail_kw)
    st = lake.create_store("store-one")
    recs = [ev(requestParameters={"pad": "p" * 300}) for _ in range(n)]
    st.append(recs, source="import")
    return st, t, recs


def test_crash_after_files_before_cursor(lk, tmp_path, monkeypatch):
    st, t, first = logging_with_backlog(lk, 30)
    real = Deliverer._complete

    def crash(self, n, plan, files):
        if files:
            raise Crash()
        return real(self, n, plan, files)
    monkeypatch.setattr(Deliverer, "_complete", crash)
    with pytest.raises(Crash):
        Deliverer(lk, t, max_file_bytes=3000).run_once()
    written = delivered(local_dest(tmp_path))
    assert len(written) > 1  # the files are there, the cursor is not
    monkeypatch.setattr(Deliverer, "_complete", real)
    later = [ev() for _ in range(5)]
    st.append(later, source="import")  # arrives between the crash and the restart
    Deliverer(lk, t, max_file_bytes=3000).run_once()
    files = delivered(local_dest(tmp_path))
    assert set(written) <= set(files)
    got = Counter(r["eventID"] for r in all_records(files))
    assert got == Counter(r["eventID"] for r in first + later)


def test_crash_in_the_middle_of_the_files(lk, tmp_path, monkeypatch):
    _, t, recs = logging_with_backlog(lk, 30)
    real = Storage.create
    count = [0]

    def create(self, path, data, durable=True):
        if "AWSLogs" in path:
            count[0] += 1
            if count[0] == 3:
                raise Crash()
        return real(self, path, data, durable)
    monkeypatch.setattr(Storage, "create", create)
    with pytest.raises(Crash):
        Deliverer(lk, t, max_file_bytes=3000).run_once()
    assert len(delivered(local_dest(tmp_path))) == 2
    monkeypatch.setattr(Storage, "create", real)
    Deliverer(lk, t, max_file_bytes=3000).run_once()
    Deliverer(lk, t, max_file_bytes=3000).run_once()
    assert Counter(r["eventID"] for r in all_records(delivered(local_dest(tmp_path)))) == \
        Counter(r["eventID"] for r in recs)


def test_crash_after_intent_and_config_change(lk, tmp_path, monkeypatch):
    """The replayed batch uses the plan's bucket, prefix and time even if the trail changed meanwhile."""
    st = lk.create_store("store-one")
    t = new_trail(lk, prefix="one")
    st.append([ev() for _ in range(5)], source="import")
    monkeypatch.setattr(Deliverer, "_files", lambda self, n, plan: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        Deliverer(lk, t).run_once()
    monkeypatch.undo()
    map_bucket(lk, "trail-bucket", str(tmp_path / "bucket"))
    TrailCatalog(lk).update(t, prefix="two")
    Deliverer(lk, t).run_once(datetime.now(timezone.utc) + timedelta(hours=3))
    files = delivered(local_dest(tmp_path))
    assert len(files) == 1 and next(iter(files)).startswith("one/AWSLogs/")


def test_restart_from_cursor_delivers_only_new(lk, tmp_path):
    st = lk.create_store("store-one")
    t = new_trail(lk)
    st.append([ev() for _ in range(3)], source="import")
    Deliverer(lk, t).run_once()
    st.append([ev() for _ in range(2)], source="live")
    rep = Deliverer(lk, t).run_once()  # a new process: state comes from the lake
    assert rep.events == 2
    assert len(all_records(delivered(local_dest(tmp_path)))) == 5


def test_s3_crash_and_replay(lk, s3_env, monkeypatch):
    """On S3 the replay meets the create-only PUT (If-None-Match) of the files already written."""
    from tests.conftest import make_bucket

    bucket = make_bucket(s3_env)
    _, t, recs = logging_with_backlog(lk, 12, bucket=bucket)
    real = Deliverer._complete
    monkeypatch.setattr(Deliverer, "_complete", lambda self, n, plan, files: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        Deliverer(lk, t, max_file_bytes=2000).run_once()
    monkeypatch.setattr(Deliverer, "_complete", real)
    Deliverer(lk, t, max_file_bytes=2000).run_once()
    dest = Storage(f"s3://{bucket}")
    assert Counter(r["eventID"] for r in all_records(delivered(dest))) == Counter(r["eventID"] for r in recs)


# ---- trails that go away, digests, the background thread -------------------------------------------------------

def test_deleted_trail_finishes_then_stops(lk, tmp_path):
    st = lk.create_store("store-one")
    t = new_trail(lk)
    recs = [ev() for _ in range(4)]
    st.append(recs, source="import")
    TrailCatalog(lk).delete(t)
    st.append([ev() for _ in range(4)], source="import")
    later = datetime.now(timezone.utc) + timedelta(minutes=10)
    reps = deliver_all(lk, later)
    assert [r.events for r in reps] == [4]
    assert deliver_all(lk, later) == []  # finished: not visited again
    assert {r["eventID"] for r in all_records(delivered(local_dest(tmp_path)))} == {r["eventID"] for r in recs}


def test_windows_of_history(lk):
    cat = TrailCatalog(lk)
    t = new_trail(lk, validation=True)
    t = cat.update(t, validation=False)
    t = cat.set_logging(t, False)
    t = cat.set_logging(t, True)
    ws = windows_of(cat.history(A, "us-east-1", "main"))
    assert [(w.validation, w.stopped, w.end is None) for w in ws] == [(True, False, False), (False, True, False),
                                                                      (False, False, True)]


def test_digests_for_validated_trails(lk, tmp_path):
    from lake.digest import Destination, read_digest

    st = lk.create_store("store-one")
    t = new_trail(lk, validation=True)
    st.append([ev() for _ in range(5)], source="import")
    now = datetime.now(timezone.utc)
    rep = Deliverer(lk, t).run_once(now)
    assert rep.events == 5
    rep = Deliverer(lk, t).run_once(now + timedelta(hours=1, minutes=1))
    assert len(rep.digests) == 1
    dest = Destination(str(tmp_path / "bucket"))
    digest, raw, meta = read_digest(dest, rep.digests[0])
    log_key = next(iter(delivered(local_dest(tmp_path))))
    assert [f["s3Object"] for f in digest["logFiles"]] == [log_key]
    assert meta["signature-algorithm"] == "SHA256withRSA"


def test_final_digest_after_stop(lk, tmp_path):
    from lake.digest import Destination, read_digest

    st = lk.create_store("store-one")
    t = new_trail(lk, validation=True)
    st.append([ev() for _ in range(5)], source="import")
    Deliverer(lk, t).run_once()
    t = TrailCatalog(lk).set_logging(t, False)
    assert Deliverer(lk, t).run_once().digests == []  # within the grace period the stop event may still come
    rep = Deliverer(lk, t).run_once(datetime.now(timezone.utc) + timedelta(hours=2))
    assert len(rep.digests) == 1 and "_CloudTrail-Digest_us-east-1_main_us-east-1_" in rep.digests[0]
    digest, _, _ = read_digest(Destination(str(tmp_path / "bucket")), rep.digests[0])
    assert [f["s3Object"] for f in digest["logFiles"]] == list(delivered(local_dest(tmp_path)))
    assert digest["previousDigestSignature"] is None
    assert Deliverer(lk, t).run_once(datetime.now(timezone.utc) + timedelta(hours=5)).digests == []


def test_delivery_service_thread(lk, tmp_path):
    st = lk.create_store("store-one")
    new_trail(lk)
    svc = DeliveryService(lk, interval=0.05).start()
    try:
        st.append([ev() for _ in range(3)], source="live")
        deadline = time.time() + 30
        while time.time() < deadline and len(all_records(delivered(local_dest(tmp_path)))) < 3:
            time.sleep(0.05)
    finally:
        svc.close()
    assert not svc.thread.is_alive()
    assert len(all_records(delivered(local_dest(tmp_path)))) == 3


def test_status_after_delivery(lk):
    from lake.trails import status

    st = lk.create_store("store-one")
    t = new_trail(lk)
    st.append([ev()], source="import")
    Deliverer(lk, t).run_once()
    s = status(lk, TrailCatalog(lk).get(A, "us-east-1", "main"))
    assert s["IsLogging"] and s["LatestDeliveryTime"] and s["LatestDeliveryAttemptSucceeded"].endswith("Z")


# ---- the real external data -----------------------------------------------------------------------------------

def test_external_data_delivered_verbatim(lk, tmp_path, external):
    """Every management event of the real data sets, imported while an organization trail logs, comes out once,
    byte for byte as stored, in files whose keys name its account and region."""
    st = lk.create_store("external", retention_days=3653)  # the real data is years old
    t = new_trail(lk, multi_region=True, organization=True)
    records = [r for name in ("invictus", "stratus", "trailscraper", "awsdocs", "panther") for r in external[name]]
    res = st.append(records, source="import")
    assert res.appended > 1000
    Deliverer(lk, t, max_file_bytes=1_000_000).run_once()
    table = st.to_arrow().select(["eventjson", "eventcategory", "recipientaccountid", "awsregion"]).to_pylist()
    want = Counter(r["eventjson"] for r in table if r["eventcategory"] == "Management" and
                   re.fullmatch(r"\d{12}", r["recipientaccountid"] or "") and
                   re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", r["awsregion"] or "us-east-1"))
    by_id: dict = {}
    for r in table:
        by_id.setdefault(json.loads(r["eventjson"]).get("eventID"), []).append(r["eventjson"].encode())
    got: Counter = Counter()
    files = delivered(local_dest(tmp_path))
    assert len(files) > 1
    for key, body in files.items():
        m = KEY_RE.match(key)
        assert m and m["org"] == t.organization_id, key
        assert len(body) <= 1_000_000
        # walk the body: each record must be one stored text, verbatim, in order, comma separated
        pos = len(b'{"Records":[')
        for i, rec in enumerate(json.loads(body)["Records"]):
            assert rec["recipientAccountId"] == m["acct"] and rec.get("awsRegion", "us-east-1") == m["region"]
            text = next(x for x in by_id[rec.get("eventID")] if body.startswith(x, pos))
            got[text.decode()] += 1
            pos += len(text) + 1
        assert pos == len(body) - 1 and body.endswith(b"]}")
    assert got == want and len(want) > 1000


def test_malformed_account_or_region_never_becomes_a_key(lk, tmp_path):
    st = lk.create_store("store-one")
    t = new_trail(lk, multi_region=True, organization=True)
    good = ev()
    st.append([good, ev(account="../../../../tmp"), ev(region="../../escape"), ev(account="12345")],
              source="import")
    Deliverer(lk, t).run_once()
    assert [r["eventID"] for r in all_records(delivered(local_dest(tmp_path)))] == [good["eventID"]]
    assert not (tmp_path / "escape").exists()


# ---- with `lake serve`: the server's own audit events ------------------------------------------------------------

try:
    from tests.server_fixture import cloudtrail_client, server  # noqa: F401 - fixtures
    HAVE_SERVER = True
except ImportError:  # pragma: no cover - the server fixture is written separately
    HAVE_SERVER = False


@pytest.mark.skipif(not HAVE_SERVER, reason="tests/server_fixture.py is not available")
def test_server_audit_events_are_delivered(server, cloudtrail_client, tmp_path):
    """CreateTrail happens before logging (not delivered); StartLogging, the calls while logging and the
    trail's own StopLogging are; calls after the stop are not."""
    import lake.api_trails  # noqa: F401 - registers the trail operations

    map_bucket(server.lake, "audit-bucket", str(tmp_path / "audit-bucket"))
    ct = cloudtrail_client("alice")
    ct.create_trail(Name="audited", S3BucketName="audit-bucket")
    time.sleep(1.1)  # eventTime has whole seconds: keep CreateTrail out of the second logging starts in
    ct.start_logging(Name="audited")
    ct.put_event_selectors(TrailName="audited", EventSelectors=[{"ReadWriteType": "All"}])
    server.flush_audit()
    ct.stop_logging(Name="audited")
    server.flush_audit()
    time.sleep(1.1)
    ct.update_trail(Name="audited", S3KeyPrefix="later")
    server.flush_audit()
    trail = TrailCatalog(server.lake).get("111111111111", "us-east-1", "audited")
    Deliverer(server.lake, trail).run_once()
    files = delivered(Storage(str(tmp_path / "audit-bucket")))
    names = [r["eventName"] for r in all_records(files)]
    assert sorted(names) == ["PutEventSelectors", "StartLogging", "StopLogging"], names
    assert all(KEY_RE.match(k)["acct"] == "111111111111" for k in files)


def test_deliverer_by_name_or_arn(lk, tmp_path):
    t = new_trail(lk, region="eu-west-1")
    lk.create_store("store-one").append([ev(region="eu-west-1")], source="import")
    assert Deliverer(lk, t.arn).run_once().events == 1
    with pytest.raises(Exception, match="Unknown trail"):
        Deliverer(lk, "main")  # names resolve in the lake's own region (us-east-1)
