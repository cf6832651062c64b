"""PutEventConfiguration / GetEventConfiguration: per-trail or per-store event configuration.

One operation carries three settings (botocore's cloudtrail model): `AggregationConfigurations` (data-event
aggregation, `lake/aggregation.py`; on a trail as in CloudTrail, and on an event data store as a Lake
extension so a store's own summaries can be computed), and, for event data stores only, `MaxEventSize`
(Standard | Large, the store's size mode) and `ContextKeySelectors` (enrichment; they need MaxEventSize Large),
both handled by `lake.api_enrichment` / `lake.enrichment`.
A request names exactly one of TrailName and EventDataStore. Settings not given are left as they are; an
empty AggregationConfigurations list turns aggregation off.
"""

from __future__ import annotations

from .aggregation import AggregationError, check_configurations, set_store_configuration
from .apicore import ApiContext, ApiError, operation
from .api_stores import resolve_store
from .errors import LakeError
from .store import PENDING_DELETION, Store


def _target(params: dict) -> str:
    has_trail, has_store = bool(params.get("TrailName")), bool(params.get("EventDataStore"))
    if has_trail == has_store:
        raise ApiError("InvalidParameterCombinationException",
                       "Specify exactly one of TrailName and EventDataStore.")
    return "trail" if has_trail else "store"


def _trail(ctx: ApiContext, ref: str, home: bool):
    from .api_trails import _home, _resolve

    try:
        return (_home if home else _resolve)(ctx, ref)
    except LakeError as e:
        raise ApiError(e.code, str(e).splitlines()[0]) from None


def _logs_data_events(trail) -> bool:
    for sel in trail.matching_selectors():
        for f in sel.get("FieldSelectors") or []:
            if f.get("Field") == "eventCategory" and "Data" in (f.get("Equals") or []):
                return True
    return False


def _store_response(st: Store) -> dict:
    from .api_enrichment import get_store_context

    return {"EventDataStoreArn": st.arn, **get_store_context(st),
            "AggregationConfigurations": st.metadata.get("AggregationConfigurations") or []}


def _put_store(ctx: ApiContext, params: dict) -> dict:
    """MaxEventSize and ContextKeySelectors go through `api_enrichment.put_store_context` (the enrichment
    rules live in lake.enrichment); AggregationConfigurations are checked before anything is written."""
    from .api_enrichment import put_store_context

    st = resolve_store(ctx, params["EventDataStore"])
    md = st.metadata
    if md.get("Status") == PENDING_DELETION:
        raise ApiError("InactiveEventDataStoreException", f"The event data store {md['Name']} is pending deletion.")
    size, keys, aggs = (params.get(k) for k in ("MaxEventSize", "ContextKeySelectors", "AggregationConfigurations"))
    if size is None and keys is None and aggs is None:
        raise ApiError("InvalidParameterException",
                       "Specify MaxEventSize, ContextKeySelectors or AggregationConfigurations.")
    try:
        cfgs = check_configurations(aggs) if aggs is not None else None
    except AggregationError as e:
        raise ApiError("InvalidParameterException", str(e)) from None
    put_store_context(st, size, keys)
    if cfgs is not None:
        try:
            set_store_configuration(st, cfgs)
        except LakeError as e:
            raise ApiError(e.code, str(e).splitlines()[0]) from None
    return _store_response(st)


def _put_trail(ctx: ApiContext, params: dict) -> dict:
    from .trails import TrailCatalog

    extra = [k for k in ("MaxEventSize", "ContextKeySelectors") if params.get(k) is not None]
    if extra:
        raise ApiError("InvalidParameterCombinationException", f"{extra[0]} applies to event data stores, not trails.")
    if params.get("AggregationConfigurations") is None:
        raise ApiError("InvalidParameterException", "Specify AggregationConfigurations for a trail.")
    try:
        cfgs = check_configurations(params["AggregationConfigurations"])
    except AggregationError as e:
        raise ApiError("InvalidParameterException", str(e)) from None
    trail = _trail(ctx, params["TrailName"], home=True)
    if cfgs and not _logs_data_events(trail):
        raise ApiError("InvalidParameterCombinationException",
                       f"Trail {trail.arn} does not log data events; add data event selectors first.")

    def fn(doc: dict) -> dict | None:
        if (doc.get("AggregationConfigurations") or []) == cfgs:
            return None
        doc["AggregationConfigurations"] = cfgs
        return doc
    try:
        new = TrailCatalog(ctx.lake).change(trail, fn)
    except LakeError as e:
        raise ApiError(e.code, str(e).splitlines()[0]) from None
    return {"TrailARN": new.arn, "AggregationConfigurations": cfgs}


@operation("PutEventConfiguration", mutating=True)
def put_event_configuration(ctx: ApiContext, params: dict) -> dict:
    return _put_trail(ctx, params) if _target(params) == "trail" else _put_store(ctx, params)


@operation("GetEventConfiguration")
def get_event_configuration(ctx: ApiContext, params: dict) -> dict:
    if _target(params) == "store":
        return _store_response(resolve_store(ctx, params["EventDataStore"]))
    trail = _trail(ctx, params["TrailName"], home=False)
    return {"TrailARN": trail.arn, "AggregationConfigurations": trail.doc.get("AggregationConfigurations") or []}


__all__ = ["put_event_configuration", "get_event_configuration"]
