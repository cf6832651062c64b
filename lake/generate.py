"""Generated sample trail logs: CloudTrail-shaped records written in the real S3 trail layout.

Used by `lake demo` (and later the benchmark data sets) so a new user can see the lake work without any
AWS account. Deterministic for a given seed.
"""

from __future__ import annotations

import os
import random
import uuid
from datetime import datetime, timedelta, timezone

from .trailfiles import encode_log_file

# (eventSource, eventName, readOnly, category, resource type)
ACTIONS = [
    ("s3.amazonaws.com", "GetObject", True, "Data", "AWS::S3::Object"),
    ("s3.amazonaws.com", "PutObject", False, "Data", "AWS::S3::Object"),
    ("sts.amazonaws.com", "AssumeRole", True, "Management", None),
    ("ec2.amazonaws.com", "DescribeInstances", True, "Management", None),
    ("iam.amazonaws.com", "ListRoles", True, "Management", None),
    ("kms.amazonaws.com", "Decrypt", True, "Management", None),
    ("lambda.amazonaws.com", "Invoke", False, "Data", "AWS::Lambda::Function"),
    ("s3.amazonaws.com", "ListBuckets", True, "Management", None),
    ("ec2.amazonaws.com", "RunInstances", False, "Management", None),
    ("iam.amazonaws.com", "CreateAccessKey", False, "Management", None),
    ("cloudtrail.amazonaws.com", "StopLogging", False, "Management", None),
    ("signin.amazonaws.com", "ConsoleLogin", False, "Management", None),
    ("dynamodb.amazonaws.com", "GetItem", True, "Data", "AWS::DynamoDB::Table"),
    ("kms.amazonaws.com", "ListKeys", True, "NetworkActivity", None),
]
USERS = ["alice", "bob", "carol", "deploy-bot", "ci-runner"]
ROLES = ["Admin", "ReadOnly", "LambdaExec", "DataPipeline"]
AGENTS = ["aws-cli/2.15.0 Python/3.11.6 Linux/6.1", "Boto3/1.34.0 md/Botocore#1.34.0",
          "console.amazonaws.com", "aws-sdk-java/1.12.600"]
ERRORS = [("AccessDenied", "User is not authorized to perform this operation"),
          ("ThrottlingException", "Rate exceeded"), ("NoSuchKey", "The specified key does not exist.")]


def _identity(rng: random.Random, account: str) -> dict:
    if rng.random() < 0.5:
        user = rng.choice(USERS)
        return {"type": "IAMUser", "principalId": f"AIDA{rng.randrange(10**12):012d}",
                "arn": f"arn:aws:iam::{account}:user/{user}", "accountId": account,
                "accessKeyId": f"AKIA{rng.randrange(10**12):012d}", "userName": user}
    role = rng.choice(ROLES)
    session = rng.choice(USERS)
    rid = f"AROA{rng.randrange(10**12):012d}"
    return {"type": "AssumedRole", "principalId": f"{rid}:{session}",
            "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{session}", "accountId": account,
            "accessKeyId": f"ASIA{rng.randrange(10**12):012d}",
            "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": rid,
                                                 "arn": f"arn:aws:iam::{account}:role/{role}",
                                                 "accountId": account, "userName": role},
                               "attributes": {"creationDate": "2024-01-01T00:00:00Z",
                                              "mfaAuthenticated": rng.choice(["true", "false"])}}}


def record(rng: random.Random, when: datetime, account: str, region: str) -> dict:
    src, name, ro, cat, rtype = ACTIONS[min(int(rng.paretovariate(1.2)) - 1, len(ACTIONS) - 1)]
    rec = {
        "eventVersion": "1.11" if cat != "NetworkActivity" else "1.09",
        "userIdentity": _identity(rng, account),
        "eventTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": src, "eventName": name, "awsRegion": region,
        "sourceIPAddress": f"198.51.100.{rng.randrange(256)}",
        "userAgent": rng.choice(AGENTS),
        "requestParameters": {"bucketName": f"data-{account[-4:]}", "key": f"k/{rng.randrange(1000)}"}
        if src == "s3.amazonaws.com" else ({"roleArn": f"arn:aws:iam::{account}:role/Admin",
                                            "roleSessionName": "s"} if name == "AssumeRole" else None),
        "responseElements": None,
        "requestID": str(uuid.UUID(int=rng.getrandbits(128))),
        "eventID": str(uuid.UUID(int=rng.getrandbits(128))),
        "readOnly": ro, "eventType": "AwsApiCall", "managementEvent": cat == "Management",
        "recipientAccountId": account, "eventCategory": cat,
        "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256",
                       "clientProvidedHostHeader": f"{src.split('.')[0]}.{region}.amazonaws.com"},
    }
    if rtype:
        arn = f"arn:aws:s3:::data-{account[-4:]}/k/{rng.randrange(1000)}" if rtype == "AWS::S3::Object" \
            else f"arn:aws:{src.split('.')[0]}:{region}:{account}:resource/{rng.randrange(50)}"
        rec["resources"] = [{"accountId": account, "type": rtype, "ARN": arn}]
    if cat == "NetworkActivity":
        for k in ("userAgent", "requestParameters", "responseElements", "readOnly", "managementEvent",
                  "tlsDetails"):
            rec.pop(k, None)
        rec["eventType"] = "AwsVpceEvent"
        rec["vpcEndpointId"] = "vpce-0123456789abcdef0"
        rec["vpcEndpointAccountId"] = account
        rec["sharedEventID"] = str(uuid.UUID(int=rng.getrandbits(128)))
    if rng.random() < 0.05:
        rec["errorCode"], rec["errorMessage"] = rng.choice(ERRORS)
    if name == "ConsoleLogin":
        rec["eventType"] = "AwsConsoleSignIn"
        rec["responseElements"] = {"ConsoleLogin": "Success"}
        rec["additionalEventData"] = {"MFAUsed": rng.choice(["Yes", "No"]), "LoginTo": "https://console.aws.amazon.com"}
    return rec


def generate(out: str, *, events: int = 10_000, days: int = 7, accounts: int = 2, regions: int = 2,
             seed: int = 0, end: datetime | None = None, events_per_file: int = 500) -> list[str]:
    """Write `events` records as gzip trail log files under `out`; return the file paths."""
    rng = random.Random(seed)
    end = end or datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=days)
    accts = [f"{111111111111 * (i + 1) % 10**12:012d}" for i in range(accounts)]
    regs = ["us-east-1", "eu-west-1", "us-west-2", "ap-southeast-2"][:max(1, regions)]
    span = (end - start).total_seconds()
    files: dict[tuple, list[dict]] = {}
    for _ in range(events):
        when = start + timedelta(seconds=rng.random() * span)
        acct, reg = rng.choice(accts), rng.choice(regs)
        bucket = when.replace(minute=when.minute - when.minute % 5, second=0, microsecond=0)
        files.setdefault((acct, reg, bucket), []).append(record(rng, when, acct, reg))
    paths = []
    for (acct, reg, bucket), recs in sorted(files.items()):
        for n in range(0, len(recs), events_per_file):
            d = os.path.join(out, "AWSLogs", acct, "CloudTrail", reg, bucket.strftime("%Y/%m/%d"))
            os.makedirs(d, exist_ok=True)
            name = f"{acct}_CloudTrail_{reg}_{bucket.strftime('%Y%m%dT%H%MZ')}_{rng.getrandbits(64):016x}.json.gz"
            path = os.path.join(d, name)
            with open(path, "wb") as f:
                f.write(encode_log_file(recs[n:n + events_per_file]))
            paths.append(path)
    return paths


def records(n: int, *, seed: int = 0, days: int = 3, accounts: int = 2, end: datetime | None = None,
            region: str = "us-east-1") -> list[dict]:
    """`n` generated records spread over the `days` before `end` (default now), in memory."""
    rng = random.Random(seed)
    end = end or datetime.now(timezone.utc)
    accts = [f"{111111111111 * (i + 1) % 10**12:012d}" for i in range(accounts)]
    return [record(rng, end - timedelta(seconds=rng.random() * days * 86400), rng.choice(accts), region)
            for _ in range(n)]
