"""Event data store operations of `lake serve`: Create/Get/List/Update/Delete/RestoreEventDataStore and
Start/StopEventDataStoreIngestion, mapped onto `Lake`/`Store` with CloudTrail's shapes and exception names.

Stores belong to an account: the account field of their ARN. A store created through the API gets the
caller's account (and the endpoint's region) in its ARN; stores created by the CLI carry the lake's default
account (`lake.account_id`). A principal sees and changes only stores of its allowed accounts; any other
store answers EventDataStoreNotFoundException, exactly like a store that does not exist, so the API does not
reveal other accounts' stores. Other handler modules use `resolve_store`/`visible_stores` for the same rule.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from .apicore import ApiContext, ApiError, operation
from .errors import InvalidParameter, NotFound
from .lake import ARN_RE
from .selectors import SelectorError, validate_selectors
from .store import ENABLED, PENDING_DELETION, STOPPED, Store

DEFAULT_MAX_RESULTS = 1000


def owner_account(lake, md: dict) -> str:
    """The account a store belongs to: its ARN's account field (the lake's default account otherwise)."""
    parts = str(md.get("EventDataStoreArn", "")).split(":")
    return parts[4] if len(parts) > 5 and parts[4] else lake.account_id


def store_visible(ctx: ApiContext, st: Store) -> bool:
    return ctx.principal.may_access(owner_account(ctx.lake, st.metadata))


def _not_found(ref: str) -> ApiError:
    return ApiError("EventDataStoreNotFoundException", f"The specified event data store {ref} was not found.")


def resolve_store(ctx: ApiContext, ref: str) -> Store:
    """The store named by an ARN or id (a name works too) that the caller may see, or the AWS error."""
    if ":" in ref and not ARN_RE.match(ref):
        raise ApiError("EventDataStoreARNInvalidException",
                       f"The specified event data store ARN {ref} is not valid or does not map to an event data "
                       "store in your account.")
    if ":" not in ref:  # a name (or an id): names are per account, the caller's own first
        own = ctx.principal.account_id
        for account in [own, *sorted(ctx.principal.allowed_accounts - {own})]:
            try:
                st = ctx.lake.store(ref, account=account)
            except (NotFound, InvalidParameter):
                continue
            if store_visible(ctx, st):
                return st
        raise _not_found(ref)
    try:
        st = ctx.lake.store(ref)
    except (NotFound, InvalidParameter):
        raise _not_found(ref) from None
    if not store_visible(ctx, st):
        raise _not_found(ref)
    return st


def visible_stores(ctx: ApiContext) -> list[Store]:
    """Every store the caller may see, oldest first (stores deleted more than 7 days ago are gone)."""
    return [st for st in ctx.lake.stores() if store_visible(ctx, st)]


def _selectors(params: dict) -> list | None:
    sel = params.get("AdvancedEventSelectors")
    if sel is None:
        return None
    try:
        return validate_selectors(sel)
    except SelectorError as e:
        raise ApiError("InvalidEventSelectorsException", str(e)) from None


def _set_owner(ctx: ApiContext, st: Store) -> dict:
    """Put the caller's account and the endpoint's region into a new store's ARN (Lake.create_store uses the
    lake's defaults)."""
    def change(md: dict) -> dict | None:
        parts = md["EventDataStoreArn"].split(":")
        if parts[3] == ctx.region and parts[4] == ctx.principal.account_id:
            return None
        parts[3], parts[4] = ctx.region, ctx.principal.account_id
        md["EventDataStoreArn"] = ":".join(parts)
        return md
    md = st.metadata
    parts = md["EventDataStoreArn"].split(":")
    if parts[3] == ctx.region and parts[4] == ctx.principal.account_id:
        return md
    st._update_metadata("UPDATE", change)
    return st.metadata


@operation("CreateEventDataStore", mutating=True)
def create_event_data_store(ctx: ApiContext, params: dict) -> dict:
    from .api_tags import check_tags

    tags = check_tags(params.get("TagsList") or [], "InvalidTagParameterException")
    if params.get("OrganizationEnabled"):
        _check_organization(ctx)
    st = ctx.lake.create_store(
        params["Name"], selectors=_selectors(params), retention_days=params.get("RetentionPeriod"),
        termination_protection=params.get("TerminationProtectionEnabled", True),
        billing_mode=params.get("BillingMode", "EXTENDABLE_RETENTION_PRICING"),
        multi_region=params.get("MultiRegionEnabled", True), organization=params.get("OrganizationEnabled", False),
        kms_key_id=params.get("KmsKeyId"), tags=tags, start_ingestion=params.get("StartIngestion", True),
        account_id=ctx.principal.account_id, region=ctx.region)  # the caller's from commit 0 on
    return _set_owner(ctx, st)


def _check_organization(ctx: ApiContext) -> None:
    """Organization event data stores are for the management account only (trails.management_account)."""
    from .trails import management_account

    if ctx.principal.account_id != management_account(ctx.lake):
        raise ApiError("NotOrganizationMasterAccountException",
                       f"Account {ctx.principal.account_id} is not the management account of the organization "
                       "and cannot create or update an organization event data store.")


@operation("GetEventDataStore")
def get_event_data_store(ctx: ApiContext, params: dict) -> dict:
    return resolve_store(ctx, params["EventDataStore"]).metadata


def _token(md: dict) -> str:
    raw = orjson.dumps({"c": md.get("CreatedTimestamp", ""), "i": md["EventDataStoreId"]})
    return base64.urlsafe_b64encode(raw).decode()


def _after(token: str) -> tuple[str, str]:
    try:
        d = orjson.loads(base64.urlsafe_b64decode(token.encode()))
        return str(d["c"]), str(d["i"])
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        raise ApiError("InvalidNextTokenException", "The NextToken is not valid; start again without it.") \
            from None


@operation("ListEventDataStores")
def list_event_data_stores(ctx: ApiContext, params: dict) -> dict:
    limit = params.get("MaxResults") or DEFAULT_MAX_RESULTS
    mds = [st.metadata for st in visible_stores(ctx)]
    if params.get("NextToken"):
        after = _after(params["NextToken"])
        mds = [md for md in mds if (md.get("CreatedTimestamp", ""), md["EventDataStoreId"]) > after]
    page = mds[:limit]
    out: dict[str, Any] = {"EventDataStores": [{"EventDataStoreArn": md["EventDataStoreArn"], "Name": md["Name"]}
                                               for md in page]}
    if len(mds) > limit:
        out["NextToken"] = _token(page[-1])
    return out


@operation("UpdateEventDataStore", mutating=True)
def update_event_data_store(ctx: ApiContext, params: dict) -> dict:
    st = resolve_store(ctx, params["EventDataStore"])
    if st.metadata["Status"] == PENDING_DELETION:
        raise ApiError("InactiveEventDataStoreException",
                       f"Event data store {st.arn} is pending deletion; restore it before updating it.")
    if params.get("OrganizationEnabled"):
        _check_organization(ctx)
    return st.update(name=params.get("Name"), selectors=_selectors(params),
                     retention_days=params.get("RetentionPeriod"),
                     termination_protection=params.get("TerminationProtectionEnabled"),
                     multi_region=params.get("MultiRegionEnabled"), organization=params.get("OrganizationEnabled"),
                     billing_mode=params.get("BillingMode"), kms_key_id=params.get("KmsKeyId"))


@operation("DeleteEventDataStore", mutating=True)
def delete_event_data_store(ctx: ApiContext, params: dict) -> dict:
    st = resolve_store(ctx, params["EventDataStore"])
    if st.metadata["Status"] == PENDING_DELETION:
        raise ApiError("InactiveEventDataStoreException", f"Event data store {st.arn} is already pending deletion.")
    st.delete()
    return {}


@operation("RestoreEventDataStore", mutating=True)
def restore_event_data_store(ctx: ApiContext, params: dict) -> dict:
    st = resolve_store(ctx, params["EventDataStore"])
    if st.metadata["Status"] != PENDING_DELETION:
        raise ApiError("InvalidEventDataStoreStatusException",
                       f"Event data store {st.arn} is {st.metadata['Status']}; only a store in PENDING_DELETION "
                       "can be restored.")
    return st.restore()


def _ingestion(ctx: ApiContext, params: dict, want: str) -> dict:
    st = resolve_store(ctx, params["EventDataStore"])
    status = st.metadata["Status"]
    needed = STOPPED if want == ENABLED else ENABLED
    if status != needed:
        verb = "start" if want == ENABLED else "stop"
        raise ApiError("InvalidEventDataStoreStatusException",
                       f"Cannot {verb} ingestion on event data store {st.arn}: its status is {status}, not {needed}.")
    try:
        st.start_ingestion() if want == ENABLED else st.stop_ingestion()
    except InvalidParameter as e:
        raise ApiError("InvalidEventDataStoreCategoryException", str(e)) from None
    return {}


@operation("StartEventDataStoreIngestion", mutating=True)
def start_event_data_store_ingestion(ctx: ApiContext, params: dict) -> dict:
    return _ingestion(ctx, params, ENABLED)


@operation("StopEventDataStoreIngestion", mutating=True)
def stop_event_data_store_ingestion(ctx: ApiContext, params: dict) -> dict:
    return _ingestion(ctx, params, STOPPED)


__all__ = ["owner_account", "resolve_store", "visible_stores", "store_visible"]
