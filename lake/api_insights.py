"""Insights operations of `lake serve` (reference 9.1, 9.3): Put/GetInsightSelectors with `EventDataStore`
(+ `InsightsDestination`), ListInsightsMetricData (stores' management events; with `TrailName`, the trail's data
events), and ListInsightsData (a trail's data-event Insights), mapped onto `lake/insights.py` and
`lake/trail_insights.py`.

Put/GetInsightSelectors are one operation name each for trails and stores: `lake/api_trails.py` registered the
trail flavour; this module re-registers the names with handlers that serve `EventDataStore` requests and hand
anything else (TrailName) to the trail handlers, so both live under one name whatever order modules load in.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl

from . import api_trails, trail_insights
from .api_lookup import as_datetime, fingerprint, micros, next_token, token_position
from .api_stores import resolve_store, visible_stores
from .apicore import ApiContext, ApiError, operation
from .errors import LakeError
from .insights import CALL, ERROR, INSIGHT_TYPES, get_config, metric_data, put_config
from .trails import check_insight_selectors

PERIODS = (60, 300, 3600)
MAX_RESULTS = 21600
_SOURCE_OK = "abcdefghijklmnopqrstuvwxyz0123456789_-"


def _one_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _eds_params(params: dict) -> None:
    if params.get("TrailName"):
        raise ApiError("InvalidParameterCombinationException",
                       "Specify either TrailName or EventDataStore, not both.")


@operation("PutInsightSelectors", mutating=True)
def put_insight_selectors(ctx: ApiContext, params: dict) -> dict:
    if not params.get("EventDataStore"):
        return api_trails.put_insight_selectors(ctx, params)
    _eds_params(params)
    source = resolve_store(ctx, params["EventDataStore"])
    try:
        selectors = check_insight_selectors(params.get("InsightSelectors"))
    except LakeError as e:
        raise ApiError("InvalidInsightSelectorsException", _one_line(e)) from None
    for sel in selectors:
        if set(sel.get("EventCategories") or ["Management"]) != {"Management"}:
            raise ApiError("InvalidParameterCombinationException",
                           "Insights on an event data store are for management events only.")
    dest = None
    if selectors:
        ref = params.get("InsightsDestination") or (get_config(ctx.lake, source) or {}).get("InsightsDestination")
        if not ref:
            raise ApiError("InvalidParameterCombinationException",
                           "InsightsDestination is required to enable Insights on an event data store.")
        dest = resolve_store(ctx, ref)
        if dest.id == source.id:
            raise ApiError("InvalidParameterCombinationException",
                           "InsightsDestination must be another event data store than EventDataStore.")
    doc = put_config(ctx.lake, source, selectors, dest)
    out = {"EventDataStoreArn": source.arn, "InsightSelectors": selectors}
    if doc.get("InsightsDestination"):
        out["InsightsDestination"] = doc["InsightsDestination"]
    return out


@operation("GetInsightSelectors")
def get_insight_selectors(ctx: ApiContext, params: dict) -> dict:
    if not params.get("EventDataStore"):
        return api_trails.get_insight_selectors(ctx, params)
    _eds_params(params)
    source = resolve_store(ctx, params["EventDataStore"])
    cfg = get_config(ctx.lake, source)
    if not cfg:
        raise ApiError("InsightNotEnabledException",
                       f"Event data store {source.arn} does not have Insights enabled.")
    out = {"EventDataStoreArn": source.arn, "InsightSelectors": cfg["InsightSelectors"]}
    if cfg.get("InsightsDestination"):
        out["InsightsDestination"] = cfg["InsightsDestination"]
    return out


@operation("ListInsightsMetricData")
def list_insights_metric_data(ctx: ApiContext, params: dict) -> dict:
    """Calls (or errors) per Period of one API, from the stores with Insights enabled that the caller sees (all
    its stores when none has Insights enabled), in the endpoint's region. NextToken pages by timestamp."""
    source, name, kind = params["EventSource"], params["EventName"], params["InsightType"]
    if not source.endswith(".amazonaws.com") or any(c not in _SOURCE_OK for c in source[:-len(".amazonaws.com")]):
        raise ApiError("InvalidParameterException", f"EventSource {source!r} is not a valid event source.")
    if kind not in INSIGHT_TYPES:
        raise ApiError("InvalidParameterException", f"InsightType must be one of {', '.join(INSIGHT_TYPES)}.")
    err = params.get("ErrorCode")
    if kind == ERROR and not err:
        raise ApiError("InvalidParameterException", "ErrorCode is required for ApiErrorRateInsight.")
    if kind == CALL and err:
        raise ApiError("InvalidParameterException", "ErrorCode applies to ApiErrorRateInsight only.")
    period = int(params.get("Period", 3600))
    if period not in PERIODS:
        raise ApiError("InvalidParameterException", f"Period must be one of {', '.join(map(str, PERIODS))}.")
    fill = params.get("DataType", "NonZeroData") == "FillWithZeros"
    end = as_datetime(params.get("EndTime"), "EndTime") or ctx.now
    start = as_datetime(params.get("StartTime"), "StartTime") or end - timedelta(days=90)
    if params.get("NextToken"):
        try:
            start = datetime.fromtimestamp(int(params["NextToken"]), timezone.utc)
        except ValueError:
            raise ApiError("InvalidParameterException", "NextToken is not valid.") from None
    if end <= start:
        raise ApiError("InvalidParameterException", "EndTime must be after StartTime.")
    limit = min(int(params.get("MaxResults", MAX_RESULTS)), MAX_RESULTS)
    common = dict(source=source, name=name, kind=kind, errorcode=err, start=start, end=end, period=period,
                  fill_zeros=fill, accounts=ctx.principal.allowed_accounts, region=ctx.region)
    if params.get("TrailName"):  # data-event Insights metrics: the trail's data events
        trail = api_trails._resolve(ctx, params["TrailName"])
        if not trail_insights.data_kinds(trail):
            raise ApiError("InsightNotEnabledException",
                           f"Trail {trail.arn} does not have Insights enabled for data events.")
        times, values = trail_insights.metric_data(ctx.lake, trail, **common)
    else:
        stores = visible_stores(ctx)
        enabled = [st for st in stores if get_config(ctx.lake, st)]
        times, values = metric_data(enabled or stores, **common)
    out: dict[str, Any] = {"EventSource": source, "EventName": name, "InsightType": kind,
                           "Timestamps": times[:limit], "Values": values[:limit]}
    if err:
        out["ErrorCode"] = err
    if len(times) > limit:
        out["NextToken"] = str(int(times[limit].timestamp()))
    return out


DATA_PAGE = 50


@operation("ListInsightsData")
@api_trails._api
def list_insights_data(ctx: ApiContext, params: dict) -> dict:
    """A trail's data-event Insights events, newest first, in LookupEvents' Event shape (reference 5.1): the
    last 90 days by default, at most one dimension (EventId, EventName or EventSource), pages of MaxResults
    (<= 50)."""
    trail = api_trails._resolve(ctx, params["InsightSource"])
    dims = params.get("Dimensions") or {}
    dimension = next(iter(dims.items())) if dims else None
    if dimension is not None and dimension[0] not in ("EventId", "EventName", "EventSource"):
        raise ApiError("InvalidParameterException", "Dimensions key must be EventId, EventName or EventSource.")
    end = as_datetime(params.get("EndTime"), "EndTime") or ctx.now
    start = as_datetime(params.get("StartTime"), "StartTime") or end - timedelta(days=90)
    if end < start:
        raise ApiError("InvalidParameterException", "EndTime must not be before StartTime.")
    limit = int(params.get("MaxResults") or DATA_PAGE)
    fp = fingerprint("insights-data", trail.arn, dimension, params.get("StartTime"), params.get("EndTime"),
                     ctx.principal.arn)
    pos = token_position(ctx, "ListInsightsData", params, fp, "p", list)
    df = trail_insights.list_events(ctx.lake, trail, start=start, end=end, dimension=dimension)
    if pos is not None:  # after the last event returned (newest first: earlier time, or same time and lower id)
        if not (len(pos) == 2 and isinstance(pos[0], int) and isinstance(pos[1], str)):
            raise ApiError("InvalidNextTokenException", "NextToken is not valid")
        t = pl.col("eventtime").dt.epoch("us")
        df = df.filter((t < pos[0]) | ((t == pos[0]) & (pl.col("eventid") < pos[1])))
    page = df.head(limit)
    events = []
    for r in page.iter_rows(named=True):
        ev: dict[str, Any] = {"EventId": r["eventid"], "EventTime": r["eventtime"], "Resources": [],
                              "CloudTrailEvent": r["eventjson"]}
        if r["eventname"]:
            ev["EventName"] = r["eventname"]
        if r["eventsource"]:
            ev["EventSource"] = r["eventsource"]
        events.append(ev)
    out: dict[str, Any] = {"Events": events}
    if df.height > limit:
        last = page.row(limit - 1, named=True)
        out["NextToken"] = next_token(ctx, "ListInsightsData", fp, "p",
                                      [micros(last["eventtime"]), last["eventid"]])
    return out


__all__ = ["put_insight_selectors", "get_insight_selectors", "list_insights_metric_data", "list_insights_data"]
