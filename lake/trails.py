"""Trails: the catalog of CloudTrail trails a lake delivers log files for, independent of HTTP.

A trail is a JSON document in CloudTrail's own field names (`Name`, `S3BucketName`, `IsMultiRegionTrail`,
`LogFileValidationEnabled`, ...) plus what Lake needs to deliver it (`TrailId`, `Owner`, `IsLogging`, the event
and insight selectors, and the `Lake` extension below). Each change writes the next version of the document
with a create-only write under

    _catalog/trails/<owner account>/<home region>/<name>/v<N>.json

so two servers changing one trail never lose an update (the loser re-reads and re-applies), and the full
history stays readable: delivery (`lake/delivery.py`) applies to each event the configuration that was in
effect when Lake received it (logging on or off, selectors, regions), as CloudTrail does. Deleting writes a
tombstone version; a trail created again under the same name is a new incarnation with a new `TrailId`.

**The bucket is any fsspec destination.** `S3BucketName` is resolved to a URI in this order:
1. the trail's `Lake.Destination` (set with `configure(...)` or `lake trails configure --destination`);
2. the lake's bucket map, `_catalog/buckets/<bucket>.json` (`map_bucket(lake, bucket, uri)` or
   `lake trails map-bucket BUCKET URI`), e.g. a local directory standing in for the bucket;
3. `s3://<S3BucketName>`, with the lake's storage options when the lake itself is on S3 (and the usual
   `LAKE_S3_ENDPOINT` / `AWS_ENDPOINT_URL_S3` environment for S3-compatible servers).

**The `Lake` extension** (not part of CloudTrail's API shapes, so boto3 never sees it):
`Destination` (URI or null), `Stores` (ids of the event data stores whose events the trail delivers; null =
every store of the lake), `Sources` (`live`: events Lake receives through its API, i.e. APPEND commits;
`import`: imported trail logs, IMPORT commits; default both), `OrganizationId` (the `o-...` id in
organization trails' keys; default `$LAKE_ORGANIZATION_ID`, else one derived from the owner account).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import click
import orjson

from .errors import LakeError
from .log import now_iso, parse_iso
from .selectors import SelectorError, validate_selectors
from .storage import Storage

# --------------------------------------------------------------------------------------------- constants

CATALOG = "_catalog/trails"
BUCKETS = "_catalog/buckets"
MAX_TRAILS_PER_REGION = 5          # reference section 10 (not adjustable)
MAX_PREFIX_CHARS = 200
MAX_BASIC_SELECTORS = 5
MAX_DATA_RESOURCE_VALUES = 250
MAX_ADVANCED_VALUES = 500
BASIC_DATA_TYPES = ("AWS::S3::Object", "AWS::Lambda::Function", "AWS::DynamoDB::Table")
EXCLUDABLE_SOURCES = ("kms.amazonaws.com", "rdsdata.amazonaws.com")
TRAIL_CATEGORIES = ("Management", "Data", "NetworkActivity")
INSIGHT_TYPES = ("ApiCallRateInsight", "ApiErrorRateInsight")
SOURCES = {"live": "APPEND", "import": "IMPORT"}  # Lake extension name -> store commit operation
DEFAULT_SOURCES = ["live", "import"]
DEFAULT_EVENT_SELECTORS = [{"ReadWriteType": "All", "IncludeManagementEvents": True, "DataResources": [],
                            "ExcludeManagementEventSources": []}]

_NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9]|[._-](?=[A-Za-z0-9]))*\Z")
_TRAIL_ARN_RE = re.compile(r"^arn:(aws[a-z-]*):cloudtrail:([a-z0-9-]+):(\d{12}):trail/([^/]+)\Z")
_BUCKET_RE = re.compile(r"^[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?\Z")
_ORG_RE = re.compile(r"^o-[a-z0-9]{10,32}\Z")
_VERSION_RE = re.compile(r"^v(\d{8})\.json\Z")


# --------------------------------------------------------------------------------------------- errors

class TrailError(LakeError):
    """A trail operation that cannot be done; `code` is CloudTrail's exception name for it."""

    code = "InvalidParameterException"


def _error(name: str, code: str) -> type[TrailError]:
    return type(name, (TrailError,), {"code": code, "__doc__": f"CloudTrail's {code}."})


TrailNotFound = _error("TrailNotFound", "TrailNotFoundException")
TrailExists = _error("TrailExists", "TrailAlreadyExistsException")
InvalidTrailName = _error("InvalidTrailName", "InvalidTrailNameException")
TrailArnInvalid = _error("TrailArnInvalid", "CloudTrailARNInvalidException")
InvalidBucketName = _error("InvalidBucketName", "InvalidS3BucketNameException")
InvalidPrefix = _error("InvalidPrefix", "InvalidS3PrefixException")
BucketNotFound = _error("BucketNotFound", "S3BucketDoesNotExistException")
TooManyTrails = _error("TooManyTrails", "MaximumNumberOfTrailsExceededException")
InvalidCombination = _error("InvalidCombination", "InvalidParameterCombinationException")
InvalidEventSelectors = _error("InvalidEventSelectors", "InvalidEventSelectorsException")
InvalidInsightSelectors = _error("InvalidInsightSelectors", "InvalidInsightSelectorsException")
InvalidHomeRegion = _error("InvalidHomeRegion", "InvalidHomeRegionException")
InsightNotEnabled = _error("InsightNotEnabled", "InsightNotEnabledException")
TrailConflict = _error("TrailConflict", "ConflictException")
NotManagementAccount = _error("NotManagementAccount", "NotOrganizationMasterAccountException")
InsufficientBucketPolicy = _error("InsufficientBucketPolicy", "InsufficientS3BucketPolicyException")


# --------------------------------------------------------------------------------------------- checks

def check_name(name: Any) -> str:
    """AWS's trail name rules (reference 3.5): 3-128 of letters, digits, . _ -; starts and ends with a letter
    or digit; no two of . _ - in a row; not an IP address."""
    if not isinstance(name, str) or not 3 <= len(name) <= 128 or not _NAME_RE.match(name):
        raise InvalidTrailName(
            f"Trail name {str(name)[:200]!r} is not valid: use 3-128 letters, digits, periods, underscores or "
            "dashes, starting and ending with a letter or digit, with no two of . _ - next to each other")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    raise InvalidTrailName(f"Trail name {name!r} is not valid: it must not be an IP address")


def check_bucket_name(bucket: Any) -> str:
    """S3's bucket naming rules: 3-63 lower-case letters, digits, dots and hyphens, starting and ending with a
    letter or digit, no `..`, not an IP address."""
    if not isinstance(bucket, str) or not 3 <= len(bucket) <= 63 or not _BUCKET_RE.match(bucket) \
            or ".." in bucket or ".-" in bucket or "-." in bucket:
        raise InvalidBucketName(f"Bucket name {str(bucket)[:200]!r} is not valid: use 3-63 lower-case letters, "
                                "digits, dots and hyphens, starting and ending with a letter or digit")
    try:
        ipaddress.ip_address(bucket)
    except ValueError:
        return bucket
    raise InvalidBucketName(f"Bucket name {bucket!r} is not valid: it must not be an IP address")


def check_key_piece(value: str, what: str) -> str:
    """A user-supplied piece of an object key (S3KeyPrefix, ...), validated so that it names the same place
    on S3 and on a local folder and never leaves the destination: no leading `/`, no empty, `.` or `..`
    segment, no backslash (a separator on some filesystems), no control character. InvalidPrefix otherwise."""
    bad = None
    if value.startswith("/"):
        bad = "starts with /"
    elif "\\" in value:
        bad = "holds a backslash"
    elif any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        bad = "holds a control character"
    elif any(seg in ("", ".", "..") for seg in value.rstrip("/").split("/")):
        bad = "has an empty, '.' or '..' path segment"
    if bad:
        raise InvalidPrefix(f"{what} {value[:MAX_PREFIX_CHARS]!r} is not a valid S3 key prefix: it {bad}")
    return value


def check_prefix(prefix: Any) -> str | None:
    """S3KeyPrefix: at most 200 characters of a relative S3 key (check_key_piece); empty means none."""
    if prefix is None or prefix == "":
        return None
    if not isinstance(prefix, str) or len(prefix) > MAX_PREFIX_CHARS:
        raise InvalidPrefix(f"S3KeyPrefix must be at most {MAX_PREFIX_CHARS} characters, got {len(str(prefix))}")
    return check_key_piece(prefix, "S3KeyPrefix")


def management_account(lake: Any) -> str:
    """The account of the organization's management principal, the only one that may create or update
    organization trails and event data stores. Lake has no AWS Organizations: every account of the lake is
    in one organization whose management account is `$LAKE_MANAGEMENT_ACCOUNT_ID`, else the lake's own
    account (`lake.account_id`, the account of the CLI and of stores it creates). Delegated administrators
    do not exist yet."""
    env = os.environ.get("LAKE_MANAGEMENT_ACCOUNT_ID")
    return env if env and re.fullmatch(r"\d{12}", env) else lake.account_id


def check_organization(lake: Any, account: str, what: str = "an organization trail") -> None:
    """NotOrganizationMasterAccountException unless `account` is the management account."""
    if account != management_account(lake):
        raise NotManagementAccount(f"Account {account} is not the management account of the organization "
                                   f"and cannot create or update {what}.")


def store_owner(lake: Any, store_id: str) -> str | None:
    """The account owning a store (api_stores.owner_account's rule); None for a store that cannot be read."""
    from .api_stores import owner_account

    try:
        return owner_account(lake, lake.store(store_id, include_expired=True).metadata)
    except (LakeError, OSError, ValueError):
        return None


def readable_stores(lake: Any, trail: Trail, store_ids: Iterable[str], also: str | None = None) -> list[str]:
    """The stores among `store_ids` a trail delivers: only stores its owner may read (those of its owner
    account, the rule every API handler applies), plus `also` (the trail's own data-Insights store). An
    organization trail of the management account takes every recipient account *within* those stores; it
    never reads another account's store."""
    return [sid for sid in store_ids if sid == also or store_owner(lake, sid) == trail.owner]


def parse_arn(ref: str) -> tuple[str, str, str] | None:
    """(home region, account, name) of a trail ARN, None for a plain name; CloudTrailARNInvalid for a bad ARN."""
    if not ref.startswith("arn:"):
        return None
    m = _TRAIL_ARN_RE.match(ref)
    if not m:
        raise TrailArnInvalid(f"{ref[:300]!r} is not a valid trail ARN "
                              "(arn:aws:cloudtrail:<region>:<account id>:trail/<name>)")
    return m.group(2), m.group(3), m.group(4)


def default_organization_id(account: str) -> str:
    """`$LAKE_ORGANIZATION_ID`, else a stable made-up id for the owner account (Lake has no AWS Organizations)."""
    env = os.environ.get("LAKE_ORGANIZATION_ID")
    if env:
        if not _ORG_RE.match(env):  # it becomes a key segment of every organization trail's files
            raise TrailError(f"LAKE_ORGANIZATION_ID {env[:100]!r} is not an organization id (o-<10-32 a-z 0-9>)")
        return env
    return "o-" + hashlib.sha256(f"lake-organization:{account}".encode()).hexdigest()[:10]


# --------------------------------------------------------------------------------------------- selectors

def check_event_selectors(selectors: Any) -> list[dict]:
    """Basic EventSelectors with CloudTrail's defaults filled in (reference 6.2, CloudTrail API)."""
    if not isinstance(selectors, list) or not 1 <= len(selectors) <= MAX_BASIC_SELECTORS:
        raise InvalidEventSelectors(f"EventSelectors must hold 1 to {MAX_BASIC_SELECTORS} selectors")
    out, values = [], 0
    for i, sel in enumerate(selectors):
        if not isinstance(sel, dict):
            raise InvalidEventSelectors(f"EventSelectors[{i}] must be an object")
        rw = sel.get("ReadWriteType", "All")
        if rw not in ("All", "ReadOnly", "WriteOnly"):
            raise InvalidEventSelectors(f"EventSelectors[{i}].ReadWriteType must be All, ReadOnly or WriteOnly")
        excluded = list(sel.get("ExcludeManagementEventSources") or [])
        bad = [s for s in excluded if s not in EXCLUDABLE_SOURCES]
        if bad:
            raise InvalidEventSelectors(f"EventSelectors[{i}].ExcludeManagementEventSources: {bad[0]!r} cannot be "
                                        f"excluded; only {', '.join(EXCLUDABLE_SOURCES)}")
        resources = []
        for j, res in enumerate(sel.get("DataResources") or []):
            rtype = res.get("Type")
            if rtype not in BASIC_DATA_TYPES:
                raise InvalidEventSelectors(f"EventSelectors[{i}].DataResources[{j}].Type {rtype!r} is not "
                                            f"supported by basic selectors; use {', '.join(BASIC_DATA_TYPES)} or "
                                            "advanced event selectors")
            vals = list(res.get("Values") or [])
            for v in vals:
                _check_resource_value(rtype, v, f"EventSelectors[{i}].DataResources[{j}]")
            values += len(vals)
            resources.append({"Type": rtype, "Values": vals})
        out.append({"ReadWriteType": rw, "IncludeManagementEvents": bool(sel.get("IncludeManagementEvents", True)),
                    "DataResources": resources, "ExcludeManagementEventSources": excluded})
    if values > MAX_DATA_RESOURCE_VALUES:
        raise InvalidEventSelectors(f"EventSelectors name {values} data resources; a trail may have at most "
                                    f"{MAX_DATA_RESOURCE_VALUES}")
    return out


_SERVICE_OF = {"AWS::S3::Object": "s3", "AWS::Lambda::Function": "lambda", "AWS::DynamoDB::Table": "dynamodb"}


def _all_resources(rtype: str, value: str) -> bool:
    """True for the values that mean "every resource of the type" (`arn:aws:s3`, `arn:aws:s3:::`, ...)."""
    return bool(re.match(rf"^arn:aws[a-z-]*:{_SERVICE_OF[rtype]}(:::)?\Z", value))


def _check_resource_value(rtype: str, value: Any, where: str) -> None:
    service = _SERVICE_OF[rtype]
    if not isinstance(value, str) or not value.startswith("arn:") or \
            not re.match(rf"^arn:aws[a-z-]*:{service}(:|\Z)", value):
        raise InvalidEventSelectors(f"{where}: value {str(value)[:200]!r} is not an ARN (prefix) of {rtype}")


def basic_to_advanced(selectors: list[dict]) -> list[dict]:
    """The advanced selectors equivalent to basic ones (what CloudTrail's console shows), for matching."""
    out: list[dict] = []
    for sel in selectors:
        ro = {"ReadOnly": [{"Field": "readOnly", "Equals": ["true"]}],
              "WriteOnly": [{"Field": "readOnly", "Equals": ["false"]}]}.get(sel["ReadWriteType"], [])
        if sel["IncludeManagementEvents"]:
            fs = [{"Field": "eventCategory", "Equals": ["Management"]}, *ro]
            if sel["ExcludeManagementEventSources"]:
                fs.append({"Field": "eventSource", "NotEquals": list(sel["ExcludeManagementEventSources"])})
            out.append({"FieldSelectors": fs})
        for res in sel["DataResources"]:
            if not res["Values"]:
                continue
            fs = [{"Field": "eventCategory", "Equals": ["Data"]},
                  {"Field": "resources.type", "Equals": [res["Type"]]}, *ro]
            if not any(_all_resources(res["Type"], v) for v in res["Values"]):
                if res["Type"] == "AWS::S3::Object":  # values are bucket/prefix ARNs: match what starts with them
                    fs.append({"Field": "resources.ARN", "StartsWith": [
                        v if "/" in v else v + "/" for v in res["Values"]]})
                else:
                    fs.append({"Field": "resources.ARN", "Equals": list(res["Values"])})
            out.append({"FieldSelectors": fs})
    return out


# Fields a trail's advanced selectors may use per category (reference 6.2, "trails" column).
_TRAIL_FIELDS = {
    "Management": {"eventCategory", "readOnly", "eventSource"},
    "Data": {"eventCategory", "eventSource", "eventName", "readOnly", "eventType", "resources.type",
             "resources.ARN", "sessionCredentialFromConsole", "userIdentity.arn"},
    "NetworkActivity": {"eventCategory", "eventSource", "eventName", "errorCode", "vpcEndpointId",
                        "userIdentity.arn"},
}


def check_advanced_selectors(selectors: Any) -> list[dict]:
    """Advanced selectors as a trail accepts them: lake/selectors.py's rules per selector, plus the trail-only
    ones (categories Management, Data, NetworkActivity; management selectors may only exclude kms/rdsdata
    sources; data selectors need one resources.type) and at most 500 condition values in all."""
    if not isinstance(selectors, list) or not selectors:
        raise InvalidEventSelectors("AdvancedEventSelectors must hold at least one selector")
    out, values = [], 0
    for i, sel in enumerate(selectors):
        try:
            norm = validate_selectors([sel])[0]
        except SelectorError as e:
            raise InvalidEventSelectors(str(e).replace("selector[0]", f"selector[{i}]")) from None
        fields = {fs["Field"]: fs for fs in norm["FieldSelectors"]}
        cats = fields["eventCategory"]["Equals"]
        for cat in cats:
            if cat not in TRAIL_CATEGORIES:
                raise InvalidEventSelectors(f"selector[{i}]: eventCategory {cat} is not available on trails; use "
                                            f"{', '.join(TRAIL_CATEGORIES)}")
            extra = sorted(set(fields) - _TRAIL_FIELDS[cat])
            if extra:
                raise InvalidEventSelectors(f"selector[{i}]: field {extra[0]} cannot be used in {cat} selectors "
                                            "of a trail")
        if "Management" in cats and "eventSource" in fields:
            fs = fields["eventSource"]
            if set(fs) - {"Field", "NotEquals"} or set(fs["NotEquals"]) - set(EXCLUDABLE_SOURCES):
                raise InvalidEventSelectors(f"selector[{i}]: management selectors of a trail can only exclude "
                                            f"event sources with NotEquals {' or '.join(EXCLUDABLE_SOURCES)}")
        if "Data" in cats and "resources.type" not in fields:
            raise InvalidEventSelectors(f"selector[{i}]: data event selectors need a resources.type field selector")
        values += sum(len(v) for fs in norm["FieldSelectors"] for k, v in fs.items() if k != "Field")
        out.append(norm)
    if values > MAX_ADVANCED_VALUES:
        raise InvalidEventSelectors(f"AdvancedEventSelectors have {values} condition values; a trail may have at "
                                    f"most {MAX_ADVANCED_VALUES}")
    return out


def check_insight_selectors(selectors: Any) -> list[dict]:
    if not isinstance(selectors, list):
        raise InvalidInsightSelectors("InsightSelectors must be a list")
    out, seen = [], set()
    for i, sel in enumerate(selectors):
        kind = sel.get("InsightType") if isinstance(sel, dict) else None
        if kind not in INSIGHT_TYPES:
            raise InvalidInsightSelectors(f"InsightSelectors[{i}].InsightType must be one of "
                                          f"{', '.join(INSIGHT_TYPES)}")
        if kind in seen:
            raise InvalidInsightSelectors(f"InsightType {kind} is given twice")
        seen.add(kind)
        cats = list(sel.get("EventCategories") or [])
        if set(cats) - {"Management", "Data"}:
            raise InvalidInsightSelectors(f"InsightSelectors[{i}].EventCategories may hold Management and Data")
        out.append({"InsightType": kind, **({"EventCategories": cats} if cats else {})})
    return out


# --------------------------------------------------------------------------------------------- the trail

@dataclass(frozen=True)
class Trail:
    """One version of a trail's document (immutable: a change makes a new version)."""

    doc: dict
    version: int

    name = property(lambda self: self.doc["Name"])
    owner = property(lambda self: self.doc["Owner"])
    home_region = property(lambda self: self.doc["HomeRegion"])
    arn = property(lambda self: self.doc["TrailARN"])
    id = property(lambda self: self.doc["TrailId"])
    bucket = property(lambda self: self.doc["S3BucketName"])
    is_logging = property(lambda self: bool(self.doc.get("IsLogging")))
    multi_region = property(lambda self: bool(self.doc.get("IsMultiRegionTrail")))
    organization = property(lambda self: bool(self.doc.get("IsOrganizationTrail")))
    validation = property(lambda self: bool(self.doc.get("LogFileValidationEnabled")))
    extension = property(lambda self: self.doc.get("Lake") or {})

    @property
    def key_prefix(self) -> str | None:
        """S3KeyPrefix without surrounding slashes, checked again (check_key_piece) so that a trail written
        before prefixes were validated fails its delivery instead of writing outside its bucket."""
        prefix = (self.doc.get("S3KeyPrefix") or "").strip("/")
        return check_key_piece(prefix, "S3KeyPrefix") if prefix else None

    @property
    def organization_id(self) -> str | None:
        if not self.organization:
            return None
        return self.extension.get("OrganizationId") or default_organization_id(self.owner)

    def describe(self) -> dict:
        """The `Trail` shape of DescribeTrails / GetTrail."""
        d = self.doc
        out = {k: d[k] for k in ("Name", "S3BucketName", "S3KeyPrefix", "SnsTopicName", "SnsTopicARN",
                                 "IncludeGlobalServiceEvents", "IsMultiRegionTrail", "HomeRegion", "TrailARN",
                                 "LogFileValidationEnabled", "CloudWatchLogsLogGroupArn", "CloudWatchLogsRoleArn",
                                 "KmsKeyId", "HasCustomEventSelectors", "HasInsightSelectors",
                                 "IsOrganizationTrail", "RecursiveLogging") if d.get(k) is not None}
        return out

    def info(self) -> dict:
        """The `TrailInfo` shape of ListTrails."""
        return {"TrailARN": self.arn, "Name": self.name, "HomeRegion": self.home_region}

    def settings(self) -> dict:
        """The CreateTrail / UpdateTrail response shape (no HomeRegion, no Has* flags)."""
        out = self.describe()
        for k in ("HomeRegion", "HasCustomEventSelectors", "HasInsightSelectors"):
            out.pop(k, None)
        return out

    def event_selectors(self) -> dict:
        """GetEventSelectors: the trail's advanced selectors if it has them, else its basic ones."""
        if self.doc.get("AdvancedEventSelectors"):
            return {"TrailARN": self.arn, "AdvancedEventSelectors": self.doc["AdvancedEventSelectors"]}
        return {"TrailARN": self.arn, "EventSelectors": self.doc.get("EventSelectors") or DEFAULT_EVENT_SELECTORS}

    def matching_selectors(self) -> list[dict]:
        """The trail's event selectors as advanced selectors (basic ones converted), for delivery."""
        if self.doc.get("AdvancedEventSelectors"):
            return self.doc["AdvancedEventSelectors"]
        return basic_to_advanced(self.doc.get("EventSelectors") or DEFAULT_EVENT_SELECTORS)

    def visible_in(self, region: str) -> bool:
        """A trail shows in its home region, and a multi-region trail (as a shadow trail) in every region."""
        return self.home_region == region or self.multi_region


def _ts_text(value: str | None) -> str | None:
    """CloudTrail's `2021-09-27T17:10:29Z` text for GetTrailStatus' string time fields."""
    return parse_iso(value).strftime("%Y-%m-%dT%H:%M:%SZ") if value else None


# --------------------------------------------------------------------------------------------- buckets

def map_bucket(lake: Any, bucket: str, uri: str, storage_options: dict | None = None,
               account: str | None = None) -> None:
    """Make `bucket` mean `uri` (a local directory or any fsspec URI) for the lake's trails: those of `account`
    only when given (the bucket is that account's, as its policy would say on S3), else of every account.
    Never the lake's own folder: trails would write into the stores."""
    check_bucket_name(bucket)
    if account is not None and not re.fullmatch(r"\d{12}", account):
        raise TrailError(f"bucket owner {account!r} is not a 12-digit account id")
    if _inside_lake(lake, uri):
        raise InsufficientBucketPolicy(f"bucket {bucket} cannot be mapped to {uri}: it is inside the lake")
    doc = {"Bucket": bucket, "Uri": uri, **({"StorageOptions": storage_options} if storage_options else {}),
           **({"Account": account} if account else {})}
    lake.storage.write(f"{BUCKETS}/{bucket}.json", orjson.dumps(doc))


def _inside_lake(lake: Any, uri: str) -> bool:
    """Whether a destination URI is the lake's own root or lies inside it (or contains it)."""
    st = lake.storage
    if "://" not in uri or uri.startswith("file://"):
        if not st.local:
            return False
        return _nested(os.path.realpath(uri.removeprefix("file://")), os.path.realpath(st.root), os.sep)
    proto, _, rest = uri.partition("://")
    if st.local or proto not in ("s3", "s3a") or st.protocol not in ("s3", "s3a"):
        return False
    return _nested(rest.strip("/"), st.root.strip("/"), "/")


def _nested(a: str, b: str, sep: str) -> bool:
    """a and b are the same place or one lies inside the other."""
    a, b = a.rstrip(sep), b.rstrip(sep)
    return a == b or a.startswith(b + sep) or b.startswith(a + sep)


def check_bucket_access(lake: Any, bucket: str, owner: str, destination_uri: str | None = None) -> None:
    """InsufficientS3BucketPolicyException unless a trail of `owner` may write to `bucket`: a mapped bucket
    reserved for another account (`map_bucket(..., account=)`) is not its; an unmapped `s3://bucket` must not
    be the lake's own storage nor the bucket another account's trail delivers to (lake/tenancy.py); no
    destination may lie inside the lake. A `Lake.Destination` is the operator's (CLI) choice."""
    if destination_uri:
        return
    denied = InsufficientBucketPolicy(f"Incorrect S3 bucket policy is detected for bucket: {bucket}")
    try:
        doc = orjson.loads(lake.storage.read(f"{BUCKETS}/{bucket}.json"))
    except FileNotFoundError:
        doc = None
    if doc is not None:
        if doc.get("Account") not in (None, owner) or _inside_lake(lake, doc["Uri"]):
            raise denied
        return
    from .tenancy import s3_allowed

    if not s3_allowed(lake, f"s3://{bucket}", owner, {}):
        raise denied


def unmap_bucket(lake: Any, bucket: str) -> None:
    lake.storage.delete(f"{BUCKETS}/{bucket}.json")


def bucket_target(lake: Any, bucket: str, destination: str | None = None) -> tuple[str, dict | None]:
    """(fsspec URI of the bucket root, storage options) per the order in the module docstring."""
    if destination:
        return destination, None
    try:
        doc = orjson.loads(lake.storage.read(f"{BUCKETS}/{bucket}.json"))
        return doc["Uri"], doc.get("StorageOptions")
    except FileNotFoundError:
        pass
    opts = lake.storage_options if lake.storage.protocol in ("s3", "s3a") else None
    return f"s3://{bucket}", opts


def destination(lake: Any, trail: Trail) -> Storage:
    """The trail's bucket as a Storage (keys relative to the bucket root)."""
    uri, opts = bucket_target(lake, trail.bucket, trail.extension.get("Destination"))
    return Storage(uri, opts)


def check_bucket(lake: Any, bucket: str, destination_uri: str | None = None) -> None:
    """S3BucketDoesNotExist unless the bucket can be written: local directories are created on demand, other
    destinations must exist."""
    uri, opts = bucket_target(lake, bucket, destination_uri)
    try:
        st = Storage(uri, opts)
        if st.local:
            os.makedirs(st.root, exist_ok=True)
            return
        if st.fs.exists(st.root):
            return
    except Exception as e:  # noqa: BLE001 - unreachable endpoints, credentials: one line to the caller
        raise BucketNotFound(f"S3 bucket {bucket} ({uri}) cannot be reached: {str(e).splitlines()[0][:300]}") \
            from None
    raise BucketNotFound(f"S3 bucket {bucket} does not exist ({uri}); create it or map the bucket to a "
                         "destination with `lake trails map-bucket`")


# --------------------------------------------------------------------------------------------- catalog

class TrailCatalog:
    """The trails of one lake. Reads go to storage every time (a few small files), so all servers agree."""

    def __init__(self, lake: Any):
        self.lake = lake
        self.storage = lake.storage

    # -- reading --------------------------------------------------------------------------------------
    @staticmethod
    def _dir(owner: str, region: str, name: str) -> str:
        return f"{CATALOG}/{owner}/{region}/{name}"

    def _versions(self, owner: str, region: str, name: str) -> list[int]:
        return sorted(int(m.group(1)) for f in self.storage.list(self._dir(owner, region, name))
                      if (m := _VERSION_RE.match(f.path.rsplit("/", 1)[-1])))

    def _read(self, owner: str, region: str, name: str, version: int) -> dict:
        return orjson.loads(self.storage.read(f"{self._dir(owner, region, name)}/v{version:08d}.json"))

    def _latest(self, owner: str, region: str, name: str) -> tuple[int, dict | None]:
        """(latest version, its document or None for a deleted trail); (0, None) if it never existed."""
        versions = self._versions(owner, region, name)
        if not versions:
            return 0, None
        doc = self._read(owner, region, name, versions[-1])
        return versions[-1], (None if doc.get("Deleted") else doc)

    def get(self, owner: str, region: str, name: str) -> Trail | None:
        if not (_NAME_RE.match(name) and re.match(r"^[a-z0-9-]+\Z", region) and re.match(r"^\d{12}\Z", owner)):
            return None  # also keeps request text out of storage paths
        version, doc = self._latest(owner, region, name)
        return Trail(doc, version) if doc else None

    def history(self, owner: str, region: str, name: str, trail_id: str | None = None) -> list[Trail]:
        """Every version (tombstones included), oldest first; only one incarnation's with `trail_id`."""
        out = [Trail(self._read(owner, region, name, v), v) for v in self._versions(owner, region, name)]
        return [t for t in out if trail_id is None or t.doc.get("TrailId") == trail_id]

    def _all_latest(self) -> dict[tuple[str, str, str], int]:
        latest: dict[tuple[str, str, str], int] = {}
        for f in self.storage.list(CATALOG):
            parts = f.path.split("/")
            m = _VERSION_RE.match(parts[-1])
            if m and len(parts) == 6:
                key = (parts[2], parts[3], parts[4])
                latest[key] = max(latest.get(key, 0), int(m.group(1)))
        return latest

    def list(self, accounts: Iterable[str] | None = None, region: str | None = None) -> list[Trail]:
        """Live trails (of `accounts`, visible in `region`), by account, home region and name."""
        wanted = None if accounts is None else set(accounts)
        out = []
        for (owner, home, name), version in sorted(self._all_latest().items()):
            if wanted is not None and owner not in wanted:
                continue
            try:
                doc = self._read(owner, home, name, version)
            except FileNotFoundError:
                continue
            if doc.get("Deleted"):
                continue
            trail = Trail(doc, version)
            if region is None or trail.visible_in(region):
                out.append(trail)
        return out

    def incarnations(self) -> list[tuple[str, str, str, str]]:
        """(owner, home region, name, trail id) of every trail ever created, deleted ones included (delivery
        finishes what a deleted trail still owes)."""
        out = []
        for (owner, home, name) in sorted(self._all_latest()):
            seen: list[str] = []
            for t in self.history(owner, home, name):
                if t.doc.get("TrailId") and t.doc["TrailId"] not in seen:
                    seen.append(t.doc["TrailId"])
            out += [(owner, home, name, tid) for tid in seen]
        return out

    def resolve(self, ref: str, *, account: str, region: str, accounts: Iterable[str] | None = None) -> Trail:
        """The trail a request names: an ARN (any visible account) or a name (the caller's account), as seen
        from `region` (its own trails and multi-region shadows). TrailNotFound otherwise."""
        allowed = set(accounts) if accounts is not None else {account}
        arn = parse_arn(ref)
        if arn is not None:
            home, owner, name = arn
            trail = self.get(owner, home, name) if owner in allowed else None
            if trail is None or trail.arn != ref or not trail.visible_in(region):
                raise TrailNotFound(f"Unknown trail: {ref} for the user: {account}")
            return trail
        check_name(ref)
        trail = self.get(account, region, ref)
        if trail is None:
            shadows = [t for t in self.list([account], region) if t.name == ref]
            trail = shadows[0] if shadows else None
        if trail is None:
            raise TrailNotFound(f"Unknown trail: {ref} for the user: {account}")
        return trail

    # -- writing --------------------------------------------------------------------------------------
    def create(self, name: str, bucket: str, *, owner: str, region: str, partition: str = "aws",
               prefix: str | None = None, sns_topic: str | None = None, include_global: bool = True,
               multi_region: bool = False, validation: bool = False, organization: bool = False,
               cloudwatch_group: str | None = None, cloudwatch_role: str | None = None,
               kms_key_id: str | None = None, recursive_logging: bool | None = None,
               lake_config: dict | None = None, check_destination: bool = True) -> Trail:
        """CreateTrail. The trail does not log until `start_logging` (as with CloudTrail's API)."""
        check_name(name)
        check_bucket_name(bucket)
        prefix = check_prefix(prefix)
        if organization:
            check_organization(self.lake, owner)
        if multi_region and not include_global:
            raise InvalidCombination("Multi-Region trail must include global service events.")
        ext = _check_extension(self.lake, {**_default_extension(), **(lake_config or {})})
        for t in self.list([owner]):
            if t.name == name and (t.home_region == region or t.multi_region or multi_region):
                raise TrailExists(f"Trail {t.arn} already exists for the user: {owner}")
        if len(self.list([owner], region)) >= MAX_TRAILS_PER_REGION:
            raise TooManyTrails(f"User: {owner} already has {MAX_TRAILS_PER_REGION} trails in {region}.")
        if check_destination:
            check_bucket_access(self.lake, bucket, owner, ext.get("Destination"))
            check_bucket(self.lake, bucket, ext.get("Destination"))
        ts = now_iso()
        doc = {
            "TrailId": str(uuid.uuid4()), "Owner": owner, "Name": name, "HomeRegion": region,
            "TrailARN": f"arn:{partition}:cloudtrail:{region}:{owner}:trail/{name}",
            "S3BucketName": bucket, "S3KeyPrefix": prefix,
            "SnsTopicName": sns_topic, "SnsTopicARN": _sns_arn(sns_topic, partition, region, owner),
            "IncludeGlobalServiceEvents": bool(include_global), "IsMultiRegionTrail": bool(multi_region),
            "LogFileValidationEnabled": bool(validation), "CloudWatchLogsLogGroupArn": cloudwatch_group,
            "CloudWatchLogsRoleArn": cloudwatch_role, "KmsKeyId": kms_key_id,
            "IsOrganizationTrail": bool(organization), "RecursiveLogging": recursive_logging,
            "HasCustomEventSelectors": False, "HasInsightSelectors": False,
            "EventSelectors": DEFAULT_EVENT_SELECTORS, "AdvancedEventSelectors": None, "InsightSelectors": [],
            "IsLogging": False, "StartLoggingTime": None, "StopLoggingTime": None,
            "Lake": ext, "CreatedTimestamp": ts, "UpdatedTimestamp": ts,
        }
        version, _ = self._latest(owner, region, name)
        if not self.storage.create(f"{self._dir(owner, region, name)}/v{version + 1:08d}.json", orjson.dumps(doc)):
            raise TrailExists(f"Trail {doc['TrailARN']} already exists for the user: {owner}")
        return Trail(doc, version + 1)

    def change(self, trail: Trail, fn: Callable[[dict], dict | None]) -> Trail:
        """Write the next version: `fn(doc)` returns the new document (None: no change); re-run on the newest
        version when another writer got there first. TrailNotFound if the trail was deleted meanwhile."""
        owner, region, name = trail.owner, trail.home_region, trail.name
        for _ in range(50):
            version, doc = self._latest(owner, region, name)
            if doc is None or doc["TrailId"] != trail.id:
                raise TrailNotFound(f"Unknown trail: {trail.arn} for the user: {owner}")
            new = fn(dict(doc))
            if new is None:
                return Trail(doc, version)
            # Monotonic timestamps: delivery finds the version in effect at a time by bisecting on them.
            new["UpdatedTimestamp"] = max(now_iso(), doc["UpdatedTimestamp"])
            if self.storage.create(f"{self._dir(owner, region, name)}/v{version + 1:08d}.json", orjson.dumps(new)):
                return Trail(new, version + 1)
        raise TrailConflict(f"trail {trail.arn} is being changed by too many writers; retry")

    def update(self, trail: Trail, *, bucket: str | None = None, prefix: str | None = None,
               sns_topic: str | None = None, include_global: bool | None = None,
               multi_region: bool | None = None, validation: bool | None = None,
               organization: bool | None = None, cloudwatch_group: str | None = None,
               cloudwatch_role: str | None = None, kms_key_id: str | None = None,
               recursive_logging: bool | None = None, check_destination: bool = True) -> Trail:
        """UpdateTrail: only the settings given change. An empty S3KeyPrefix / SnsTopicName removes it."""
        if bucket is not None:
            check_bucket_name(bucket)
            if check_destination and bucket != trail.bucket:
                check_bucket_access(self.lake, bucket, trail.owner, trail.extension.get("Destination"))
                check_bucket(self.lake, bucket, trail.extension.get("Destination"))
        if prefix is not None:
            check_prefix(prefix)
        if organization or (organization is None and trail.organization):
            check_organization(self.lake, trail.owner)
        partition = trail.arn.split(":")[1]

        def fn(doc: dict) -> dict:
            if bucket is not None:
                doc["S3BucketName"] = bucket
            if prefix is not None:
                doc["S3KeyPrefix"] = prefix or None
            if sns_topic is not None:
                doc["SnsTopicName"] = sns_topic or None
                doc["SnsTopicARN"] = _sns_arn(sns_topic or None, partition, doc["HomeRegion"], doc["Owner"])
            for key, value in (("IncludeGlobalServiceEvents", include_global), ("IsMultiRegionTrail", multi_region),
                               ("LogFileValidationEnabled", validation), ("IsOrganizationTrail", organization),
                               ("RecursiveLogging", recursive_logging)):
                if value is not None:
                    doc[key] = bool(value)
            for key, value in (("CloudWatchLogsLogGroupArn", cloudwatch_group),
                               ("CloudWatchLogsRoleArn", cloudwatch_role), ("KmsKeyId", kms_key_id)):
                if value is not None:
                    doc[key] = value or None
            if doc["IsMultiRegionTrail"] and not doc["IncludeGlobalServiceEvents"]:
                raise InvalidCombination("Multi-Region trail must include global service events.")
            if doc["IsMultiRegionTrail"] and not trail.multi_region:
                for t in self.list([doc["Owner"]]):
                    if t.name == doc["Name"] and t.id != doc["TrailId"]:
                        raise TrailExists(f"Trail {t.arn} already exists for the user: {doc['Owner']}")
            return doc
        return self.change(trail, fn)

    def delete(self, trail: Trail) -> None:
        """DeleteTrail: a tombstone version (delivery still finishes what the trail received before)."""
        self.change(trail, lambda doc: {"Deleted": True, "TrailId": doc["TrailId"], "Owner": doc["Owner"],
                                        "Name": doc["Name"], "HomeRegion": doc["HomeRegion"],
                                        "TrailARN": doc["TrailARN"], "IsLogging": False,
                                        "StopLoggingTime": now_iso() if doc.get("IsLogging") else
                                        doc.get("StopLoggingTime"),
                                        "UpdatedTimestamp": doc["UpdatedTimestamp"]})

    def set_logging(self, trail: Trail, on: bool) -> Trail:
        """StartLogging / StopLogging (a no-op when already in that state)."""
        def fn(doc: dict) -> dict | None:
            if bool(doc.get("IsLogging")) == on:
                return None
            doc["IsLogging"] = on
            doc["StartLoggingTime" if on else "StopLoggingTime"] = now_iso()
            return doc
        return self.change(trail, fn)

    def put_event_selectors(self, trail: Trail, *, basic: list | None = None, advanced: list | None = None) -> Trail:
        """PutEventSelectors: basic or advanced selectors (exactly one kind); either replaces the other."""
        if (basic is None) == (advanced is None):
            raise InvalidEventSelectors("Give either EventSelectors or AdvancedEventSelectors, not both or neither.")
        sel_basic = check_event_selectors(basic) if basic is not None else None
        sel_adv = check_advanced_selectors(advanced) if advanced is not None else None

        def fn(doc: dict) -> dict:
            doc["EventSelectors"] = sel_basic
            doc["AdvancedEventSelectors"] = sel_adv
            doc["HasCustomEventSelectors"] = True
            return doc
        return self.change(trail, fn)

    def put_insight_selectors(self, trail: Trail, selectors: list) -> Trail:
        sels = check_insight_selectors(selectors)

        def fn(doc: dict) -> dict:
            doc["InsightSelectors"] = sels
            doc["HasInsightSelectors"] = bool(sels)
            return doc
        return self.change(trail, fn)

    def configure(self, trail: Trail, **settings: Any) -> Trail:
        """Change the Lake extension (`Destination`, `Stores`, `Sources`, `OrganizationId`); None removes a
        setting (back to its default)."""
        unknown = set(settings) - set(_default_extension())
        if unknown:
            raise TrailError(f"unknown trail setting(s) {sorted(unknown)}; known: {', '.join(_default_extension())}")

        def fn(doc: dict) -> dict:
            ext = {**_default_extension(), **(doc.get("Lake") or {})}
            for k, v in settings.items():
                ext[k] = v if v is not None else _default_extension()[k]
            doc["Lake"] = _check_extension(self.lake, ext)
            return doc
        return self.change(trail, fn)


def _sns_arn(topic: str | None, partition: str, region: str, owner: str) -> str | None:
    if not topic:
        return None
    return topic if topic.startswith("arn:") else f"arn:{partition}:sns:{region}:{owner}:{topic}"


def _default_extension() -> dict:
    return {"Destination": None, "Stores": None, "Sources": list(DEFAULT_SOURCES), "OrganizationId": None}


def _check_extension(lake: Any, ext: dict) -> dict:
    sources = ext.get("Sources") or []
    if not sources or set(sources) - set(SOURCES):
        raise TrailError(f"trail Sources must be a non-empty subset of {', '.join(SOURCES)}, got {sources!r}")
    if ext.get("OrganizationId") is not None and not _ORG_RE.match(str(ext["OrganizationId"])):
        raise TrailError(f"OrganizationId {ext['OrganizationId']!r} is not an organization id (o-<10-32 a-z 0-9>)")
    if ext.get("Stores") is not None:
        ids = []
        for ref in ext["Stores"]:
            ids.append(lake.store(ref).id)  # names, ids and ARNs all become ids; unknown ones are an error
        ext["Stores"] = ids
    return {"Destination": ext.get("Destination"), "Stores": ext.get("Stores"), "Sources": list(sources),
            "OrganizationId": ext.get("OrganizationId")}


def status(lake: Any, trail: Trail) -> dict:
    """GetTrailStatus: logging state from the trail, delivery times from the deliverer's status record."""
    d = trail.doc
    out: dict[str, Any] = {"IsLogging": trail.is_logging}
    if d.get("StartLoggingTime"):
        out["StartLoggingTime"] = d["StartLoggingTime"]
        out["TimeLoggingStarted"] = _ts_text(d["StartLoggingTime"])
    if d.get("StopLoggingTime"):
        out["StopLoggingTime"] = d["StopLoggingTime"]
        out["TimeLoggingStopped"] = _ts_text(d["StopLoggingTime"])
    try:
        st = orjson.loads(lake.storage.read(f"_trails/{trail.id}/status.json"))
    except (FileNotFoundError, orjson.JSONDecodeError):
        st = {}
    for key in ("LatestDeliveryTime", "LatestDigestDeliveryTime"):
        if st.get(key):
            out[key] = st[key]
    for key in ("LatestDeliveryError", "LatestDigestDeliveryError"):
        if st.get(key):
            out[key] = st[key]
    if st.get("LatestDeliveryAttemptTime"):
        out["LatestDeliveryAttemptTime"] = _ts_text(st["LatestDeliveryAttemptTime"])
    if st.get("LatestDeliveryAttemptSucceeded"):
        out["LatestDeliveryAttemptSucceeded"] = _ts_text(st["LatestDeliveryAttemptSucceeded"])
    return out


# --------------------------------------------------------------------------------------------- CLI

def _run(fn: Callable[[], Any]) -> Any:
    """One-line errors and exit status 1, the `lake` command's contract (lake/cli.py `handle_errors`)."""
    from .output import err_console

    try:
        return fn()
    except (LakeError, ValueError, OSError) as e:
        from rich.markup import escape

        err_console.print(f"[red]error:[/red] {escape(str(e).splitlines()[0] if str(e) else type(e).__name__)}",
                          highlight=False)
        raise SystemExit(1) from None


def _cli_trail(lake: Any, ref: str) -> Trail:
    return TrailCatalog(lake).resolve(ref, account=lake.account_id, region=lake.region,
                                      accounts=None if ref.startswith("arn:") else [lake.account_id])


@click.group("trails", context_settings={"help_option_names": ["-h", "--help"]})
def trails_cli() -> None:
    """Trails: deliver the lake's events as CloudTrail log files (and digests) to a bucket or directory."""


@trails_cli.command("create")
@click.argument("name")
@click.option("--bucket", required=True, help="S3BucketName (see `map-bucket` to point it at a directory).")
@click.option("--prefix", default=None, help="S3KeyPrefix.")
@click.option("--multi-region/--single-region", default=False, show_default=True)
@click.option("--organization", is_flag=True, help="An organization trail (keys under AWSLogs/<o-id>/).")
@click.option("--validation/--no-validation", default=False, show_default=True, help="Log file validation.")
@click.option("--no-global-events", is_flag=True, help="Exclude global service events.")
@click.option("--start", is_flag=True, help="Start logging right away.")
@click.pass_obj
def _create_cmd(obj, name, bucket, prefix, multi_region, organization, validation, no_global_events, start):
    """Create a trail owned by the lake's account in the lake's region."""
    from .output import emit

    def go():
        cat = TrailCatalog(obj.lake)
        t = cat.create(name, bucket, owner=obj.lake.account_id, region=obj.lake.region, prefix=prefix,
                       multi_region=multi_region, organization=organization, validation=validation,
                       include_global=not no_global_events)
        return cat.set_logging(t, True) if start else t
    emit(_run(go).describe(), obj.fmt)


@trails_cli.command("list")
@click.pass_obj
def _list_cmd(obj):
    """Every trail of the lake, any account and region."""
    from .output import emit

    rows = _run(lambda: [{**t.info(), "Owner": t.owner, "IsLogging": t.is_logging, "Bucket": t.bucket,
                          "Destination": bucket_target(obj.lake, t.bucket, t.extension.get("Destination"))[0]}
                         for t in TrailCatalog(obj.lake).list()])
    emit(rows, obj.fmt, columns=["Name", "Owner", "HomeRegion", "IsLogging", "Bucket", "Destination"])


@trails_cli.command("describe")
@click.argument("ref")
@click.pass_obj
def _describe_cmd(obj, ref):
    """A trail's settings, selectors, Lake extension and status."""
    from .output import emit

    def go():
        t = _cli_trail(obj.lake, ref)
        return {**t.describe(), **t.event_selectors(), "InsightSelectors": t.doc.get("InsightSelectors") or [],
                "Lake": t.extension, "Status": status(obj.lake, t)}
    emit(_run(go), obj.fmt)


@trails_cli.command("start")
@click.argument("ref")
@click.pass_obj
def _start_cmd(obj, ref):
    """StartLogging."""
    _run(lambda: TrailCatalog(obj.lake).set_logging(_cli_trail(obj.lake, ref), True))


@trails_cli.command("stop")
@click.argument("ref")
@click.pass_obj
def _stop_cmd(obj, ref):
    """StopLogging."""
    _run(lambda: TrailCatalog(obj.lake).set_logging(_cli_trail(obj.lake, ref), False))


@trails_cli.command("delete")
@click.argument("ref")
@click.pass_obj
def _delete_cmd(obj, ref):
    """DeleteTrail."""
    _run(lambda: TrailCatalog(obj.lake).delete(_cli_trail(obj.lake, ref)))


@trails_cli.command("map-bucket")
@click.argument("bucket")
@click.argument("uri", required=False)
@click.option("--remove", is_flag=True, help="Forget the mapping (back to s3://BUCKET).")
@click.option("--account", default=None, metavar="ACCOUNT",
              help="Only trails of this account may deliver to the bucket (default: every account's).")
@click.pass_obj
def _map_cmd(obj, bucket, uri, remove, account):
    """Make S3 bucket BUCKET mean URI (a directory or fsspec URI) for the lake's trails."""
    if not remove and not uri:
        raise click.UsageError("give the URI the bucket stands for, or --remove")
    _run(lambda: unmap_bucket(obj.lake, bucket) if remove else map_bucket(obj.lake, bucket, uri, account=account))


@trails_cli.command("configure")
@click.argument("ref")
@click.option("--destination", default=None, help="URI to deliver to instead of the bucket ('' = default).")
@click.option("--stores", default=None, help="Comma-separated stores whose events the trail delivers ('' = all).")
@click.option("--sources", default=None, help="Comma-separated: live, import.")
@click.option("--organization-id", default=None, help="o-... id for organization trails' keys ('' = default).")
@click.pass_obj
def _configure_cmd(obj, ref, destination, stores, sources, organization_id):
    """Change a trail's Lake settings (where it delivers, which stores and sources it follows)."""
    from .output import emit

    settings: dict[str, Any] = {}
    if destination is not None:
        settings["Destination"] = destination or None
    if stores is not None:
        settings["Stores"] = [s for s in stores.split(",") if s] or None
    if sources is not None:
        settings["Sources"] = [s for s in sources.split(",") if s]
    if organization_id is not None:
        settings["OrganizationId"] = organization_id or None
    emit(_run(lambda: TrailCatalog(obj.lake).configure(_cli_trail(obj.lake, ref), **settings).extension), obj.fmt)


@trails_cli.command("deliver")
@click.option("--trail", "ref", default=None, help="Only this trail (default: every trail).")
@click.option("--loop", "interval", type=float, default=None,
              help="Keep delivering every INTERVAL seconds until interrupted.")
@click.pass_obj
def _deliver_cmd(obj, ref, interval):
    """Deliver pending events as log files now (and digests that are due)."""
    import threading

    from .delivery import Deliverer, deliver_all
    from .output import emit

    def once():
        if ref:
            return [Deliverer(obj.lake, _cli_trail(obj.lake, ref)).run_once(datetime.now(timezone.utc))]
        return deliver_all(obj.lake, datetime.now(timezone.utc))
    if interval is None:
        emit([r.summary() for r in _run(once)], obj.fmt)
        return
    stop = threading.Event()
    try:
        while not stop.is_set():
            for r in _run(once):
                if r.files:
                    emit(r.summary(), obj.fmt)
            stop.wait(interval)
    except KeyboardInterrupt:
        pass


__all__ = ["Trail", "TrailCatalog", "TrailError", "TrailNotFound", "TrailExists", "InvalidTrailName",
           "TrailArnInvalid", "InvalidBucketName", "InvalidPrefix", "BucketNotFound", "TooManyTrails",
           "InvalidCombination", "InvalidEventSelectors", "InvalidInsightSelectors", "InvalidHomeRegion",
           "InsightNotEnabled", "check_name", "check_event_selectors", "check_advanced_selectors",
           "basic_to_advanced", "map_bucket", "unmap_bucket", "bucket_target", "destination", "status",
           "parse_arn", "trails_cli", "DEFAULT_EVENT_SELECTORS", "NotManagementAccount", "check_key_piece",
           "management_account", "check_organization", "store_owner", "readable_stores", "check_bucket_access",
           "InsufficientBucketPolicy"]
