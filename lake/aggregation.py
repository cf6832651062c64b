"""Data-event aggregation: CloudTrail's 5-minute summaries of data events (reference section 8).

**What is produced.** For each store with aggregation configured (its own `AggregationConfigurations`, set
with `PutEventConfiguration --event-data-store`, or those of a trail whose `Lake.Stores` covers it, set with
`--trail-name`), every 5-minute window of Data events yields, per (account, region, eventSource) and per
template, one aggregated event per value of the template's primary dimension:

| template        | primaryDimension  | details (each `aggregationType: Count`)              |
|-----------------|-------------------|------------------------------------------------------|
| API_ACTIVITY    | `eventName`       | `resourceARN`, `userIdentityArn`, `errorCode`        |
| RESOURCE_ACCESS | `resourceARN`     | `eventName`, `userIdentityArn`, `errorCode`          |
| USER_ACTIONS    | `userIdentityArn` | `eventName`, `resourceARN`, `errorCode`              |

The record is CloudTrail's aggregated-event format (eventVersion "1.0", `accountId`, `eventId`,
`eventCategory: Aggregated`, `eventType: AwsAggregatedEvent`, `timeWindow`, `summary`). The reference only
confirms the `eventName` and `resourceARN` dimensions; `userIdentityArn` and the `errorCode` detail (the error
counts: errors per code among the window's calls for that primary value) are Lake's reading of the
documented "activity per IAM principal" and "error rates". An event's resourceARN is its first resource that
is not an S3 object (the bucket, as in AWS's example), else its first resource; events without one are left out
of resourceARN breakdowns, so for the other primary dimensions the `resourceARN` detail can sum to less than
the primary count. Details list at most `MAX_STATISTICS` values, largest first.

**Where they land.** Aggregated events are appended to the summarised store itself, so they are queryable
with SQL next to the events: `eventcategory = 'Aggregated'`, `eventtype = 'AwsAggregatedEvent'`, `eventid`
(= `eventId`), `recipientaccountid` (= `accountId`), `awsregion`, `eventsource`, `eventtime` (= windowStart),
`eventversion` "1.0", and the summary in the free-form map `additionaleventdata` under the keys `timeWindow`
and `summary` (nested values as compact JSON text, e.g.
`json_extract_scalar(element_at(additionaleventdata, 'summary'), '$.primaryDimension.statistics[0].value')`).
The stored `eventjson` is the record exactly as CloudTrail delivers it (no eventTime, no additionalEventData),
so trail delivery copies it byte for byte under `CloudTrail-Aggregated`.

**Scale.** Events are never loaded: each span (`plan_spans`: whole hours holding about `SPAN_EVENTS` events by
segment statistics, at most a day) is one polars lazy scan over only the segments that can hold it, filtered
to Data events in the span, reduced by a streaming group-by to a "cube" of counts per
(window, account, region, source, eventName, resourceARN, user, errorCode). Only the cube is in memory; every
template is derived from it. `eventId` is a UUID derived from (store, template, window, account, region,
source, primary value), so re-running a span stores nothing twice (the store's dedupe skips known ids).

**Incremental.** `AggregationService(lake).start()` summarises, every interval, the windows that closed at
least `LAKE_AGGREGATION_LAG` seconds (default 300) ago and after the store's watermark (kept per template in
`_catalog/aggregation/<store id>.json`); a newly enabled template starts at the store's first event
(history). Events arriving after their window was summarised are not counted (CloudTrail does the same:
summaries are not revised).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import click
import orjson
import polars as pl
import pyarrow as pa

from . import events, limits
from .delivery import DeliveryService
from .errors import LakeError
from .keys import iso_seconds

log = logging.getLogger("lake.aggregation")

TEMPLATES = ("API_ACTIVITY", "RESOURCE_ACCESS", "USER_ACTIONS")
WINDOW = timedelta(minutes=5)
WINDOW_SIZE = "PT5M"
MAX_STATISTICS = 100          # values per details breakdown (largest first)
MAX_SPAN = timedelta(days=1)  # longest time span summarised per lazy scan
SPAN_EVENTS = 500_000         # events (estimated from segment statistics) per scan: bounds memory
STATE = "_catalog/aggregation"
NAMESPACE = uuid.UUID("6f1d3c1e-8a0b-5b8e-9a53-0c7a1e9e4a11")

# dimension name in the record -> cube column
_COLUMN = {"eventName": "eventname", "resourceARN": "resourcearn", "userIdentityArn": "userarn",
           "errorCode": "errorcode"}
PRIMARY = {"API_ACTIVITY": "eventName", "RESOURCE_ACCESS": "resourceARN", "USER_ACTIONS": "userIdentityArn"}
DETAILS = {"API_ACTIVITY": ("resourceARN", "userIdentityArn", "errorCode"),
           "RESOURCE_ACCESS": ("eventName", "userIdentityArn", "errorCode"),
           "USER_ACTIONS": ("eventName", "resourceARN", "errorCode")}
_KEYS = ["window", "account", "region", "source"]


class AggregationError(LakeError):
    code = "InvalidParameterException"


# ------------------------------------------------------------------------------------------ configuration

def check_configurations(value: Any) -> list[dict]:
    """AggregationConfigurations as the model allows (<= 1 entry, EventCategory Data, 1-50 known templates);
    an empty list turns aggregation off. Templates are de-duplicated, order kept."""
    if not isinstance(value, list) or len(value) > 1:
        raise AggregationError("AggregationConfigurations must be a list of at most 1 configuration")
    out = []
    for cfg in value:
        if not isinstance(cfg, dict) or cfg.get("EventCategory") != "Data":
            raise AggregationError("AggregationConfigurations EventCategory must be Data")
        templates = cfg.get("Templates")
        if not isinstance(templates, list) or not 1 <= len(templates) <= 50:
            raise AggregationError("AggregationConfigurations Templates must list 1 to 50 templates")
        bad = [t for t in templates if t not in TEMPLATES]
        if bad:
            raise AggregationError(f"unknown aggregation template {bad[0]!r}; valid: {', '.join(TEMPLATES)}")
        out.append({"Templates": list(dict.fromkeys(templates)), "EventCategory": "Data"})
    return out


def set_metadata_list(store: Any, key: str, value: list) -> dict:
    """Set one list-valued setting of a store's metadata (an UPDATE commit, none when unchanged); the new
    metadata. Used for AggregationConfigurations and ContextKeySelectors (PutEventConfiguration)."""
    def change(md: dict) -> dict | None:
        if (md.get(key) or []) == value:
            return None
        md[key] = value
        return md
    store._update_metadata("UPDATE", change)
    return store.metadata


def set_store_configuration(store: Any, configurations: list) -> dict:
    """Record a store's AggregationConfigurations in its metadata; the new metadata."""
    return set_metadata_list(store, "AggregationConfigurations", check_configurations(configurations))


def _templates_of(cfgs: Iterable[dict] | None) -> set[str]:
    return {t for c in cfgs or [] for t in c.get("Templates") or []}


def store_templates(lake: Any, store: Any, trails: list | None = None) -> list[str]:
    """Templates to compute for a store: its own configuration plus that of every trail that delivers it."""
    wanted = _templates_of(store.metadata.get("AggregationConfigurations"))
    if trails is None:
        from .trails import TrailCatalog

        trails = TrailCatalog(lake).list()
    for t in trails:
        if t.doc.get("Deleted"):
            continue
        stores = t.extension.get("Stores")
        if stores is None or store.id in stores:
            wanted |= _templates_of(t.doc.get("AggregationConfigurations"))
    return [t for t in TEMPLATES if t in wanted]


# ------------------------------------------------------------------------------------------ computation

def _floor(ts: datetime) -> datetime:
    ts = ts.astimezone(timezone.utc) if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    return ts.replace(minute=ts.minute - ts.minute % 5, second=0, microsecond=0)


def _resource_arn() -> pl.Expr:
    """The event's resource for the resourceARN dimension: the first one that is not an S3 object (the
    bucket, as in AWS's example), else the first."""
    res = pl.col("resources")
    container = res.list.eval(pl.element().filter(pl.element().struct.field("type") != "AWS::S3::Object")
                              .struct.field("arn")).list.first()
    return pl.coalesce(container, res.list.eval(pl.element().struct.field("arn")).list.first())


def cube(lf: pl.LazyFrame, start: datetime, end: datetime) -> pl.DataFrame:
    """Counts of the Data events in [start, end) per (5-minute window, account, region, source, eventName,
    resourceARN, userIdentityArn, errorCode), computed with the streaming engine (events are not held)."""
    t = pl.col("eventtime")
    dt = pl.Datetime("us", "UTC")
    q = (lf.filter((pl.col("eventcategory") == "Data") & (t >= pl.lit(start).cast(dt)) & (t < pl.lit(end).cast(dt)))
         .select(t.dt.truncate("5m").alias("window"),
                 pl.coalesce("recipientaccountid", "useridentity_accountid").alias("account"),
                 pl.col("awsregion").alias("region"), pl.col("eventsource").alias("source"),
                 pl.col("eventname"), _resource_arn().alias("resourcearn"),
                 pl.coalesce("useridentity_arn", "useridentity_principalid").alias("userarn"),
                 pl.col("errorcode"))
         .group_by(["window", "account", "region", "source", "eventname", "resourcearn", "userarn", "errorcode"])
         .agg(pl.len().cast(pl.Int64).alias("n")))
    return q.collect(engine="streaming")


def event_id(store_id: str, template: str, window: datetime, account: str, region: str, source: str,
             primary: str) -> str:
    """A stable id: summarising a window twice yields the same ids, which the store's dedupe then skips."""
    return str(uuid.uuid5(NAMESPACE, "|".join([store_id, template, window.isoformat(), account or "",
                                               region or "", source or "", primary])))



def _stats(pairs: list[tuple[str, int]]) -> list[dict]:
    pairs = sorted(pairs, key=lambda p: (-p[1], p[0]))[:MAX_STATISTICS]
    return [{"name": n, "value": int(v)} for n, v in pairs]


def summarise(c: pl.DataFrame, templates: Iterable[str], store_id: str) -> list[dict]:
    """Aggregated-event records (CloudTrail's format, key order as in AWS's example) from a cube."""
    out: list[dict] = []
    for tpl in templates:
        pdim = PRIMARY[tpl]
        pcol = _COLUMN[pdim]
        sub = c.filter(pl.col(pcol).is_not_null())
        if sub.height == 0:
            continue
        keys = _KEYS + [pcol]
        prim = sub.group_by(keys).agg(pl.col("n").sum()).sort(keys, nulls_last=True)
        details: dict[str, dict[tuple, list]] = {}
        for d in DETAILS[tpl]:
            dcol = _COLUMN[d]
            g = sub.filter(pl.col(dcol).is_not_null()).group_by(keys + [dcol]).agg(pl.col("n").sum())
            acc: dict[tuple, list] = {}
            for row in g.iter_rows():
                acc.setdefault(row[:len(keys)], []).append((row[len(keys)], row[-1]))
            details[d] = acc
        for row in prim.iter_rows():
            window, account, region, source, value, n = row
            key = row[:len(keys)]
            rec = {"eventVersion": "1.0", "accountId": account,
                   "eventId": event_id(store_id, tpl, window, account, region, source, value),
                   "eventCategory": "Aggregated", "eventType": "AwsAggregatedEvent", "awsRegion": region,
                   "eventSource": source,
                   "timeWindow": {"windowStart": iso_seconds(window), "windowEnd": iso_seconds(window + WINDOW),
                                  "windowSize": WINDOW_SIZE},
                   "summary": {"primaryDimension": {"dimension": pdim, "statistics": [{"name": value,
                                                                                       "value": int(n)}],
                                                    "aggregationType": "Count"},
                               "details": [{"dimension": d, "statistics": _stats(details[d][key]),
                                            "aggregationType": "Count"}
                                           for d in DETAILS[tpl] if details[d].get(key)]}}
            out.append(rec)
    return out


def to_table(records: list[dict]) -> pa.Table:
    """Rows of EVENT_SCHEMA for aggregated records: eventjson is the record as delivered; the columns carry
    eventTime = windowStart, eventid/recipientaccountid from eventId/accountId and the summary in
    additionaleventdata (see the module docstring)."""
    shadows = [{**r, "eventTime": r["timeWindow"]["windowStart"], "eventID": r["eventId"],
                "recipientAccountId": r["accountId"],
                "additionalEventData": {"timeWindow": r["timeWindow"], "summary": r["summary"]}} for r in records]
    conv = events.convert(shadows, size_mode=limits.LARGE, field_caps=False)
    if conv.rejects:
        raise AggregationError(f"aggregated event rejected: {conv.rejects[0].message}")
    table = conv.table
    i = table.schema.get_field_index("eventjson")
    return table.set_column(i, "eventjson", pa.array([orjson.dumps(r).decode() for r in records], pa.string()))


CONVERT_BATCH = 20_000  # records converted to Arrow at a time: the dict path's transient objects stay bounded


def append(store: Any, records: list[dict]) -> int:
    """Store aggregated records (ids already stored are skipped) in one commit; how many were new."""
    if not records:
        return 0
    from .store import AppendResult

    table = pa.concat_tables([to_table(records[i:i + CONVERT_BATCH])
                              for i in range(0, len(records), CONVERT_BATCH)])
    return store._commit_rows(table, AppendResult(), "APPEND").appended


@dataclass
class RunReport:
    store: str
    start: str
    end: str
    templates: list[str]
    spans: int = 0
    cube_rows: int = 0
    aggregated: int = 0
    stored: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def plan_spans(segments: pa.Table, start: datetime, end: datetime, *, span: timedelta = MAX_SPAN,
               max_events: int = SPAN_EVENTS) -> list[tuple[datetime, datetime]]:
    """Cut [start, end) into whole hours (the first and last may be partial) grouped into spans of at most
    `span` and about `max_events` events, estimated from segment statistics (a segment's rows spread evenly
    over its eventtime range). Memory then depends on the density of events, not on the length of history;
    one hour is the smallest span, so an hour holding more than `max_events` events is still one scan."""
    import numpy as np

    hour = 3_600_000_000
    lo_us, hi_us = int(start.timestamp() * 1e6), int(end.timestamp() * 1e6)
    first = lo_us // hour
    n = max(1, -(-hi_us // hour) - first)
    load = np.zeros(n + 1)
    if segments.num_rows:
        smin = segments.column("eventtime_min").cast(pa.int64()).to_numpy(zero_copy_only=False)
        smax = segments.column("eventtime_max").cast(pa.int64()).to_numpy(zero_copy_only=False)
        rows = segments.column("rows").to_numpy(zero_copy_only=False).astype(float)
        a = np.clip(smin // hour - first, 0, n)
        b = np.clip(smax // hour - first + 1, 0, n)
        keep = b > a
        rate = rows[keep] / ((smax[keep] // hour - smin[keep] // hour) + 1)
        np.add.at(load, a[keep], rate)
        np.add.at(load, b[keep], -rate)
    per_hour = np.cumsum(load)[:n]
    max_hours = max(1, int(span.total_seconds() // 3600))
    out, cut, acc = [], 0, 0.0
    for i in range(n):
        if i > cut and (acc + per_hour[i] > max_events or i - cut >= max_hours):
            out.append(cut)
            cut, acc = i, 0.0
        acc += per_hour[i]
    out.append(cut)
    bounds = [max(lo_us, (first + c) * hour) for c in out] + [hi_us]
    dt = [datetime.fromtimestamp(b / 1e6, timezone.utc) for b in bounds]
    return [(dt[i], dt[i + 1]) for i in range(len(out)) if dt[i] < dt[i + 1]]


def run(store: Any, start: datetime, end: datetime, templates: Iterable[str] | None = None,
        *, span: timedelta = MAX_SPAN, max_events: int = SPAN_EVENTS, lake: Any = None,
        progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Summarise the 5-minute windows in [start, end) (both floored to 5 minutes) into the store, one span
    (`plan_spans`: at most `span`, about `max_events` events) per lazy scan so memory stays bounded by one
    span's cube and records."""
    import time

    t0 = time.time()
    tpls = list(templates) if templates is not None else store_templates(lake or store.lake, store)
    start, end = _floor(start), _floor(end)
    rep = RunReport(store.name, iso_seconds(start), iso_seconds(end), tpls)
    if not tpls or end <= start:
        return rep
    snap = store.snapshot()
    spans = plan_spans(snap.segments, start, end, span=span, max_events=max_events)
    for n, (lo, hi) in enumerate(spans, 1):
        c = cube(store.scan(snap, lo, hi), lo, hi)
        recs = summarise(c, tpls, store.id)
        rep.spans += 1
        rep.cube_rows += c.height
        rep.aggregated += len(recs)
        rep.stored += append(store, recs)
        if progress:
            progress(n, len(spans))
    rep.seconds = round(time.time() - t0, 3)
    return rep


# ------------------------------------------------------------------------------------------ incremental

def _lag() -> timedelta:
    try:
        return timedelta(seconds=float(os.environ.get("LAKE_AGGREGATION_LAG", "300")))
    except ValueError:
        return timedelta(seconds=300)


def _data_start(store: Any) -> datetime | None:
    """The earliest eventtime of a segment that may hold Data events (segment statistics only)."""
    seg = pl.from_arrow(store.snapshot().segments)
    if seg.height == 0:
        return None
    if "eventcategory_values" in seg.columns:
        vals = seg["eventcategory_values"]
        keep = [v is None or "Data" in v for v in vals.to_list()]
        seg = seg.filter(pl.Series(keep, dtype=pl.Boolean))
    if seg.height == 0:
        return None
    return seg["eventtime_min"].min()


def load_state(lake: Any, store_id: str) -> dict:
    path = f"{STATE}/{store_id}.json"
    return orjson.loads(lake.storage.read(path)) if lake.storage.exists(path) else {}


def save_state(lake: Any, store_id: str, state: dict) -> None:
    lake.storage.write(f"{STATE}/{store_id}.json", orjson.dumps(state))


def aggregate_store(lake: Any, store: Any, now: datetime | None = None, trails: list | None = None
                    ) -> list[RunReport]:
    """One incremental round for a store: each configured template from its watermark (else the store's
    first Data event) to the last window closed `lag` ago; the watermark then advances."""
    now = now or datetime.now(timezone.utc)
    tpls = store_templates(lake, store, trails)
    if not tpls or store.metadata.get("Status") == "PENDING_DELETION":
        return []
    until = _floor(now - _lag())
    state = load_state(lake, store.id)
    first = None
    groups: dict[str, list[str]] = {}
    for t in tpls:
        mark = state.get(t)
        if mark is None:
            first = first or _data_start(store)
            if first is None:
                continue
            mark = iso_seconds(_floor(first))
        groups.setdefault(mark, []).append(t)
    reports = []
    for mark, ts in sorted(groups.items()):
        lo = datetime.fromisoformat(mark.replace("Z", "+00:00"))
        if lo < until:
            reports.append(run(store, lo, until, ts))
        for t in ts:
            state[t] = iso_seconds(max(lo, until))
    if groups:
        save_state(lake, store.id, state)
    return reports


def aggregate_all(lake: Any, now: datetime | None = None) -> list[RunReport]:
    """One incremental round over every store of the lake."""
    from .trails import TrailCatalog

    trails = TrailCatalog(lake).list()
    out = []
    for st in lake.stores():
        try:
            out.extend(aggregate_store(lake, st, now, trails))
        except Exception as e:  # noqa: BLE001 - one store's failure must not stop the others
            log.error("aggregation of store %s failed: %s", st.id, e)
    return out


def aggregation_interval() -> float:
    try:
        return float(os.environ.get("LAKE_AGGREGATION_INTERVAL", "60"))
    except ValueError:
        return 60.0


class AggregationService(DeliveryService):
    """The server's background aggregation: a round every `interval` seconds (default
    $LAKE_AGGREGATION_INTERVAL or 60), sooner after `kick()`; `start()` / `close()` as DeliveryService's (the
    service protocol of LakeServer.services), whose thread handling it reuses."""

    name = "aggregation"

    def __init__(self, lake: Any, interval: float | None = None, stop_event: threading.Event | None = None):
        super().__init__(lake, aggregation_interval() if interval is None else interval, stop_event)

    def _round(self) -> None:
        aggregate_all(self.lake)


# ------------------------------------------------------------------------------------------ CLI

def _parse_time(text: str) -> datetime:
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)


@click.group("aggregate", context_settings={"help_option_names": ["-h", "--help"]})
def aggregate_cli() -> None:
    """Data-event aggregation: CloudTrail's 5-minute summaries (API_ACTIVITY, RESOURCE_ACCESS, USER_ACTIONS)."""


@aggregate_cli.command("configure")
@click.option("--store", "store_ref", required=True, help="Event data store name, id or ARN.")
@click.option("--template", "templates", multiple=True, type=click.Choice(TEMPLATES),
              help="Template to enable (repeat); none turns aggregation off.")
@click.pass_obj
def _configure_cmd(obj, store_ref, templates):
    """Set a store's aggregation templates (what PutEventConfiguration --event-data-store does)."""
    from .output import emit
    from .trails import _run

    cfgs = [{"EventCategory": "Data", "Templates": list(templates)}] if templates else []
    md = _run(lambda: set_store_configuration(obj.lake.store(store_ref), cfgs))
    emit({"EventDataStoreArn": md["EventDataStoreArn"], "AggregationConfigurations": cfgs}, obj.fmt)


@aggregate_cli.command("run")
@click.option("--store", "store_ref", required=True, help="Event data store name, id or ARN.")
@click.option("--start", required=True, help="ISO-8601 start (floored to 5 minutes).")
@click.option("--end", required=True, help="ISO-8601 end, exclusive (floored to 5 minutes).")
@click.option("--template", "templates", multiple=True, type=click.Choice(TEMPLATES),
              help="Templates to compute (default: the store's configuration and its trails').")
@click.pass_obj
def _run_cmd(obj, store_ref, start, end, templates):
    """Summarise a store's Data events over history into aggregated events (idempotent)."""
    from .output import emit, progress_bar
    from .trails import _run

    def go():
        st = obj.lake.store(store_ref)
        tpls = list(templates) or store_templates(obj.lake, st)
        if not tpls:
            raise AggregationError(f"no aggregation templates configured for store {st.name}; pass --template")
        with progress_bar("summarising 5-minute windows (spans)") as update:
            return run(st, _parse_time(start), _parse_time(end), tpls, progress=update).as_dict()
    emit(_run(go), obj.fmt)


__all__ = ["TEMPLATES", "PRIMARY", "DETAILS", "AggregationService", "AggregationError", "aggregate_all",
           "aggregate_store", "aggregate_cli", "check_configurations", "cube", "plan_spans", "run",
           "set_metadata_list", "set_store_configuration", "store_templates", "summarise", "to_table", "append"]
