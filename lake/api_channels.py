"""`lake serve` handlers for channels: Create/Get/List/Update/DeleteChannel, Put/Get/DeleteResourcePolicy and
PutAuditEvents (cloudtrail-data). The work is in `lake/channels.py`; this module checks who may do what and
turns catalog errors into each operation's exception names (a missing channel is ChannelNotFoundException for
GetChannel, ResourceNotFoundException for the resource-policy operations and ChannelNotFound for
PutAuditEvents, as the service models say).

Visibility: a channel belongs to the account of the principal that created it; principals allowed that
account see and manage it, everyone else gets "not found". PutAuditEvents is the exception AWS makes:
another account may put events when the channel's resource policy allows it.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Iterator

import orjson

from . import channels as ch
from .api_lookup import decode_token, encode_token, fingerprint, store_account
from .api_tags import MAX_TAGS, check_tags, delete_tags, set_tags, tag_resource
from .apicore import SERVICE_DATA, ApiContext, ApiError, operation
from .errors import LakeError

LIST_DEFAULT = 100
_ID_RE = re.compile(r"^[-_A-Za-z0-9]{1,128}\Z")
_OTHER_RESOURCE_RE = re.compile(r"^arn:aws[a-z-]*:cloudtrail:[a-z0-9-]*:[^:]*:(eventdatastore|dashboard)/.+\Z")
_VALIDATION = "ValidationException"  # request-shape errors the model has no exception for


def _error(e: LakeError, **renames: str) -> ApiError:
    """An ApiError for a catalog error, with the code renamed for operations whose model names it differently."""
    code = getattr(e, "code", "InvalidParameterException")
    return ApiError(renames.get(code, code), str(e))


@contextlib.contextmanager
def _mapped(**renames: str) -> Iterator[None]:
    """Catalog errors inside the block become the operation's ApiError."""
    try:
        yield
    except LakeError as e:
        raise _error(e, **renames) from None


def _catalog(ctx: ApiContext) -> ch.ChannelCatalog:
    return ch.ChannelCatalog(ctx.lake)


def _may_use_store(ctx: ApiContext):
    return lambda st: ctx.principal.may_access(store_account(st, ctx.lake))


def _visible(ctx: ApiContext, ref: Any, **renames: str) -> ch.Channel:
    """A channel the caller may manage; ChannelNotFoundException (or its rename) otherwise."""
    with _mapped(**renames):
        channel = _catalog(ctx).get(ref)
    if not ctx.principal.may_access(channel.owner):
        raise ApiError(renames.get("ChannelNotFoundException", "ChannelNotFoundException"), f"no channel {ref!r}")
    return channel


def _describe(c: ch.Channel) -> dict:
    return {"ChannelArn": c.arn, "Name": c.name, "Source": c.source, "Destinations": list(c.destinations)}


def _check_tags(tags: Any) -> list[dict]:
    if not tags:
        return []
    if len(tags) > MAX_TAGS:
        raise ApiError("TagsLimitExceededException", f"a channel can have at most {MAX_TAGS} tags; {len(tags)} "
                                                     "were given")
    return check_tags(tags, "InvalidTagParameterException")


@tag_resource("channel")
def channel_owner(ctx: ApiContext, arn: str) -> str:
    """AddTags/ListTags/RemoveTags on a channel ARN: the owner account, or ResourceNotFoundException."""
    try:
        return _catalog(ctx).get(arn).owner
    except LakeError:
        raise ApiError("ResourceNotFoundException", f"The specified resource {arn} was not found.") from None


# ---- channels -------------------------------------------------------------------------------------------

@operation("CreateChannel", mutating=True)
def create_channel(ctx: ApiContext, params: dict) -> dict:
    tags = _check_tags(params.get("Tags"))
    with _mapped():
        channel = _catalog(ctx).create(name=params.get("Name"), source=params.get("Source"),
                                       destinations=params.get("Destinations"), owner=ctx.principal.account_id,
                                       region=ctx.region, may_use_store=_may_use_store(ctx))
    if tags:
        set_tags(ctx.lake, channel.arn, tags)
    out = _describe(channel)
    if params.get("Tags") is not None:
        out["Tags"] = tags
    return out


@operation("GetChannel")
def get_channel(ctx: ApiContext, params: dict) -> dict:
    channel = _visible(ctx, params.get("Channel"))
    status = _catalog(ctx).ingestion_status(channel.id)
    return {**_describe(channel), "IngestionStatus": status}


@operation("ListChannels")
def list_channels(ctx: ApiContext, params: dict) -> dict:
    limit = params.get("MaxResults", LIST_DEFAULT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise ApiError(_VALIDATION, f"MaxResults must be between 1 and 1000, got {limit!r}")
    fp = fingerprint("ListChannels", ctx.principal.arn)
    after = None
    if params.get("NextToken") is not None:
        token = decode_token(ctx.lake, "channels", params["NextToken"])
        if token.get("fp") != fp or not isinstance(token.get("after"), list):
            raise ApiError("InvalidNextTokenException", "NextToken is not valid: pass the NextToken of the previous "
                                                        "page unchanged")
        after = tuple(token["after"])
    channels = [c for c in _catalog(ctx).list(ctx.principal.allowed_accounts)
                if after is None or (c.created, c.id) > after]
    page = channels[:limit]
    out: dict[str, Any] = {"Channels": [{"ChannelArn": c.arn, "Name": c.name} for c in page]}
    if len(channels) > limit:
        out["NextToken"] = encode_token(ctx.lake, "channels", {"after": [page[-1].created, page[-1].id], "fp": fp})
    return out


@operation("UpdateChannel", mutating=True)
def update_channel(ctx: ApiContext, params: dict) -> dict:
    channel = _visible(ctx, params.get("Channel"))
    with _mapped():
        new = _catalog(ctx).update(channel.arn, name=params.get("Name"), destinations=params.get("Destinations"),
                                   may_use_store=_may_use_store(ctx))
    return _describe(new)


@operation("DeleteChannel", mutating=True)
def delete_channel(ctx: ApiContext, params: dict) -> dict:
    channel = _visible(ctx, params.get("Channel"))
    with _mapped():
        _catalog(ctx).delete(channel.arn)
    delete_tags(ctx.lake, channel.arn)
    return {}


# ---- resource policies ----------------------------------------------------------------------------------

_POLICY_RENAMES = {"ChannelNotFoundException": "ResourceNotFoundException",
                   "ChannelARNInvalidException": "ResourceARNNotValidException"}


def _policy_channel(ctx: ApiContext, arn: Any) -> ch.Channel:
    """The channel a resource-policy call names. Lake keeps resource policies on channels only."""
    if isinstance(arn, str) and _OTHER_RESOURCE_RE.match(arn):
        raise ApiError("ResourceTypeNotSupportedException",
                       f"{arn} is not a channel: Lake supports resource policies on channels only")
    if not isinstance(arn, str) or not ch.CHANNEL_ARN_RE.match(arn):
        raise ApiError("ResourceARNNotValidException",
                       f"{str(arn)[:300]!r} is not a channel ARN (arn:aws:cloudtrail:REGION:ACCOUNT:channel/ID)")
    return _visible(ctx, arn, **_POLICY_RENAMES)


@operation("PutResourcePolicy", mutating=True)
def put_resource_policy(ctx: ApiContext, params: dict) -> dict:
    channel = _policy_channel(ctx, params.get("ResourceArn"))
    with _mapped(**_POLICY_RENAMES):
        new = _catalog(ctx).put_policy(channel.arn, params.get("ResourcePolicy"))
    return {"ResourceArn": new.arn, "ResourcePolicy": new.policy}


@operation("GetResourcePolicy")
def get_resource_policy(ctx: ApiContext, params: dict) -> dict:
    channel = _policy_channel(ctx, params.get("ResourceArn"))
    if not channel.policy:
        raise ApiError("ResourcePolicyNotFoundException", f"channel {channel.arn} has no resource policy")
    return {"ResourceArn": channel.arn, "ResourcePolicy": channel.policy}


@operation("DeleteResourcePolicy", mutating=True)
def delete_resource_policy(ctx: ApiContext, params: dict) -> dict:
    channel = _policy_channel(ctx, params.get("ResourceArn"))
    with _mapped(**_POLICY_RENAMES):
        _catalog(ctx).delete_policy(channel.arn)
    return {}


# ---- PutAuditEvents ---------------------------------------------------------------------------------------

def _check_audit_events(events: Any) -> list[dict]:
    """The request-level rules: 1-100 events, ids of the model's pattern, no repeated id, 1 MB in total."""
    if not isinstance(events, list) or not 1 <= len(events) <= ch.MAX_EVENTS_PER_REQUEST:
        n = len(events) if isinstance(events, list) else "no"
        raise ApiError(_VALIDATION, f"auditEvents must hold 1 to {ch.MAX_EVENTS_PER_REQUEST} events, got {n}")
    seen: set[str] = set()
    for i, ev in enumerate(events):
        if not isinstance(ev, dict) or not isinstance(ev.get("id"), str) or not _ID_RE.match(ev["id"]):
            raise ApiError(_VALIDATION, f"auditEvents[{i}].id must be 1-128 characters of A-Z a-z 0-9 - _")
        if ev["id"] in seen:
            raise ApiError("DuplicatedAuditEventId", f"auditEvents repeats the id {ev['id']!r}")
        seen.add(ev["id"])
    size = len(orjson.dumps({"auditEvents": events}))
    if size > ch.MAX_REQUEST_BYTES:
        raise ApiError(_VALIDATION, f"the request's auditEvents are {size:,} bytes; the limit is "
                                    f"{ch.MAX_REQUEST_BYTES:,} bytes (1 MB)", status=413)
    return events


@operation("PutAuditEvents", service=SERVICE_DATA, mutating=True)
def put_audit_events(ctx: ApiContext, params: dict) -> dict:
    events = _check_audit_events(params.get("auditEvents"))
    external_id = params.get("externalId")
    try:
        channel = _catalog(ctx).get(params.get("channelArn"))
    except ch.ChannelArnInvalid as e:
        raise ApiError("InvalidChannelARN", str(e)) from None
    except ch.ChannelNotFound as e:
        raise ApiError("ChannelNotFound", str(e)) from None
    p = ctx.principal
    if not ch.may_put(channel, account=p.account_id, arn=p.arn, external_id=external_id):
        hint = " (and externalId, if the policy requires one)" if external_id is None and channel.policy else ""
        raise ApiError("ChannelInsufficientPermission",
                       f"{p.arn} may not put events on {channel.arn}: the caller's account must own the channel or "
                       f"be allowed cloudtrail-data:PutAuditEvents by its resource policy{hint}")
    result = ch.put_audit_events(ctx.lake, channel, events, region=ctx.region, now=ctx.now)
    _catalog(ctx).record_ingestion(
        channel.id,
        attempt_id=(result.successful or [{}])[-1].get("eventID"),
        success_id=(result.successful or [{}])[-1].get("eventID"),
        error_code=result.failed[-1]["errorCode"] if result.failed else None)
    return {"successful": result.successful, "failed": result.failed}
