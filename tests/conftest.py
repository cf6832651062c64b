"""Shared fixtures: the real external CloudTrail data (skipped when ../shared is absent) and lake roots on a
local directory and on a real S3-compatible server (moto's ThreadedMotoServer on loopback)."""

from __future__ import annotations

import glob
import io
import json
import os
import uuid
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXTERNAL = Path(os.environ.get("LAKE_EXTERNAL_DATA", REPO.parent / "shared" / "datasets" / "external"))

# Key stores (lake/keys.py) live outside the lake, by default under ~/.config/lake/keys/<lake-id>: tests keep
# theirs in one temporary root instead (set here, before anything runs, so server and CLI subprocesses inherit
# it). A test that needs its own key directory sets LAKE_KEY_DIR.
if not os.environ.get("LAKE_KEY_HOME"):
    import tempfile as _tempfile

    os.environ["LAKE_KEY_HOME"] = _tempfile.mkdtemp(prefix="lake-test-keys-")


def load_external() -> dict[str, list]:
    """Every record of the external data sets, by data set, exactly as parsed from the files."""
    out: dict[str, list] = {}
    inv = []
    for f in sorted(glob.glob(str(EXTERNAL / "invictus-ir-aws_dataset" / "CloudTrail" / "*.json"))):
        inv += json.load(open(f))["Records"]
    out["invictus"] = inv
    strat = []
    for f in sorted(glob.glob(str(EXTERNAL / "stratus-red-team-detonation-logs" / "**" / "*.json"), recursive=True)):
        strat += json.load(open(f))
    out["stratus"] = strat
    with zipfile.ZipFile(EXTERNAL / "otrf-security-datasets" / "ec2_proxy_s3_exfiltration.zip") as z:
        name = [n for n in z.namelist() if n.endswith(".json")][0]
        out["otrf"] = [json.loads(line) for line in io.TextIOWrapper(z.open(name)) if line.strip()]
    import gzip
    tsf = glob.glob(str(EXTERNAL / "trailscraper-fixtures" / "*.json.gz"))
    out["trailscraper"] = [r for f in tsf for r in json.loads(gzip.open(f).read())["Records"]]
    out["panther"] = [json.loads(line)["log"] for line in
                      open(EXTERNAL / "panther-analysis-cloudtrail-tests" / "aws_cloudtrail_rule_tests.jsonl")]
    docs = []
    for f in sorted(glob.glob(str(EXTERNAL / "awsdocs-cloudtrail-user-guide-examples" / "*log-file-example*.json"))):
        d = json.load(open(f))
        docs += d["Records"] if isinstance(d, dict) and "Records" in d else (d if isinstance(d, list) else [d])
    out["awsdocs"] = docs
    return out


@pytest.fixture(scope="session")
def external() -> dict[str, list]:
    if not EXTERNAL.is_dir():
        pytest.skip(f"external CloudTrail data not present at {EXTERNAL}")
    return load_external()


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback for the whole session; yields its endpoint URL."""
    pytest.importorskip("moto")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Environment so that Lake, s3fs, polars and child processes all reach the moto server."""
    monkeypatch.setenv("LAKE_S3_ENDPOINT", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return s3_server


def make_bucket(endpoint: str) -> str:
    import boto3

    name = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["local", "s3"])
def lake_uri(request, tmp_path):
    """A fresh lake root, once on a local directory and once on S3 (moto)."""
    if request.param == "local":
        return str(tmp_path / "lake")
    endpoint = request.getfixturevalue("s3_env")
    return f"s3://{make_bucket(endpoint)}/lake"


@pytest.fixture
def local_uri(tmp_path):
    return str(tmp_path / "lake")


def sample_records(n: int, *, seed: int = 0, days: int = 3, accounts: int = 2) -> list[dict]:
    """n generated management/data records spread over the last `days` days."""
    from lake.generate import records

    return records(n, seed=seed, days=days, accounts=accounts)
