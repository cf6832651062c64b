"""Insights on a trail's data events (reference 9.1, 9.3): CloudTrail computes data-event Insights for trails only
(an event data store's Insights are for management events), enabled by a trail insight selector whose
`EventCategories` include `Data`.

**What is counted.** The data events the trail logs: those of the stores it follows (`Lake.Stores`, default
every store) that its event selectors accept, for its owner account (every account for an organization trail)
and its home region (every region for a multi-region trail). ApiCallRateInsight counts read *and* write data
calls per minute, ApiErrorRateInsight data calls that ended in an error code; the detection is the one of
`lake/insights.py` (seasonal 7-day envelope), per (account, region, eventSource, eventName[, errorCode]).

**Where they go.** A trail's data-event Insights are stored in its own store, `<trail name>-data-insights`
(recorded, with the incremental cursor, in `_trails/<trail id>/data-insights.json`), carry
`insightDetails.sourceEventCategory: "Data"`, are delivered by that trail only under `CloudTrail-Insight`
(`lake/delivery.py`), and are listed by ListInsightsData; ListInsightsMetricData with `TrailName` serves the
per-period counts. The server runs them in the Insights service's rounds (`run_incremental`), history with
`lake insights run --trail NAME --start --end`.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

import orjson
import polars as pl

from . import insights as I
from .delivery import DATA_INSIGHTS_FILE, STATE
from .errors import NotFound
from .selectors import selector_expr
from .store import PENDING_DELETION
from .api_stores import owner_account
from .trails import Trail, TrailCatalog


def data_kinds(trail: Trail) -> list[str]:
    """The insight types the trail has enabled for data events."""
    return [s["InsightType"] for s in trail.doc.get("InsightSelectors") or []
            if "Data" in (s.get("EventCategories") or [])]


def scope(trail: Trail) -> I.Scope:
    """The trail's data events: its accounts, regions and event selectors."""
    conds = []
    if not trail.organization:
        conds.append(pl.col("recipientaccountid") == trail.owner)
    if not trail.multi_region:
        conds.append(pl.col("awsregion").fill_null(trail.home_region) == trail.home_region)
    sels = trail.matching_selectors()
    conds.append(pl.any_horizontal([selector_expr([s]) for s in sels]) if sels else pl.lit(False))
    # the count cache key: everything the filter depends on
    key = orjson.dumps([trail.id, trail.owner, trail.home_region, trail.organization, trail.multi_region, sels],
                       option=orjson.OPT_SORT_KEYS).decode()
    return I.Scope("Data", pl.all_horizontal(conds), key=f"data:{key}")


def _state_path(trail: Trail) -> str:
    return f"{STATE}/{trail.id}/{DATA_INSIGHTS_FILE}"


def _state(lake: Any, trail: Trail) -> dict:
    try:
        return orjson.loads(lake.storage.read(_state_path(trail)))
    except FileNotFoundError:
        return {}


def _save(lake: Any, trail: Trail, state: dict) -> None:
    lake.storage.write(_state_path(trail), orjson.dumps(state))


def insights_store(lake: Any, trail: Trail, *, create: bool = True, state: dict | None = None) -> Any | None:
    """The store holding the trail's data-event Insights (made on first use; recorded in `state`, the trail's
    state document, which is read when not given)."""
    state = _state(lake, trail) if state is None else state
    if state.get("store"):
        try:
            return lake.store(state["store"])
        except NotFound:
            pass
    if not create:
        return None
    name = f"{trail.name}-data-insights"[:128]
    try:
        lake.store(name)
        name = f"{trail.name[:100]}-data-insights-{trail.id[:8]}"  # the name is taken by another store
    except NotFound:
        pass
    st = lake.create_store(name, account_id=trail.owner)  # the trail owner's: Insights of its data stay its own
    state["store"] = st.id
    _save(lake, trail, state)
    return st


def source_stores(lake: Any, trail: Trail, own: str | None = None) -> list:
    """The stores whose data events the trail's Insights count (never its own Insights store, `own`, read from
    the trail's state when not given: it holds no data events, and is skipped to save the scan)."""
    ids = trail.extension.get("Stores")
    own = own if own is not None else _state(lake, trail).get("store")
    return [st for st in lake.stores() if (ids is None or st.id in ids) and st.id != own
            and st.metadata.get("Status") != PENDING_DELETION  # a deleted store cannot be read until restored
            and owner_account(lake, st.metadata) == trail.owner]  # only stores the owner may read (issue 15)


def run(lake: Any, trail: Trail, start: datetime, end: datetime, *, params: I.Params = I.Params(),
        progress: Callable[[int, int], None] | None = None) -> I.RunReport:
    """Detect the trail's data-event Insights that start in [start, end) and store their Start/End events."""
    kinds = data_kinds(trail)
    if not kinds:
        raise I.InsightsError(f"trail {trail.name} has no insight selector for data events; "
                              "put one with EventCategories [\"Data\"] first")
    dest = insights_store(lake, trail)
    stores = source_stores(lake, trail, dest.id)
    report = I.RunReport(trail.name, dest.name, start.isoformat(), end.isoformat())
    if not stores:
        return report
    sc = scope(trail)
    found, series = I.find(stores, start, end, kinds=kinds, params=params, scope=sc, progress=progress)
    report.series, report.insights = series, len(found)
    for ins in found:
        report.by_type[ins.kind] = report.by_type.get(ins.kind, 0) + 1
    recs = [r for ins in found for r in I.records(ins, store_id=trail.id, scope=sc)]
    if recs:
        report.events_stored = dest.append(recs, source="import").appended
    return report


def run_incremental(lake: Any, now: datetime | None = None, params: I.Params = I.Params()) -> list[I.RunReport]:
    """One round over every logging trail with data-event Insights (`insights.advance` on the trail's cursor):
    Insights that ended since the cursor are stored; an Insight still under way waits for a later round. One
    trail's failure is logged and does not stop the others."""
    now = now or datetime.now(timezone.utc)
    reports = []
    for trail in TrailCatalog(lake).list():
        if not data_kinds(trail) or not trail.is_logging:
            continue
        try:
            rep = _trail_round(lake, trail, now, params)
        except Exception as e:  # noqa: BLE001 - logged; the next round tries again
            I.log.error("data-event Insights round for trail %s failed: %s", trail.arn, e)
            continue
        if rep is not None:
            reports.append(rep)
    return reports


def _trail_round(lake: Any, trail: Trail, now: datetime, params: I.Params) -> I.RunReport | None:
    state = _state(lake, trail)
    dest = insights_store(lake, trail, state=state)
    sc = scope(trail)
    before = state.get("through")
    step = I.advance(state, now, source_stores(lake, trail, dest.id), data_kinds(trail), params, sc)
    if state.get("through") != before:
        _save(lake, trail, state)
    if step is None:
        return None
    done, series, lo, upto = step
    if done:
        dest.append([r for i in done for r in I.records(i, store_id=trail.id, scope=sc)], source="import")
    return I.RunReport(trail.name, dest.name, I._iso(lo), I._iso(upto), series, len(done))


def metric_data(lake: Any, trail: Trail, **kwargs: Any) -> tuple[list[datetime], list[float]]:
    """ListInsightsMetricData with TrailName: the trail's data calls (or errors) of one API per period."""
    return I.metric_data(source_stores(lake, trail), scope=scope(trail), **kwargs)


def list_events(lake: Any, trail: Trail, *, start: datetime, end: datetime,
                dimension: tuple[str, str] | None = None) -> pl.DataFrame:
    """The trail's data-event Insights events in [start, end], newest first (ListInsightsData): eventid,
    eventtime, eventjson, plus the Insight's eventsource/eventname (from insightDetails)."""
    st = insights_store(lake, trail, create=False)
    cols = ["eventid", "eventtime", "eventjson", "insightdetails"]
    if st is None:
        return pl.DataFrame(schema={"eventid": pl.String, "eventtime": pl.Datetime("us", "UTC"),
                                    "eventjson": pl.String, "eventsource": pl.String, "eventname": pl.String})
    details = pl.col("insightdetails")
    df = (st.scan(start=start, end=end).select(cols)
          .filter((pl.col("eventtime") >= start) & (pl.col("eventtime") <= end))
          .with_columns(details.map.get("eventSource").alias("eventsource"),
                        details.map.get("eventName").alias("eventname"))
          .drop("insightdetails"))
    if dimension is not None:
        key, value = dimension
        df = df.filter(pl.col({"EventId": "eventid", "EventName": "eventname", "EventSource": "eventsource"}[key])
                       == value)
    return df.collect().sort(["eventtime", "eventid"], descending=True)


__all__ = ["data_kinds", "scope", "insights_store", "source_stores", "run", "run_incremental", "metric_data",
           "list_events"]
