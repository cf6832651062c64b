"""Realistic synthetic CloudTrail data sets at scale, written in the real trail layout.

    from lake.datagen import generate_dataset
    summary = generate_dataset("./ds", events=1_000_000, days=30, accounts=3, regions=2, seed=7, anomalies=True)

Layout (reference sections 3.1-3.3): management and data events go to
`AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<16 alnum>.json.gz`,
network activity events to the `CloudTrail-NetworkActivity` prefix with the same naming pattern
(`<account>_CloudTrail-NetworkActivity_<region>_...`). Each file is gzip of `{"Records": [...]}`. A file is
delivered about every 5 minutes per account/region, 5 (sometimes 10) minutes after the window it covers; the
date folders and the file timestamp are the delivery time, as on S3. Busy windows are split into several files
of at most `MAX_RECORDS_PER_FILE` records.

Realism (all templates are written here, informed by the record shapes of real trails; no record is copied):
eventVersion 1.08-1.11 per service; userIdentity shapes IAMUser, AssumedRole (sessionIssuer, attributes,
webIdFederationData, ec2RoleDelivery), Root, AWSService with invokedBy, FederatedUser, SAMLUser, WebIdentityUser,
AWSAccount; console sign-ins with MFAUsed Yes/No and Success/Failure; S3/Lambda/DynamoDB/SNS/SQS data events;
network activity events (AwsVpceEvent, some VpceAccessDenied); service-specific errors; cross-account events
delivered to both accounts with one sharedEventID; zipf-like skew over principals and actions; human activity
follows the account's local working hours and weekdays, automation runs around the clock.

Determinism: the work is cut into (account, region, hour) units, each with its own seeded RNGs, so the same
arguments give byte-identical files whatever the number of worker processes. Memory stays bounded: a unit holds
at most one hour of one account/region, and records are built and written one delivery window at a time.
"""

from __future__ import annotations

import base64
import collections
import multiprocessing as mp
import os
import random
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import numpy as np
import orjson

REGIONS = ["us-east-1", "eu-west-1", "us-west-2", "eu-central-1", "ap-southeast-2", "ap-northeast-1",
           "us-east-2", "sa-east-1", "ca-central-1", "eu-north-1", "ap-south-1", "eu-west-2"]
GLOBAL_REGION = "us-east-1"          # IAM, console sign-in, Organizations, Health land here (reference 3.5)
TZ_OFFSETS = [-5, 1, -8, 10, 0, -3, 8, 2]   # each account's "office" UTC offset, cycled
MAX_RECORDS_PER_FILE = 2500
COMPRESS_LEVEL = 3
NETWORK_ACTIVITY_KIND = "CloudTrail-NetworkActivity"
P_CROSS = 0.015        # share of events that are cross-account
P_NETWORK = 0.045      # share of events that are network activity events
K_VARIANTS = 24        # pre-built request/response variants per action and account/region
WINDOW = 300           # seconds per delivery window

_EPOCH_WEEKDAY = 3     # 1970-01-01 was a Thursday (Monday = 0)
# human activity by local hour (0..23) and by weekday (Mon..Sun)
_HOUR_PROFILE = np.array([.05, .04, .03, .03, .03, .05, .12, .3, .7, 1, 1, 1, .8, .9, 1, 1, .95, .75, .45,
                          .3, .25, .18, .12, .08])
_WEEKDAY = np.array([1, 1, 1, 1, .95, .13, .1])
_HUMAN_SCALE = 0.45    # a weekday's human activity relative to a day of automation
_AUTO_FLAT = 0.6       # share of automation that runs around the clock; the rest follows customer daytime

# ---------------------------------------------------------------------------------------------------------
# small helpers


def _hex(r: random.Random, n: int) -> str:
    return f"{r.getrandbits(4 * n):0{n}x}"


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


def _alnum(r: random.Random, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(r.choices(alphabet, k=n))


def _uuid(r: random.Random) -> str:
    h = f"{r.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:32]}"


def _key_id(r: random.Random, prefix: str) -> str:
    return prefix + _alnum(r, 16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _pretty_date(epoch: float) -> str:
    """The `Jul 10, 2023, 1:16:14 PM` style some services use inside responseElements."""
    t = time.gmtime(epoch)
    h = t.tm_hour % 12 or 12
    return f"{time.strftime('%b', t)} {t.tm_mday}, {t.tm_year}, {h}:{t.tm_min:02d}:{t.tm_sec:02d} " \
           f"{'AM' if t.tm_hour < 12 else 'PM'}"


def _b64(r: random.Random, nbytes: int) -> str:
    return base64.b64encode(r.getrandbits(8 * nbytes).to_bytes(nbytes, "big")).decode()


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_UUID_POS = np.array([i for i in range(36) if i not in (8, 13, 18, 23)])
_S3ID_ALPHA = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", dtype=np.uint8)


def _uuids(rng: np.random.Generator, n: int) -> list[str]:
    """n random version-4 UUID strings, vectorised."""
    if n == 0:
        return []
    b = np.frombuffer(rng.bytes(16 * n), dtype=np.uint8).reshape(n, 16).copy()
    b[:, 6] = (b[:, 6] & 0x0F) | 0x40
    b[:, 8] = (b[:, 8] & 0x3F) | 0x80
    h = np.empty((n, 32), dtype=np.uint8)
    h[:, 0::2] = _HEX[b >> 4]
    h[:, 1::2] = _HEX[b & 15]
    out = np.full((n, 36), ord("-"), dtype=np.uint8)
    out[:, _UUID_POS] = h
    s = out.tobytes().decode("ascii")
    return [s[i:i + 36] for i in range(0, 36 * n, 36)]


def _s3_ids(rng: np.random.Generator, n: int) -> list[str]:
    if n == 0:
        return []
    s = _S3ID_ALPHA[rng.integers(0, 36, n * 16)].tobytes().decode("ascii")
    return [s[i:i + 16] for i in range(0, 16 * n, 16)]


_MS = [f"{s // 60:02d}:{s % 60:02d}Z" for s in range(3600)]

# ---------------------------------------------------------------------------------------------------------
# clients: (userAgent, source IPs, TLS kind (-1: no tlsDetails), console session, uses VPC endpoints)

UA_CLI_MAC = "aws-cli/2.15.30 Python/3.11.8 Darwin/23.4.0 exe/x86_64 prompt/off"
UA_CLI_LINUX = ("aws-cli/2.17.20 md/awscrt#0.20.11 ua/2.0 os/linux#6.5.0-1022-aws md/arch#x86_64 lang/python#3.11.9 "
                "md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/distrib#ubuntu.22 md/prompt#off")
UA_BOTO3_LAMBDA = ("Boto3/1.34.131 md/Botocore#1.34.131 ua/2.0 os/linux#5.10.219-208.866.amzn2.x86_64 md/arch#x86_64 "
                   "lang/python#3.12.4 md/pyimpl#CPython exec-env/AWS_Lambda_python3.12 cfg/retry-mode#legacy "
                   "Botocore/1.34.131")
UA_NODE_LAMBDA = "aws-sdk-js/3.600.0 ua/2.0 os/linux#5.10.219 lang/js md/nodejs#20.15.0 exec-env/AWS_Lambda_nodejs20.x"
UA_JAVA = ("aws-sdk-java/2.25.60 Linux/5.10.217-205.860.amzn2.x86_64 OpenJDK_64-Bit_Server_VM/17.0.11+9-LTS "
           "Java/17.0.11 vendor/Amazon.com_Inc. io/sync http/Apache cfg/retry-mode/legacy")
UA_GO = "aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#amd64"
UA_TF = ("APN/1.0 HashiCorp/1.0 Terraform/1.8.5 (+https://www.terraform.io) terraform-provider-aws/5.57.0 "
         "(+https://registry.terraform.io/providers/hashicorp/aws) aws-sdk-go-v2/1.30.1 ua/2.0 os/linux lang/go#1.22.4 "
         "md/GOOS#linux md/GOARCH#amd64")
UA_SSM = "aws-sdk-go/1.51.6 (go1.22.5; linux; amd64) amazon-ssm-agent/3.3.484.0"
UA_VENDOR = "aws-sdk-go/1.50.8 (go1.21.6; linux; amd64) cloud-monitor-collector/7.54.0"
UA_GHA = ("aws-cli/2.17.13 md/awscrt#0.20.11 ua/2.0 os/linux#6.5.0-1023-azure md/arch#x86_64 lang/python#3.11.9 "
          "md/pyimpl#CPython cfg/retry-mode#standard md/installer#exe md/distrib#ubuntu.22 md/prompt#off")
UA_S3CONSOLE = ("[S3Console/0.4, aws-internal/3 aws-sdk-java/1.12.750 Linux/5.10.219-186.866.amzn2int.x86_64 "
                "OpenJDK_64-Bit_Server_VM/25.412-b09 java/1.8.0_412 vendor/Oracle_Corporation cfg/retry-mode/standard]")
UA_BROWSERS = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
]
AWS_INTERNAL = "AWS Internal"

FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "liam", "mei", "niaj",
         "olivia", "priya", "rupert", "sven", "tomas", "uma", "victor", "wei", "xavier", "yasmin", "zoe", "omar"]
LAST = ["smith", "garcia", "chen", "kumar", "muller", "rossi", "nakamura", "okafor", "silva", "novak", "jensen",
        "dubois", "kowalski", "haddad", "larsen", "moreau", "tanaka", "walsh"]
ENVS = ["prod", "staging", "dev", "data", "shared", "security", "sandbox", "logging"]
FUNCTIONS = ["order-processor", "thumbnail-generator", "webhook-handler", "nightly-report", "auth-authorizer",
             "stream-consumer"]
TABLES = ["orders", "sessions", "customers", "inventory", "idempotency-keys", "feature-flags"]
QUEUES = ["order-events", "email-outbox", "thumbnail-jobs", "dead-letter"]
TOPICS = ["order-notifications", "alerts", "deploy-events"]
BUCKET_PURPOSES = ["data-lake-raw", "app-assets", "user-uploads", "backups", "artifacts", "reports"]
OBJECT_KEYS = [
    "raw/events/year=2024/month={m}/day={d}/part-{h}.snappy.parquet", "uploads/{u}.jpg", "uploads/{u}.png",
    "reports/daily/{y}-{m}-{d}/summary.csv", "assets/js/app.{h}.js", "assets/css/main.{h}.css",
    "backups/postgres/{y}/{m}/{d}/base-{h}.tar.zst", "artifacts/builds/{h}/bundle.zip", "exports/{u}.json.gz",
]


# ---------------------------------------------------------------------------------------------------------
# per account / region context: resource pools, principals, action variants


class _Ctx:
    """Everything about one (account, region) that does not change from hour to hour."""

    def __init__(self, seed: int, accounts: list[str], a: int, region: str, externals: list[str]):
        self.a = a
        self.seed = seed
        self.acct = accounts[a]
        self.region = region
        self.is_global = region == GLOBAL_REGION
        ar = random.Random(f"{seed}:acct:{a}")           # account-wide entities (same in every region)
        rr = random.Random(f"{seed}:ctx:{a}:{region}")   # region-local resources
        self.rr = rr
        self.alias = f"example-{ENVS[a % len(ENVS)]}{'' if a < len(ENVS) else a}"
        self.tz = TZ_OFFSETS[a % len(TZ_OFFSETS)]
        self.externals = externals
        self.org_id = "o-" + _alnum(random.Random(f"{seed}:org"), 10, "abcdefghijklmnopqrstuvwxyz0123456789")
        self.buckets = [f"example-{p}-{self.acct}-{region}" for p in BUCKET_PURPOSES]
        self.trail_bucket = f"aws-cloudtrail-logs-{self.acct}-{_hex(ar, 8)}"
        self.instances = [f"i-0{_hex(rr, 16)}" for _ in range(14)]
        self.sgs = [f"sg-0{_hex(rr, 16)}" for _ in range(8)]
        self.vpcs = [f"vpc-0{_hex(rr, 16)}" for _ in range(2)]
        self.subnets = [f"subnet-0{_hex(rr, 16)}" for _ in range(6)]
        self.enis = [f"eni-0{_hex(rr, 16)}" for _ in range(10)]
        self.amis = [f"ami-0{_hex(rr, 16)}" for _ in range(3)]
        self.volumes = [f"vol-0{_hex(rr, 16)}" for _ in range(10)]
        self.functions = FUNCTIONS[:]
        self.tables = TABLES[:]
        self.kms_keys = [_uuid(rr) for _ in range(4)]
        self.kms_aliases = ["alias/app-data", "alias/s3-sse", "alias/secrets", "alias/ebs-default"]
        self.secrets = [f"prod/{n}-{_alnum(rr, 6)}" for n in ("db/postgres", "api/stripe", "api/sendgrid", "oauth")]
        self.params = ["/app/prod/db_host", "/app/prod/feature_flags", "/app/prod/api_base_url",
                       "/app/prod/worker_concurrency", "/platform/ami/latest", "/app/prod/log_level"]
        self.queues = QUEUES[:]
        self.topics = TOPICS[:]
        self.stacks = ["network-baseline", "orders-service", "data-pipeline", "observability"]
        self.log_groups = [f"/aws/lambda/{f}" for f in FUNCTIONS] + ["/ecs/orders-api", "/aws/vpc/flow-logs"]
        self.lbs = ["orders-api-alb", "internal-grpc-nlb"]
        self.asgs = ["orders-api-asg", "workers-asg"]
        self.repos = ["orders-api", "worker", "thumbnailer"]
        self.vpce = {s: f"vpce-0{_hex(rr, 16)}" for s in ("s3", "dynamodb", "kms", "secretsmanager", "ssm", "sts",
                                                           "ec2", "lambda", "sqs", "sns", "logs", "ecr", "monitoring")}
        self.saml_provider = f"arn:aws:iam::{self.acct}:saml-provider/Okta"
        self.oidc_gh = f"arn:aws:iam::{self.acct}:oidc-provider/token.actions.githubusercontent.com"
        self.office_ips = [f"203.0.113.{ar.randrange(2, 250)}" for _ in range(2)] + \
                          [f"198.51.100.{ar.randrange(2, 250)}"]
        self.nat_ips = [f"{ar.choice((3, 18, 34, 52, 54))}.{rr.randrange(1, 255)}.{rr.randrange(256)}."
                        f"{rr.randrange(1, 255)}" for _ in range(3)]
        self.private_ips = [f"10.{ar.randrange(0, 64)}.{rr.randrange(0, 256)}.{rr.randrange(2, 255)}" for _ in range(24)]
        self.sessions_tokens = [("IQoJb3JpZ2luX2VjE" + _b64(rr, 420).replace("/", "+"))[:560] for _ in range(6)]
        self.principals = _principals(self, ar)
        self._tls: dict[str, tuple] = {}
        self.variants = [self._build_variants(act) for act in ACTIONS]
        # per-region principal tables
        self._prepare_profiles()

    # -- resources -----------------------------------------------------------------------------------------
    def arn(self, kind: str, name: str, region: str | None = None) -> str:
        reg = self.region if region is None else region
        return {
            "bucket": f"arn:aws:s3:::{name}", "object": f"arn:aws:s3:::{name}",
            "function": f"arn:aws:lambda:{reg}:{self.acct}:function:{name}",
            "table": f"arn:aws:dynamodb:{reg}:{self.acct}:table/{name}",
            "key": f"arn:aws:kms:{reg}:{self.acct}:key/{name}",
            "secret": f"arn:aws:secretsmanager:{reg}:{self.acct}:secret:{name}",
            "param": f"arn:aws:ssm:{reg}:{self.acct}:parameter{name}",
            "queue": f"arn:aws:sqs:{reg}:{self.acct}:{name}",
            "topic": f"arn:aws:sns:{reg}:{self.acct}:{name}",
            "role": f"arn:aws:iam::{self.acct}:role/{name}",
            "user": f"arn:aws:iam::{self.acct}:user/{name}",
            "instance": f"arn:aws:ec2:{reg}:{self.acct}:instance/{name}",
            "stack": f"arn:aws:cloudformation:{reg}:{self.acct}:stack/{name}/{_uuid(random.Random(name))}",
            "trail": f"arn:aws:cloudtrail:{reg}:{self.acct}:trail/{name}",
            "repo": f"arn:aws:ecr:{reg}:{self.acct}:repository/{name}",
            "loggroup": f"arn:aws:logs:{reg}:{self.acct}:log-group:{name}",
        }[kind]

    def object_key(self, r: random.Random) -> str:
        t = r.choice(OBJECT_KEYS)
        return t.format(y=2024, m=f"{r.randrange(1, 13):02d}", d=f"{r.randrange(1, 29):02d}", h=_hex(r, 12),
                        u=_uuid(r))

    def tls(self, host: str) -> tuple:
        t = self._tls.get(host)
        if t is None:
            t = self._tls[host] = (
                {"tlsVersion": "TLSv1.2", "cipherSuite": "ECDHE-RSA-AES128-GCM-SHA256", "clientProvidedHostHeader": host},
                {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": host},
                {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_256_GCM_SHA384", "clientProvidedHostHeader": host,
                 "keyExchange": "X25519MLKEM768"},
            )
        return t

    def host(self, act: "_Action") -> str:
        svc = act.svc
        if svc in ("iam", "organizations"):
            return f"{svc}.amazonaws.com"
        if svc == "signin":
            return "signin.aws.amazon.com"
        if svc == "sts" and self.is_global:
            return "sts.amazonaws.com"
        return f"{svc}.{self.region}.amazonaws.com"

    # -- variants ------------------------------------------------------------------------------------------
    def _build_variants(self, act: "_Action") -> list[tuple]:
        """`act.nvar` (requestParameters, responseElements, resources, additionalEventData, tlsDetails x3)."""
        r, day = self.rr, None     # builders take a day argument; variants are built once (day None)
        out = []
        n = act.nvar
        for _ in range(n):
            req = act.req(self, r, day) if act.req else None
            if req:
                req = {k: v for k, v in req.items() if v is not None}
            resp = act.resp(self, r, day, req) if act.resp else None
            res = act.res(self, req) if act.res else None
            aed = act.aed(self, r, req) if act.aed else None
            host = (req or {}).get("Host") if act.svc == "s3" else None
            out.append((req, resp, res, aed, self.tls(host or self.host(act))))
        return out

    def variants_for_day(self, day: int) -> list[list[tuple]]:
        """Pre-built variants (time-dependent fields are patched per record, see `_Action.patch`)."""
        return self.variants

    # -- principals ----------------------------------------------------------------------------------------
    def _prepare_profiles(self) -> None:
        self.active: list[_Principal] = []
        for p in self.principals:
            acts, w = [], []
            for key, weight in p.profile:
                act = ACTION_BY_KEY[key]
                if act.glob and not self.is_global:
                    continue
                acts.append(act.idx)
                w.append(weight)
            if not acts:
                continue
            p.acts = np.array(acts, dtype=np.int64)
            cw = np.cumsum(np.array(w, dtype=float))
            p.act_cdf = cw / cw[-1]
            p.act_prob = np.diff(np.concatenate([[0.0], p.act_cdf]))
            cc = np.cumsum(np.array([c[5] for c in p.clients], dtype=float))
            p.client_cdf = cc / cc[-1]
            self.active.append(p)
        for i, p in enumerate(self.active):
            p.ridx = i
        hum = [p for p in self.active if p.human]
        aut = [p for p in self.active if not p.human]
        self.human_ids = np.array([p.ridx for p in hum], dtype=np.int64)
        self.auto_ids = np.array([p.ridx for p in aut], dtype=np.int64)
        hw = np.cumsum([p.weight for p in hum]) if hum else np.array([1.0])
        aw = np.cumsum([p.weight for p in aut])
        self.human_cdf = hw / hw[-1]
        self.auto_cdf = aw / aw[-1]
        self.xcallers = [p for p in self.active if p.xacct]

    def action_marginals(self, human_share: float) -> np.ndarray:
        """Probability of each action for one background (non network-activity) event."""
        m = np.zeros(len(ACTIONS))
        for ids, cdf, share in ((self.human_ids, self.human_cdf, human_share),
                                (self.auto_ids, self.auto_cdf, 1 - human_share)):
            if len(ids) == 0:
                continue
            pw = np.diff(np.concatenate([[0.0], cdf]))
            for pid, w in zip(ids, pw):
                p = self.active[pid]
                np.add.at(m, p.acts, share * w * p.act_prob)
        return m


@dataclass
class _Principal:
    name: str
    human: bool
    weight: float
    uid: dict | None
    clients: list                      # (ua, ips, tls kind, console, vpce, weight)
    profile: list                      # (action key, weight)
    session_period: int = 0            # >0: sessionContext.attributes.creationDate renews every period seconds
    mfa: str = "No"
    login_uid: dict | None = None
    xacct: bool = False
    arn: str = ""
    ridx: int = 0
    acts: Any = None
    act_cdf: Any = None
    act_prob: Any = None
    client_cdf: Any = None

    def uid_at(self, epoch: int) -> dict | None:
        if not self.session_period or self.uid is None:
            return self.uid
        start = epoch - (epoch + hash_phase(self.name)) % self.session_period
        sc = self.uid["sessionContext"]
        return {**self.uid, "sessionContext": {**sc, "attributes": {**sc["attributes"], "creationDate": _iso(start)}}}


def hash_phase(name: str) -> int:
    return sum(ord(ch) * (i + 1) for i, ch in enumerate(name)) % 3000


def _c(ua: str, ips: list[str] | tuple, tls: int, w: float, console: bool = False, vpce: bool = False) -> tuple:
    return (ua, tuple(ips), tls, console, vpce, w)


def _assumed(c: _Ctx, r: random.Random, role: str, session: str, path: str = "", invoked_by: str | None = None,
             web: dict | None = None, mfa: str = "false", ec2: bool = False, source_identity: str | None = None) -> dict:
    rid = _key_id(r, "AROA")
    sc: dict = {"sessionIssuer": {"type": "Role", "principalId": rid, "arn": f"arn:aws:iam::{c.acct}:role/{path}{role}",
                                  "accountId": c.acct, "userName": role},
                "webIdFederationData": web or {},
                "attributes": {"creationDate": "1970-01-01T00:00:00Z", "mfaAuthenticated": mfa}}
    if ec2:
        sc["ec2RoleDelivery"] = "2.0"
    if source_identity:
        sc["sourceIdentity"] = source_identity
    uid = {"type": "AssumedRole", "principalId": f"{rid}:{session}",
           "arn": f"arn:aws:sts::{c.acct}:assumed-role/{role}/{session}", "accountId": c.acct,
           "accessKeyId": _key_id(r, "ASIA"), "sessionContext": sc}
    if invoked_by:
        uid["invokedBy"] = invoked_by
    return uid


def _iam_user(c: _Ctx, r: random.Random, name: str, console: bool = False, mfa: str = "false") -> dict:
    uid = {"type": "IAMUser", "principalId": _key_id(r, "AIDA"), "arn": f"arn:aws:iam::{c.acct}:user/{name}",
           "accountId": c.acct, "accessKeyId": _key_id(r, "ASIA" if console else "AKIA"), "userName": name}
    if console:
        uid["sessionContext"] = {"sessionIssuer": {}, "webIdFederationData": {},
                                 "attributes": {"creationDate": "1970-01-01T00:00:00Z", "mfaAuthenticated": mfa}}
    return uid


def _home_ip(r: random.Random) -> str:
    return f"{r.choice((24, 73, 76, 82, 86, 92, 98, 174, 185))}.{r.randrange(1, 255)}.{r.randrange(256)}.{r.randrange(1, 255)}"


# action-key shorthands for profiles
_DESCRIBE = ["ec2:DescribeInstances", "ec2:DescribeSecurityGroups", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
             "ec2:DescribeVolumes", "ec2:DescribeNetworkInterfaces", "ec2:DescribeInstanceStatus", "ec2:DescribeImages",
             "ec2:DescribeRegions"]


def _zipf(keys: list[str], s: float = 1.0, scale: float = 1.0) -> list[tuple[str, float]]:
    return [(k, scale / (i + 1) ** s) for i, k in enumerate(keys)]


def _principals(c: _Ctx, r: random.Random) -> list[_Principal]:
    """The account's population of callers, each with clients and an action profile (zipf-weighted)."""
    P: list[_Principal] = []
    acct = c.acct
    nat, office, priv = c.nat_ips, c.office_ips, c.private_ips
    # --- automation ---
    app = _assumed(c, r, "orders-api-ec2-role", c.instances[0], ec2=True)
    app_prof = _zipf(["s3:GetObject", "dynamodb:GetItem", "kms:Decrypt", "dynamodb:Query", "s3:PutObject",
                      "sqs:SendMessage", "dynamodb:PutItem", "kms:GenerateDataKey", "ssm:GetParameter",
                      "secretsmanager:GetSecretValue", "s3:HeadObject", "dynamodb:UpdateItem", "sts:GetCallerIdentity",
                      "sns:Publish", "s3:ListObjects", "dynamodb:BatchWriteItem", "s3:DeleteObject",
                      "ecr:GetAuthorizationToken", "logs:CreateLogStream"], 1.15)
    P.append(_Principal("app", False, 30, app, [_c(UA_JAVA, priv[:8], 1, 6, vpce=True), _c(UA_GO, nat, 1, 2)],
                        app_prof, session_period=6 * 3600, xacct=True))
    app_kms = {**app, "invokedBy": AWS_INTERNAL}
    P.append(_Principal("app-kms-internal", False, 6, app_kms, [_c(AWS_INTERNAL, [AWS_INTERNAL], -1, 1)],
                        _zipf(["kms:Decrypt", "kms:GenerateDataKey"], 1.0), session_period=6 * 3600))
    for i, (fn, prof) in enumerate([
        ("order-processor", ["dynamodb:PutItem", "dynamodb:GetItem", "sqs:DeleteMessage", "sqs:ReceiveMessage",
                             "kms:Decrypt", "sns:Publish", "dynamodb:UpdateItem", "secretsmanager:GetSecretValue",
                             "lambda:Invoke", "ssm:GetParameter"]),
        ("thumbnail-generator", ["s3:GetObject", "s3:PutObject", "sqs:ReceiveMessage", "sqs:DeleteMessage",
                                 "kms:GenerateDataKey", "s3:HeadObject"]),
        ("webhook-handler", ["dynamodb:Query", "sqs:SendMessage", "kms:Decrypt", "secretsmanager:GetSecretValue",
                             "dynamodb:PutItem"]),
    ]):
        uid = _assumed(c, r, f"{fn}-exec-role", fn)
        ua = UA_BOTO3_LAMBDA if i != 1 else UA_NODE_LAMBDA
        P.append(_Principal(f"fn-{fn}", False, [18, 8, 5][i], uid, [_c(ua, priv[8:16], 1, 1, vpce=True)],
                            _zipf(prof, 1.1), session_period=12 * 3600))
    P.append(_Principal("svc-cloudtrail", False, 5, {"type": "AWSService", "invokedBy": "cloudtrail.amazonaws.com"},
                        [_c("cloudtrail.amazonaws.com", ["cloudtrail.amazonaws.com"], -1, 1)],
                        [("s3:PutObject-trail", 8), ("s3:GetBucketAcl-trail", 1)]))
    P.append(_Principal("svc-lambda", False, 4, {"type": "AWSService", "invokedBy": "lambda.amazonaws.com"},
                        [_c("lambda.amazonaws.com", ["lambda.amazonaws.com"], -1, 1)],
                        [("sts:AssumeRole-lambda", 1)]))
    P.append(_Principal("svc-events", False, 2.5, {"type": "AWSService", "invokedBy": "events.amazonaws.com"},
                        [_c("events.amazonaws.com", ["events.amazonaws.com"], -1, 1)],
                        [("lambda:Invoke", 1)]))
    P.append(_Principal("svc-apigw", False, 3, {"type": "AWSService", "invokedBy": "apigateway.amazonaws.com"},
                        [_c("apigateway.amazonaws.com", ["apigateway.amazonaws.com"], -1, 1)],
                        [("lambda:Invoke", 1)]))
    vendor = _assumed(c, r, "monitoring-readonly", f"cloud-monitor-{_hex(r, 8)}")
    P.append(_Principal("vendor-monitor", False, 7, vendor, [_c(UA_VENDOR, [f"34.{r.randrange(64, 127)}.{r.randrange(256)}.{r.randrange(1, 255)}" for _ in range(4)], 1, 1)],
                        _zipf(["monitoring:GetMetricData", "ec2:DescribeInstances", "monitoring:ListMetrics",
                               "elasticloadbalancing:DescribeTargetHealth", "autoscaling:DescribeAutoScalingGroups",
                               "ec2:DescribeVolumes", "dynamodb:DescribeTable", "lambda:ListFunctions20150331",
                               "monitoring:DescribeAlarms", "s3:GetBucketLocation", "ec2:DescribeSecurityGroups",
                               "sqs:GetQueueAttributes", "s3:ListBuckets", "sns:ListTopics", "dynamodb:ListTables",
                               "cloudtrail:DescribeTrails", "health:DescribeEventAggregates", "iam:ListRoles",
                               "elasticloadbalancing:DescribeLoadBalancers", "ec2:DescribeRegions",
                               "organizations:DescribeOrganization"], 0.9),
                        session_period=3600))
    ssm_agent = _assumed(c, r, "orders-api-ec2-role", c.instances[1], ec2=True)
    P.append(_Principal("ssm-agent", False, 3, ssm_agent, [_c(UA_SSM, priv[:8], 1, 1, vpce=True)],
                        _zipf(["ssm:UpdateInstanceInformation", "ssm:ListInstanceAssociations", "ec2:DescribeInstanceStatus"], 1.3),
                        session_period=6 * 3600))
    ci = _iam_user(c, r, "ci-deployer")
    P.append(_Principal("ci-deployer", False, 2.5, ci, [_c(UA_TF, nat[:1] + office[:1], 0, 3), _c(UA_CLI_LINUX, nat[:1], 1, 1)],
                        _zipf(_DESCRIBE[:4] + ["iam:GetRole", "s3:GetBucketPolicy", "lambda:GetFunction20150331v2",
                                               "iam:ListAttachedRolePolicies", "s3:GetBucketVersioning",
                                               "cloudformation:DescribeStacks", "ec2:CreateTags", "iam:GetPolicyVersion",
                                               "lambda:UpdateFunctionCode20150331v2", "ec2:RunInstances",
                                               "ec2:AuthorizeSecurityGroupIngress", "iam:PutRolePolicy",
                                               "ec2:TerminateInstances", "s3:PutBucketPolicy", "iam:CreateRole",
                                               "sts:GetCallerIdentity", "kms:DescribeKey", "ssm:PutParameter",
                                               "iam:AttachRolePolicy", "s3:CreateBucket"], 0.9), xacct=True))
    gh_sub = "repo:example-org/orders-service:ref:refs/heads/main"
    web = {"federatedProvider": c.oidc_gh, "attributes": {}}
    gha = _assumed(c, r, "github-actions-deploy", f"GitHubActions-{_hex(r, 10)}", web=web)
    gh_ips = [f"{r.choice((4, 20, 40, 52))}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}" for _ in range(6)]
    P.append(_Principal("gha-deploy", False, 2, gha, [_c(UA_GHA, gh_ips, 1, 1)],
                        _zipf(["ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                               "s3:PutObject", "cloudformation:DescribeStacks", "lambda:UpdateFunctionCode20150331v2",
                               "lambda:GetFunction20150331v2", "ecr:PutImage", "sts:GetCallerIdentity"], 1.0),
                        session_period=3600))
    P.append(_Principal("gha-oidc", False, 0.3, {"type": "WebIdentityUser",
                                                 "principalId": f"token.actions.githubusercontent.com:sts.amazonaws.com:{gh_sub}",
                                                 "userName": gh_sub, "identityProvider": "token.actions.githubusercontent.com"},
                        [_c(UA_GHA, gh_ips, 1, 1)], [("sts:AssumeRoleWithWebIdentity", 1)]))
    asg = _assumed(c, r, "AWSServiceRoleForAutoScaling", "AutoScaling", path="aws-service-role/autoscaling.amazonaws.com/",
                   invoked_by="autoscaling.amazonaws.com")
    P.append(_Principal("slr-autoscaling", False, 1.5, asg,
                        [_c("autoscaling.amazonaws.com", ["autoscaling.amazonaws.com"], -1, 1)],
                        _zipf(["ec2:DescribeInstanceStatus", "ec2:DescribeInstances", "ec2:CreateTags",
                               "ec2:RunInstances", "ec2:TerminateInstances"], 1.6), session_period=3600))
    elb = _assumed(c, r, "AWSServiceRoleForElasticLoadBalancing", "ElasticLoadBalancing",
                   path="aws-service-role/elasticloadbalancing.amazonaws.com/", invoked_by="elasticloadbalancing.amazonaws.com")
    P.append(_Principal("slr-elb", False, 1.0, elb,
                        [_c("elasticloadbalancing.amazonaws.com", ["elasticloadbalancing.amazonaws.com"], -1, 1)],
                        _zipf(["ec2:DescribeNetworkInterfaces", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets",
                               "ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface"], 1.2), session_period=3600))
    cfg = _assumed(c, r, "AWSServiceRoleForConfig", "AWSConfig-Describe", path="aws-service-role/config.amazonaws.com/",
                   invoked_by="config.amazonaws.com")
    P.append(_Principal("slr-config", False, 1.5, cfg, [_c("config.amazonaws.com", ["config.amazonaws.com"], -1, 1)],
                        _zipf(["ec2:DescribeSecurityGroups", "s3:GetBucketAcl", "iam:GetRole", "ec2:DescribeVpcs",
                               "kms:DescribeKey", "lambda:GetFunction20150331v2", "s3:GetBucketVersioning",
                               "ec2:DescribeVolumes", "iam:ListAttachedRolePolicies"], 0.8), session_period=3600))
    P.append(_Principal("service-events", False, 0.05, {"accountId": acct, "invokedBy": AWS_INTERNAL},
                        [_c(AWS_INTERNAL, [AWS_INTERNAL], -1, 1)],
                        [("kms:RotateKey", 1), ("secretsmanager:RotationSucceeded", 2)]))
    # --- humans: SAML-federated engineers (Okta), IAM users, a federation broker, root ---
    n_saml = 6
    people = r.sample([(f, l) for f in FIRST for l in LAST], n_saml + 3)
    for i in range(n_saml):
        f, l = people[i]
        email = f"{f}.{l}@example.com"
        role = "okta-admin" if i < 2 else "okta-engineer"
        uid = _assumed(c, r, role, email, mfa="true" if i % 3 else "false")
        home = [_home_ip(r)]
        w = 12 / (i + 1) ** 0.9
        prof = _zipf(_DESCRIBE[:3] + ["s3:ListBuckets", "monitoring:GetMetricData", "logs:FilterLogEvents",
                                       "cloudtrail:LookupEvents", "s3:GetObject", "lambda:ListFunctions20150331",
                                       "dynamodb:DescribeTable", "s3:ListObjects", "iam:ListRoles",
                                       "logs:DescribeLogGroups", "sts:GetCallerIdentity", "ssm:GetParameter",
                                       "secretsmanager:DescribeSecret", "ec2:DescribeImages", "iam:GetRole",
                                       "cloudformation:DescribeStacks", "monitoring:DescribeAlarms",
                                       "ec2:StartInstances", "ec2:StopInstances", "ec2:CreateTags", "s3:PutObject",
                                       "secretsmanager:ListSecrets", "ssm:PutParameter",
                                       "ec2:AuthorizeSecurityGroupIngress", "iam:AttachRolePolicy", "kms:ListAliases"],
                     1.05) + [("signin:ConsoleLogin-saml", 0.04)]
        clients = [_c(AWS_INTERNAL, [AWS_INTERNAL], -1, 4, console=True),
                   _c(UA_BROWSERS[i % len(UA_BROWSERS)], office[:2] + home, 1, 3, console=True),
                   _c(UA_S3CONSOLE, office[:2] + home, 1, 1, console=True),
                   _c(UA_CLI_MAC, office[:2] + home, 2 if i % 2 else 1, 2)]
        p = _Principal(f"saml-{i}", True, w, uid, clients, prof, session_period=8 * 3600,
                       xacct=i < 2, mfa="No")
        P.append(p)
        P.append(_Principal(f"samluser-{i}", True, w * 0.01,
                            {"type": "SAMLUser", "principalId": f"{_b64(r, 21)}:{email}", "userName": email,
                             "identityProvider": _b64(r, 21)},
                            [_c(UA_BROWSERS[i % len(UA_BROWSERS)], office[:2] + home, 1, 1)],
                            [(f"sts:AssumeRoleWithSAML-{'admin' if i < 2 else 'eng'}", 1)]))
    for j, mfa in enumerate(("Yes", "No")):
        f, l = people[n_saml + j]
        name = f"{f}.{l}"
        home = [_home_ip(r)]
        uid = _iam_user(c, r, name, console=True, mfa="true" if mfa == "Yes" else "false")
        P.append(_Principal(f"iam-{j}", True, [3, 1.5][j], uid,
                            [_c(AWS_INTERNAL, [AWS_INTERNAL], -1, 3, console=True),
                             _c(UA_BROWSERS[(j + 2) % len(UA_BROWSERS)], office[2:] + home, 1, 2, console=True),
                             _c(UA_CLI_MAC, office[2:] + home, 1, 2)],
                            _zipf(["ec2:DescribeInstances", "s3:ListBuckets", "iam:ListUsers",
                                   "iam:GetUser", "cloudtrail:LookupEvents", "iam:ListAttachedRolePolicies",
                                   "ec2:DescribeSecurityGroups", "iam:ListMFADevices", "iam:CreateAccessKey",
                                   "iam:UpdateAccessKey", "cloudtrail:GetTrailStatus", "iam:DeleteAccessKey"], 0.9)
                            + [("signin:ConsoleLogin", 0.12)],
                            session_period=8 * 3600, mfa=mfa, login_uid={k: v for k, v in uid.items()
                                                                         if k not in ("accessKeyId", "sessionContext")}))
    broker = _iam_user(c, r, "federation-broker")
    P.append(_Principal("broker", True, 0.1, broker, [_c(UA_JAVA, nat[1:2], 1, 1)], [("sts:GetFederationToken", 1)]))
    fname = f"support-{people[-1][0]}"
    fed = {"type": "FederatedUser", "principalId": f"{acct}:{fname}", "arn": f"arn:aws:sts::{acct}:federated-user/{fname}",
           "accountId": acct, "accessKeyId": _key_id(r, "ASIA"),
           "sessionContext": {"sessionIssuer": {"type": "IAMUser", "principalId": broker["principalId"],
                                                "arn": broker["arn"], "accountId": acct, "userName": "federation-broker"},
                              "webIdFederationData": {},
                              "attributes": {"creationDate": "1970-01-01T00:00:00Z", "mfaAuthenticated": "false"}}}
    P.append(_Principal("federated", True, 0.5, fed, [_c(UA_BROWSERS[0], office, 1, 1, console=True)],
                        _zipf(["ec2:DescribeInstances", "logs:FilterLogEvents", "cloudformation:DescribeStacks",
                               "monitoring:GetMetricData", "s3:ListBuckets"], 1.0), session_period=12 * 3600))
    root = {"type": "Root", "principalId": acct, "arn": f"arn:aws:iam::{acct}:root", "accountId": acct,
            "accessKeyId": _key_id(r, "ASIA"), "userName": c.alias,
            "sessionContext": {"attributes": {"creationDate": "1970-01-01T00:00:00Z", "mfaAuthenticated": "true"}}}
    P.append(_Principal("root", True, 0.06, root, [_c(UA_BROWSERS[1], office[:1], 1, 1, console=True)],
                        [("signin:ConsoleLogin", 3), ("iam:GetAccountSummary", 2), ("iam:ListMFADevices", 1),
                         ("ec2:DescribeRegions", 1), ("organizations:DescribeOrganization", 1)],
                        session_period=3600, mfa="Yes",
                        login_uid={"type": "Root", "principalId": acct, "arn": f"arn:aws:iam::{acct}:root",
                                   "accountId": acct, "accessKeyId": ""}))
    for p in P:
        p.arn = (p.uid or {}).get("arn", "")
    return P


# ---------------------------------------------------------------------------------------------------------
# actions

_VERSIONS = {"s3": "1.10", "ec2": "1.11", "iam": "1.11", "sts": "1.08", "kms": "1.11", "lambda": "1.08",
             "dynamodb": "1.08", "cloudtrail": "1.11", "signin": "1.11", "ssm": "1.08", "secretsmanager": "1.11",
             "monitoring": "1.11", "logs": "1.09", "sns": "1.09", "sqs": "1.09", "ecr": "1.08",
             "elasticloadbalancing": "1.11", "autoscaling": "1.11", "cloudformation": "1.11", "health": "1.08",
             "organizations": "1.11"}
_DENY = {"ec2": ("Client.UnauthorizedOperation", "You are not authorized to perform this operation. User: {arn} is not "
                 "authorized to perform: {perm} on resource: {res} because no identity-based policy allows the {perm} action"),
         "lambda": ("AccessDeniedException", "User: {arn} is not authorized to perform: {perm} on resource: {res} because no "
                    "identity-based policy allows the {perm} action")}
_DENY_DEFAULT = ("AccessDenied", "User: {arn} is not authorized to perform: {perm} on resource: {res} because no "
                 "identity-based policy allows the {perm} action")
_THROTTLE = {"ec2": ("Client.RequestLimitExceeded", "Request limit exceeded."), "iam": ("Throttling", "Rate exceeded"),
             "s3": ("SlowDown", "Please reduce your request rate."),
             "lambda": ("TooManyRequestsException", "Rate Exceeded."),
             "dynamodb": ("ThrottlingException", "Rate of requests exceeds the allowed throughput.")}
_THROTTLE_DEFAULT = ("ThrottlingException", "Rate exceeded")


@dataclass
class _Action:
    key: str
    svc: str
    name: str
    cat: str
    ro: bool
    req: Callable | None = None
    resp: Callable | None = None
    res: Callable | None = None
    aed: Callable | None = None
    errs: list = field(default_factory=list)    # (code, message template, weight) besides deny/throttle
    err_rate: float = 0.02
    rid: str | None = "uuid"                    # uuid | s3 | None
    etype: str = "AwsApiCall"
    glob: bool = False
    patch: Callable | None = None               # per-record fix-ups that depend on the event time or caller
    nvar: int = K_VARIANTS
    special: str | None = None
    api: str | None = None
    perm: str = ""
    idx: int = 0

    def __post_init__(self):
        self.source = f"{self.svc}.amazonaws.com"
        self.version = _VERSIONS[self.svc]
        self.mgmt = self.cat != "Data"
        pname = {"ListFunctions20150331": "ListFunctions", "GetFunction20150331v2": "GetFunction",
                 "UpdateFunctionCode20150331v2": "UpdateFunctionCode", "Invoke": "InvokeFunction",
                 "ListObjects": "ListBucket", "HeadObject": "GetObject"}.get(self.name, self.name)
        self.perm = self.perm or f"{'cloudwatch' if self.svc == 'monitoring' else self.svc}:{pname}"
        deny = _DENY.get(self.svc, _DENY_DEFAULT)
        thr = _THROTTLE.get(self.svc, _THROTTLE_DEFAULT)
        self.deny_code = deny[0]
        table = [(deny[0], deny[1], 3.0), (thr[0], thr[1], 2.0 if not self.ro or self.cat == "Data" else 1.5)]
        table += self.errs
        self.err_table = [(code, msg) for code, msg, _ in table]
        w = np.cumsum([wt for _, _, wt in table])
        self.err_cdf = (w / w[-1]).tolist()


def _res(kind_type: str, kind: str, field_name: str):
    return lambda c, q: [{"accountId": c.acct, "type": kind_type, "ARN": q[field_name] if q[field_name].startswith("arn:")
                          else c.arn(kind, q[field_name])}]


def _s3_aed(direction: str):
    def f(c, r, q):
        size = int(r.lognormvariate(10, 2)) if direction else 0
        return {"SignatureVersion": "SigV4", "CipherSuite": r.choice(("TLS_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256")),
                "bytesTransferredIn": size if direction == "in" else 0, "AuthenticationMethod": "AuthHeader",
                "x-amz-id-2": _b64(r, 57), "bytesTransferredOut": size if direction == "out" else 0}
    return f


def _s3_obj_req(c, r, d):
    b = r.choice(c.buckets[:5])
    return {"bucketName": b, "Host": f"{b}.s3.{c.region}.amazonaws.com", "key": c.object_key(r)}


def _s3_obj_res(c, q):
    return [{"type": "AWS::S3::Object", "ARN": f"arn:aws:s3:::{q['bucketName']}/{q['key']}"},
            {"accountId": c.acct, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{q['bucketName']}"}]


def _s3_bucket_req(sub: str | None):
    def f(c, r, d):
        b = r.choice(c.buckets)
        q = {"bucketName": b, "Host": f"{b}.s3.{c.region}.amazonaws.com"}
        if sub:
            q[sub] = ""
        return q
    return f


def _bucket_res(c, q):
    return [{"accountId": c.acct, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{q['bucketName']}"}]


def _ddb_key(r):
    return {"pk": "HIDDEN_DUE_TO_SECURITY_REASONS", "sk": "HIDDEN_DUE_TO_SECURITY_REASONS"} if r.random() < .6 \
        else {"id": "HIDDEN_DUE_TO_SECURITY_REASONS"}


def _ddb_res(c, q):
    return [{"accountId": c.acct, "type": "AWS::DynamoDB::Table", "ARN": c.arn("table", q["tableName"])}]


def _kms_res(c, q):
    kid = (q.get("keyId") or "").rsplit("/", 1)[-1]
    if kid not in c.kms_keys:
        kid = c.kms_keys[hash_phase(str(q)) % len(c.kms_keys)]
    return [{"accountId": c.acct, "type": "AWS::KMS::Key", "ARN": c.arn("key", kid)}]


def _enc_ctx(c, r):
    return r.choice([{"aws:s3:arn": f"arn:aws:s3:::{r.choice(c.buckets)}/{c.object_key(r)}"},
                     {"aws:dynamodb:tableName": r.choice(c.tables), "aws:dynamodb:subscriberId": c.acct},
                     {"SecretARN": c.arn("secret", r.choice(c.secrets)), "SecretVersionId": _uuid(r)},
                     {"PARAMETER_ARN": c.arn("param", r.choice(c.params))},
                     {"aws:lambda:FunctionArn": c.arn("function", r.choice(c.functions))}])


def _assume_role_resp(c, r, d, q):
    role = q["roleArn"].rsplit("/", 1)[-1]
    rid = _key_id(r, "AROA")
    exp = (d or 0) + 3600 * r.randrange(1, 12) + r.randrange(3600)
    return {"credentials": {"accessKeyId": _key_id(r, "ASIA"), "sessionToken": r.choice(c.sessions_tokens),
                            "expiration": _pretty_date(exp)},
            "assumedRoleUser": {"assumedRoleId": f"{rid}:{q['roleSessionName']}",
                                "arn": f"arn:aws:sts::{q['roleArn'].split(':')[4]}:assumed-role/{role}/{q['roleSessionName']}"}}


def _role_res(c, q):
    return [{"accountId": q["roleArn"].split(":")[4], "type": "AWS::IAM::Role", "ARN": q["roleArn"]}]


def _ec2_items(key, vals):
    return {key: {"items": [{k: v} for k, v in vals]}}


def _run_instances_resp(c, r, d, q):
    iid = f"i-0{_hex(r, 16)}"
    return {"requestId": _uuid(r), "reservationId": f"r-0{_hex(r, 16)}", "ownerId": c.acct, "groupSet": {},
            "instancesSet": {"items": [{"instanceId": iid, "imageId": q["instancesSet"]["items"][0]["imageId"],
                                        "currentInstanceBootMode": "uefi",
                                        "instanceState": {"code": 0, "name": "pending"},
                                        "privateDnsName": f"ip-10-0-{r.randrange(256)}-{r.randrange(256)}.ec2.internal",
                                        "amiLaunchIndex": 0, "productCodes": {},
                                        "instanceType": q["instancesSet"]["items"][0].get("instanceType", "t3.micro"),
                                        "launchTime": (d or 0) * 1000, "placement": {"availabilityZone": f"{c.region}a",
                                                                                     "tenancy": "default"},
                                        "monitoring": {"state": "disabled"}, "subnetId": r.choice(c.subnets),
                                        "vpcId": c.vpcs[0], "privateIpAddress": r.choice(c.private_ips),
                                        "sourceDestCheck": True, "architecture": "x86_64", "rootDeviceType": "ebs",
                                        "rootDeviceName": "/dev/xvda", "blockDeviceMapping": {},
                                        "virtualizationType": "hvm", "hypervisor": "xen",
                                        "networkInterfaceSet": {"items": [{"networkInterfaceId": f"eni-0{_hex(r, 16)}",
                                                                           "subnetId": r.choice(c.subnets),
                                                                           "vpcId": c.vpcs[0], "status": "in-use"}]},
                                        "ebsOptimized": False, "enaSupport": True,
                                        "metadataOptions": {"state": "pending", "httpTokens": "required",
                                                            "httpPutResponseHopLimit": 2, "httpEndpoint": "enabled"}}]}}


def _p_creds(seconds: int) -> Callable:
    def patch(v: tuple, t: int, uid: dict) -> tuple:
        resp = v[1]
        if not resp:
            return v
        resp = {**resp, "credentials": {**resp["credentials"], "expiration": _pretty_date(t + seconds)}}
        return (v[0], resp, v[2], v[3], v[4])
    return patch


def _p_saml(v: tuple, t: int, uid: dict) -> tuple:
    """AssumeRoleWithSAML: the session is named after the federated user, credentials last an hour."""
    email = uid.get("userName") or "user@example.com"
    aru = v[1]["assumedRoleUser"]
    resp = {**v[1], "credentials": {**v[1]["credentials"], "expiration": _pretty_date(t + 3600)}, "subject": email,
            "assumedRoleUser": {"assumedRoleId": aru["assumedRoleId"].split(":")[0] + ":" + email,
                                "arn": aru["arn"].rsplit("/", 1)[0] + "/" + email}}
    return ({**v[0], "roleSessionName": email}, resp, v[2], v[3], v[4])


def _p_created(key: str) -> Callable:
    def patch(v: tuple, t: int, uid: dict) -> tuple:
        return (v[0], {key: {**v[1][key], "createDate": _pretty_date(t)}}, v[2], v[3], v[4])
    return patch


def _p_run(v: tuple, t: int, uid: dict) -> tuple:
    items = v[1]["instancesSet"]["items"]
    resp = {**v[1], "instancesSet": {"items": [{**items[0], "launchTime": t * 1000}]}}
    return (v[0], resp, v[2], v[3], v[4])


def _A(key: str, cat: str, ro: bool, **kw) -> _Action:
    svc, name = key.split(":", 1)
    name = name.split("-", 1)[0]
    return _Action(key=key, svc=svc, name=name, cat=cat, ro=ro, **kw)


M, D = "Management", "Data"


def _saml_action(name: str, role: str) -> "_A":
    """AssumeRoleWithSAML from the Okta IdP into `role` (the generated sign-ins of federated humans)."""
    return _A(f"sts:AssumeRoleWithSAML-{name}", M, True, patch=_p_saml, nvar=6, req=lambda c, r, d: {
        "sAMLAssertionID": f"id{_hex(r, 20)}", "roleSessionName": "user@example.com", "roleArn": c.arn("role", role),
        "principalArn": c.saml_provider, "durationSeconds": 3600},
        resp=lambda c, r, d, q: {**_assume_role_resp(c, r, d, q), "subject": "user@example.com",
                                 "subjectType": "unspecified", "issuer": "http://www.okta.com/exk" + _alnum(r, 17),
                                 "audience": "https://signin.aws.amazon.com/saml", "nameQualifier": _b64(r, 21)},
        res=lambda c, q: [{"accountId": c.acct, "type": "AWS::IAM::Role", "ARN": q["roleArn"]},
                          {"accountId": c.acct, "type": "AWS::IAM::SAMLProvider", "ARN": q["principalArn"]}],
        err_rate=.02)


ACTIONS: list[_Action] = [
    # ---------------- S3 data ----------------
    _A("s3:GetObject", D, True, req=_s3_obj_req, res=_s3_obj_res, aed=_s3_aed("out"), rid="s3", err_rate=.015,
       errs=[("NoSuchKey", "The specified key does not exist.", 5)]),
    _A("s3:PutObject", D, False, req=lambda c, r, d: {**_s3_obj_req(c, r, d), "x-amz-server-side-encryption": "aws:kms"},
       resp=lambda c, r, d, q: {"x-amz-server-side-encryption": "aws:kms",
                                "x-amz-server-side-encryption-aws-kms-key-id": c.arn("key", c.kms_keys[1]),
                                "x-amz-server-side-encryption-bucket-key-enabled": "true"},
       res=_s3_obj_res, aed=_s3_aed("in"), rid="s3", err_rate=.005),
    _A("s3:PutObject-trail", D, False,
       req=lambda c, r, d: {"bucketName": c.trail_bucket, "Host": f"{c.trail_bucket}.s3.{c.region}.amazonaws.com",
                            "key": f"AWSLogs/{c.acct}/CloudTrail/{c.region}/2024/05/{r.randrange(1, 29):02d}/"
                                   f"{c.acct}_CloudTrail_{c.region}_20240501T{r.randrange(24):02d}{r.randrange(0, 60, 5):02d}Z_"
                                   f"{_alnum(r, 16)}.json.gz", "x-amz-acl": "bucket-owner-full-control",
                            "x-amz-server-side-encryption": "AES256"},
       resp=lambda c, r, d, q: {"x-amz-server-side-encryption": "AES256"}, res=_s3_obj_res, aed=_s3_aed("in"),
       rid="s3", err_rate=0),
    _A("s3:HeadObject", D, True, req=_s3_obj_req, res=_s3_obj_res, aed=_s3_aed(""), rid="s3",
       errs=[("NoSuchKey", "The specified key does not exist.", 5)]),
    _A("s3:DeleteObject", D, False, req=_s3_obj_req, res=_s3_obj_res, aed=_s3_aed(""), rid="s3"),
    _A("s3:ListObjects", D, True, req=lambda c, r, d: {**_s3_bucket_req(None)(c, r, d), "list-type": "2",
                                                       "prefix": r.choice(("", "raw/", "uploads/", "reports/daily/")),
                                                       "delimiter": "/", "encoding-type": "url"},
       res=lambda c, q: [{"type": "AWS::S3::Object", "ARNPrefix": f"arn:aws:s3:::{q['bucketName']}/{q['prefix']}"},
                         {"accountId": c.acct, "type": "AWS::S3::Bucket", "ARN": f"arn:aws:s3:::{q['bucketName']}"}],
       aed=_s3_aed("out"), rid="s3"),
    # ---------------- S3 management ----------------
    _A("s3:ListBuckets", M, True, req=lambda c, r, d: {"Host": "s3.amazonaws.com"}, aed=_s3_aed("out"), rid="s3", nvar=2),
    _A("s3:GetBucketLocation", M, True, req=_s3_bucket_req("location"), res=_bucket_res, aed=_s3_aed("out"), rid="s3"),
    _A("s3:GetBucketAcl", M, True, req=_s3_bucket_req("acl"), res=_bucket_res, aed=_s3_aed("out"), rid="s3"),
    _A("s3:GetBucketAcl-trail", M, True, nvar=1,
       req=lambda c, r, d: {"bucketName": c.trail_bucket, "Host": f"{c.trail_bucket}.s3.{c.region}.amazonaws.com", "acl": ""},
       res=_bucket_res, aed=_s3_aed("out"), rid="s3", err_rate=0),
    _A("s3:GetBucketPolicy", M, True, req=_s3_bucket_req("policy"), res=_bucket_res, aed=_s3_aed("out"), rid="s3",
       err_rate=.3, errs=[("NoSuchBucketPolicy", "The bucket policy does not exist", 30)]),
    _A("s3:GetBucketVersioning", M, True, req=_s3_bucket_req("versioning"), res=_bucket_res, aed=_s3_aed("out"), rid="s3"),
    _A("s3:PutBucketPolicy", M, False, req=lambda c, r, d: {**_s3_bucket_req("policy")(c, r, d), "bucketPolicy": {
        "Version": "2012-10-17", "Statement": [{"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*",
                                                "Action": "s3:*", "Resource": ["arn:aws:s3:::*"],
                                                "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]}},
       res=_bucket_res, aed=_s3_aed(""), rid="s3"),
    _A("s3:CreateBucket", M, False, req=lambda c, r, d: {"bucketName": f"example-scratch-{_hex(r, 8)}",
                                                          "Host": "s3.amazonaws.com",
                                                          "x-amz-object-ownership": "BucketOwnerEnforced"},
       res=_bucket_res, aed=_s3_aed(""), rid="s3",
       errs=[("BucketAlreadyOwnedByYou", "Your previous request to create the named bucket succeeded and you already own it.", 3)]),
    # ---------------- EC2 ----------------
    _A("ec2:DescribeInstances", M, True, req=lambda c, r, d: r.choice([
        {"instancesSet": {}, "filterSet": {}},
        _ec2_items("instancesSet", [("instanceId", r.choice(c.instances))]) | {"filterSet": {}},
        {"instancesSet": {}, "filterSet": {"items": [{"name": "tag:Name", "valueSet": {"items": [{"value": "orders-api"}]}}]}},
        {"maxResults": 1000, "instancesSet": {}, "filterSet": {"items": [{"name": "instance-state-name",
                                                                          "valueSet": {"items": [{"value": "running"}]}}]}}]),
       errs=[("Client.InvalidInstanceID.NotFound", "The instance ID 'i-0{h}' does not exist", 2)]),
    _A("ec2:DescribeSecurityGroups", M, True, req=lambda c, r, d: r.choice([
        {"securityGroupSet": {}, "securityGroupIdSet": {}, "filterSet": {}},
        {"securityGroupSet": {}, "securityGroupIdSet": {"items": [{"groupId": r.choice(c.sgs)}]}, "filterSet": {}}])),
    _A("ec2:DescribeVpcs", M, True, req=lambda c, r, d: {"vpcSet": {}, "filterSet": {}}, nvar=1),
    _A("ec2:DescribeSubnets", M, True, req=lambda c, r, d: r.choice([
        {"subnetSet": {}, "filterSet": {}},
        {"subnetSet": {}, "filterSet": {"items": [{"name": "vpc-id", "valueSet": {"items": [{"value": r.choice(c.vpcs)}]}}]}}])),
    _A("ec2:DescribeVolumes", M, True, req=lambda c, r, d: r.choice([
        {"volumeSet": {}, "filterSet": {}}, _ec2_items("volumeSet", [("volumeId", r.choice(c.volumes))]) | {"filterSet": {}}])),
    _A("ec2:DescribeNetworkInterfaces", M, True, req=lambda c, r, d: r.choice([
        {"networkInterfaceIdSet": {}, "filterSet": {}},
        {"networkInterfaceIdSet": {"items": [{"networkInterfaceId": r.choice(c.enis)}]}, "filterSet": {}}])),
    _A("ec2:DescribeInstanceStatus", M, True, req=lambda c, r, d: {
        "instancesSet": {"items": [{"instanceId": i} for i in r.sample(c.instances, r.randrange(1, 4))]},
        "filterSet": {}, "includeAllInstances": True}),
    _A("ec2:DescribeImages", M, True, req=lambda c, r, d: {"executableBySet": {}, "imagesSet": {"items": [
        {"imageId": r.choice(c.amis)}]}, "ownersSet": {}, "availabilitySet": {}, "filterSet": {}}),
    _A("ec2:DescribeRegions", M, True, req=lambda c, r, d: {"regionSet": {}, "allRegions": r.random() < .5}, nvar=2),
    _A("ec2:RunInstances", M, False, req=lambda c, r, d: {
        "instancesSet": {"items": [{"imageId": r.choice(c.amis), "minCount": 1, "maxCount": 1,
                                    "instanceType": r.choice(("t3.micro", "m6i.large", "c7g.xlarge"))}]},
        "groupSet": {"items": [{"groupId": r.choice(c.sgs)}]}, "subnetId": r.choice(c.subnets),
        "iamInstanceProfile": {"name": "orders-api-ec2-role"}, "disableApiTermination": False,
        "metadataOptions": {"httpTokens": "required", "httpPutResponseHopLimit": 2},
        "clientToken": _uuid(r)}, resp=_run_instances_resp, patch=_p_run, nvar=6, err_rate=.03,
       errs=[("Client.InsufficientInstanceCapacity", "We currently do not have sufficient capacity in the Availability "
              "Zone you requested. Our system will be working on provisioning additional capacity.", 1)],
       res=lambda c, q: None),
    _A("ec2:TerminateInstances", M, False, req=lambda c, r, d: _ec2_items("instancesSet", [("instanceId", r.choice(c.instances))]),
       resp=lambda c, r, d, q: {"requestId": _uuid(r), "instancesSet": {"items": [
           {"instanceId": q["instancesSet"]["items"][0]["instanceId"], "currentState": {"code": 32, "name": "shutting-down"},
            "previousState": {"code": 16, "name": "running"}}]}}),
    _A("ec2:StartInstances", M, False, req=lambda c, r, d: _ec2_items("instancesSet", [("instanceId", r.choice(c.instances))]),
       resp=lambda c, r, d, q: {"requestId": _uuid(r), "instancesSet": {"items": [
           {"instanceId": q["instancesSet"]["items"][0]["instanceId"], "currentState": {"code": 0, "name": "pending"},
            "previousState": {"code": 80, "name": "stopped"}}]}}),
    _A("ec2:StopInstances", M, False, req=lambda c, r, d: {**_ec2_items("instancesSet", [("instanceId", r.choice(c.instances))]),
                                                           "force": False},
       resp=lambda c, r, d, q: {"requestId": _uuid(r), "instancesSet": {"items": [
           {"instanceId": q["instancesSet"]["items"][0]["instanceId"], "currentState": {"code": 64, "name": "stopping"},
            "previousState": {"code": 16, "name": "running"}}]}}),
    _A("ec2:CreateTags", M, False, req=lambda c, r, d: {
        "resourcesSet": {"items": [{"resourceId": r.choice(c.instances + c.volumes)}]},
        "tagSet": {"items": [{"key": r.choice(("Name", "team", "cost-center", "aws:autoscaling:groupName")),
                              "value": r.choice(("orders-api", "platform", "cc-1042", "orders-api-asg"))}]}},
       resp=lambda c, r, d, q: {"requestId": _uuid(r), "_return": True}),
    _A("ec2:AuthorizeSecurityGroupIngress", M, False, req=lambda c, r, d: {
        "groupId": r.choice(c.sgs), "ipPermissions": {"items": [{"ipProtocol": "tcp", "fromPort": p, "toPort": p,
                                                                 "groups": {}, "ipRanges": {"items": [{"cidrIp": cidr}]},
                                                                 "ipv6Ranges": {}, "prefixListIds": {}}
                                                                for p, cidr in [r.choice([(443, "0.0.0.0/0"), (22, "203.0.113.0/24"),
                                                                                          (5432, "10.0.0.0/16"), (3389, "0.0.0.0/0")])]]}},
       resp=lambda c, r, d, q: {"requestId": _uuid(r), "_return": True, "securityGroupRuleSet": {"items": [
           {"groupOwnerId": c.acct, "groupId": q["groupId"], "securityGroupRuleId": f"sgr-0{_hex(r, 16)}", "isEgress": False,
            "ipProtocol": "tcp", "fromPort": q["ipPermissions"]["items"][0]["fromPort"],
            "toPort": q["ipPermissions"]["items"][0]["toPort"],
            "cidrIpv4": q["ipPermissions"]["items"][0]["ipRanges"]["items"][0]["cidrIp"]}]}},
       errs=[("Client.InvalidPermission.Duplicate", "the specified rule \"peer: 0.0.0.0/0, TCP, from port: 443, to port: 443, "
              "ALLOW\" already exists", 2)], err_rate=.05),
    _A("ec2:CreateNetworkInterface", M, False, req=lambda c, r, d: {
        "subnetId": r.choice(c.subnets), "description": "ELB app/orders-api-alb/" + _hex(r, 16),
        "groupSet": {"items": [{"groupId": r.choice(c.sgs)}]}, "privateIpAddressesSet": {}, "ipv6AddressCount": 0,
        "clientToken": _uuid(r)},
       resp=lambda c, r, d, q: {"requestId": _uuid(r), "networkInterface": {
           "networkInterfaceId": f"eni-0{_hex(r, 16)}", "subnetId": q["subnetId"], "vpcId": c.vpcs[0],
           "availabilityZone": f"{c.region}b", "description": q["description"], "ownerId": c.acct,
           "requesterId": "amazon-elb", "requesterManaged": True, "status": "pending",
           "privateIpAddress": r.choice(c.private_ips), "sourceDestCheck": True, "interfaceType": "interface"}}),
    _A("ec2:DeleteNetworkInterface", M, False, req=lambda c, r, d: {"networkInterfaceId": r.choice(c.enis)},
       resp=lambda c, r, d, q: {"requestId": _uuid(r), "_return": True}),
    # ---------------- IAM (global) ----------------
    _A("iam:GetUser", M, True, glob=True, req=lambda c, r, d: r.choice([None, {"userName": r.choice(["ci-deployer", "federation-broker"])}]),
       errs=[("NoSuchEntityException", "The user with name {name} cannot be found.", 2)]),
    _A("iam:ListUsers", M, True, glob=True, req=lambda c, r, d: None, nvar=1),
    _A("iam:ListRoles", M, True, glob=True, req=lambda c, r, d: r.choice([None, {"maxItems": 100}, {"pathPrefix": "/aws-reserved/"}])),
    _A("iam:GetRole", M, True, glob=True, req=lambda c, r, d: {"roleName": r.choice(
        ["orders-api-ec2-role", "github-actions-deploy", "monitoring-readonly", "okta-admin", "okta-engineer",
         "order-processor-exec-role", "OrganizationAccountAccessRole"])},
       errs=[("NoSuchEntityException", "The role with name {name} cannot be found.", 3)]),
    _A("iam:ListAttachedRolePolicies", M, True, glob=True, req=lambda c, r, d: {"roleName": r.choice(
        ["orders-api-ec2-role", "github-actions-deploy", "okta-engineer", "order-processor-exec-role"])}),
    _A("iam:GetPolicyVersion", M, True, glob=True, req=lambda c, r, d: {
        "policyArn": f"arn:aws:iam::{c.acct}:policy/{r.choice(['orders-api-s3', 'deploy-boundary', 'read-secrets'])}",
        "versionId": f"v{r.randrange(1, 9)}"}),
    _A("iam:ListMFADevices", M, True, glob=True, req=lambda c, r, d: None, nvar=1),
    _A("iam:GetAccountSummary", M, True, glob=True, req=lambda c, r, d: None, nvar=1),
    _A("iam:CreateAccessKey", M, False, glob=True, req=lambda c, r, d: {"userName": r.choice(["ci-deployer", "federation-broker"])},
       resp=lambda c, r, d, q: {"accessKey": {"userName": q["userName"], "accessKeyId": _key_id(r, "AKIA"), "status": "Active",
                                              "createDate": _pretty_date(d or 0)}}, patch=_p_created("accessKey"), nvar=4,
       errs=[("LimitExceededException", "Cannot exceed quota for AccessKeysPerUser: 2", 3)], err_rate=.1),
    _A("iam:UpdateAccessKey", M, False, glob=True, req=lambda c, r, d: {"userName": "ci-deployer", "accessKeyId": _key_id(r, "AKIA"),
                                                                        "status": "Inactive"}),
    _A("iam:DeleteAccessKey", M, False, glob=True, req=lambda c, r, d: {"userName": "ci-deployer", "accessKeyId": _key_id(r, "AKIA")}),
    _A("iam:AttachRolePolicy", M, False, glob=True, req=lambda c, r, d: {
        "roleName": r.choice(["orders-api-ec2-role", "order-processor-exec-role", "github-actions-deploy"]),
        "policyArn": r.choice(["arn:aws:iam::aws:policy/AmazonS3ReadOnlyAccess", "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
                               "arn:aws:iam::aws:policy/AdministratorAccess"])}, err_rate=.04),
    _A("iam:PutRolePolicy", M, False, glob=True, req=lambda c, r, d: {
        "roleName": r.choice(["orders-api-ec2-role", "order-processor-exec-role"]), "policyName": "inline-access",
        "policyDocument": '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["dynamodb:GetItem",'
                          '"dynamodb:PutItem"],"Resource":"*"}]}'}),
    _A("iam:CreateRole", M, False, glob=True, req=lambda c, r, d: {
        "roleName": f"svc-{_hex(r, 6)}-role", "assumeRolePolicyDocument": '{"Version":"2012-10-17","Statement":[{"Effect":"Allow",'
        '"Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}'},
       resp=lambda c, r, d, q: {"role": {"path": "/", "roleName": q["roleName"], "roleId": _key_id(r, "AROA"),
                                         "arn": c.arn("role", q["roleName"]), "createDate": _pretty_date(d or 0),
                                         "assumeRolePolicyDocument": "%7B%22Version%22%3A%222012-10-17%22%7D"}},
       patch=_p_created("role"), nvar=4, errs=[("EntityAlreadyExists", "Role with name {name} already exists.", 2)]),
    # ---------------- STS ----------------
    _A("sts:GetCallerIdentity", M, True, req=lambda c, r, d: None, nvar=1),
    _A("sts:AssumeRole-lambda", M, True, patch=_p_creds(12 * 3600), nvar=12, req=lambda c, r, d: (lambda fn: {
        "roleArn": c.arn("role", f"{fn}-exec-role"), "roleSessionName": fn})(r.choice(c.functions[:3])),
       resp=_assume_role_resp, res=_role_res, err_rate=0),
    _A("sts:AssumeRole-cross", M, True, patch=_p_creds(3600), nvar=8, req=lambda c, r, d: {
        "roleArn": c.arn("role", r.choice(["OrganizationAccountAccessRole", "cross-account-readonly", "monitoring-readonly"])),
        "roleSessionName": r.choice(["deploy", "audit", "cloud-monitor", f"session-{_hex(r, 8)}"]),
        "durationSeconds": 3600}, resp=_assume_role_resp, res=_role_res, err_rate=.04),
    _saml_action("admin", "okta-admin"),
    _saml_action("eng", "okta-engineer"),
    _A("sts:AssumeRoleWithWebIdentity", M, True, patch=_p_creds(3600), nvar=6, req=lambda c, r, d: {
        "roleArn": c.arn("role", "github-actions-deploy"), "roleSessionName": f"GitHubActions-{_hex(r, 10)}",
        "durationSeconds": 3600},
       resp=lambda c, r, d, q: {**_assume_role_resp(c, r, d, q), "subjectFromWebIdentityToken":
                                "repo:example-org/orders-service:ref:refs/heads/main",
                                "provider": c.oidc_gh, "audience": "sts.amazonaws.com"},
       res=lambda c, q: [{"accountId": c.acct, "type": "AWS::IAM::Role", "ARN": q["roleArn"]}],
       aed=lambda c, r, q: {"identityProviderConnectionVerificationMethod": "IAMTrustStore"}),
    _A("sts:GetFederationToken", M, True, patch=_p_creds(43200), nvar=4, req=lambda c, r, d: {"name": "support-session",
                                                                                     "durationSeconds": 43200},
       resp=lambda c, r, d, q: {"credentials": {"accessKeyId": _key_id(r, "ASIA"), "sessionToken": r.choice(c.sessions_tokens),
                                                "expiration": _pretty_date((d or 0) + 43200)},
                                "federatedUser": {"federatedUserId": f"{c.acct}:support", "arn": f"arn:aws:sts::{c.acct}:federated-user/support"},
                                "packedPolicySize": 9}),
    # ---------------- KMS ----------------
    _A("kms:Decrypt", M, True, req=lambda c, r, d: {"encryptionAlgorithm": "SYMMETRIC_DEFAULT", "encryptionContext": _enc_ctx(c, r)},
       res=_kms_res, err_rate=.004, errs=[("InvalidCiphertextException", "", 1)]),
    _A("kms:GenerateDataKey", M, True, req=lambda c, r, d: {"keyId": c.arn("key", r.choice(c.kms_keys)), "keySpec": "AES_256",
                                                            "encryptionContext": _enc_ctx(c, r)}, res=_kms_res, err_rate=.004),
    _A("kms:Encrypt", M, True, req=lambda c, r, d: {"keyId": r.choice(c.kms_aliases), "encryptionAlgorithm": "SYMMETRIC_DEFAULT"},
       res=_kms_res),
    _A("kms:DescribeKey", M, True, req=lambda c, r, d: {"keyId": r.choice(c.kms_keys)}, res=_kms_res),
    _A("kms:ListAliases", M, True, req=lambda c, r, d: None, nvar=1),
    _A("kms:RotateKey", M, False, etype="AwsServiceEvent", req=lambda c, r, d: None, rid=None, nvar=4,
       res=lambda c, q: [{"accountId": c.acct, "type": "AWS::KMS::Key", "ARN": c.arn("key", c.kms_keys[0])}], special="service"),
    # ---------------- Lambda ----------------
    _A("lambda:Invoke", D, False, req=lambda c, r, d: (lambda fn: {"functionName": c.arn("function", fn),
                                                                    "invocationType": r.choice(["RequestResponse", "Event"])})(
        r.choice(c.functions)), res=_res("AWS::Lambda::Function", "function", "functionName"),
       aed=lambda c, r, q: {"functionVersion": f"{q['functionName']}:$LATEST"}, err_rate=.01,
       errs=[("ResourceNotFoundException", "Function not found: {res}", 1)]),
    _A("lambda:ListFunctions20150331", M, True, req=lambda c, r, d: None, nvar=1),
    _A("lambda:GetFunction20150331v2", M, True, req=lambda c, r, d: {"functionName": r.choice(c.functions)}),
    _A("lambda:UpdateFunctionCode20150331v2", M, False, req=lambda c, r, d: {
        "functionName": r.choice(c.functions), "s3Bucket": c.buckets[4], "s3Key": f"artifacts/builds/{_hex(r, 12)}/bundle.zip",
        "publish": True, "dryRun": False},
       resp=lambda c, r, d, q: {"functionName": q["functionName"], "functionArn": c.arn("function", q["functionName"]),
                                "runtime": "python3.12", "role": c.arn("role", f"{q['functionName']}-exec-role"),
                                "handler": "app.handler", "codeSize": r.randrange(10_000, 5_000_000), "timeout": 30,
                                "memorySize": 512, "lastModified": "2024-05-14T10:11:12.000+0000",
                                "codeSha256": _b64(r, 32), "version": str(r.randrange(2, 80)), "state": "Active",
                                "lastUpdateStatus": "InProgress", "packageType": "Zip", "architectures": ["arm64"]}),
    # ---------------- DynamoDB ----------------
    _A("dynamodb:GetItem", D, True, req=lambda c, r, d: {"tableName": r.choice(c.tables), "key": _ddb_key(r),
                                                         "consistentRead": r.random() < .2, "projectionExpression": None
                                                         if r.random() < .7 else "HIDDEN_DUE_TO_SECURITY_REASONS"},
       res=_ddb_res, err_rate=.006),
    _A("dynamodb:PutItem", D, False, req=lambda c, r, d: {"tableName": r.choice(c.tables), "key": _ddb_key(r),
                                                          "conditionExpression": "HIDDEN_DUE_TO_SECURITY_REASONS"
                                                          if r.random() < .4 else None},
       res=_ddb_res, err_rate=.02,
       errs=[("ConditionalCheckFailedException", "The conditional request failed", 6)]),
    _A("dynamodb:UpdateItem", D, False, req=lambda c, r, d: {"tableName": r.choice(c.tables), "key": _ddb_key(r),
                                                             "updateExpression": "HIDDEN_DUE_TO_SECURITY_REASONS",
                                                             "returnValues": "UPDATED_NEW"},
       res=_ddb_res, errs=[("ConditionalCheckFailedException", "The conditional request failed", 3)]),
    _A("dynamodb:Query", D, True, req=lambda c, r, d: {"tableName": r.choice(c.tables), "limit": r.choice([None, 25, 100]),
                                                       "indexName": r.choice([None, "gsi1", "by-customer"]),
                                                       "keyConditionExpression": "HIDDEN_DUE_TO_SECURITY_REASONS",
                                                       "scanIndexForward": r.random() < .5},
       res=_ddb_res, errs=[("ProvisionedThroughputExceededException", "The level of configured provisioned throughput for "
                            "the table was exceeded. Consider increasing your provisioning level with the UpdateTable API.", 2)]),
    _A("dynamodb:BatchWriteItem", D, False, req=lambda c, r, d: {"requestItems": [{"tableName": r.choice(c.tables),
                                                                                    "key": _ddb_key(r)}
                                                                                   for _ in range(r.randrange(1, 5))]},
       res=lambda c, q: [{"accountId": c.acct, "type": "AWS::DynamoDB::Table", "ARN": c.arn("table", q["requestItems"][0]["tableName"])}]),
    _A("dynamodb:DescribeTable", M, True, req=lambda c, r, d: {"tableName": r.choice(c.tables)}, res=_ddb_res),
    _A("dynamodb:ListTables", M, True, req=lambda c, r, d: None, nvar=1),
    # ---------------- SQS / SNS data ----------------
    _A("sqs:SendMessage", D, False, req=lambda c, r, d: {"queueUrl": f"https://sqs.{c.region}.amazonaws.com/{c.acct}/{r.choice(c.queues)}",
                                                         "messageBody": "HIDDEN_DUE_TO_SECURITY_REASONS",
                                                         "messageAttributes": "HIDDEN_DUE_TO_SECURITY_REASONS"},
       resp=lambda c, r, d, q: {"mD5OfMessageBody": _hex(r, 32), "messageId": _uuid(r)},
       res=lambda c, q: [{"accountId": c.acct, "type": "AWS::SQS::Queue", "ARN": c.arn("queue", q["queueUrl"].rsplit("/", 1)[1])}]),
    _A("sqs:ReceiveMessage", D, True, req=lambda c, r, d: {"queueUrl": f"https://sqs.{c.region}.amazonaws.com/{c.acct}/{r.choice(c.queues)}",
                                                           "maxNumberOfMessages": 10, "waitTimeSeconds": 20,
                                                           "attributeNames": ["All"]},
       res=lambda c, q: [{"accountId": c.acct, "type": "AWS::SQS::Queue", "ARN": c.arn("queue", q["queueUrl"].rsplit("/", 1)[1])}]),
    _A("sqs:DeleteMessage", D, False, req=lambda c, r, d: {"queueUrl": f"https://sqs.{c.region}.amazonaws.com/{c.acct}/{r.choice(c.queues)}",
                                                           "receiptHandle": "HIDDEN_DUE_TO_SECURITY_REASONS"},
       res=lambda c, q: [{"accountId": c.acct, "type": "AWS::SQS::Queue", "ARN": c.arn("queue", q["queueUrl"].rsplit("/", 1)[1])}]),
    _A("sqs:GetQueueAttributes", M, True, req=lambda c, r, d: {"queueUrl": f"https://sqs.{c.region}.amazonaws.com/{c.acct}/{r.choice(c.queues)}",
                                                               "attributeNames": ["ApproximateNumberOfMessages"]}),
    _A("sns:Publish", D, False, req=lambda c, r, d: {"topicArn": c.arn("topic", r.choice(c.topics)),
                                                     "message": "HIDDEN_DUE_TO_SECURITY_REASONS",
                                                     "subject": "HIDDEN_DUE_TO_SECURITY_REASONS",
                                                     "messageAttributes": "HIDDEN_DUE_TO_SECURITY_REASONS"},
       resp=lambda c, r, d, q: {"messageId": _uuid(r)}, res=_res("AWS::SNS::Topic", "topic", "topicArn")),
    _A("sns:ListTopics", M, True, req=lambda c, r, d: None, nvar=1),
    # ---------------- SSM / Secrets Manager ----------------
    _A("ssm:GetParameter", M, True, req=lambda c, r, d: {"name": r.choice(c.params), "withDecryption": r.random() < .5},
       res=lambda c, q: [{"accountId": c.acct, "ARN": c.arn("param", q["name"])}], err_rate=.01,
       errs=[("ParameterNotFound", "", 4)]),
    _A("ssm:PutParameter", M, False, req=lambda c, r, d: {"name": r.choice(c.params), "type": "String",
                                                          "value": "HIDDEN_DUE_TO_SECURITY_REASONS", "overwrite": True},
       resp=lambda c, r, d, q: {"version": r.randrange(2, 40), "tier": "Standard"},
       res=lambda c, q: [{"accountId": c.acct, "ARN": c.arn("param", q["name"])}]),
    _A("ssm:UpdateInstanceInformation", M, False, req=lambda c, r, d: {
        "instanceId": r.choice(c.instances), "agentVersion": "3.3.484.0", "agentStatus": "Active",
        "platformType": "Linux", "platformName": "Amazon Linux", "platformVersion": "2023", "iPAddress": r.choice(c.private_ips),
        "computerName": f"ip-10-0-{r.randrange(256)}-{r.randrange(256)}.ec2.internal", "agentName": "amazon-ssm-agent",
        "availabilityZone": f"{c.region}a", "availabilityZoneId": "use1-az4"}),
    _A("ssm:ListInstanceAssociations", M, True, req=lambda c, r, d: {"instanceId": r.choice(c.instances), "maxResults": 20}),
    _A("secretsmanager:GetSecretValue", M, True, req=lambda c, r, d: {"secretId": c.arn("secret", r.choice(c.secrets))},
       err_rate=.008, errs=[("ResourceNotFoundException", "Secrets Manager can't find the specified secret.", 3)]),
    _A("secretsmanager:DescribeSecret", M, True, req=lambda c, r, d: {"secretId": r.choice(c.secrets).rsplit("-", 1)[0]}),
    _A("secretsmanager:ListSecrets", M, True, req=lambda c, r, d: r.choice([None, {"maxResults": 100}]), nvar=2),
    _A("secretsmanager:RotationSucceeded", M, False, etype="AwsServiceEvent", special="service", rid=None, nvar=4,
       req=lambda c, r, d: None, aed=lambda c, r, q: (lambda s: {"SecretId": c.arn("secret", s)})(r.choice(c.secrets))),
    # ---------------- CloudTrail / CloudWatch / Logs ----------------
    _A("cloudtrail:LookupEvents", M, True, req=lambda c, r, d: r.choice([
        {"maxResults": 50}, {"lookupAttributes": [{"attributeKey": "EventName", "attributeValue": "ConsoleLogin"}], "maxResults": 50},
        {"lookupAttributes": [{"attributeKey": "Username", "attributeValue": "ci-deployer"}]}])),
    _A("cloudtrail:DescribeTrails", M, True, req=lambda c, r, d: {"includeShadowTrails": True}, nvar=1),
    _A("cloudtrail:GetTrailStatus", M, True, req=lambda c, r, d: {"name": c.arn("trail", "org-trail", GLOBAL_REGION)}, nvar=1),
    _A("monitoring:GetMetricData", M, True, req=lambda c, r, d: {
        "metricDataQueries": [{"id": f"m{i}", "metricStat": {"metric": {"namespace": r.choice(["AWS/EC2", "AWS/Lambda", "AWS/SQS"]),
                                                                            "metricName": r.choice(["CPUUtilization", "Invocations", "Errors",
                                                                                                    "ApproximateAgeOfOldestMessage"])},
                                                               "period": 300, "stat": "Average"}} for i in range(r.randrange(1, 4))],
        "startTime": "May 14, 2024, 9:00:00 AM", "endTime": "May 14, 2024, 10:00:00 AM"}),
    _A("monitoring:ListMetrics", M, True, req=lambda c, r, d: {"namespace": r.choice(["AWS/EC2", "AWS/Lambda", "AWS/DynamoDB"])}),
    _A("monitoring:DescribeAlarms", M, True, req=lambda c, r, d: r.choice([None, {"stateValue": "ALARM"}, {"maxRecords": 100}])),
    _A("logs:CreateLogStream", M, False, req=lambda c, r, d: {"logGroupName": r.choice(c.log_groups),
                                                              "logStreamName": f"2024/05/14/[$LATEST]{_hex(r, 32)}"},
       errs=[("ResourceAlreadyExistsException", "The specified log stream already exists", 3)]),
    _A("logs:DescribeLogGroups", M, True, req=lambda c, r, d: r.choice([None, {"logGroupNamePrefix": "/aws/lambda/"}])),
    _A("logs:FilterLogEvents", M, True, req=lambda c, r, d: {"logGroupName": r.choice(c.log_groups), "startTime": 1715677200000,
                                                             "filterPattern": r.choice(["ERROR", "\"timed out\"", "?Exception ?ERROR"]),
                                                             "interleaved": True}),
    # ---------------- ECR / CloudFormation / ELB / Auto Scaling / Health / Organizations ----------------
    _A("ecr:GetAuthorizationToken", M, True, req=lambda c, r, d: None, nvar=1),
    _A("ecr:BatchGetImage", M, True, req=lambda c, r, d: {"repositoryName": r.choice(c.repos), "registryId": c.acct,
                                                          "imageIds": [{"imageTag": r.choice(["latest", "v1.42.0", "main-" + _hex(r, 7)])}],
                                                          "acceptedMediaTypes": ["application/vnd.docker.distribution.manifest.v2+json"]},
       res=lambda c, q: [{"accountId": c.acct, "ARN": c.arn("repo", q["repositoryName"])}]),
    _A("ecr:GetDownloadUrlForLayer", M, True, req=lambda c, r, d: {"repositoryName": r.choice(c.repos), "registryId": c.acct,
                                                                   "layerDigest": f"sha256:{_hex(r, 64)}"},
       res=lambda c, q: [{"accountId": c.acct, "ARN": c.arn("repo", q["repositoryName"])}]),
    _A("ecr:PutImage", M, False, req=lambda c, r, d: {"repositoryName": r.choice(c.repos), "registryId": c.acct,
                                                      "imageTag": "main-" + _hex(r, 7), "imageManifest": "HIDDEN_DUE_TO_SECURITY_REASONS"},
       resp=lambda c, r, d, q: {"image": {"registryId": c.acct, "repositoryName": q["repositoryName"],
                                          "imageId": {"imageDigest": f"sha256:{_hex(r, 64)}", "imageTag": q["imageTag"]}}},
       res=lambda c, q: [{"accountId": c.acct, "ARN": c.arn("repo", q["repositoryName"])}]),
    _A("cloudformation:DescribeStacks", M, True, req=lambda c, r, d: r.choice([None, {"stackName": r.choice(c.stacks)}])),
    _A("elasticloadbalancing:DescribeTargetHealth", M, True, req=lambda c, r, d: {
        "targetGroupArn": f"arn:aws:elasticloadbalancing:{c.region}:{c.acct}:targetgroup/{r.choice(['orders-api', 'grpc'])}/{_hex(r, 16)}"},
       api="2015-12-01"),
    _A("elasticloadbalancing:DescribeLoadBalancers", M, True, req=lambda c, r, d: None, api="2015-12-01", nvar=1),
    _A("autoscaling:DescribeAutoScalingGroups", M, True, req=lambda c, r, d: r.choice([None, {"autoScalingGroupNames": [r.choice(c.asgs)]}])),
    _A("health:DescribeEventAggregates", M, True, glob=True, req=lambda c, r, d: {"aggregateField": "eventTypeCategory",
                                                                                   "filter": {"eventStatusCodes": ["open", "upcoming"]}}, nvar=1),
    _A("organizations:DescribeOrganization", M, True, glob=True, req=lambda c, r, d: None, nvar=1),
    # ---------------- console sign-in ----------------
    _A("signin:ConsoleLogin", M, False, glob=True, special="login", rid=None, req=lambda c, r, d: None, nvar=1, err_rate=.08),
    _A("signin:ConsoleLogin-saml", M, False, glob=True, special="login", rid=None, req=lambda c, r, d: None, nvar=1, err_rate=0),
]
for _i, _a in enumerate(ACTIONS):
    _a.idx = _i
ACTION_BY_KEY = {a.key: a for a in ACTIONS}

# cross-account actions (owner's resource, caller from another account) and network activity actions
CROSS_ACTIONS = [("sts:AssumeRole-cross", 5), ("kms:Decrypt", 3), ("s3:GetObject", 3), ("kms:GenerateDataKey", 1),
                 ("s3:PutObject", 1)]
NETWORK_ACTIONS = [("kms:Decrypt", 10), ("secretsmanager:GetSecretValue", 6), ("s3:GetObject", 6), ("kms:GenerateDataKey", 4),
                   ("sts:GetCallerIdentity", 3), ("ssm:GetParameter", 3), ("sqs:SendMessage", 2), ("s3:PutObject", 2),
                   ("ec2:DescribeInstances", 1.5), ("sts:AssumeRole", 1.2), ("kms:ListKeys", 1), ("lambda:Invoke", 1),
                   ("dynamodb:GetItem", 1), ("s3:ListBuckets", .6), ("cloudtrail:LookupEvents", .3)]
_NA_CDF = np.cumsum([w for _, w in NETWORK_ACTIONS]) / sum(w for _, w in NETWORK_ACTIONS)
VPCE_DENIED = "The request was denied due to a VPC endpoint policy"
# API candidates for injected anomalies
BURST_CANDIDATES = ["s3:GetObject", "secretsmanager:GetSecretValue", "ec2:DescribeInstances", "kms:Decrypt",
                    "ssm:GetParameter", "ec2:CreateTags", "s3:PutObject", "dynamodb:Query", "iam:ListRoles",
                    "lambda:Invoke", "sqs:SendMessage"]
SPIKE_CANDIDATES = ["s3:GetObject", "kms:Decrypt", "secretsmanager:GetSecretValue", "dynamodb:GetItem",
                    "ssm:GetParameter", "dynamodb:PutItem", "sqs:SendMessage", "kms:GenerateDataKey"]


# ---------------------------------------------------------------------------------------------------------
# the worker: one (account, region, hour) unit

_CFG: dict = {}
_CTX: dict = {}
_DIRS: set = set()


def _init_worker(cfg: dict) -> None:
    global _CFG
    _CFG = cfg
    _CTX.clear()
    _DIRS.clear()


def _ctx(a: int, ri: int) -> _Ctx:
    key = (a, ri)
    c = _CTX.get(key)
    if c is None:
        if len(_CTX) > 48:                  # ~2 MB each; units arrive grouped by account and region
            _CTX.clear()
        c = _CTX[key] = _Ctx(_CFG["seed"], _CFG["accounts"], a, _CFG["regions"][ri], _CFG["externals"])
    return c


def _err_text(template: str, p_arn: str, act: _Action, v: tuple, rng_hex: str) -> str:
    res = "*"
    if v[2]:
        res = v[2][0].get("ARN") or v[2][0].get("ARNPrefix") or "*"
    elif v[0]:
        for val in v[0].values():
            if isinstance(val, str) and val.startswith("arn:"):
                res = val
                break
    name = ""
    if v[0]:
        name = v[0].get("roleName") or v[0].get("userName") or ""
    return template.format(arn=p_arn or "anonymous", perm=act.perm, res=res, name=name or "unknown", h=rng_hex, rid="")


def _login_record(c: _Ctx, p: _Principal, uid: dict, act: _Action, client: tuple, ip: str, t: str, eid: str,
                  fail: bool) -> dict:
    saml = act.key.endswith("-saml")
    uid = p.login_uid or {k: v for k, v in uid.items() if k != "accessKeyId"}
    mfa = "No" if fail else p.mfa
    aed = {"LoginTo": "https://console.aws.amazon.com/console/home?hashArgs=%23&isauthcode=true&state=hashArgsFromTB_"
                      f"{c.region}_{eid[:16].replace('-', '')}", "MobileVersion": "No", "MFAUsed": mfa}
    if saml:
        aed["SamlProviderArn"] = c.saml_provider
    elif mfa == "Yes":
        aed["MFAIdentifier"] = f"arn:aws:iam::{c.acct}:mfa/{uid.get('userName') or 'root-account-mfa-device'}"
        aed["MfaType"] = "Virtual MFA"
    if fail:
        if uid.get("type") == "IAMUser" and int(eid[-1], 16) < 5:
            uid = {"type": "IAMUser", "principalId": "", "accountId": c.acct, "accessKeyId": "",
                   "userName": "HIDDEN_DUE_TO_SECURITY_REASONS"}
    if not client[0].startswith("Mozilla/"):     # a sign-in comes from the user's browser
        web = [cl for cl in p.clients if cl[0].startswith("Mozilla/")] or [(UA_BROWSERS[0], tuple(c.office_ips))]
        client = web[int(eid[:2], 16) % len(web)]
        ip = client[1][int(eid[2:4], 16) % len(client[1])]
    rec = {"eventVersion": "1.11", "userIdentity": uid, "eventTime": t, "eventSource": "signin.amazonaws.com",
           "eventName": "ConsoleLogin", "awsRegion": c.region, "sourceIPAddress": ip, "userAgent": client[0]}
    if fail:
        rec["errorMessage"] = "Failed authentication"
    rec.update({"requestParameters": None, "responseElements": {"ConsoleLogin": "Failure" if fail else "Success"},
                "additionalEventData": aed, "eventID": eid, "readOnly": False, "eventType": "AwsConsoleSignIn",
                "managementEvent": True, "recipientAccountId": c.acct, "eventCategory": "Management",
                "tlsDetails": c.tls("signin.aws.amazon.com")[1]})
    return rec


def _service_record(c: _Ctx, act: _Action, v: tuple, t: str, eid: str, shared: str) -> dict:
    rec = {"eventVersion": act.version, "userIdentity": {"accountId": c.acct, "invokedBy": act.source},
           "eventTime": t, "eventSource": act.source, "eventName": act.name, "awsRegion": c.region,
           "sourceIPAddress": act.source if act.svc != "kms" else AWS_INTERNAL,
           "userAgent": act.source if act.svc != "kms" else AWS_INTERNAL,
           "requestParameters": None, "responseElements": None}
    if v[3] is not None:
        rec["additionalEventData"] = v[3]
    rec["eventID"] = eid
    rec["readOnly"] = False
    if v[2]:
        rec["resources"] = v[2]
    rec.update({"eventType": "AwsServiceEvent", "managementEvent": True, "recipientAccountId": c.acct,
                "sharedEventID": shared, "eventCategory": "Management"})
    if act.svc == "kms":
        rec["serviceEventDetails"] = {"keyId": v[2][0]["ARN"].rsplit("/", 1)[1]}
    return rec


def _api_record(c: _Ctx, act: _Action, v: tuple, uid: dict, p_arn: str, client: tuple, ip: str, t: str, eid: str,
                rid: str | None, err: int, recipient: str, shared: str | None, hexid: str) -> dict:
    rec = {"eventVersion": act.version, "userIdentity": uid, "eventTime": t, "eventSource": act.source,
           "eventName": act.name, "awsRegion": c.region, "sourceIPAddress": ip, "userAgent": client[0]}
    if err >= 0:
        code, tmpl = act.err_table[err]
        rec["errorCode"] = code
        if tmpl:
            rec["errorMessage"] = _err_text(tmpl, p_arn, act, v, hexid.replace("-", "")[:16]) if "{" in tmpl else tmpl
        rec["requestParameters"] = v[0]
        rec["responseElements"] = None
    else:
        rec["requestParameters"] = v[0]
        rec["responseElements"] = v[1]
    if v[3] is not None:
        rec["additionalEventData"] = v[3]
    if rid is not None:
        rec["requestID"] = rid
    rec["eventID"] = eid
    rec["readOnly"] = act.ro
    if v[2]:
        rec["resources"] = v[2]
    rec["eventType"] = act.etype
    if act.api:
        rec["apiVersion"] = act.api
    rec["managementEvent"] = act.mgmt
    rec["recipientAccountId"] = recipient
    if shared:
        rec["sharedEventID"] = shared
    if client[4] and act.svc in c.vpce:
        rec["vpcEndpointId"] = c.vpce[act.svc]
        if act.version != "1.08":
            rec["vpcEndpointAccountId"] = c.acct
    rec["eventCategory"] = act.cat
    if client[2] >= 0:
        rec["tlsDetails"] = v[4][client[2]]
    if client[3]:
        rec["sessionCredentialFromConsole"] = "true"
    return rec


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _cross_events(owner: int, caller: int, ri: int, t: int, k: int) -> list[tuple[int, dict, dict | None]]:
    """One cross-account stream: k logical events from `caller` (-1: an outside account) against `owner`'s
    resources. Both the owner's and the caller's unit rebuild the same stream; each writes its own copy."""
    cfg = _CFG
    r = random.Random(f"{cfg['seed']}:x:{owner}:{caller}:{ri}:{t}")
    oc = _ctx(owner, ri)
    cc = _ctx(caller, ri) if caller >= 0 else None
    hour = cfg["start"] + 3600 * t
    day = hour - hour % 86400
    ov = oc.variants_for_day(day)
    out = []
    for _ in range(k):
        sec = r.randrange(3600)
        key = r.choices(_CROSS_KEYS, _CROSS_W)[0]
        act = ACTION_BY_KEY[key]
        v = ov[act.idx][r.randrange(len(ov[act.idx]))]
        if cc is not None and cc.xcallers:
            p = r.choice(cc.xcallers)
            uid = p.uid_at(hour)
            p_arn = p.arn
            ci = int(_pick(p.client_cdf, np.array([r.random()]))[0])
            client = p.clients[ci]
            client = (client[0], client[1], client[2], client[3], False, 1)
            ip = client[1][r.randrange(len(client[1]))]
        else:
            ext = r.choice(cfg["externals"])
            sess = r.choice(["vendor-audit", "backup-sync", "partner-etl"])
            uid = _external_uid(ext, sess)
            p_arn = f"arn:aws:sts::{ext}:assumed-role/{sess}/{sess}"
            client = (r.choice([UA_JAVA, UA_GO, UA_BOTO3_LAMBDA]), (), 1, False, False, 1)
            ip = f"{r.choice((3, 13, 18, 35, 52, 54))}.{r.randrange(256)}.{r.randrange(256)}.{r.randrange(1, 255)}"
        err = -1
        if r.random() < act.err_rate * 2:
            err = 0
        elif act.patch is not None:
            v = act.patch(v, hour + sec, uid)
        ids = (_uuid(r), _uuid(r), _uuid(r), _uuid(r))   # owner eventID, caller eventID, sharedEventID, requestID
        rid = ids[3] if act.rid == "uuid" else (_alnum(r, 16, _UPPER) if act.rid == "s3" else None)
        args = (act, v, uid, p_arn, client, ip, err, rid, ids)
        out.append((sec, args))
    return out


_EXT_UIDS: dict = {}
_CROSS_KEYS = [a for a, _ in CROSS_ACTIONS]
_CROSS_W = [w for _, w in CROSS_ACTIONS]


def _external_uid(ext: str, sess: str) -> dict:
    uid = _EXT_UIDS.get((ext, sess))
    if uid is None:
        pid = _key_id(random.Random(f"{ext}:{sess}"), "AROA")
        uid = _EXT_UIDS[(ext, sess)] = {"type": "AWSAccount", "principalId": f"{pid}:{sess}", "accountId": ext}
    return uid


def _emit_cross(c: _Ctx, prefix: str, sec: int, args: tuple, copy: int) -> dict:
    act, v, uid, p_arn, client, ip, err, rid, ids = args
    return _api_record(c, act, v, uid, p_arn, client, ip, prefix + _MS[sec], ids[copy], rid, err, c.acct, ids[2], "")


WRITER_THREADS = 3     # per process: gzip and file I/O release the GIL, so they overlap record building
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _writer() -> ThreadPoolExecutor:
    """This process's writer threads (created lazily, so forked workers get their own)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        _POOL = (os.getpid(), ThreadPoolExecutor(WRITER_THREADS, thread_name_prefix="datagen-writer"))
    return _POOL[1]


def _compress_write(path: str, raw: bytes, level: int) -> int:
    data = zlib.compress(raw, level, wbits=31)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def _write(st: dict, path_dir: str, name: str, records: list[dict], level: int) -> None:
    """Serialise now; gzip and write on a writer thread (at most a few files in flight per process)."""
    raw = orjson.dumps({"Records": records})
    if path_dir not in _DIRS:
        os.makedirs(path_dir, exist_ok=True)
        _DIRS.add(path_dir)
    pending = st["_pending"]
    while len(pending) >= 4 * WRITER_THREADS:
        st["bytes"] += pending.popleft().result()
    pending.append(_writer().submit(_compress_write, os.path.join(path_dir, name), raw, level))
    st["raw_bytes"] += len(raw)


def _drain(st: dict) -> dict:
    pending = st.pop("_pending")
    while pending:
        st["bytes"] += pending.popleft().result()
    return st


def _run_unit(task: tuple) -> dict:
    """Generate and write one (account, region, hour) unit. Returns its statistics."""
    a, ri, t, n_bg, owner_streams, caller_streams, anomalies = task
    cfg = _CFG
    c = _ctx(a, ri)
    region, acct = c.region, c.acct
    hour = cfg["start"] + 3600 * t
    day = hour - hour % 86400
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([cfg["seed"], a, ri, t])))
    V = c.variants_for_day(day)
    prefix = time.strftime("%Y-%m-%dT%H:", time.gmtime(hour))
    # ---- background: network activity share and API calls
    n_na = int(rng.binomial(n_bg, P_NETWORK)) if n_bg else 0
    n = n_bg - n_na
    hs = cfg["human_share"][a][t]
    secs = rng.integers(0, 3600, n)
    is_h = rng.random(n) < hs
    if len(c.human_ids) == 0:
        is_h[:] = False
    pr = np.empty(n, dtype=np.int64)
    hu = rng.random(n)
    pr[is_h] = c.human_ids[_pick(c.human_cdf, hu[is_h])] if len(c.human_ids) else 0
    pr[~is_h] = c.auto_ids[_pick(c.auto_cdf, hu[~is_h])]
    ac = np.empty(n, dtype=np.int64)
    cl = np.empty(n, dtype=np.int64)
    au = rng.random(n)
    cu = rng.random(n)
    for pid in np.unique(pr):
        m = pr == pid
        p = c.active[pid]
        ac[m] = p.acts[_pick(p.act_cdf, au[m])]
        cl[m] = _pick(p.client_cdf, cu[m])
    # ---- anomalies: extra calls and forced errors
    stats_anom = {}
    extra_s, extra_p, extra_a, extra_c, extra_deny = [], [], [], [], []
    deny_mask = np.zeros(n, dtype=bool)
    for an in anomalies:
        aid, kind, act_idx, pid, s0, s1, extra, p_deny = an
        p = c.active[pid]
        es = rng.integers(s0, s1, extra)
        extra_s.append(es)
        extra_p.append(np.full(extra, pid, dtype=np.int64))
        extra_a.append(np.full(extra, act_idx, dtype=np.int64))
        extra_c.append(_pick(p.client_cdf, rng.random(extra)))
        if kind == "error-rate-spike":
            in_win = (ac == act_idx) & (secs >= s0) & (secs < s1)
            deny_mask |= in_win & (rng.random(n) < p_deny)
            extra_deny.append(rng.random(extra) < p_deny)
        else:
            extra_deny.append(np.zeros(extra, dtype=bool))
    if extra_s:
        secs = np.concatenate([secs] + extra_s)
        pr = np.concatenate([pr] + extra_p)
        ac = np.concatenate([ac] + extra_a)
        cl = np.concatenate([cl] + extra_c)
        deny_mask = np.concatenate([deny_mask] + extra_deny)
    n = len(secs)
    # ---- errors, variants, ids
    err_rate = np.array([x.err_rate for x in ACTIONS])
    eu = rng.random(n)
    is_err = eu < err_rate[ac]
    ecu = rng.random(n).tolist()
    var = rng.integers(0, 1 << 30, n).tolist()
    ipx = rng.integers(0, 1 << 30, n).tolist()
    eids = _uuids(rng, n)
    rids = _uuids(rng, n)
    s3ids = _s3_ids(rng, n)
    order = np.argsort(secs, kind="stable")
    secs_sorted = secs[order]
    bounds = np.searchsorted(secs_sorted, np.arange(0, 3601, WINDOW)).tolist()
    order = order.tolist()
    secs_l = secs.tolist()
    pr_l, ac_l, cl_l = pr.tolist(), ac.tolist(), cl.tolist()
    is_err_l, deny_l = is_err.tolist(), deny_mask.tolist()
    uids = [p.uid_at(hour) for p in c.active]
    # anomaly-affected (action) for statistics
    anom_acts = {an[2]: an for an in anomalies}
    for an in anomalies:
        stats_anom[an[0]] = [0, 0]
    # ---- cross-account copies hosted here
    specials: list[list[dict]] = [[] for _ in range(3600 // WINDOW)]
    for caller, k in owner_streams:
        for sec, args in _cross_events(a, caller, ri, t, k):
            specials[sec // WINDOW].append(_emit_cross(c, prefix, sec, args, 0))
    for owner, k in caller_streams:
        for sec, args in _cross_events(owner, a, ri, t, k):
            specials[sec // WINDOW].append(_emit_cross(c, prefix, sec, args, 1))
    # ---- build and write, one delivery window at a time
    frng = random.Random(f"{cfg['seed']}:files:{a}:{ri}:{t}")
    out = cfg["out"]
    level = cfg["level"]
    st = {"events": 0, "files": 0, "bytes": 0, "raw_bytes": 0, "min": None, "max": None,
          "categories": {}, "errors": 0, "anomalies": stats_anom, "_pending": collections.deque()}
    cats = st["categories"]
    actions = ACTIONS
    active = c.active
    for w in range(3600 // WINDOW):
        recs: list[dict] = []
        lo, hi = bounds[w], bounds[w + 1]
        for j in order[lo:hi]:
            act = actions[ac_l[j]]
            p = active[pr_l[j]]
            client = p.clients[cl_l[j]]
            ips = client[1]
            ip = ips[ipx[j] % len(ips)]
            vv = V[act.idx]
            v = vv[var[j] % len(vv)]
            s = secs_l[j]
            if act.special == "login":
                rec = _login_record(c, p, uids[pr_l[j]], act, client, ip, prefix + _MS[s], eids[j], is_err_l[j])
            elif act.special == "service":
                rec = _service_record(c, act, v, prefix + _MS[s], eids[j], rids[j])   # no requestID there
            else:
                if deny_l[j] and p.arn:
                    err = 0
                elif is_err_l[j] and p.arn:
                    u = ecu[j]
                    err = 0
                    for err, edge in enumerate(act.err_cdf):
                        if u < edge:
                            break
                else:
                    err = -1
                rid = rids[j] if act.rid == "uuid" else (s3ids[j] if act.rid == "s3" else None)
                if act.patch is not None and err < 0:
                    v = act.patch(v, hour + s, uids[pr_l[j]])
                rec = _api_record(c, act, v, uids[pr_l[j]], p.arn, client, ip, prefix + _MS[s], eids[j], rid, err,
                                  acct, None, rids[j])
                if act.idx in anom_acts:
                    an = anom_acts[act.idx]
                    if an[4] <= s < an[5]:
                        stats_anom[an[0]][0] += 1
                        if err >= 0:
                            stats_anom[an[0]][1] += 1
            recs.append(rec)
        recs.extend(specials[w])
        if not recs:
            continue
        for rec in recs:
            cat = rec["eventCategory"]
            cats[cat] = cats.get(cat, 0) + 1
            if "errorCode" in rec:
                st["errors"] += 1
        _flush(st, frng, out, acct, region, "CloudTrail", hour + (w + 1) * WINDOW, recs, level)
    # ---- network activity events
    if n_na:
        _network_activity(c, rng, frng, hour, prefix, n_na, st, out, level)
    return _drain(st)


def _flush(st: dict, frng: random.Random, out: str, acct: str, region: str, kind: str, window_end: int,
           recs: list[dict], level: int) -> None:
    """Write one delivery window's records as one or more log files."""
    lag = WINDOW if frng.random() < .85 else 2 * WINDOW
    deliver = window_end + lag
    tm = time.gmtime(deliver)
    d = os.path.join(out, "AWSLogs", acct, kind, region, time.strftime("%Y", tm), time.strftime("%m", tm),
                     time.strftime("%d", tm))
    stamp = time.strftime("%Y%m%dT%H%MZ", tm)
    nfiles = -(-len(recs) // MAX_RECORDS_PER_FILE)
    if nfiles == 1 and len(recs) > 60 and frng.random() < .3:
        nfiles = 2        # CloudTrail often delivers a window in more than one file
    size = -(-len(recs) // nfiles)
    for i in range(0, len(recs), size):
        chunk = recs[i:i + size]
        name = f"{acct}_{kind}_{region}_{stamp}_{_alnum(frng, 16)}.json.gz"
        _write(st, d, name, chunk, level)
        st["files"] += 1
        st["events"] += len(chunk)
    times = [r["eventTime"] for r in recs]
    lo, hi = min(times), max(times)
    if st["min"] is None or lo < st["min"]:
        st["min"] = lo
    if st["max"] is None or hi > st["max"]:
        st["max"] = hi


def _network_activity(c: _Ctx, rng: np.random.Generator, frng: random.Random, hour: int, prefix: str, n: int,
                      st: dict, out: str, level: int) -> None:
    secs = np.sort(rng.integers(0, 3600, n))
    acts = _pick(_NA_CDF, rng.random(n)).tolist()
    ext = (rng.random(n) < .08).tolist()
    den = rng.random(n).tolist()
    who = rng.integers(0, 1 << 30, n).tolist()
    eids, rids, shared = _uuids(rng, n), _uuids(rng, n), _uuids(rng, n)
    callers = [p for p in c.active if p.name in ("app", "fn-order-processor", "fn-thumbnail-generator",
                                                 "fn-webhook-handler", "ssm-agent")] or c.active
    cuids = [p.uid_at(hour) for p in callers]
    ext_uids = [{"type": "AWSAccount", "principalId": _key_id(random.Random(ea), "AIDA"), "accountId": ea}
                for ea in c.externals]
    bounds = np.searchsorted(secs, np.arange(0, 3601, WINDOW)).tolist()
    secs_l = secs.tolist()
    cats = st["categories"]
    for w in range(3600 // WINDOW):
        recs = []
        for j in range(bounds[w], bounds[w + 1]):
            key, _ = NETWORK_ACTIONS[acts[j]]
            svc, name = key.split(":")
            if ext[j]:
                uid = ext_uids[who[j] % len(ext_uids)]
                denied = den[j] < .7
            else:
                uid = cuids[who[j] % len(cuids)]
                denied = den[j] < .03
            rec = {"eventVersion": "1.09", "userIdentity": uid, "eventTime": prefix + _MS[secs_l[j]],
                   "eventSource": f"{svc}.amazonaws.com", "eventName": name, "awsRegion": c.region,
                   "sourceIPAddress": c.private_ips[who[j] % len(c.private_ips)]}
            if denied:
                rec["errorCode"] = "VpceAccessDenied"
                rec["errorMessage"] = VPCE_DENIED
                st["errors"] += 1
            rec.update({"requestID": rids[j], "eventID": eids[j], "eventType": "AwsVpceEvent",
                        "recipientAccountId": c.acct, "sharedEventID": shared[j],
                        "vpcEndpointId": c.vpce.get(svc, c.vpce["s3"]), "vpcEndpointAccountId": c.acct,
                        "eventCategory": "NetworkActivity"})
            recs.append(rec)
        if recs:
            cats["NetworkActivity"] = cats.get("NetworkActivity", 0) + len(recs)
            _flush(st, frng, out, c.acct, c.region, NETWORK_ACTIVITY_KIND, hour + (w + 1) * WINDOW, recs, level)


# ---------------------------------------------------------------------------------------------------------
# planning (main process): how many events each unit gets, cross-account streams, anomalies


def _account_ids(seed: int, n: int) -> list[str]:
    r = random.Random(f"{seed}:accounts")
    out: list[str] = []
    while len(out) < n:
        a = f"{r.randrange(10**11, 10**12):012d}"
        if a not in out:
            out.append(a)
    return out


def _human_profile(start: int, hours: int, tz: int) -> np.ndarray:
    local = start + 3600 * np.arange(hours) + tz * 3600
    hod = (local // 3600) % 24
    dow = (local // 86400 + _EPOCH_WEEKDAY) % 7
    return _HOUR_PROFILE[hod] * _WEEKDAY[dow]


def generate_dataset(out: str, *, events: int, days: int = 30, accounts: int = 3, regions: int = 2, seed: int = 0,
                     end: datetime | None = None, anomalies: bool = False, workers: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    """Write `events` CloudTrail records over the `days` before `end` as trail log files under `out`.

    `end` defaults to the last UTC midnight and is rounded down to the hour. `workers` > 1 generates
    (account, region, hour) units in that many processes (default: os.cpu_count()); output does not depend
    on it. `progress(done, total)` is called as units finish. With `anomalies`, a few labelled call-rate
    bursts and error-rate spikes are injected (they are part of `events`) and listed in `out/anomalies.json`.
    Returns a summary: events, files, bytes (gzip) and uncompressed_bytes, accounts and regions (lists),
    first_event_time / last_event_time, categories (events per eventCategory), errors, utc_offsets (each
    account's office hours offset), start / end, anomalies (the labels), seconds.
    """
    t0 = time.time()
    if events < 0 or days < 1 or accounts < 1 or regions < 1:
        raise ValueError("events must be >= 0 and days, accounts, regions >= 1")
    regions = min(regions, len(REGIONS))
    if end is None:
        now = datetime.now(timezone.utc)
        end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elif end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    end_epoch = int(end.timestamp()) // 3600 * 3600
    start_epoch = end_epoch - days * 86400
    hours = days * 24
    accts = _account_ids(seed, accounts)
    externals = _account_ids(seed + 7919, 3)
    regs = REGIONS[:regions]
    mr = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0x5EED])))
    # ---- weights per (account, region, hour)
    acct_w = 1.0 / (np.arange(accounts) + 1) ** 0.8
    reg_w = 1.0 / (np.arange(regions) + 1) ** 1.1
    hp = np.stack([_human_profile(start_epoch, hours, TZ_OFFSETS[a % len(TZ_OFFSETS)]) for a in range(accounts)])
    hn = hp / _HOUR_PROFILE.mean()                                 # 1.0 on an average weekday hour
    lam_h = _HUMAN_SCALE * hn
    lam = _AUTO_FLAT + (1 - _AUTO_FLAT) * hn + lam_h
    human_share = lam_h / lam                                       # (A, T)
    W = acct_w[:, None, None] * reg_w[None, :, None] * lam[:, None, :]   # (A, R, T)
    P = (W / W.sum()).ravel()
    cfg = {"seed": seed, "accounts": accts, "regions": regs, "externals": externals, "start": start_epoch,
           "out": os.path.abspath(out), "level": COMPRESS_LEVEL, "human_share": human_share.tolist()}
    _init_worker(cfg)
    # ---- anomalies (planned on expected counts)
    plans = _plan_anomalies(mr, cfg, events, W, human_share) if anomalies and events >= 200 else []
    extra_total = sum(pl["extra_events"] for pl in plans)
    counts = mr.multinomial(events - extra_total, P).reshape(W.shape)
    # ---- cross-account streams
    owner_k = mr.binomial(counts, P_CROSS)                          # logical cross events per owner unit
    budget = counts - owner_k
    pair: dict = {}                                                 # (owner, caller) -> (R, T) array
    if accounts > 1:
        for a in range(accounts):
            ext = mr.binomial(owner_k[a], 0.3)
            internal = owner_k[a] - ext
            # callers come from the (up to) four busiest other accounts, like shared-services hubs; this
            # also keeps the contexts a worker needs for cross-account streams few
            others = [b for b in range(accounts) if b != a][:4]
            pv = acct_w[others] / acct_w[others].sum()
            split = mr.multinomial(internal, pv)                    # (R, T, B-1)
            for bi, b in enumerate(others):
                k = np.minimum(split[..., bi], budget[b])
                budget[b] -= k
                pair[(a, b)] = k
                ext = ext + (split[..., bi] - k)
            pair[(a, -1)] = ext
    else:
        pair[(0, -1)] = owner_k[0]
    bg = budget                                                     # background events per unit
    # ---- anomaly per-unit specs
    unit_anoms: dict = {}
    for pl in plans:
        for (a, ri, t), (s0, s1, x) in pl["_units"].items():
            unit_anoms.setdefault((a, ri, t), []).append((pl["id"], pl["type"], pl["_act"], pl["_pid"], s0, s1, x,
                                                          pl.get("error_rate", 0.0)))

    as_owner: dict = {}
    as_caller: dict = {}
    for (o, b), k in pair.items():
        as_owner.setdefault(o, []).append((b, k))
        if b >= 0:
            as_caller.setdefault(b, []).append((o, k))

    def tasks() -> Iterator[tuple]:
        for a in range(accounts):
            for ri in range(regions):
                for t in range(hours):
                    own = [(b, int(k[ri, t])) for b, k in as_owner.get(a, ()) if k[ri, t] > 0]
                    calls = [(o, int(k[ri, t])) for o, k in as_caller.get(a, ()) if k[ri, t] > 0]
                    an = unit_anoms.get((a, ri, t), [])
                    n = int(bg[a, ri, t])
                    if n or own or calls or an:
                        yield (a, ri, t, n, own, calls, an)

    os.makedirs(out, exist_ok=True)
    workers = (os.cpu_count() or 1) if workers is None else max(1, workers)
    summary = {"events": 0, "files": 0, "bytes": 0, "uncompressed_bytes": 0, "categories": {}, "errors": 0}
    tmin = tmax = None
    anom_obs: dict = {}
    done = 0

    def absorb(st: dict) -> None:
        nonlocal tmin, tmax, done
        for k in ("events", "files", "bytes", "errors"):
            summary[k] += st[k]
        summary["uncompressed_bytes"] += st["raw_bytes"]
        for k, v in st["categories"].items():
            summary["categories"][k] = summary["categories"].get(k, 0) + v
        if st["min"] is not None:
            tmin = st["min"] if tmin is None or st["min"] < tmin else tmin
            tmax = st["max"] if tmax is None or st["max"] > tmax else tmax
        for k, (ev, er) in st["anomalies"].items():
            o = anom_obs.setdefault(k, [0, 0])
            o[0] += ev
            o[1] += er
        done += st["events"]
        if progress:
            progress(done, events)

    if workers == 1:
        for task in tasks():
            absorb(_run_unit(task))
    else:
        # fork: workers need nothing but this module's globals and never touch the caller's thread pools
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
            for st in pool.imap_unordered(_run_unit, tasks(), chunksize=4):
                absorb(st)
    labels = []
    for pl in plans:
        lab = {k: v for k, v in pl.items() if not k.startswith("_")}
        ev, er = anom_obs.get(pl["id"], [0, 0])
        lab["observed_events_in_window"] = ev
        lab["observed_errors_in_window"] = er
        labels.append(lab)
    summary.update({
        "accounts": accts, "regions": regs, "days": days, "seed": seed,
        "start": _iso(start_epoch), "end": _iso(end_epoch),
        "first_event_time": tmin, "last_event_time": tmax,
        "utc_offsets": {accts[a]: TZ_OFFSETS[a % len(TZ_OFFSETS)] for a in range(accounts)},
        "anomalies": labels, "seconds": round(time.time() - t0, 3),
    })
    if anomalies:
        with open(os.path.join(out, "anomalies.json"), "wb") as f:
            f.write(orjson.dumps({"generator": "lake.datagen", "seed": seed, "anomalies": labels},
                                 option=orjson.OPT_INDENT_2))
    return summary


def _plan_anomalies(mr: np.random.Generator, cfg: dict, events: int, W: np.ndarray, human_share: np.ndarray) -> list[dict]:
    """Choose a few call-rate bursts and error-rate spikes on busy weekday working hours."""
    A, R, T = W.shape
    expected = events * W / W.sum()                                  # expected background events per unit
    r = random.Random(f"{cfg['seed']}:anomalies")
    plans: list[dict] = []
    used: set = set()
    kinds = ["call-rate-burst"] * 3 + ["error-rate-spike"] * 2
    budget = 0.25 * events
    for n, kind in enumerate(kinds):
        # a busy (account, region), then an hour during its working day
        ar_w = W.sum(axis=2).ravel()
        ar = int(_pick(np.cumsum(ar_w) / ar_w.sum(), np.array([r.random()]))[0])
        a, ri = divmod(ar, R)
        hs = human_share[a]
        good = [t for t in range(T - 2) if hs[t] >= 0.8 * hs.max()]     # weekday working hours
        if not good:
            good = list(range(T - 2)) or [0]
        t = r.choice(good)
        c = _Ctx(cfg["seed"], cfg["accounts"], a, cfg["regions"][ri], cfg["externals"])
        marg = c.action_marginals(float(hs[t])) * (1 - P_NETWORK)
        cands = BURST_CANDIDATES if kind == "call-rate-burst" else SPIKE_CANDIDATES
        cands = [k for k in cands if k in ACTION_BY_KEY and (a, ri, k) not in used
                 and (not ACTION_BY_KEY[k].glob or c.is_global) and marg[ACTION_BY_KEY[k].idx] > 0]
        if not cands:
            continue
        key = r.choice(cands)
        used.add((a, ri, key))
        act = ACTION_BY_KEY[key]
        dur = r.randrange(10, 61)
        s0 = r.randrange(0, 3600 - 60)
        start = cfg["start"] + 3600 * t + s0
        end = start + dur * 60
        # usual per-minute rate of this API in those hours, and in the whole data set
        base = float(expected[a, ri, t] * marg[act.idx]) / 60
        overall = float(sum(expected[a, ri, tt] * c.action_marginals(float(hs[tt]))[act.idx] for tt in range(0, T, max(1, T // 48)))
                        * (1 - P_NETWORK) / (len(range(0, T, max(1, T // 48))) * 60))
        callers = [p for p in c.active if act.idx in set(p.acts.tolist())]
        p = r.choice(callers[:3]) if callers else c.active[0]
        if kind == "call-rate-burst":
            mult = r.uniform(20, 50)
            extra = max(30, int(round(mult * base * dur)))
            lab = {"multiplier": round(extra / max(base * dur, 1e-9), 1)}
        else:
            rate = r.uniform(0.8, 0.95)
            extra = max(20, int(round(r.uniform(2, 5) * base * dur)))
            lab = {"errorCode": act.deny_code, "error_rate": round(rate, 3)}
        if extra > budget:
            extra = int(budget)
        if extra < 10:
            continue
        budget -= extra
        # split the window over the hour units it touches
        units: dict = {}
        x_left = extra
        pieces = []
        s = start
        while s < end:
            tt = (s - cfg["start"]) // 3600
            he = cfg["start"] + 3600 * (tt + 1)
            e = min(end, he)
            pieces.append((tt, s - (cfg["start"] + 3600 * tt), e - (cfg["start"] + 3600 * tt), e - s))
            s = e
        total_len = sum(pc[3] for pc in pieces)
        for i, (tt, a0, a1, ln) in enumerate(pieces):
            x = x_left if i == len(pieces) - 1 else int(round(extra * ln / total_len))
            x_left -= x
            if tt < T:
                units[(a, ri, int(tt))] = (int(a0), int(a1), int(x))
        plan = {"id": f"anomaly-{n + 1}", "type": kind,
                "insightType": "ApiCallRateInsight" if kind == "call-rate-burst" else "ApiErrorRateInsight",
                "account": c.acct, "region": c.region, "eventSource": act.source, "eventName": act.name,
                "eventCategory": act.cat, "start": _iso(start), "end": _iso(end), "duration_minutes": dur,
                "extra_events": extra, "baseline_per_minute": round(overall, 4),
                "usual_per_minute_at_that_hour": round(base, 4), "principal": p.arn or p.name, **lab,
                "_act": act.idx, "_pid": p.ridx, "_units": units}
        plans.append(plan)
    return plans


__all__ = ["generate_dataset", "REGIONS", "MAX_RECORDS_PER_FILE", "NETWORK_ACTIVITY_KIND"]
