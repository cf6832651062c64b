"""CloudTrail Insights over a store's events (reference section 9): per-minute rates of write management calls
per (eventSource, eventName) (ApiCallRateInsight) and of errors per (eventSource, eventName, errorCode)
(ApiErrorRateInsight), compared with the 7 days before, emitted as Start/End Insights events in CloudTrail's
record format into an Insights store.

**Counting.** One pruned, streaming polars scan per run groups the management `AwsApiCall` events by
(recipientAccountId, awsRegion, eventSource, eventName[, errorCode], minute): only the non-zero minutes are
materialised, never the events. Each series is then densified one at a time (a numpy vector of the analysed
minutes plus 7 days and an hour of history), so memory is bounded by the number of active series.

**Method (why).** AWS does not document its test (reference 9.2). Real API traffic is strongly seasonal (office
hours, nightly jobs) and over-dispersed (a person or a script calls in clusters), so a flat 7-day mean with a
Gaussian test fires every working morning. We use a *seasonal envelope* from the same hour of day (and the
hours either side) on each of the 7 preceding days: 21 hourly rates per series, whose maximum `hi` and minimum
`lo` bound what that API usually does at that time of day, weekday or weekend. Also kept: the largest single
minute seen in those 21 hours (`peak`), which absorbs natural clustering.
- *Spike* (call rate and error rate): a minute is unusual when its count exceeds
  `max(floor, ratio * hi, hi + z * sqrt(hi), peak_factor * peak)`, or lies (above `hi`) in a `window`-minute
  span whose sum fails the same test scaled to the window (floor `window_floor`; this catches sustained
  moderate rises such as 4 errors a minute for an hour); an Insight is a run of unusual minutes
  (gaps of at most `gap` minutes are bridged) holding at least `k` unusual minutes. The floor keeps rare APIs from
  firing on a handful of calls; `ratio`/`z` are a ratio and a Poisson-like score on the conservative `hi`.
- *Drop* (call rate only): a minute ends a silent stretch when the last `drop_window` minutes hold at most
  `drop_ratio` of what `lo` predicts and `lo` predicts at least `drop_min_expected` calls there; an Insight is a
  run of at least `drop_k` such minutes. Using `lo` (the quietest comparable hour) means a weekend or a quiet night
  is never mistaken for a silence.
The envelope needs 7 full days of history, like an event data store's Insights ("up to 7 days" after enabling).

**Records.** A Start and an End event share `sharedEventID`; both carry the statistics of the whole unusual
period, as in AWS's examples (their Start averages are not whole numbers, so they are not first-minute counts):
`baseline.average` = calls (errors) per minute over the 10,080 minutes before the start, `insight.average` = per
minute over the period, `insightDuration` its minutes, `baselineDuration` 10,080; attributions give the top 5
userIdentityArn, userAgent and errorCode values with their per-minute averages in the period and the baseline.
Event IDs are derived from (store, series, start, state), so re-running a period adds no duplicates (the store
skips stored eventIDs).
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable

import numpy as np
import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .delivery import DeliveryService
from .errors import InvalidParameter


CALL, ERROR = "ApiCallRateInsight", "ApiErrorRateInsight"
INSIGHT_TYPES = (CALL, ERROR)
BASELINE_MINUTES = 7 * 1440
HISTORY_MINUTES = BASELINE_MINUTES + 60        # 7 days plus the hour either side of the same hour of day
EVENT_VERSION = "1.08"
STATE_DIR = "_insights"
_NS = uuid.UUID("6f1d7c58-4a57-4b8e-9a0c-7e3b8a1d2c40")
_KEYS = ["kind", "account", "region", "source", "name", "errorcode"]
log = logging.getLogger("lake.insights")


class InsightsError(InvalidParameter):
    """A problem the caller must fix (bad time range or time text); one line."""


@dataclass(frozen=True)
class Params:
    """Detection thresholds (see the module docstring; docs/insights.md gives the measured effect)."""

    floor: float = 5.0             # a spike minute has more than this many calls/errors
    ratio: float = 3.0             # ... and more than ratio x the seasonal high rate
    z: float = 4.0                 # ... and more than hi + z * sqrt(hi)
    peak_factor: float = 1.0       # ... and more than peak_factor x the largest comparable minute
    window: int = 10               # minutes summed for the sustained-spike test
    window_floor: float = 20.0     # a sustained spike has more than this many calls/errors in `window` minutes
    k: int = 3                     # unusual minutes a spike needs
    gap: int = 1                   # quiet minutes bridged inside one spike
    drop_window: int = 10          # minutes summed for a drop test
    drop_ratio: float = 0.1        # a drop sees at most this share of the expected calls
    drop_min_expected: float = 15.0  # expected calls in the window before a drop can count
    drop_k: int = 5                # consecutive drop minutes an Insight needs


@dataclass
class Insight:
    """One unusual period of one series, in whole minutes since the epoch ([start, end))."""

    kind: str
    account: str
    region: str
    source: str
    name: str
    errorcode: str | None
    start: int
    end: int
    direction: str                 # "spike" or "drop"
    baseline_average: float
    insight_average: float
    attributions: list = field(default_factory=list)

    @property
    def duration(self) -> int:
        return self.end - self.start


# ---------------------------------------------------------------------------------------------- counting

def _minute(t: datetime) -> int:
    return int(t.timestamp() // 60)


def _dt(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, timezone.utc)


def _iso(minute: int) -> str:
    return _dt(minute).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Scope:
    """Which events the series count (reference 9.1). `Management` (event data stores and trails): call rate
    over *write* management calls. `Data` (trails only): call rate over read and write data calls. Error rate
    counts every call of the category that ended in an error code. `where` narrows further (a trail's accounts
    and regions)."""

    category: str = "Management"
    where: pl.Expr | None = None
    key: str = "management"  # names the scope in the count cache: equal keys must mean equal filters


MANAGEMENT = Scope()


def _stores(store: Any) -> list:
    return list(store) if isinstance(store, (list, tuple)) else [store]


def _base_filter(lf: pl.LazyFrame, lo: datetime, hi: datetime, scope: Scope = MANAGEMENT) -> pl.LazyFrame:
    cond = ((pl.col("eventtime") >= lo) & (pl.col("eventtime") < hi)
            & (pl.col("eventcategory") == scope.category) & (pl.col("eventtype") == "AwsApiCall"))
    if scope.where is not None:
        cond = cond & scope.where.fill_null(False)
    return lf.filter(cond)


def _scan(store: Any, lo: datetime, hi: datetime, scope: Scope) -> pl.LazyFrame:
    """The scope's API calls in [lo, hi) of one store or several (their rows together), pruned by eventtime."""
    frames = [_base_filter(st.scan(start=lo, end=hi), lo, hi, scope) for st in _stores(store)]
    return frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")


def _call_expr(scope: Scope = MANAGEMENT) -> pl.Expr:
    """The calls a call-rate series counts: for management events the writes (readOnly false; a call without
    readOnly counts as a write, as CloudTrail cannot tell it is a read); for data events every call."""
    if scope.category == "Data":
        return pl.lit(True)
    return ~pl.col("readonly").fill_null(False)


def _counts(lf: pl.LazyFrame, kinds: set[str], scope: Scope) -> pl.DataFrame:
    """Per-minute counts of one filtered scan (see minute_counts)."""
    lf = lf.select(
        pl.col("recipientaccountid").alias("account"), pl.col("awsregion").alias("region"),
        pl.col("eventsource").alias("source"), pl.col("eventname").alias("name"), "errorcode", "readonly",
        (pl.col("eventtime").dt.epoch("s") // 60).alias("minute"))
    parts = []
    if CALL in kinds:
        parts.append(lf.filter(_call_expr(scope)).group_by(["account", "region", "source", "name", "minute"])
                     .agg(pl.len().alias("n")).with_columns(pl.lit(CALL).alias("kind"),
                                                           pl.lit(None, pl.String).alias("errorcode")))
    if ERROR in kinds:
        parts.append(lf.filter(pl.col("errorcode").is_not_null())
                     .group_by(["account", "region", "source", "name", "errorcode", "minute"])
                     .agg(pl.len().alias("n")).with_columns(pl.lit(ERROR).alias("kind")))
    if not parts:
        return _EMPTY_COUNTS
    out = pl.concat([p.select(_COUNT_COLUMNS) for p in parts], how="vertical_relaxed").collect(engine="streaming")
    return out.with_columns(pl.col("minute").cast(pl.Int64), pl.col("n").cast(pl.Int64))


_COUNT_COLUMNS = _KEYS + ["minute", "n"]
_EMPTY_COUNTS = pl.DataFrame(schema={c: (pl.Int64 if c in ("minute", "n") else pl.String) for c in _COUNT_COLUMNS})
CACHE_DIR = f"{STATE_DIR}/cache"
DAY = timedelta(days=1)


def _day_counts(st: Any, snap: Any, day: datetime, kinds: set[str], scope: Scope) -> pl.DataFrame:
    """The counts of one whole UTC day of one store, from the count cache when the segments that can hold that
    day are still the ones counted (segment files are immutable and uniquely named, so an import, append,
    compaction or retention touching the day changes the set and the day is counted again)."""
    files = st.files(snap, day, day + DAY)
    fp = hashlib.sha256("\n".join(sorted(files) + [",".join(sorted(kinds)), scope.key]).encode()).hexdigest()
    storage = st.lake.storage
    path = f"{CACHE_DIR}/{st.id}/{hashlib.sha256(scope.key.encode()).hexdigest()[:16]}/{day:%Y-%m-%d}.parquet"
    try:
        from .segments import arrow_owned  # never a Python-owned buffer (SIGABRT at exit; see there)
        table = pq.read_table(pa.BufferReader(arrow_owned(storage.read(path))))
        if (table.schema.metadata or {}).get(b"lake.fingerprint") == fp.encode():
            return pl.from_arrow(table.replace_schema_metadata(None))
    except (FileNotFoundError, OSError, pa.ArrowException):
        pass
    out = _counts(_base_filter(st.scan(snap, day, day + DAY), day, day + DAY, scope), kinds, scope)
    buf = io.BytesIO()
    pq.write_table(out.to_arrow().replace_schema_metadata({"lake.fingerprint": fp}), buf, compression="zstd")
    try:
        storage.write(path, buf.getvalue())
    except OSError:
        pass  # a cache that cannot be written only costs a recount
    return out


def minute_counts(store: Any, start: datetime, end: datetime, kinds: Iterable[str] = INSIGHT_TYPES,
                  scope: Scope = MANAGEMENT, progress: Callable[[int, int], None] | None = None) -> pl.DataFrame:
    """Non-zero per-minute counts in [start, end): kind, account, region, source, name, errorcode, minute, n.

    Streaming scans of seven columns over the segments that can hold the range (pruned by eventtime); `store`
    may be a list of stores (a trail's), whose counts add up. Whole UTC days come from the count cache
    (`_day_counts`), so an incremental round re-reads only the partial days at the ends of its window, not the
    7-day baseline; the partial ends are counted directly."""
    kinds = set(kinds)
    first = datetime.combine(start.date(), datetime.min.time(), timezone.utc)
    if first < start:
        first += DAY
    last = datetime.combine(end.date(), datetime.min.time(), timezone.utc)
    frames = []
    edges = [(start, end)] if last <= first else [(start, first), (last, end)]
    days = max(0, (last - first) // DAY)
    total, done = len(_stores(store)) * (len(edges) + days), 0
    for st in _stores(store):
        snap = st.snapshot()
        for lo, hi in edges:
            if lo < hi:
                frames.append(_counts(_base_filter(st.scan(snap, lo, hi), lo, hi, scope), kinds, scope))
            done += 1
        for d in range(days):
            frames.append(_day_counts(st, snap, first + d * DAY, kinds, scope))
            done += 1
            if progress:
                progress(done, total)
    frames = [f for f in frames if f.height]
    if not frames:
        return _EMPTY_COUNTS
    out = pl.concat(frames, how="vertical_relaxed")
    if len(_stores(store)) > 1:
        out = out.group_by(_KEYS + ["minute"]).agg(pl.col("n").sum()).select(_COUNT_COLUMNS)
    return out


# ---------------------------------------------------------------------------------------------- detection

def _runs(mask: np.ndarray, gap: int) -> list[tuple[int, int, int]]:
    """(first, last, marked) of runs of True, bridging at most `gap` False between them."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > gap + 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [idx.size - 1]])
    return [(int(idx[s]), int(idx[e]), int(e - s + 1)) for s, e in zip(starts, ends)]


def _comparable(per_hour: np.ndarray) -> np.ndarray:
    """(21, hours): for each hour, the values of the same hour of day and the hours either side on each of the
    7 days before (NaN where there is no such history)."""
    nh = per_hour.size
    out = np.full((21, nh), np.nan)
    for i, (j, d) in enumerate((j, d) for j in range(1, 8) for d in (-1, 0, 1)):
        s = 24 * j - d
        if s < nh:
            out[i, s:] = per_hour[:nh - s]
    return out


def _envelope(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per hour of a dense minute vector (whose length is whole hours, history first): the seasonal high and low
    rates (per minute) and the largest minute count over the comparable hours."""
    hours = x.reshape(-1, 60)
    tot = _comparable(hours.sum(axis=1).astype(np.float64))
    hi = np.nan_to_num(np.fmax.reduce(tot, axis=0))
    lo = np.nan_to_num(np.fmin.reduce(tot, axis=0))
    return hi / 60.0, lo / 60.0, _peak(x)


def _peak(v: np.ndarray) -> np.ndarray:
    """Per hour: the largest value of `v` (one per minute) in the comparable hours."""
    return np.nan_to_num(np.fmax.reduce(_comparable(v.reshape(-1, 60).max(axis=1).astype(np.float64)), axis=0))


def _rolling(x: np.ndarray, w: int) -> np.ndarray:
    """Sum of the `w` minutes ending at each minute (fewer at the start)."""
    cs = np.concatenate([[0], np.cumsum(x)])
    out = cs[1:].astype(np.float64)
    out[w:] = cs[w + 1:] - cs[1:-w]
    return out


def detect_series(x: np.ndarray, first: int, kind: str, p: Params) -> list[tuple[int, int, str]]:
    """Unusual periods of one dense series: (start index, end index exclusive, "spike"|"drop"), counted only
    from index `first` on (the indexes before are history; `first` and len(x) are multiples of 60)."""
    hi, lo, pk = _envelope(x)
    hi_m = np.repeat(hi, 60)
    pk_m = np.repeat(pk, 60)
    thr = np.maximum.reduce([np.full(x.size, p.floor), p.ratio * hi_m, hi_m + p.z * np.sqrt(hi_m),
                             p.peak_factor * pk_m])
    spike = x > thr
    if p.window > 1 and x.size > p.window:
        # sustained activity: a `window`-minute sum beyond the same tests scaled to the window (and beyond the
        # largest such sum in the comparable hours) marks the window's minutes that are above the usual rate.
        # Minutes the minute test already flagged count only up to its threshold, so a short burst does not
        # also mark the ordinary minutes around it.
        w = p.window
        roll = _rolling(np.where(spike, np.minimum(x, thr), x), w)
        pkw = _peak(roll)
        hw = hi_m * w
        thr_w = np.maximum.reduce([np.full(x.size, p.window_floor), p.ratio * hw, hw + p.z * np.sqrt(hw),
                                   p.peak_factor * np.repeat(pkw, 60)])
        over = roll > thr_w
        ends = np.flatnonzero(over)
        marked = np.zeros(x.size + 1, dtype=np.int64)
        np.add.at(marked, np.maximum(ends - w + 1, 0), 1)
        np.add.at(marked, ends + 1, -1)
        spike |= (np.cumsum(marked)[:x.size] > 0) & (x > np.maximum(hi_m, 0.5))
    spike[:first] = False
    out = [(a, b + 1, "spike") for a, b, n in _runs(spike, p.gap) if n >= p.k]
    if kind == CALL and x.size > p.drop_window:
        w = p.drop_window
        window = _rolling(x, w)
        expected = np.repeat(lo, 60) * w
        drop = (expected >= p.drop_min_expected) & (window <= p.drop_ratio * expected)
        drop[:max(first, w - 1)] = False
        quiet = x <= p.drop_ratio * np.repeat(lo, 60)   # a minute that belongs to the silence itself
        for a, b, n in _runs(drop, 0):
            if n < p.drop_k:
                continue
            a, b = a - w + 1, b + 1
            while a < b and not quiet[a]:                 # the first windows may still hold the last calls
                a += 1
            while b > a and not quiet[b - 1]:
                b -= 1
            if b - a >= p.drop_k:
                out.append((a, b, "drop"))
    return out


def detect(counts: pl.DataFrame, start: int, end: int, p: Params = Params()) -> list[Insight]:
    """Insights in minutes [start, end) from `minute_counts` output covering [start - HISTORY_MINUTES, end)."""
    g0 = (start - HISTORY_MINUTES) // 60 * 60
    first = start - g0
    n = (end - g0 + 59) // 60 * 60
    found: list[Insight] = []
    if counts.height == 0:
        return found
    for key, part in counts.partition_by(_KEYS, as_dict=True, maintain_order=False).items():
        kind, account, region, source, name, err = key
        x = np.zeros(n, dtype=np.int64)
        m = part["minute"].to_numpy() - g0
        ok = (m >= 0) & (m < n)
        np.add.at(x, m[ok], part["n"].to_numpy()[ok])
        for a, b, direction in detect_series(x, first, kind, p):
            b = min(b, end - g0)
            if a >= b:
                continue
            s = g0 + a
            base = x[max(0, a - BASELINE_MINUTES):a].sum() / BASELINE_MINUTES
            found.append(Insight(kind, account, region, source, name, err, s, g0 + b, direction,
                                 float(base), float(x[a:b].sum() / (b - a))))
    found.sort(key=lambda i: (i.start, i.kind, i.source, i.name, i.errorcode or ""))
    return found


# ---------------------------------------------------------------------------------------------- records

def attribute(store: Any, ins: Insight, scope: Scope = MANAGEMENT) -> list[dict]:
    """The top-5 attributions (userIdentityArn, userAgent, errorCode) of one Insight: per-minute averages in the
    Insight and in the 7-day baseline before it (a pruned scan of that series only)."""
    b0, s, e = ins.start - BASELINE_MINUTES, ins.start, ins.end
    lf = _scan(store, _dt(b0), _dt(e), scope).filter(
        (pl.col("recipientaccountid") == ins.account) & (pl.col("awsregion") == ins.region)
        & (pl.col("eventsource") == ins.source) & (pl.col("eventname") == ins.name))
    lf = lf.filter(_call_expr(scope)) if ins.kind == CALL else lf.filter(pl.col("errorcode") == ins.errorcode)
    df = lf.select((pl.col("eventtime") >= _dt(s)).alias("in"),
                   pl.col("useridentity_arn").fill_null("null").alias("userIdentityArn"),
                   pl.col("useragent").fill_null("null").alias("userAgent"),
                   pl.col("errorcode").fill_null("null").alias("errorCode")).collect(engine="streaming")
    out = []
    for attr in ("userIdentityArn", "userAgent", "errorCode"):
        block: dict[str, Any] = {"attribute": attr}
        for part, flag, minutes in (("insight", True, max(1, e - s)), ("baseline", False, BASELINE_MINUTES)):
            top = (df.filter(pl.col("in") == flag).group_by(attr).agg(pl.len().alias("c"))
                   .sort(["c", attr], descending=[True, False]).head(5))
            block[part] = [{"value": v, "average": c / minutes} for v, c in top.iter_rows()]
        out.append(block)
    return out


def records(ins: Insight, *, store_id: str = "", scope: Scope = MANAGEMENT) -> list[dict]:
    """The Start and End Insights events of one Insight, in CloudTrail's record format (reference 9.4).

    Insights on data events also carry `insightDetails.sourceEventCategory: "Data"` (seen in third-party code,
    UNCONFIRMED in AWS's docs); it is what tells them apart from management Insights in a trail's files, and
    management Insights keep AWS's documented fields only."""
    ident = "|".join([store_id, ins.kind, ins.account, ins.region, ins.source, ins.name, ins.errorcode or "",
                      str(ins.start)])
    shared = str(uuid.uuid5(_NS, ident))
    out = []
    for state, minute in (("Start", ins.start), ("End", ins.end)):
        details: dict[str, Any] = {"state": state, "eventSource": ins.source, "eventName": ins.name,
                                   "insightType": ins.kind}
        if ins.kind == ERROR:
            details["errorCode"] = ins.errorcode
        if scope.category != "Management":
            details["sourceEventCategory"] = scope.category
        details["insightContext"] = {
            "statistics": {"baseline": {"average": ins.baseline_average}, "insight": {"average": ins.insight_average},
                           "insightDuration": ins.duration, "baselineDuration": BASELINE_MINUTES},
            "attributions": ins.attributions}
        out.append({"eventVersion": EVENT_VERSION, "eventTime": _iso(minute), "awsRegion": ins.region,
                    "eventID": str(uuid.uuid5(_NS, ident + "|" + state)), "eventType": "AwsCloudTrailInsight",
                    "recipientAccountId": ins.account, "sharedEventID": shared, "insightDetails": details,
                    "eventCategory": "Insight"})
    return out


# ---------------------------------------------------------------------------------------------- configuration

def _config_path(store_id: str) -> str:
    return f"{STATE_DIR}/{store_id}.json"


def get_config(lake: Any, store: Any) -> dict | None:
    """A store's Insights configuration ({InsightSelectors, InsightsDestination, through?}) or None."""
    path = _config_path(store.id)
    if not lake.storage.exists(path):
        return None
    doc = orjson.loads(lake.storage.read(path))
    return doc if doc.get("InsightSelectors") else None


def put_config(lake: Any, store: Any, selectors: list[dict], destination: Any | None) -> dict:
    """Enable (or, with no selectors, disable) Insights on a store; keeps the incremental cursor."""
    old = get_config(lake, store) or {}
    doc = {"InsightSelectors": selectors, "InsightsDestination": destination.arn if destination else None}
    if selectors and old.get("through") is not None:
        doc["through"] = old["through"]
    lake.storage.write(_config_path(store.id), orjson.dumps(doc))
    return doc


def insights_store(lake: Any, name: str | None, source: Any) -> Any:
    """The store Insights land in: `name` (created when missing), else `<source name>-insights`."""
    name = name or f"{source.name}-insights"
    try:
        return lake.store(name)
    except Exception:  # noqa: BLE001 - NotFound: create it
        return lake.create_store(name)


# ---------------------------------------------------------------------------------------------- running

@dataclass
class RunReport:
    """What one run found and stored."""

    store: str
    insights_store: str
    start: str
    end: str
    series: int = 0
    insights: int = 0
    events_stored: int = 0
    by_type: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def find(store: Any, start: datetime, end: datetime, *, kinds: Iterable[str] = INSIGHT_TYPES,
         params: Params = Params(), attributions: bool = True, scope: Scope = MANAGEMENT,
         progress: Callable[[int, int], None] | None = None) -> tuple[list[Insight], int]:
    """Insights of `store` that start in [start, end) (7 days before `start` are read as baseline); with the
    number of series looked at."""
    if end <= start:
        raise InsightsError(f"insights: --end {end.isoformat()} is not after --start {start.isoformat()}")
    s, e = _minute(start), _minute(end)
    counts = minute_counts(store, _dt(s - HISTORY_MINUTES), _dt(e), kinds, scope, progress)
    found = detect(counts, s, e, params)
    if attributions:
        for ins in found:
            ins.attributions = attribute(store, ins, scope)
    series = counts.select(_KEYS).unique().height if counts.height else 0
    return found, series


def run(lake: Any, store: Any, start: datetime, end: datetime, *, destination: Any | None = None,
        kinds: Iterable[str] | None = None, params: Params = Params(),
        progress: Callable[[int, int], None] | None = None) -> RunReport:
    """Detect Insights over history and store their Start/End events in `destination` (default: the configured
    InsightsDestination, else `<store>-insights`)."""
    cfg = get_config(lake, store)
    if kinds is None:
        kinds = [s["InsightType"] for s in cfg["InsightSelectors"]] if cfg else list(INSIGHT_TYPES)
    if destination is None:
        destination = lake.store(cfg["InsightsDestination"]) if cfg and cfg.get("InsightsDestination") else \
            insights_store(lake, None, store)
    found, series = find(store, start, end, kinds=kinds, params=params, progress=progress)
    report = RunReport(store.name, destination.name, start.isoformat(), end.isoformat(), series, len(found))
    recs = [r for ins in found for r in records(ins, store_id=store.id)]
    for ins in found:
        report.by_type[ins.kind] = report.by_type.get(ins.kind, 0) + 1
    if recs:
        res = destination.append(recs, source="import")
        report.events_stored = res.appended
    return report


LOOKBACK = timedelta(hours=6)      # an incremental round re-reads this much before its cursor
SETTLE = timedelta(minutes=15)     # events may arrive this late; minutes younger than this are not judged


def advance(cursor: dict, now: datetime, stores: list, kinds: list[str], params: Params,
            scope: Scope = MANAGEMENT) -> tuple[list[Insight], int, int, int] | None:
    """One incremental step over `cursor` (a dict with `through`, updated in place): the Insights that ended since
    the cursor (started within LOOKBACK of it), with attributions, plus (series, lo, upto) of the window read;
    None when there is nothing to judge yet. The first step only sets the cursor (like CloudTrail, Insights begin
    after enabling); the cursor then stays before any Insight still under way, so it is judged when it ends."""
    upto = _minute(now - SETTLE)
    through = cursor.get("through")
    if through is None:
        cursor["through"] = upto
        return None
    if upto <= through:
        return None
    lo = through - int(LOOKBACK.total_seconds() // 60)
    found, series = find(stores, _dt(lo), _dt(upto), kinds=kinds, params=params, attributions=False,
                         scope=scope) if stores else ([], 0)
    done = [i for i in found if i.start > lo and through < i.end < upto]
    for ins in done:
        ins.attributions = attribute(stores, ins, scope)
    open_starts = [i.start for i in found if i.end >= upto]
    cursor["through"] = min([upto] + [s - 1 for s in open_starts if s - 1 > through])
    return done, series, lo, upto


def run_incremental(lake: Any, now: datetime | None = None, params: Params = Params()) -> list[RunReport]:
    """One round over every store with Insights enabled (`advance` on each store's cursor): Insights that ended
    since the cursor are stored; an Insight still under way is left for a later round. One store's failure is
    logged and does not stop the others."""
    now = now or datetime.now(timezone.utc)
    reports = []
    for st in lake.stores():
        try:
            rep = _store_round(lake, st, now, params)
        except Exception as e:  # noqa: BLE001 - logged; the next round tries again
            log.error("Insights round for store %s failed: %s", st.id, e)
            continue
        if rep is not None:
            reports.append(rep)
    return reports


def _store_round(lake: Any, st: Any, now: datetime, params: Params) -> RunReport | None:
    cfg = get_config(lake, st)
    if not cfg or st.metadata.get("Status") == "PENDING_DELETION":  # unreadable until restored
        return None
    before = cfg.get("through")
    step = advance(cfg, now, [st], [s["InsightType"] for s in cfg["InsightSelectors"]], params)
    if cfg.get("through") != before:  # most rounds of a quiet store change nothing: no write
        lake.storage.write(_config_path(st.id), orjson.dumps(cfg))
    if step is None:
        return None
    done, series, lo, upto = step
    dest = lake.store(cfg["InsightsDestination"]) if cfg.get("InsightsDestination") else \
        insights_store(lake, None, st)
    if done:
        dest.append([r for i in done for r in records(i, store_id=st.id)], source="import")
    return RunReport(st.name, dest.name, _iso(lo), _iso(upto), series, len(done))


class InsightsService(DeliveryService):
    """The server's background Insights: a round of `run_incremental` every `interval` seconds (default 300);
    `start()` / `kick()` / `close()` are DeliveryService's (the service protocol of LakeServer.services)."""

    name = "insights"

    def __init__(self, lake: Any, interval: float = 300.0, stop_event: threading.Event | None = None):
        super().__init__(lake, interval, stop_event)

    def _round(self) -> None:
        from . import trail_insights  # it imports this module
        run_incremental(self.lake)
        trail_insights.run_incremental(self.lake)


# ---------------------------------------------------------------------------------------------- metrics

def metric_data(stores: Iterable[Any], *, source: str, name: str, kind: str, errorcode: str | None,
                start: datetime, end: datetime, period: int, fill_zeros: bool,
                accounts: Iterable[str] | None = None, region: str | None = None,
                scope: Scope = MANAGEMENT) -> tuple[list[datetime], list[float]]:
    """ListInsightsMetricData's series: calls (or errors) of one API per `period` seconds in [start, end),
    summed over `stores` (pruned streaming scans); `fill_zeros` adds the empty periods."""
    frames = []
    for st in stores:
        lf = _base_filter(st.scan(start=start, end=end), start, end, scope).filter(
            (pl.col("eventsource") == source) & (pl.col("eventname") == name))
        lf = lf.filter(_call_expr(scope)) if kind == CALL else lf.filter(pl.col("errorcode") == errorcode)
        if accounts is not None:
            lf = lf.filter(pl.col("recipientaccountid").is_in(list(accounts)))
        if region:
            lf = lf.filter(pl.col("awsregion") == region)
        frames.append(lf.select((pl.col("eventtime").dt.epoch("s") // period * period).alias("t"))
                      .group_by("t").agg(pl.len().alias("n")))
    if frames:
        df = pl.concat(frames).group_by("t").agg(pl.col("n").sum()).collect(engine="streaming").sort("t")
        got = dict(zip(df["t"].to_list(), df["n"].to_list()))
    else:
        got = {}
    if fill_zeros:
        t0 = int(start.timestamp()) // period * period
        if t0 < start.timestamp():
            t0 += period
        keys = list(range(t0, int(end.timestamp()), period))
    else:
        keys = sorted(got)
    return ([datetime.fromtimestamp(t, timezone.utc) for t in keys], [float(got.get(t, 0)) for t in keys])


# ---------------------------------------------------------------------------------------------- CLI

def _parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 time (UTC when no offset is given); a one-line error naming the option otherwise."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InsightsError(f"{what}: not an ISO 8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


import click  # noqa: E402 - the CLI group lives here so lake/cli.py only adds it


@click.group("insights", context_settings={"help_option_names": ["-h", "--help"]})
def insights_cli() -> None:
    """CloudTrail Insights: unusual API call and error rates."""


@insights_cli.command("run")
@click.option("--store", "store_ref", default=None, help="Store whose management events are analysed.")
@click.option("--trail", "trail_ref", default=None,
              help="Trail whose data events are analysed instead (it needs an insight selector with "
                   "EventCategories Data); the Insights go to <trail>-data-insights.")
@click.option("--start", required=True, help="First minute judged (ISO 8601, UTC unless an offset is given).")
@click.option("--end", required=True, help="End of the range (exclusive).")
@click.option("--insights-store", "dest", default=None,
              help="Store receiving the Insights events (created if missing; default: the configured "
                   "InsightsDestination, else <store>-insights).")
@click.pass_obj
def insights_run(obj: Any, store_ref: str | None, trail_ref: str | None, start: str, end: str,
                 dest: str | None) -> None:
    """Detect Insights over history; the 7 days before --start are read as the baseline."""
    from .cli import handle_errors
    from .output import emit, progress_bar

    @handle_errors
    def go() -> None:
        if (store_ref is None) == (trail_ref is None):
            raise InsightsError("give exactly one of --store (management events) or --trail (its data events)")
        if trail_ref is not None and dest is not None:
            raise InsightsError("--insights-store applies to --store; a trail's data-event Insights go to "
                                "<trail>-data-insights")
        lake = obj.lake
        lo, hi = _parse_time(start, "--start"), _parse_time(end, "--end")
        if trail_ref is not None:
            from . import trail_insights
            from .trails import TrailCatalog
            trail = TrailCatalog(lake).resolve(trail_ref, account=lake.account_id, region=lake.region)
            with progress_bar("counting data calls per minute (days)") as update:
                emit(trail_insights.run(lake, trail, lo, hi, progress=update).as_dict(), obj.fmt)
            return
        st = lake.store(store_ref)
        with progress_bar("counting API calls per minute (days)") as update:
            rep = run(lake, st, lo, hi, destination=insights_store(lake, dest, st) if dest else None,
                      progress=update)
        emit(rep.as_dict(), obj.fmt)
    go()


__all__ = ["Params", "Insight", "InsightsService", "InsightsError", "RunReport", "minute_counts", "detect",
           "detect_series", "find", "run", "run_incremental", "records", "attribute", "metric_data", "get_config",
           "put_config", "insights_store", "insights_cli", "Scope", "MANAGEMENT", "advance", "CALL", "ERROR",
           "INSIGHT_TYPES", "BASELINE_MINUTES"]
