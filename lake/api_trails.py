"""Trail operations of `lake serve`: Create/Update/Delete/Get/DescribeTrails, ListTrails, GetTrailStatus,
Start/StopLogging, Put/GetEventSelectors and Put/GetInsightSelectors, mapped onto `lake/trails.py` with
CloudTrail's shapes and exception names.

A trail belongs to the account that created it and lives in the endpoint's region (its HomeRegion).
Names resolve in the caller's own account; ARNs in any account the caller may see. A multi-region trail
also shows in other regions as a shadow trail (DescribeTrails with includeShadowTrails, GetTrail), but is
changed only from its home region (InvalidHomeRegionException elsewhere), as in CloudTrail. Trail ARNs are
taggable through AddTags/ListTags/RemoveTags (lake/api_tags.py).
"""

from __future__ import annotations

import base64
import functools
from typing import Any, Callable

import orjson

from . import tenancy
from .apicore import ApiContext, ApiError, operation
from .api_tags import check_tags, delete_tags, set_tags, tag_resource
from .errors import LakeError
from .trails import (InsightNotEnabled, InvalidHomeRegion, Trail, TrailCatalog, TrailNotFound, check_name, parse_arn,
                     status)

LIST_TRAILS_PAGE = 50  # trails per ListTrails page (CloudTrail does not document its page size)


def _api(fn: Callable[[ApiContext, dict], dict]) -> Callable[[ApiContext, dict], dict]:
    """Lake errors become the ApiError the client sees (also when a test calls the handler directly)."""
    @functools.wraps(fn)
    def wrapper(ctx: ApiContext, params: dict) -> dict:
        try:
            return fn(ctx, params)
        except LakeError as e:
            raise ApiError(e.code, str(e).splitlines()[0] if str(e) else e.code) from None
    return wrapper


def _resolve(ctx: ApiContext, ref: str) -> Trail:
    return TrailCatalog(ctx.lake).resolve(ref, account=ctx.principal.account_id, region=ctx.region,
                                          accounts=ctx.principal.allowed_accounts)


def _home(ctx: ApiContext, ref: str) -> Trail:
    """A trail the request may change: only from its home region."""
    trail = _resolve(ctx, ref)
    if trail.home_region != ctx.region:
        raise InvalidHomeRegion(f"This operation must be called from the trail's home region, "
                                f"{trail.home_region}; {trail.arn} is a shadow trail in {ctx.region}.")
    return trail


def _check_roots(ctx: ApiContext, bucket: Any, prefix: Any) -> None:
    """An unmapped bucket is `s3://bucket` written with the server's credentials: never under an S3 root the
    operator declared for another account (its import source: the trail would inject events into it), and
    under one of the caller's own S3 roots when it has some (lake/tenancy.py). Mapped buckets follow
    `trails.check_bucket_access`."""
    if not isinstance(bucket, str) or ctx.lake.storage.exists(f"_catalog/buckets/{bucket}.json") \
            or not tenancy.roots(ctx):
        return
    key = prefix.strip("/") if isinstance(prefix, str) else ""
    uri = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if tenancy.bad_key(key) or not tenancy.S3_URI_RE.fullmatch(uri):
        return  # the catalog refuses the name or prefix with its own exception
    if not tenancy.s3_allowed(ctx.lake, uri, ctx.principal.account_id, tenancy.roots(ctx)):
        raise ApiError("InsufficientS3BucketPolicyException",
                       f"Incorrect S3 bucket policy is detected for bucket: {bucket}")


@operation("CreateTrail", mutating=True)
@_api
def create_trail(ctx: ApiContext, params: dict) -> dict:
    tags = check_tags(params.get("TagsList") or [], "InvalidTagParameterException")
    _check_roots(ctx, params.get("S3BucketName"), params.get("S3KeyPrefix"))
    trail = TrailCatalog(ctx.lake).create(
        params["Name"], params["S3BucketName"], owner=ctx.principal.account_id, region=ctx.region,
        prefix=params.get("S3KeyPrefix"), sns_topic=params.get("SnsTopicName"),
        include_global=params.get("IncludeGlobalServiceEvents", True),
        multi_region=params.get("IsMultiRegionTrail", False), validation=params.get("EnableLogFileValidation", False),
        organization=params.get("IsOrganizationTrail", False),
        cloudwatch_group=params.get("CloudWatchLogsLogGroupArn"), cloudwatch_role=params.get("CloudWatchLogsRoleArn"),
        kms_key_id=params.get("KmsKeyId"), recursive_logging=params.get("RecursiveLogging"))
    if tags:
        set_tags(ctx.lake, trail.arn, tags)
    return trail.settings()


@operation("UpdateTrail", mutating=True)
@_api
def update_trail(ctx: ApiContext, params: dict) -> dict:
    trail = _home(ctx, params["Name"])
    if params.get("S3BucketName") is not None or params.get("S3KeyPrefix") is not None:
        _check_roots(ctx, params.get("S3BucketName") or trail.bucket,
                     params["S3KeyPrefix"] if params.get("S3KeyPrefix") is not None else trail.key_prefix)
    new = TrailCatalog(ctx.lake).update(
        trail, bucket=params.get("S3BucketName"), prefix=params.get("S3KeyPrefix"),
        sns_topic=params.get("SnsTopicName"), include_global=params.get("IncludeGlobalServiceEvents"),
        multi_region=params.get("IsMultiRegionTrail"), validation=params.get("EnableLogFileValidation"),
        organization=params.get("IsOrganizationTrail"), cloudwatch_group=params.get("CloudWatchLogsLogGroupArn"),
        cloudwatch_role=params.get("CloudWatchLogsRoleArn"), kms_key_id=params.get("KmsKeyId"),
        recursive_logging=params.get("RecursiveLogging"))
    return new.settings()


@operation("DeleteTrail", mutating=True)
@_api
def delete_trail(ctx: ApiContext, params: dict) -> dict:
    trail = _home(ctx, params["Name"])
    TrailCatalog(ctx.lake).delete(trail)
    delete_tags(ctx.lake, trail.arn)
    _kick(ctx)
    return {}


@operation("DescribeTrails")
@_api
def describe_trails(ctx: ApiContext, params: dict) -> dict:
    """Without names: the region's trails of every account the caller may see (plus multi-region shadows with
    includeShadowTrails, the default). With names: those trails; unknown ones are left out, as AWS does."""
    shadows = params.get("includeShadowTrails", True)
    catalog = TrailCatalog(ctx.lake)
    names = params.get("trailNameList") or []
    if not names:
        trails = [t for t in catalog.list(ctx.principal.allowed_accounts, ctx.region)
                  if shadows or t.home_region == ctx.region]
    else:
        trails = []
        for ref in names:
            if parse_arn(ref) is None:
                check_name(ref)
            try:
                t = _resolve(ctx, ref)
            except TrailNotFound:
                continue
            if (shadows or t.home_region == ctx.region) and all(t.arn != x.arn for x in trails):
                trails.append(t)
    return {"trailList": [t.describe() for t in trails]}


@operation("GetTrail")
@_api
def get_trail(ctx: ApiContext, params: dict) -> dict:
    return {"Trail": _resolve(ctx, params["Name"]).describe()}


def _page_token(key: list[str]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(key)).decode()


def _after(token: str) -> list[str]:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(key, list) and all(isinstance(k, str) for k in key):
            return key
    except (ValueError, orjson.JSONDecodeError):
        pass
    raise ApiError("InvalidTokenException", "The NextToken is not valid; start again without it.")


@operation("ListTrails")
@_api
def list_trails(ctx: ApiContext, params: dict) -> dict:
    """Every trail of the caller's visible accounts in every region (TrailInfo), a page at a time."""
    trails = TrailCatalog(ctx.lake).list(ctx.principal.allowed_accounts)
    keyed = sorted(([t.owner, t.home_region, t.name], t) for t in trails)
    if params.get("NextToken"):
        after = _after(params["NextToken"])
        keyed = [(k, t) for k, t in keyed if k > after]
    page = keyed[:LIST_TRAILS_PAGE]
    out: dict[str, Any] = {"Trails": [t.info() for _, t in page]}
    if len(keyed) > LIST_TRAILS_PAGE:
        out["NextToken"] = _page_token(page[-1][0])
    return out


@operation("GetTrailStatus")
@_api
def get_trail_status(ctx: ApiContext, params: dict) -> dict:
    return status(ctx.lake, _resolve(ctx, params["Name"]))


def _kick(ctx: ApiContext) -> None:
    """Ask the server's delivery thread (if any) for a round soon: a stop's final files and digest."""
    svc = ctx.services.get("delivery") if ctx.services else None
    if svc is not None and hasattr(svc, "kick"):
        svc.kick()


@operation("StartLogging", mutating=True)
@_api
def start_logging(ctx: ApiContext, params: dict) -> dict:
    TrailCatalog(ctx.lake).set_logging(_home(ctx, params["Name"]), True)
    return {}


@operation("StopLogging", mutating=True)
@_api
def stop_logging(ctx: ApiContext, params: dict) -> dict:
    TrailCatalog(ctx.lake).set_logging(_home(ctx, params["Name"]), False)
    _kick(ctx)
    return {}


@operation("PutEventSelectors", mutating=True)
@_api
def put_event_selectors(ctx: ApiContext, params: dict) -> dict:
    trail = _home(ctx, params["TrailName"])
    new = TrailCatalog(ctx.lake).put_event_selectors(trail, basic=params.get("EventSelectors"),
                                                     advanced=params.get("AdvancedEventSelectors"))
    return new.event_selectors()


@operation("GetEventSelectors")
@_api
def get_event_selectors(ctx: ApiContext, params: dict) -> dict:
    return _resolve(ctx, params["TrailName"]).event_selectors()


def _insight_trail(ctx: ApiContext, params: dict, *, home: bool) -> Trail:
    if params.get("EventDataStore"):
        raise ApiError("UnsupportedOperationException", "Lake supports Insights selectors on trails only, not on "
                                                        "event data stores.")
    if not params.get("TrailName"):
        raise ApiError("InvalidParameterCombinationException", "TrailName is required.")
    return _home(ctx, params["TrailName"]) if home else _resolve(ctx, params["TrailName"])


@operation("PutInsightSelectors", mutating=True)
@_api
def put_insight_selectors(ctx: ApiContext, params: dict) -> dict:
    trail = _insight_trail(ctx, params, home=True)
    new = TrailCatalog(ctx.lake).put_insight_selectors(trail, params["InsightSelectors"])
    return {"TrailARN": new.arn, "InsightSelectors": new.doc["InsightSelectors"]}


@operation("GetInsightSelectors")
@_api
def get_insight_selectors(ctx: ApiContext, params: dict) -> dict:
    trail = _insight_trail(ctx, params, home=False)
    if not trail.doc.get("InsightSelectors"):
        raise InsightNotEnabled(f"Trail {trail.arn} does not have Insights enabled.")
    return {"TrailARN": trail.arn, "InsightSelectors": trail.doc["InsightSelectors"]}


@tag_resource("trail")
def _trail_owner(ctx: ApiContext, arn: str) -> str:
    home, owner, name = parse_arn(arn) or ("", "", "")
    trail = TrailCatalog(ctx.lake).get(owner, home, name) if name else None
    if trail is None or trail.arn != arn:
        raise ApiError("ResourceNotFoundException", f"The specified resource {arn} was not found.")
    return owner


__all__ = ["LIST_TRAILS_PAGE"]
