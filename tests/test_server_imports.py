"""StartImport, GetImport, ListImports, ListImportFailures, StopImport (issue 6 point 3).

Handlers are called directly with an `ApiContext`; counts are checked against the generator's own records
(gunzipped from the files it wrote), never against the importer's bookkeeping alone. End-to-end tests
through boto3 use `tests/server_fixture.py`.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

import lake
from lake import api_imports, importer  # noqa: F401 - importing registers the handlers
from lake.apicore import OPERATIONS
from lake.generate import generate
from tests.test_server_lookup import ACCT_A, A, B, create_store, expect, make_ctx

NOW = datetime.now(timezone.utc)
ROLE = "arn:aws:iam::111111111111:role/import"


def source(uri: str) -> dict:
    return {"S3": {"S3LocationUri": uri, "S3BucketRegion": "us-east-1", "S3BucketAccessRoleArn": ROLE}}


def json_ids(path: str) -> set[str]:
    with open(path, "rb") as f:
        return {r["eventID"] for r in json.loads(gzip.decompress(f.read()))["Records"]}


def events_in(folder: str) -> set[str]:
    """The eventIDs of a generated trail folder, read with the stdlib (the oracle)."""
    return set().union(*(json_ids(f) for f in glob.glob(os.path.join(folder, "**", "*.json.gz"), recursive=True)))


def wait(c, iid: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = OPERATIONS["GetImport"](c, {"ImportId": iid})
        if d["ImportStatus"] not in ("INITIALIZING", "IN_PROGRESS"):
            return d
        assert time.monotonic() < deadline, d
        time.sleep(0.05)


@pytest.fixture
def services(tmp_path_factory):
    # StartImport reads local folders only under an import root of the destination's account (issue 15)
    s: dict = {"import_workers": 1, "import_roots": {ACCT_A: (str(tmp_path_factory.getbasetemp()),)}}
    yield s
    for svc in s.values():
        getattr(svc, "close", lambda: None)()
    m = s.get("imports")
    if m is not None:
        for job in m.jobs.values():
            job.thread.join(30)


@pytest.fixture
def lk(tmp_path):
    return lake.connect(str(tmp_path / "lake"), account_id=ACCT_A)


@pytest.fixture
def store(lk, services):
    return create_store(lk, A, "imported", services)


@pytest.fixture
def c(lk, services):
    return make_ctx(lk, A, services=services)


END = NOW.replace(minute=0, second=0, microsecond=0)  # generated logs cover the 2.4 hours before END


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    """1,500 events in ~60 trail files (one per 5 minutes and region), CloudTrail's layout."""
    out = str(tmp_path_factory.mktemp("trail"))
    generate(out, events=1500, days=0.1, accounts=1, regions=2, seed=4, end=END)
    return out


def test_import_from_a_local_folder(lk, store, c, logs):
    out = OPERATIONS["StartImport"](c, {"Destinations": [store.arn], "ImportSource": source(f"file://{logs}")})
    iid = out["ImportId"]
    assert out["ImportStatus"] == "INITIALIZING" and out["Destinations"] == [store.arn]
    assert out["ImportSource"] == source(f"file://{logs}")
    assert isinstance(out["CreatedTimestamp"], datetime)
    d = wait(c, iid)
    want = events_in(logs)
    assert d["ImportStatus"] == "COMPLETED", d
    st = d["ImportStatistics"]
    assert set(st) == {"PrefixesFound", "PrefixesCompleted", "FilesCompleted", "EventsCompleted", "FailedEntries"}
    files = len(glob.glob(os.path.join(logs, "**", "*.json.gz"), recursive=True))
    assert st["EventsCompleted"] == len(want) and st["FilesCompleted"] == files and st["FailedEntries"] == 0
    assert st["PrefixesFound"] == st["PrefixesCompleted"] > 0
    stored = set(lk.sql(f"SELECT eventid FROM {store.id}")["eventid"].to_list())
    assert stored == want
    assert OPERATIONS["ListImportFailures"](c, {"ImportId": iid})["Failures"] == []
    listed = OPERATIONS["ListImports"](c, {})["Imports"]
    assert [i["ImportId"] for i in listed] == [iid] and listed[0]["ImportStatus"] == "COMPLETED"
    assert OPERATIONS["ListImports"](c, {"Destination": store.arn})["Imports"][0]["ImportId"] == iid
    assert OPERATIONS["ListImports"](c, {"ImportStatus": "FAILED"})["Imports"] == []


def test_time_window(lk, store, c, logs):
    start, end = END - timedelta(hours=2), END - timedelta(hours=1)
    iid = OPERATIONS["StartImport"](c, {"Destinations": [store.arn], "ImportSource": source(f"file://{logs}"),
                                        "StartEventTime": start.timestamp(), "EndEventTime": end.timestamp()})["ImportId"]
    d = wait(c, iid)
    assert d["ImportStatus"] == "COMPLETED"
    assert abs(d["StartEventTime"] - start) < timedelta(seconds=1)
    times = lk.sql(f"SELECT min(eventtime) AS lo, max(eventtime) AS hi, count(*) AS n FROM {store.id}")
    assert times["lo"][0] >= start - timedelta(seconds=1) and times["hi"][0] <= end + timedelta(seconds=1)
    assert 0 < times["n"][0] == d["ImportStatistics"]["EventsCompleted"] < 1500


def test_failures_are_listed_and_paged(lk, store, c, tmp_path):
    folder = tmp_path / "bad"
    generate(str(folder), events=200, days=1, accounts=1, regions=1, seed=9, events_per_file=50)
    files = sorted(glob.glob(str(folder / "**" / "*.json.gz"), recursive=True))
    good = set().union(*(json_ids(f) for f in files[3:]))
    for f in files[:3]:
        with open(f, "wb") as h:
            h.write(b"this is not a log file")
    iid = OPERATIONS["StartImport"](c, {"Destinations": [store.arn], "ImportSource": source(f"file://{folder}")})["ImportId"]
    d = wait(c, iid)
    assert d["ImportStatus"] == "FAILED" and d["ImportStatistics"]["FailedEntries"] == 3
    pages, token = [], None
    while True:
        out = OPERATIONS["ListImportFailures"](c, {"ImportId": iid, "MaxResults": 2,
                                                    **({"NextToken": token} if token else {})})
        pages.append(out["Failures"])
        token = out.get("NextToken")
        if not token:
            break
    assert [len(p) for p in pages] == [2, 1]
    failures = [f for p in pages for f in p]
    assert sorted(os.path.basename(f["Location"]) for f in failures) == sorted(os.path.basename(f) for f in files[:3])
    for f in failures:
        assert f["Status"] == "FAILED" and f["ErrorType"] and f["ErrorMessage"]
        assert isinstance(f["LastUpdatedTime"], datetime)
    assert d["ImportStatistics"]["EventsCompleted"] == len(good)  # the good files imported
    assert set(lk.sql(f"SELECT eventid FROM {store.id}")["eventid"].to_list()) == good


def test_stop_and_resume(lk, store, c, services, logs, monkeypatch):
    services["import_chunk_bytes"] = 1  # one object per chunk: a stop lands between objects
    # chunks are decoded in worker processes (issue 15): slow down the server side, between chunks
    real = importer.Importer._absorb

    def slow(self, result, t0):
        time.sleep(0.05)
        return real(self, result, t0)

    monkeypatch.setattr(importer.Importer, "_absorb", slow)
    iid = OPERATIONS["StartImport"](c, {"Destinations": [store.arn], "ImportSource": source(f"file://{logs}")})["ImportId"]
    expect("AccountHasOngoingImportException", OPERATIONS["StartImport"], c,
           {"Destinations": [store.arn], "ImportSource": source(f"file://{logs}")})
    deadline = time.monotonic() + 60  # until the first chunk is in (the worker process must start first)
    while OPERATIONS["GetImport"](c, {"ImportId": iid})["ImportStatistics"]["EventsCompleted"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    out = OPERATIONS["StopImport"](c, {"ImportId": iid})
    assert out["ImportStatus"] == "STOPPED"
    d = wait(c, iid)
    assert d["ImportStatus"] == "STOPPED"
    done = d["ImportStatistics"]["EventsCompleted"]
    assert 0 < done < 1500
    n = lk.sql(f"SELECT count(*) AS n FROM {store.id}")["n"][0]
    assert n == done
    monkeypatch.setattr(importer.Importer, "_absorb", real)
    again = OPERATIONS["StartImport"](c, {"ImportId": iid})
    assert again["ImportId"] == iid
    d = wait(c, iid)
    assert d["ImportStatus"] == "COMPLETED"
    assert d["ImportStatistics"]["EventsCompleted"] == len(events_in(logs))  # the whole import, both runs
    stored = lk.sql(f"SELECT eventid, count(*) AS n FROM {store.id} GROUP BY eventid")
    assert set(stored["eventid"].to_list()) == events_in(logs) and stored["n"].max() == 1
    # stopping a finished import changes nothing
    assert OPERATIONS["StopImport"](c, {"ImportId": iid})["ImportStatus"] == "COMPLETED"


def test_worker_processes(lk, store, c, services, logs):
    """The importer's process pool (spawned from the server's import thread) gives the same result."""
    services.update(import_workers=2, import_chunk_bytes=200_000)
    iid = OPERATIONS["StartImport"](c, {"Destinations": [store.arn], "ImportSource": source(f"file://{logs}")})["ImportId"]
    d = wait(c, iid)
    assert d["ImportStatus"] == "COMPLETED" and d["ImportStatistics"]["EventsCompleted"] == len(events_in(logs))
    assert set(lk.sql(f"SELECT eventid FROM {store.id}")["eventid"].to_list()) == events_in(logs)


def test_request_errors(lk, store, c, services, logs):
    si = OPERATIONS["StartImport"]
    good = source(f"file://{logs}")
    expect("EventDataStoreARNInvalidException", si, c, {"Destinations": ["not-an-arn"], "ImportSource": good})
    missing = store.arn.rsplit("/", 1)[0] + "/00000000-0000-0000-0000-000000000000"
    expect("EventDataStoreNotFoundException", si, c, {"Destinations": [missing], "ImportSource": good})
    expect("InvalidParameterException", si, c, {"Destinations": [], "ImportSource": good})
    expect("InvalidImportSourceException", si, c, {"Destinations": [store.arn], "ImportSource": source("ftp://x/y")})
    expect("InvalidImportSourceException", si, c, {"Destinations": [store.arn],
                                                   "ImportSource": source(f"file://{logs}/nothing-here")})
    expect("InvalidImportSourceException", si, c, {"Destinations": [store.arn], "ImportSource": {}})
    activity = create_store(lk, A, "activity", services, AdvancedEventSelectors=[
        {"Name": "a", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["ActivityAuditLog"]}]}])
    expect("InvalidEventDataStoreCategoryException", si, c, {"Destinations": [activity.arn], "ImportSource": good})
    gone = create_store(lk, A, "gone", services)
    gone.delete()
    expect("InactiveEventDataStoreException", si, c, {"Destinations": [gone.arn], "ImportSource": good})
    for op in ("GetImport", "StopImport", "ListImportFailures"):
        expect("ImportNotFoundException", OPERATIONS[op], c, {"ImportId": "00000000-0000-0000-0000-000000000000"})
    expect("InvalidNextTokenException", OPERATIONS["ListImports"], c, {"NextToken": "nope"})


def test_accounts_see_only_their_imports(lk, store, c, services, logs):
    iid = OPERATIONS["StartImport"](c, {"Destinations": [store.arn], "ImportSource": source(f"file://{logs}")})["ImportId"]
    wait(c, iid)
    bc = make_ctx(lk, B, services=services)
    for op in ("GetImport", "StopImport", "ListImportFailures"):
        expect("ImportNotFoundException", OPERATIONS[op], bc, {"ImportId": iid})
    assert OPERATIONS["ListImports"](bc, {})["Imports"] == []
    expect("EventDataStoreNotFoundException", OPERATIONS["StartImport"], bc,
           {"Destinations": [store.arn], "ImportSource": source(f"file://{logs}")})
    expect("ImportNotFoundException", OPERATIONS["StartImport"], bc, {"ImportId": iid})


def test_list_imports_pages_and_includes_cli_imports(lk, store, c, logs, tmp_path):
    ids = []
    for n in range(3):
        folder = tmp_path / f"part{n}"
        generate(str(folder), events=30, days=1, accounts=1, regions=1, seed=20 + n)
        ids.append(OPERATIONS["StartImport"](c, {"Destinations": [store.arn],
                                                 "ImportSource": source(f"file://{folder}")})["ImportId"])
        wait(c, ids[-1])
    cli = importer.Importer(store, [logs], workers=1).run()  # what `lake import` leaves behind
    seen, token = [], None
    while True:
        out = OPERATIONS["ListImports"](c, {"MaxResults": 2, **({"NextToken": token} if token else {})})
        seen += out["Imports"]
        token = out.get("NextToken")
        if not token:
            break
    assert [i["ImportId"] for i in seen] == [cli.ImportId] + list(reversed(ids))
    d = OPERATIONS["GetImport"](c, {"ImportId": cli.ImportId})
    assert d["ImportSource"]["S3"]["S3LocationUri"] == f"file://{logs}"
    assert d["ImportStatistics"]["EventsCompleted"] == cli.ImportStatistics.EventsCompleted


def test_import_from_s3(lk, store, c, logs, s3_env):
    import boto3

    from tests.conftest import make_bucket

    bucket = make_bucket(s3_env)
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    for f in glob.glob(os.path.join(logs, "**", "*.json.gz"), recursive=True):
        s3.upload_file(f, bucket, "trail/" + os.path.relpath(f, logs))
    iid = OPERATIONS["StartImport"](c, {"Destinations": [store.arn],
                                        "ImportSource": source(f"s3://{bucket}/trail")})["ImportId"]
    d = wait(c, iid)
    assert d["ImportStatus"] == "COMPLETED", d
    assert d["ImportStatistics"]["EventsCompleted"] == len(events_in(logs))
    expect("InvalidImportSourceException", OPERATIONS["StartImport"], c,
           {"Destinations": [store.arn], "ImportSource": source(f"s3://{bucket}/no-such-prefix")})


# ---- end to end: boto3 against `lake serve` on loopback -------------------------------------------------

from tests.server_fixture import *  # noqa: E402,F401,F403 - server, cloudtrail_client, ...


def _poll(client, iid: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        d = client.get_import(ImportId=iid)
        if d["ImportStatus"] not in ("INITIALIZING", "IN_PROGRESS"):
            return d
        assert time.monotonic() < deadline, d
        time.sleep(0.05)


def test_boto3_import_flow_from_s3(server, cloudtrail_client, logs, s3_env, tmp_path):
    import boto3

    from tests.conftest import make_bucket

    server.state.services["import_workers"] = 1
    bucket = make_bucket(s3_env)
    s3 = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    files = sorted(glob.glob(os.path.join(logs, "**", "*.json.gz"), recursive=True))
    for f in files:
        s3.upload_file(f, bucket, "good/" + os.path.relpath(f, logs))
    for n, f in enumerate(files[:3]):
        s3.put_object(Bucket=bucket, Key=f"bad/{os.path.relpath(f, logs)}", Body=b"not a trail file %d" % n)
    st = create_store(server.lake, A, "e2e-imports")
    client = cloudtrail_client("alice")
    out = client.start_import(Destinations=[st.arn], ImportSource=source(f"s3://{bucket}/good"),
                              StartEventTime=NOW - timedelta(days=30), EndEventTime=NOW + timedelta(days=1))
    assert out["ImportStatus"] == "INITIALIZING" and out["Destinations"] == [st.arn]
    d = _poll(client, out["ImportId"])
    assert d["ImportStatus"] == "COMPLETED", d
    assert d["ImportStatistics"]["EventsCompleted"] == len(events_in(logs))
    assert d["ImportStatistics"]["FilesCompleted"] == len(files)
    assert d["ImportSource"] == source(f"s3://{bucket}/good")
    bad = client.start_import(Destinations=[st.arn], ImportSource=source(f"s3://{bucket}/bad"))["ImportId"]
    assert _poll(client, bad)["ImportStatus"] == "FAILED"
    failures = [f for p in client.get_paginator("list_import_failures").paginate(
        ImportId=bad, PaginationConfig={"PageSize": 2}) for f in p["Failures"]]
    assert sorted(f["Location"] for f in failures) == sorted(f"s3://{bucket}/bad/{os.path.relpath(f, logs)}"
                                                             for f in files[:3])
    assert all(f["Status"] == "FAILED" and f["ErrorType"] and f["ErrorMessage"] for f in failures)
    imports = [i for p in client.get_paginator("list_imports").paginate(PaginationConfig={"PageSize": 1})
               for i in p["Imports"]]
    assert [i["ImportId"] for i in imports] == [bad, out["ImportId"]]
    assert [i["ImportId"] for i in client.list_imports(ImportStatus="FAILED")["Imports"]] == [bad]
    assert client.stop_import(ImportId=out["ImportId"])["ImportStatus"] == "COMPLETED"
    bob = cloudtrail_client("bob")
    assert bob.list_imports()["Imports"] == []
    with pytest.raises(bob.exceptions.ImportNotFoundException):
        bob.get_import(ImportId=out["ImportId"])
    with pytest.raises(bob.exceptions.EventDataStoreNotFoundException):
        bob.start_import(Destinations=[st.arn], ImportSource=source(f"s3://{bucket}/good"))
    with pytest.raises(client.exceptions.InvalidImportSourceException):
        client.start_import(Destinations=[st.arn], ImportSource=source(f"s3://{bucket}/nothing"))
    with pytest.raises(client.exceptions.EventDataStoreARNInvalidException):
        client.start_import(Destinations=["arn:aws:s3:::nope"], ImportSource=source(f"s3://{bucket}/good"))
    assert [i["ImportId"] for i in cloudtrail_client("admin").list_imports()["Imports"]] == [bad, out["ImportId"]]


def test_boto3_stop_import(server, cloudtrail_client, logs, monkeypatch, tmp_path_factory):
    server.state.services.update(import_workers=1, import_chunk_bytes=1,
                                 import_roots={ACCT_A: (str(tmp_path_factory.getbasetemp()),)})
    real = importer.Importer._absorb  # chunks are decoded in worker processes: slow the server side
    monkeypatch.setattr(importer.Importer, "_absorb", lambda self, r, t0: (time.sleep(0.05), real(self, r, t0))[1])
    st = create_store(server.lake, A, "e2e-stop")
    client = cloudtrail_client("alice")
    iid = client.start_import(Destinations=[st.arn], ImportSource=source(f"file://{logs}"))["ImportId"]
    with pytest.raises(client.exceptions.AccountHasOngoingImportException):
        client.start_import(Destinations=[st.arn], ImportSource=source(f"file://{logs}"))
    deadline = time.monotonic() + 60  # until the first chunk is in (the worker process must start first)
    while client.get_import(ImportId=iid)["ImportStatistics"].get("EventsCompleted", 0) == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    stopped = client.stop_import(ImportId=iid)
    assert stopped["ImportStatus"] == "STOPPED" and 0 < stopped["ImportStatistics"]["EventsCompleted"] < 1500
    monkeypatch.setattr(importer.Importer, "_absorb", real)
    assert client.start_import(ImportId=iid)["ImportId"] == iid
    d = _poll(client, iid)
    assert d["ImportStatus"] == "COMPLETED" and d["ImportStatistics"]["EventsCompleted"] == len(events_in(logs))
