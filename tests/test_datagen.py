"""The synthetic data set generator (lake.datagen): layout, determinism, realism and labelled anomalies."""

from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
import re
import shutil
import statistics
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from lake.datagen import NETWORK_ACTIVITY_KIND, generate_dataset
from lake.events import convert

END = datetime(2024, 6, 3, tzinfo=timezone.utc)   # a Monday: the 14 days before it are two whole weeks
KEY = re.compile(r"AWSLogs/(?P<acct>\d{12})/(?P<kind>CloudTrail(?:-NetworkActivity)?)/(?P<region>[a-z0-9-]+)/"
                 r"(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P=acct)_(?P=kind)_(?P=region)_"
                 r"(?P<stamp>\d{8}T\d{4}Z)_[A-Za-z0-9]{16}\.json\.gz$")
MANDATORY = ("eventVersion", "userIdentity", "eventTime", "eventSource", "eventName", "awsRegion", "sourceIPAddress",
             "eventID", "eventType", "recipientAccountId", "eventCategory")


def _files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "AWSLogs").rglob("*.json.gz"))


def _load(root: Path) -> list[tuple[Path, list[dict]]]:
    return [(p, orjson.loads(gzip.decompress(p.read_bytes()))["Records"]) for p in _files(root)]


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in _files(root):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _t(s: str) -> datetime:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def _scratch_dir(fallback: Path) -> Path:
    """A RAM-backed directory when there is one: these data sets are thousands of small files, and the tests
    are about their content, not about how fast the disk creates files."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return Path(tempfile.mkdtemp(prefix="lake-datagen-", dir="/dev/shm"))
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


@pytest.fixture
def scratch(tmp_path):
    d = _scratch_dir(tmp_path / "scratch")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    """14 days, 2 accounts, 2 regions, anomalies on: the data set most tests inspect."""
    root = _scratch_dir(tmp_path_factory.mktemp("ds"))
    seen = []
    summary = generate_dataset(str(root), events=8000, days=14, accounts=2, regions=2, seed=11, end=END,
                               anomalies=True, workers=1, progress=lambda done, total: seen.append((done, total)))
    files = _load(root)
    records = [r for _, recs in files for r in recs]
    yield {"root": root, "summary": summary, "files": files, "records": records, "progress": seen}
    shutil.rmtree(root, ignore_errors=True)


def test_deterministic_by_seed_and_independent_of_workers(scratch):
    tmp_path = scratch
    kw = dict(events=1500, days=1, accounts=2, regions=2, end=END, anomalies=True)
    a = generate_dataset(str(tmp_path / "a"), seed=5, workers=1, **kw)
    b = generate_dataset(str(tmp_path / "b"), seed=5, workers=2, **kw)
    c = generate_dataset(str(tmp_path / "c"), seed=6, workers=1, **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert (tmp_path / "a" / "anomalies.json").read_bytes() == (tmp_path / "b" / "anomalies.json").read_bytes()
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    for s in (a, b, c):
        assert s["events"] == 1500
    assert {k: a[k] for k in ("files", "bytes", "first_event_time", "last_event_time")} == \
           {k: b[k] for k in ("files", "bytes", "first_event_time", "last_event_time")}


def test_counts_and_summary(ds):
    s, files, records = ds["summary"], ds["files"], ds["records"]
    assert len(records) == s["events"] == 8000
    assert s["files"] == len(files)
    assert s["bytes"] == sum(p.stat().st_size for p, _ in files)
    assert len(s["accounts"]) == 2 and s["regions"] == ["us-east-1", "eu-west-1"]
    times = sorted(r["eventTime"] for r in records)
    assert (s["first_event_time"], s["last_event_time"]) == (times[0], times[-1])
    assert _t(times[0]) >= END - timedelta(days=14) and _t(times[-1]) < END
    assert sum(s["categories"].values()) == 8000
    assert ds["progress"] and ds["progress"][-1] == (8000, 8000)
    assert all(len(recs) <= 2500 for _, recs in files)


def test_layout_and_file_names_match_records(ds):
    root = ds["root"]
    for path, recs in ds["files"]:
        m = KEY.search(path.relative_to(root).as_posix())
        assert m, path
        assert recs
        stamp = datetime.strptime(m["stamp"], "%Y%m%dT%H%MZ").replace(tzinfo=timezone.utc)
        assert (m["y"], m["m"], m["d"]) == (m["stamp"][:4], m["stamp"][4:6], m["stamp"][6:8])
        assert stamp.minute % 5 == 0
        for r in recs:
            assert r["recipientAccountId"] == m["acct"] and r["awsRegion"] == m["region"]
            # a file holds events from the 5-minute window delivered 5 or 10 minutes later
            assert stamp - timedelta(minutes=15) <= _t(r["eventTime"]) < stamp - timedelta(minutes=5)
            assert (r["eventCategory"] == "NetworkActivity") == (m["kind"] == NETWORK_ACTIVITY_KIND)


def test_records_are_complete_and_accepted_by_the_converter(ds):
    records = ds["records"]
    for r in records:
        for k in MANDATORY:
            assert k in r, (k, r)
        _t(r["eventTime"])
        assert r["eventVersion"] in ("1.08", "1.09", "1.10", "1.11")
        if r["eventCategory"] == "NetworkActivity":
            assert r["eventType"] == "AwsVpceEvent"
            assert r["vpcEndpointAccountId"] == r["recipientAccountId"] and r["sharedEventID"]
            for k in ("userAgent", "requestParameters", "responseElements", "readOnly", "managementEvent", "tlsDetails"):
                assert k not in r
        else:
            assert "requestParameters" in r and "responseElements" in r and "userAgent" in r
            assert isinstance(r["readOnly"], bool)
            assert r["managementEvent"] is (r["eventCategory"] == "Management")
            assert "errorMessage" not in r or "errorCode" in r or r["eventName"] == "ConsoleLogin"
    assert len({r["eventID"] for r in records}) == len(records)
    conv = convert(records, field_caps=False)
    assert conv.rejects == []
    assert conv.table.num_rows == len(records)


def test_category_identity_and_error_mix(ds):
    records = ds["records"]
    assert {r["eventCategory"] for r in records} == {"Management", "Data", "NetworkActivity"}
    types = collections.Counter(r["userIdentity"].get("type") for r in records)
    for t in ("IAMUser", "AssumedRole", "Root", "AWSService", "FederatedUser", "SAMLUser", "WebIdentityUser",
              "AWSAccount"):
        assert types[t] > 0, t
    assumed = next(r["userIdentity"] for r in records if r["userIdentity"].get("type") == "AssumedRole")
    assert {"sessionIssuer", "attributes"} <= set(assumed["sessionContext"])
    svc = [r for r in records if r["userIdentity"].get("type") == "AWSService"]
    assert all(r["userIdentity"]["invokedBy"].endswith(".amazonaws.com") for r in svc)
    assert any(r["sourceIPAddress"].endswith(".amazonaws.com") for r in svc)
    logins = [r for r in records if r["eventName"] == "ConsoleLogin"]
    assert {r["additionalEventData"]["MFAUsed"] for r in logins} == {"Yes", "No"}
    assert all(r["eventType"] == "AwsConsoleSignIn" and r["responseElements"]["ConsoleLogin"] in ("Success", "Failure")
               and r["sourceIPAddress"] != "AWS Internal" and r["userAgent"].startswith("Mozilla/") for r in logins)
    # temporary credentials expire after the call that issued them; SAML sessions are named after the user
    creds = [r for r in records if (r.get("responseElements") or {}).get("credentials")]
    assert creds
    for r in creds:
        exp = datetime.strptime(r["responseElements"]["credentials"]["expiration"], "%b %d, %Y, %I:%M:%S %p")
        assert exp.replace(tzinfo=timezone.utc) > _t(r["eventTime"])
        if r["eventName"] == "AssumeRoleWithSAML":
            assert r["requestParameters"]["roleSessionName"] == r["userIdentity"]["userName"]
    gets = [r for r in records if r["eventName"] == "GetObject" and r["eventCategory"] == "Data"]
    assert gets and all([x["type"] for x in r["resources"]] == ["AWS::S3::Object", "AWS::S3::Bucket"] for r in gets)
    assert any(r["eventSource"] == "lambda.amazonaws.com" and r["eventName"] == "Invoke" for r in records)
    assert any(r["eventSource"] == "dynamodb.amazonaws.com" and r["eventCategory"] == "Data" for r in records)
    assert {True, False} <= {r.get("readOnly") for r in records}
    assert any("tlsDetails" in r for r in records)
    denied = [r for r in records if r.get("errorCode") == "VpceAccessDenied"]
    assert denied and all(r["errorMessage"] == "The request was denied due to a VPC endpoint policy" for r in denied)
    codes = collections.Counter(r.get("errorCode") for r in records if r.get("errorCode"))
    assert codes["AccessDenied"] > 0 and len(codes) >= 5
    # cross-account: caller's account differs from the recipient; both copies share one sharedEventID
    cross = [r for r in records if r["eventCategory"] != "NetworkActivity"
             and r["userIdentity"].get("accountId") not in (None, r["recipientAccountId"])]
    assert cross and all(r.get("sharedEventID") for r in cross)
    by_shared = collections.defaultdict(list)
    for r in records:
        if r["eventCategory"] != "NetworkActivity" and r.get("sharedEventID"):
            by_shared[r["sharedEventID"]].append(r)
    pairs = [v for v in by_shared.values() if len(v) == 2]
    assert pairs
    for x, y in pairs:
        assert x["recipientAccountId"] != y["recipientAccountId"] and x["eventID"] != y["eventID"]
        assert {k: v for k, v in x.items() if k not in ("eventID", "recipientAccountId")} == \
               {k: v for k, v in y.items() if k not in ("eventID", "recipientAccountId")}


def test_skew(ds):
    names = collections.Counter((r["eventSource"], r["eventName"]) for r in ds["records"])
    shares = sorted(names.values(), reverse=True)
    assert shares[0] >= 10 * statistics.median(shares)
    principals = collections.Counter(r["userIdentity"].get("arn") for r in ds["records"] if r["userIdentity"].get("arn"))
    top = principals.most_common(1)[0][1]
    assert top >= 10 * statistics.median(principals.values())


def test_weekday_and_working_hour_rhythm(ds):
    s = ds["summary"]
    windows = [(_t(a["start"]), _t(a["end"])) for a in s["anomalies"]]
    by_hour = collections.Counter()
    by_day = collections.Counter()
    for r in ds["records"]:
        t = _t(r["eventTime"])
        if any(a <= t < b for a, b in windows):
            continue
        local = t + timedelta(hours=s["utc_offsets"][r["recipientAccountId"]])
        by_day[(r["recipientAccountId"], local.date())] += 1
        if local.weekday() < 5:
            by_hour[local.hour] += 1
    work = statistics.mean(by_hour[h] for h in range(9, 17))
    night = statistics.mean(by_hour[h] for h in range(0, 5))
    assert work > 2.5 * night
    full_days = [(a, d) for a, d in by_day if END.date() - timedelta(days=13) <= d < END.date() - timedelta(days=1)]
    weekday = statistics.mean(by_day[k] for k in full_days if k[1].weekday() < 5)
    weekend = statistics.mean(by_day[k] for k in full_days if k[1].weekday() >= 5)
    assert weekday > 1.4 * weekend


def test_anomalies_are_labelled_and_present(ds):
    s, records = ds["summary"], ds["records"]
    labels = json.loads((ds["root"] / "anomalies.json").read_text())["anomalies"]
    assert labels == s["anomalies"]
    assert {a["type"] for a in labels} == {"call-rate-burst", "error-rate-spike"}
    minutes = 14 * 24 * 60
    for a in labels:
        assert {"account", "region", "eventSource", "eventName", "start", "end", "extra_events"} <= set(a)
        t0, t1 = _t(a["start"]), _t(a["end"])
        calls = [r for r in records if r["recipientAccountId"] == a["account"] and r["awsRegion"] == a["region"]
                 and r["eventSource"] == a["eventSource"] and r["eventName"] == a["eventName"]
                 and r["eventCategory"] != "NetworkActivity"]
        inside = [r for r in calls if t0 <= _t(r["eventTime"]) < t1]
        outside = [r for r in calls if not t0 <= _t(r["eventTime"]) < t1]
        win = (t1 - t0).total_seconds() / 60
        assert len(inside) >= a["extra_events"] and len(inside) == a["observed_events_in_window"]
        if a["type"] == "call-rate-burst":
            assert len(inside) / win > 10 * max(len(outside), 1) / (minutes - win)
        else:
            assert a["errorCode"] == "AccessDenied"
            err_in = sum(1 for r in inside if r.get("errorCode") == a["errorCode"]) / len(inside)
            err_out = sum(1 for r in outside if r.get("errorCode") == a["errorCode"]) / max(len(outside), 1)
            assert err_in > 0.6 and err_out < 0.2


def test_small_and_edge_sizes(scratch):
    tmp_path = scratch
    s = generate_dataset(str(tmp_path / "zero"), events=0, days=1, end=END, workers=1)
    assert s["events"] == 0 and s["files"] == 0 and s["first_event_time"] is None
    s = generate_dataset(str(tmp_path / "one"), events=37, days=1, accounts=1, regions=1, end=END, workers=1,
                         anomalies=True)
    assert s["events"] == 37 and sum(len(r) for _, r in _load(tmp_path / "one")) == 37
    assert not os.path.exists(tmp_path / "zero" / "anomalies.json")
    with pytest.raises(ValueError):
        generate_dataset(str(tmp_path / "bad"), events=10, days=0)
