"""Trail delivery: the events Lake receives, written as CloudTrail log files to the trail's bucket (any fsspec
destination), exactly once across crashes and restarts; and the trail's digest files (`lake/digest.py`).

**Source.** A trail follows the transaction logs of the lake's event data stores its owner account may read
(`trails.readable_stores`: never another account's store; all of them, or those of its `Lake.Stores`
setting): every APPEND commit (events received through the API: PutAuditEvents, the server's own audit
events) and IMPORT commit (`lake import`, StartImport), as its `Lake.Sources` says.
Compactions and retention rewrite stored events and are never delivered again. Each event is judged by the
trail configuration *in effect when Lake received it* (the trail's versioned history, `lake/trails.py`): only
events received while the trail was logging are delivered, with the selectors and region settings of that
moment. An imported event was received when its import committed; an event received through the API (an
APPEND commit) when it happened, i.e. its eventTime if that lies within RECEIVE_LAG before the commit (the
audit writer and channels commit in batches), else the commit's time; eventTime has whole seconds, so an event
counts if any moment of its second falls in a logging period. So the trail's own StopLogging call is in its
last file, and its CreateTrail call is not (unless made in the second logging started).

**Which events** (reference 3.5, 6.2): recipientAccountId is the trail's owner (an organization trail takes
every account); awsRegion is the home region unless the trail is multi-region; global service events (IAM,
STS, CloudFront, sign-in; recorded in us-east-1) only with IncludeGlobalServiceEvents; Management, Data and
NetworkActivity events that the event selectors accept (basic selectors are converted to advanced ones);
Insight events when the trail has insight selectors for their insightType.

**Files** (reference 3.1-3.4): `[prefix/]AWSLogs/[o-id/]<account>/<CloudTrail|CloudTrail-Insight|
CloudTrail-NetworkActivity>/<region>/YYYY/MM/DD/<account>_<same>_<region>_<YYYYMMDDTHHmmZ>_<16 alnum>.json.gz`,
dated by the delivery time, gzip of `{"Records":[...]}` holding the stored `eventjson` texts verbatim, at most
MAX_FILE_BYTES before compression. The server delivers every DEFAULT_INTERVAL seconds (about 5 minutes).

**Exactly once.** State lives in the lake under `_trails/<trail id>/`. Delivery goes in numbered batches:
1. plan the batch from the cursor of batch n (per store: next commit, segment and row group) and write the
   plan as `batches/<n+1>.intent.json` with a create-only write: the exact row groups (with their commit's
   time and operation), the delivery time, bucket, prefix and organization id (the trail's history, which
   judges each event, never changes);
2. write the log files: their names are derived from (trail id, batch number, account, kind, region, part),
   so the same plan always yields the same keys and bytes; writes are create-only;
3. note the files for the digests, then write the cursor `batches/<n+1>.json` (create-only).
A crash anywhere before step 3 leaves the intent, and the next run replays it: the same files under the same
keys (an existing key is left as it is), never a second copy of an event under another name; a crash after
step 3 starts a new batch. Digest chain state is persisted by DigestWriter, which ignores a file it was told
about already. One deliverer per trail at a time: the server runs one thread; within a process runs of the
same trail are serialised; two processes delivering the same trail at once may tell the digest writer twice.

**Digests.** When a trail has log file validation on, each (account, region) it delivers to gets a
DigestWriter chain (the owner's home region always): started when logging (with validation) starts, hourly
digests as they fall due, a final digest once logging stopped (or validation went off, or the trail was
deleted) and everything received before that was delivered. Only `CloudTrail` log files are listed in
digests.
"""

from __future__ import annotations

import bisect
import gzip
import hashlib
import logging
import os
import string
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .enrichment import strip_event_context
from .errors import SegmentIntegrityError
from .log import Log, head_signer, now_iso, parse_iso
from .schema import EVENT_SCHEMA
from .selectors import selector_expr
from .storage import Storage
from .trails import (
    SOURCES,
    TRAIL_CATEGORIES,
    Trail,
    TrailCatalog,
    bucket_target,
    check_bucket_access,
    readable_stores,
)

try:  # digest files are written by lake/digest.py; delivery works without it
    from .digest import DigestWriter
except ImportError:  # pragma: no cover - only while digest.py does not exist
    DigestWriter = None  # type: ignore[assignment,misc]

log = logging.getLogger("lake.delivery")

MAX_FILE_BYTES = 50_000_000            # reference 3.4: 50 MB before compression
BATCH_BYTES = 128 << 20                # eventjson bytes planned per batch (bounds memory)
RECEIVE_LAG = timedelta(seconds=60)    # how long after its eventTime an API event may be committed
DEFAULT_INTERVAL = 300.0               # "about every 5 minutes"
STATE = "_trails"
DATA_INSIGHTS_FILE = "data-insights.json"  # a trail's data-event Insights store and cursor (lake/trail_insights.py)
GLOBAL_SOURCES = ("iam.amazonaws.com", "sts.amazonaws.com", "cloudfront.amazonaws.com", "signin.amazonaws.com")
GLOBAL_REGION = "us-east-1"
KIND = {"Management": "CloudTrail", "Data": "CloudTrail", "NetworkActivity": "CloudTrail-NetworkActivity",
        "Insight": "CloudTrail-Insight", "Aggregated": "CloudTrail-Aggregated"}
DIGESTED_KINDS = ("CloudTrail",)
_COLUMNS = ["eventjson", "eventtime", "recipientaccountid", "awsregion", "eventcategory", "eventsource",
            "eventname", "readonly", "eventtype", "sessioncredentialfromconsole", "useridentity_arn", "errorcode",
            "vpcendpointid", "resources"]
_ENVELOPE_HEAD, _ENVELOPE_TAIL = b'{"Records":[', b"]}"
_ALNUM = string.ascii_letters + string.digits
_RUN_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_RUN_LOCKS_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------- names

def unique_string(*parts: str) -> str:
    """The 16 letters and digits of a log file name, derived from `parts` (deterministic, so a replayed batch
    recreates the same key instead of adding a copy)."""
    n = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest(), "big")
    out = []
    for _ in range(16):
        n, r = divmod(n, 62)
        out.append(_ALNUM[r])
    return "".join(out)


def log_key(*, prefix: str | None, organization_id: str | None, account: str, kind: str, region: str,
            when: datetime, unique: str) -> str:
    """A log file's key (reference 3.1-3.2); `kind` is CloudTrail, CloudTrail-Insight or
    CloudTrail-NetworkActivity."""
    org = f"{organization_id}/" if organization_id else ""
    key = (f"AWSLogs/{org}{account}/{kind}/{region}/{when:%Y/%m/%d}/"
           f"{account}_{kind}_{region}_{when:%Y%m%dT%H%MZ}_{unique}.json.gz")
    return f"{prefix}/{key}" if prefix else key


def envelope(records: list[bytes]) -> bytes:
    """`{"Records":[...]}` around event JSON texts, byte for byte."""
    return _ENVELOPE_HEAD + b",".join(records) + _ENVELOPE_TAIL


def split_records(sizes: list[int], limit: int) -> list[tuple[int, int]]:
    """[start, end) ranges of records whose envelope stays within `limit` bytes (a larger record goes alone)."""
    out, start, total = [], 0, 0
    base = len(_ENVELOPE_HEAD) + len(_ENVELOPE_TAIL)
    for i, size in enumerate(sizes):
        add = size + (1 if i > start else 0)
        if i > start and base + total + add > limit:
            out.append((start, i))
            start, total, add = i, 0, size
        total += add
    if start < len(sizes):
        out.append((start, len(sizes)))
    return out


# --------------------------------------------------------------------------------------------- windows

@dataclass
class Window:
    """A stretch of time in which the trail was logging with one log-file-validation setting."""

    index: int
    start: datetime
    validation: bool
    end: datetime | None = None
    stopped: bool = False      # ended by StopLogging / DeleteTrail (not by a validation change)
    last: Trail | None = None  # the configuration in effect at the end


def windows_of(history: list[Trail]) -> list[Window]:
    out: list[Window] = []
    cur: Window | None = None
    for t in history:
        ts = parse_iso(t.doc["UpdatedTimestamp"])
        logging_on = t.is_logging and not t.doc.get("Deleted")
        validation = t.validation if logging_on else False
        if cur is not None and (not logging_on or validation != cur.validation):
            cur.end, cur.stopped = ts, not logging_on
            out.append(cur)
            cur = None
        if logging_on and cur is None:
            cur = Window(len(out), ts, validation)
        if cur is not None:
            cur.last = t
    if cur is not None:
        out.append(cur)
    return out


# --------------------------------------------------------------------------------------------- results

@dataclass
class DeliveryReport:
    """What one `run_once` did."""

    trail: str
    arn: str
    files: list[dict] = field(default_factory=list)   # {"key", "records", "bytes", "account", "region", "kind"}
    batches: int = 0
    digests: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def events(self) -> int:
        return sum(f["records"] for f in self.files)

    def summary(self) -> dict:
        return {"Trail": self.trail, "Batches": self.batches, "Files": len(self.files), "Events": self.events,
                "Digests": len(self.digests), "Error": self.error}


# --------------------------------------------------------------------------------------------- deliverer

def _filter_expr(trail: Trail) -> pl.Expr:
    """The rows a configuration delivers (Insight rows still need their insightType checked)."""
    home = trail.home_region
    region = pl.col("awsregion").fill_null(home)
    account = pl.col("recipientaccountid")
    # Account and region become key segments: only well-formed ones (which also keeps "../" out of keys).
    conds = [account.str.contains(r"^\d{12}$"), region.str.contains(r"^[a-z0-9]+(-[a-z0-9]+)*$")]
    if not trail.organization:
        conds.append(account == trail.owner)
    if not trail.multi_region:
        conds.append(region == home)
    if not trail.doc.get("IncludeGlobalServiceEvents", True):
        conds.append(~(pl.col("eventsource").is_in(list(GLOBAL_SOURCES)).fill_null(False) & (region == GLOBAL_REGION)))
    sels = trail.matching_selectors()
    category = pl.col("eventcategory")
    picked = category.is_in(list(TRAIL_CATEGORIES)) & (
        pl.any_horizontal([selector_expr([s]) for s in sels]) if sels else pl.lit(False))
    if trail.doc.get("InsightSelectors"):
        picked = picked | (category == "Insight")
    if trail.doc.get("AggregationConfigurations"):  # 5-minute data event summaries (lake/aggregation.py)
        picked = picked | (category == "Aggregated")
    return pl.all_horizontal([*conds, picked]).fill_null(False).alias("deliver")


def _insight_selected(df: pl.DataFrame, cfg: Trail, own: bool) -> list[bool]:
    """Per row: not an Insight event, or one the trail's insight selectors ask for: its insightType selected for
    its source category (Management unless `sourceEventCategory` says Data). Data-event Insights are the
    trail's own (`own`: the rows come from the trail's data-insights store), never another trail's."""
    wanted = {(s["InsightType"], c) for s in cfg.doc.get("InsightSelectors") or []
              for c in (s.get("EventCategories") or ["Management"])}
    out = []
    for text, cat in zip(df["eventjson"].to_list(), df["eventcategory"].to_list()):
        if cat != "Insight":
            out.append(True)
            continue
        details = orjson.loads(text).get("insightDetails") or {}
        if not isinstance(details, dict):
            details = {}
        kind, source = details.get("insightType"), details.get("sourceEventCategory") or "Management"
        if source == "Data" and not own:
            out.append(False)
        else:
            out.append(kind is None or (kind, source) in wanted)
    return out


class Deliverer:
    """Delivers one trail (one incarnation: a trail deleted and created again is a new one)."""

    def __init__(self, lake: Any, trail: Trail | str, *, max_file_bytes: int = MAX_FILE_BYTES,
                 batch_bytes: int = BATCH_BYTES, receive_lag: timedelta = RECEIVE_LAG, digests: bool = True):
        self.lake = lake
        self.storage = lake.storage
        if isinstance(trail, str):  # a name (the lake's account and region) or an ARN
            arn = trail.split(":") if trail.startswith("arn:") and trail.count(":") >= 5 else None
            trail = TrailCatalog(lake).resolve(trail, account=arn[4] if arn else lake.account_id,
                                               region=arn[3] if arn else lake.region)
        self.trail = trail
        self.max_file_bytes = max_file_bytes
        self.batch_bytes = batch_bytes
        self.receive_lag = receive_lag
        self.digests_enabled = digests and DigestWriter is not None
        self.catalog = TrailCatalog(lake)
        self.prefix = f"{STATE}/{trail.id}"
        self._writers: dict[tuple[str, str], Any] = {}
        self._exprs: dict[int, pl.Expr] = {}
        self._footers: dict[tuple[str, str], list[int]] = {}
        self._data_store: tuple[str | None] | None = None
        self._verified: tuple[tuple[str, str], pa.Buffer] | None = None
        self._load_history()

    # -- configuration history ---------------------------------------------------------------------------
    def _load_history(self) -> None:
        t = self.trail
        self.history = self.catalog.history(t.owner, t.home_region, t.name, t.id) or [t]
        self.current = self.history[-1]
        live = [h for h in self.history if not h.doc.get("Deleted")]
        self.settings = live[-1] if live else self.current  # where and how to deliver (tombstones say nothing)
        self._times = [parse_iso(h.doc["UpdatedTimestamp"]) for h in self.history]
        self.windows = windows_of(self.history)

    def _effective(self, ts: datetime) -> Trail | None:
        i = bisect.bisect_right(self._times, ts) - 1
        return self.history[i] if i >= 0 else None

    def _window_at(self, ts: datetime) -> int | None:
        """The window a commit made at `ts` is delivered in: the latest that started by then and had not ended
        more than `receive_lag` before (events received before a stop may be committed a little after it)."""
        for w in reversed(self.windows):
            if w.start <= ts and (w.end is None or ts < w.end + self.receive_lag):
                return w.index
        return None

    def _expr(self, cfg: Trail) -> pl.Expr:
        if cfg.version not in self._exprs:
            self._exprs[cfg.version] = _filter_expr(cfg)
        return self._exprs[cfg.version]

    # -- state files -------------------------------------------------------------------------------------
    def _data_insights_store(self) -> str | None:
        """The id of the store holding this trail's data-event Insights, if it has one (read once per run)."""
        if self._data_store is None:
            doc = self._read_json(f"{self.prefix}/{DATA_INSIGHTS_FILE}") or {}
            self._data_store = (doc.get("store"),)
        return self._data_store[0]

    def _batch_path(self, n: int, intent: bool = False) -> str:
        return f"{self.prefix}/batches/{n:012d}{'.intent' if intent else ''}.json"

    def _read_json(self, path: str) -> dict | None:
        try:
            return orjson.loads(self.storage.read(path))
        except FileNotFoundError:
            return None

    def cursor(self) -> tuple[int, dict]:
        """(number of the last completed batch, its record); (0, {}) before the first."""
        n = 0
        hint = self._read_json(f"{self.prefix}/cursor.json")
        if hint:
            n = int(hint.get("batch", 0))
        while self.storage.exists(self._batch_path(n + 1)):
            n += 1
        while n > 0:
            rec = self._read_json(self._batch_path(n))
            if rec is not None:
                return n, rec
            n -= 1  # a hint ahead of the records (never written that way, but cheap to tolerate)
        return 0, {}

    def _save_status(self, **fields: Any) -> None:
        path = f"{self.prefix}/status.json"
        st = self._read_json(path) or {}
        st.update(fields)
        self.storage.write(path, orjson.dumps(st))

    # -- walking the stores' logs ----------------------------------------------------------------------
    def _log(self, store_id: str) -> Log:
        return Log(self.storage, f"stores/{store_id}")

    def _initial_position(self, store_id: str) -> list[int]:
        """The first commit made at or after the trail first started logging (exponential then binary search:
        commit timestamps never decrease along a log)."""
        if not self.windows:
            return [0, 0, 0]
        lg, first = self._log(store_id), self.windows[0].start

        def before(v: int) -> bool:  # True while commit v exists and is older than the first start
            got = lg.read_commit(v)
            return got is not None and parse_iso(got[0]["timestamp"]) < first
        if not before(0):
            return [0, 0, 0]
        lo, hi = 0, 1
        while before(hi):
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if before(mid) else (lo, mid)
        return [hi, 0, 0]

    def _segment(self, store_id: str, version: int, index: int, path: str) -> pa.Buffer:
        """The bytes of the segment that commit `version` added as its `index`-th entry, after checking them
        against that manifest entry (SHA-256 and size): delivery signs what it delivers (digests), so it must
        never use bytes it has not checked. The bytes hashed are the bytes parsed (no second read). The last
        segment checked is kept: a plan takes a segment's row groups one after another."""
        key = (store_id, path)
        if self._verified is not None and self._verified[0] == key:
            return self._verified[1]
        got = self._log(store_id).read_commit(version)
        if got is not None:
            self._check_signed(store_id, version, got[1])
        adds = (got[0].get("add") or []) if got is not None else []
        entry = adds[index] if index < len(adds) else None
        if entry is None or entry.get("path") != path:
            raise SegmentIntegrityError(f"stores/{store_id}: commit {version} no longer lists segment {path} "
                                        f"as its entry {index}: the log was altered; run `lake verify`")
        data = self.storage.read(f"stores/{store_id}/{path}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.get("sha256") or len(data) != entry.get("bytes"):
            raise SegmentIntegrityError(
                f"segment {self.storage.uri_of(f'stores/{store_id}/{path}')} does not match its manifest entry "
                f"in commit {version} (SHA-256 {digest[:16]}..., {len(data)} bytes; manifest "
                f"{str(entry.get('sha256'))[:16]}..., {entry.get('bytes')} bytes): delivery stopped, nothing "
                "signed; run `lake verify`")
        buf = pa.py_buffer(data)
        self._verified = (key, buf)
        return buf

    def _check_signed(self, store_id: str, version: int, raw: bytes) -> None:
        """The commit whose manifest entry vouches for a segment must itself be one the key store signed
        (lake/keys.py): a commit a lake writer added or rewrote is refused, so its events are never delivered
        in signed digests. Commits older than the key store's first signature are accepted unsigned."""
        ring = head_signer(self.storage)
        if ring is None:
            return  # head signing turned off ($LAKE_SIGN_HEADS=0): nothing to check against
        legacy = ring.legacy_heads()
        if legacy is None or version <= legacy.get(store_id, -1):
            return
        if not ring.commit_is_signed(store_id, version, raw, self.storage.read):
            raise SegmentIntegrityError(
                f"commit {version} of store {store_id} carries no signature by this lake's key store "
                f"({ring.key_dir}): it was added or changed outside the lake process, or written by a process "
                "with another key store (share LAKE_KEY_DIR, or copy its `lake keys export` into that "
                "directory's _heads/); delivery stopped, nothing signed")

    def _footer(self, store_id: str, path: str, version: int, index: int) -> list[int]:
        """Uncompressed eventjson bytes of each row group of a segment (the batch budget's unit)."""
        key = (store_id, path)
        if key not in self._footers:
            md = pq.ParquetFile(pa.BufferReader(self._segment(store_id, version, index, path))).metadata
            names = [md.schema.column(i).name for i in range(md.num_columns)]
            col = names.index("eventjson") if "eventjson" in names else None
            self._footers[key] = [md.row_group(i).column(col).total_uncompressed_size if col is not None
                                  else md.row_group(i).total_byte_size for i in range(md.num_row_groups)]
        return self._footers[key]

    def _commit_window(self, store_id: str, commit: dict) -> int | None:
        """The window a commit's events are delivered in, or None if it delivers nothing."""
        adds = commit.get("add") or []
        if not adds or commit.get("operation") not in SOURCES.values():
            return None
        ts = parse_iso(commit["timestamp"])
        window = self._window_at(ts)
        if window is None:
            return None
        ext = (self._effective(ts) or self.settings).extension
        if commit["operation"] not in {SOURCES[s] for s in ext.get("Sources") or SOURCES}:
            return None
        if ext.get("Stores") is not None and store_id not in ext["Stores"]:
            return None
        return window

    def _peek(self, store_id: str, pos: list[int]) -> tuple[list[int], int | None]:
        """Skip commits that deliver nothing: (position of the next delivered unit, its window), or (the head
        of the log, None)."""
        lg = self._log(store_id)
        v, a, r = pos
        while True:
            got = lg.read_commit(v)
            if got is None:
                return [v, a, r], None
            window = self._commit_window(store_id, got[0])
            if window is not None and a < len(got[0]["add"]):
                return [v, a, r], window
            v, a, r = v + 1, 0, 0

    def _plan(self, positions: dict[str, list[int]]) -> tuple[dict, dict[str, int | None]]:
        """The next batch: (plan, per store the window of its next undelivered unit or None). A plan holds the
        units (row groups) of one window, the oldest window with pending units, up to `batch_bytes` of event
        JSON."""
        state = {sid: self._peek(sid, positions.get(sid) or self._initial_position(sid))  # only stores the
                 for sid in readable_stores(self.lake, self.trail, self.storage.list_dirs("stores"),  # owner
                                            self._data_insights_store())}  # may read (issue 15)
        pending = [w for _, w in state.values() if w is not None]
        window = min(pending) if pending else None
        units: list[list] = []
        budget = self.batch_bytes
        for sid in sorted(state):
            pos, w = state[sid]
            lg = self._log(sid)
            while window is not None and w is not None and w <= window and budget > 0:
                v, a, r = pos
                commit = lg.read_commit(v)[0]
                adds = commit["add"]
                while a < len(adds) and budget > 0:
                    sizes = self._footer(sid, adds[a]["path"], v, a)
                    if r < len(sizes):
                        units.append([sid, v, a, r, adds[a]["path"], commit["timestamp"], commit["operation"]])
                        budget -= max(sizes[r], 1)
                        r += 1
                    if r >= len(sizes):
                        a, r = a + 1, 0
                if a < len(adds):
                    pos = [v, a, r]  # the budget ran out inside this commit
                    break
                pos, w = self._peek(sid, [v + 1, 0, 0])
            state[sid] = (pos, w)
        t = self.settings
        plan = {"window": window, "from": positions, "to": {sid: p for sid, (p, _) in state.items()},
                "units": units, "bucket": t.bucket, "prefix": t.key_prefix, "organization_id": t.organization_id,
                "destination": t.extension.get("Destination")}
        return plan, {sid: w for sid, (_, w) in state.items()}

    # -- materialising a plan ----------------------------------------------------------------------------
    def _rows(self, unit: list) -> pl.DataFrame:
        """The rows of one unit the trail delivers, each judged by the configuration in effect when Lake
        received it."""
        sid, version, index, rg, path, committed, operation = unit
        ts = parse_iso(committed)
        pf = pq.ParquetFile(pa.BufferReader(self._segment(sid, version, index, path)))
        names = set(pf.schema_arrow.names)
        table = pf.read_row_group(rg, columns=[c for c in _COLUMNS if c in names])
        for c in _COLUMNS:
            if c not in table.column_names:  # a segment written before the column existed
                table = table.append_column(c, pa.nulls(table.num_rows, EVENT_SCHEMA.field(c).type))
        df = pl.from_arrow(table)
        # When Lake received each row: [lo, hi]. An API event's eventTime has whole seconds, so it stands for
        # its whole second; the row counts if any moment of it falls while the trail was logging.
        dt = pl.Datetime("us", "UTC")
        commit_ts = pl.lit(ts).cast(dt)
        lo = hi = commit_ts
        if operation == SOURCES["live"]:
            et = pl.col("eventtime")
            recent = et.is_between(pl.lit(ts - self.receive_lag).cast(dt), commit_ts)
            lo = pl.when(recent).then(et).otherwise(commit_ts)
            hi = pl.when(recent).then(et + pl.duration(microseconds=999_999)).otherwise(commit_ts)
        times = pl.Series(self._times, dtype=dt)
        df = df.with_columns(lo.alias("__lo"), hi.alias("__hi"))
        idx_lo = times.search_sorted(df["__lo"], side="right").cast(pl.Int64) - 1
        idx_hi = times.search_sorted(df["__hi"], side="right").cast(pl.Int64) - 1
        # The configuration to judge a row by: the latest one that was logging during [lo, hi], if any.
        latest, last_logging = [-1], -1
        for i, h in enumerate(self.history):
            if h.is_logging and not h.doc.get("Deleted"):
                last_logging = i
            latest.append(last_logging)
        cand = pl.Series(latest, dtype=pl.Int64).gather(idx_hi + 1)
        df = df.with_columns(pl.when((cand >= idx_lo) & (cand >= 0)).then(cand).otherwise(-1).alias("__cfg"))
        parts = []
        for (i,), part in df.partition_by("__cfg", maintain_order=True, as_dict=True).items():
            cfg = self.history[i] if i >= 0 else None
            if cfg is None or not cfg.is_logging or cfg.doc.get("Deleted"):
                continue
            part = part.filter(self._expr(cfg))
            if part.height and (part["eventcategory"] == "Insight").any():
                part = part.filter(pl.Series(_insight_selected(part, cfg, sid == self._data_insights_store()),
                                             dtype=pl.Boolean))
            parts.append(part.with_columns(pl.lit(cfg.home_region).alias("__home")))
        if not parts:
            return pl.DataFrame()
        df = pl.concat(parts)
        return df.select(
            pl.col("eventjson"), pl.col("eventtime"), pl.col("recipientaccountid").alias("account"),
            pl.col("awsregion").fill_null(pl.col("__home")).alias("region"),
            pl.col("eventcategory").replace_strict(KIND, default="CloudTrail").alias("kind"))

    def _files(self, n: int, plan: dict) -> list[dict]:
        """The log files of a plan, deterministic: [{key, body, records, account, region, kind, newest,
        oldest}]."""
        frames = [self._rows(u) for u in plan["units"]]
        frames = [f for f in frames if f.height]
        if not frames:
            return []
        rows = pl.concat(frames, how="vertical_relaxed")
        when = parse_iso(plan["delivered_at"])
        out = []
        for group in rows.partition_by(["account", "kind", "region"], maintain_order=True):
            account, kind, region = group["account"][0], group["kind"][0], group["region"][0]
            texts = [strip_event_context(t).encode() for t in group["eventjson"].to_list()]  # no eventContext
            times = group["eventtime"]
            for part, (a, b) in enumerate(split_records([len(t) for t in texts], self.max_file_bytes)):
                unique = unique_string(self.trail.id, str(n), account, kind, region, str(part))
                key = log_key(prefix=plan["prefix"], organization_id=plan["organization_id"], account=account,
                              kind=kind, region=region, when=when, unique=unique)
                chunk = times.slice(a, b - a)
                out.append({"key": key, "body": envelope(texts[a:b]), "records": b - a, "account": account,
                            "region": region, "kind": kind,
                            "newest": chunk.max() or when, "oldest": chunk.min() or when})
        return out

    # -- digests ----------------------------------------------------------------------------------------
    def _chains(self) -> dict:
        return self._read_json(f"{self.prefix}/chains.json") or {}

    def _save_chains(self, chains: dict) -> None:
        self.storage.write(f"{self.prefix}/chains.json", orjson.dumps(chains))

    def _writer(self, account: str, region: str):
        if (account, region) not in self._writers:
            t = self.settings
            uri, opts = bucket_target(self.lake, t.bucket, t.extension.get("Destination"))
            self._writers[(account, region)] = DigestWriter(
                self.lake, uri, opts, bucket=t.bucket, key_prefix=t.key_prefix, account_id=account, region=region,
                trail_arn=t.arn, state_store=f"{self.prefix}/digest/{account}/{region}.json",
                organization_id=t.organization_id)
        return self._writers[(account, region)]

    def _chain_for(self, chains: dict, account: str, region: str, window: int, report: DeliveryReport):
        """The DigestWriter taking files of `window` for (account, region), moving its chain forward (final
        digest of the old window, start of the new) when needed; None without validation."""
        if not self.digests_enabled:
            return None
        key = f"{account}|{region}"
        rec = chains.get(key)
        if rec is not None and rec["window"] >= window:
            # late files of an older window join the running chain (a finished chain is not reopened)
            return self._writer(account, region) if rec["open"] else None
        if rec is not None and rec["open"]:
            self._stop_chain(chains, key, report)
        if not self.windows[window].validation:
            return None
        w = self._writer(account, region)
        w.start(self.windows[window].start)
        chains[key] = {"window": window, "open": True}
        self._save_chains(chains)
        return w

    def _stop_chain(self, chains: dict, key: str, report: DeliveryReport) -> None:
        rec = chains[key]
        win = self.windows[rec["window"]]
        account, region = key.split("|")
        end = win.end or datetime.now(timezone.utc)
        digest = self._writer(account, region).stop(end)
        if digest:
            report.digests.append(digest)
            self._save_status(LatestDigestDeliveryTime=now_iso())
        rec["open"] = False
        self._save_chains(chains)

    def _due_digests(self, chains: dict, now: datetime, report: DeliveryReport) -> None:
        for key, rec in chains.items():
            if not rec["open"]:
                continue
            account, region = key.split("|")
            w = self._writer(account, region)
            end = self.windows[rec["window"]].end
            limit = min(now, end) if end else now
            while w.next_due is not None and w.next_due <= limit:
                digest = w.write_digest(w.next_due)
                if not digest:
                    break
                report.digests.append(digest)
                self._save_status(LatestDigestDeliveryTime=now_iso())

    def _finish_windows(self, chains: dict, nxt: dict[str, int | None], now: datetime,
                        report: DeliveryReport) -> None:
        """Final digests for windows that are over and fully delivered; then the chain of the window in
        progress (so an hour without events still gets its digest)."""
        pending = [w for w in nxt.values() if w is not None]
        first_pending = min(pending) if pending else None
        for key, rec in list(chains.items()):
            win = self.windows[rec["window"]] if rec["window"] < len(self.windows) else None
            if not rec["open"] or win is None or win.end is None:
                continue
            settle = win.end + self.receive_lag
            if now >= settle and (first_pending is None or first_pending > win.index):
                self._stop_chain(chains, key, report)
        current = [w for w in self.windows if w.start <= now and (w.end is None or now < w.end)]
        if current and current[-1].validation and (first_pending is None or first_pending >= current[-1].index):
            self._chain_for(chains, self.trail.owner, self.trail.home_region, current[-1].index, report)

    # -- one run ----------------------------------------------------------------------------------------
    def run_once(self, now: datetime | None = None) -> DeliveryReport:
        """Deliver everything pending as log files, write the digests that are due, and the final digest of a
        logging period that ended. Safe to call again after a crash at any point."""
        now = now or datetime.now(timezone.utc)
        now = now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now.astimezone(timezone.utc)
        report = DeliveryReport(self.trail.name, self.trail.arn)
        key = (self.storage.uri, self.trail.id)
        with _RUN_LOCKS_LOCK:
            lock = _RUN_LOCKS.setdefault(key, threading.Lock())
        with lock:
            self._load_history()
            self._data_store = None  # re-read once per run: the trail may have got one since the last
            self._verified = None  # bytes are checked again by every run
            self._save_status(LatestDeliveryAttemptTime=now_iso())
            try:
                chains = self._chains()
                if self.digests_enabled:
                    self._due_digests(chains, now, report)
                nxt: dict[str, int | None] = {}
                while True:
                    done, nxt = self._batch(now, chains, report)
                    if done:
                        break
                if self.digests_enabled:
                    self._finish_windows(chains, nxt, now, report)
            except Exception as e:
                report.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:1000]
                self._save_status(LatestDeliveryError=report.error)
                raise
            fields: dict[str, Any] = {"LatestDeliveryAttemptSucceeded": now_iso(), "LatestDeliveryError": None}
            if report.files:
                fields["LatestDeliveryTime"] = now_iso()
            self._save_status(**fields)
        return report

    def _batch(self, now: datetime, chains: dict, report: DeliveryReport) -> tuple[bool, dict]:
        """Plan (or replay) and complete one batch; (nothing left to do, per-store next window)."""
        n, rec = self.cursor()
        positions = rec.get("to") or {}
        plan = self._read_json(self._batch_path(n + 1, intent=True))
        nxt: dict[str, int | None] = {}
        if plan is None:
            plan, nxt = self._plan(positions)
            if not plan["units"]:
                if plan["to"] != positions:  # skipped commits only: remember how far we got
                    self._complete(n + 1, plan, [])
                return True, nxt
            plan["batch"] = n + 1
            plan["delivered_at"] = now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            if not self.storage.create(self._batch_path(n + 1, intent=True), orjson.dumps(plan)):
                return False, nxt  # another deliverer planned this batch: replay its plan next time round
        files = self._files(n + 1, plan)
        check_bucket_access(self.lake, plan["bucket"], self.trail.owner, plan.get("destination"))  # still its
        dest = Storage(*bucket_target(self.lake, plan["bucket"], plan.get("destination")))
        for f in files:
            dest.create(f["key"], gzip.compress(f["body"], mtime=0))  # False: written by an interrupted run
        if self.digests_enabled and plan.get("window") is not None:
            for f in files:
                if f["kind"] not in DIGESTED_KINDS:
                    continue
                w = self._chain_for(chains, f["account"], f["region"], plan["window"], report)
                if w is not None:
                    w.record_log_file(f["key"], f["body"], f["newest"], f["oldest"])
        self._complete(n + 1, plan, files)
        report.batches += 1
        report.files += [{k: f[k] for k in ("key", "records", "account", "region", "kind")} |
                         {"bytes": len(f["body"])} for f in files]
        return False, nxt

    def _complete(self, n: int, plan: dict, files: list[dict]) -> None:
        record = {"batch": n, "window": plan.get("window"), "to": plan["to"], "delivered_at": plan.get("delivered_at"),
                  "files": [{"key": f["key"], "records": f["records"]} for f in files]}
        if self.storage.create(self._batch_path(n), orjson.dumps(record)):
            self.storage.write(f"{self.prefix}/cursor.json", orjson.dumps({"batch": n}))

    # -- bookkeeping ------------------------------------------------------------------------------------
    def finished(self) -> bool:
        """A deleted trail whose last events and final digests are all delivered."""
        return self.storage.exists(f"{self.prefix}/finished")

    def mark_finished_if_done(self, now: datetime) -> bool:
        if not self.current.doc.get("Deleted"):
            return False
        last = self.windows[-1] if self.windows else None
        if last is not None and now < last.end + self.receive_lag:
            return False
        n, rec = self.cursor()
        if self._read_json(self._batch_path(n + 1, intent=True)) is not None:
            return False
        plan, nxt = self._plan(rec.get("to") or {})
        if plan["units"] or any(w is not None for w in nxt.values()):
            return False
        if any(r["open"] for r in self._chains().values()):
            return False
        self.storage.create(f"{self.prefix}/finished", now_iso().encode())
        return True


# --------------------------------------------------------------------------------------------- driving it

def deliver_all(lake: Any, now: datetime | None = None, **kwargs: Any) -> list[DeliveryReport]:
    """One delivery round over every trail of the lake (deleted ones until they have delivered everything).
    A failing trail does not stop the others: its error is in its report and in GetTrailStatus."""
    now = now or datetime.now(timezone.utc)
    catalog = TrailCatalog(lake)
    out = []
    for owner, region, name, trail_id in catalog.incarnations():
        if lake.storage.exists(f"{STATE}/{trail_id}/finished"):
            continue
        history = catalog.history(owner, region, name, trail_id)
        if not history or not windows_of(history):
            continue  # never logged: nothing to deliver
        d = Deliverer(lake, history[-1], **kwargs)
        try:
            out.append(d.run_once(now))
            d.mark_finished_if_done(now)
        except Exception as e:  # noqa: BLE001 - one trail's broken bucket must not stop the others
            log.error("trail %s: delivery failed: %s", history[-1].arn, e)
            out.append(DeliveryReport(name, history[-1].arn, error=str(e).splitlines()[0] if str(e) else
                                      type(e).__name__))
    return out


def undelivered_from(lake: Any) -> dict[str, int]:
    """Per store id, the oldest commit some trail has still to deliver (its segments are read by delivery even
    after compaction or retention retired them, so `lake verify` checks them). Trails that never logged or
    have finished are left out."""
    catalog = TrailCatalog(lake)
    out: dict[str, int] = {}
    for owner, region, name, trail_id in catalog.incarnations():
        if lake.storage.exists(f"{STATE}/{trail_id}/finished"):
            continue
        history = catalog.history(owner, region, name, trail_id)
        if not history or not windows_of(history):
            continue
        d = Deliverer(lake, history[-1], digests=False)
        n, rec = d.cursor()
        plan = d._read_json(d._batch_path(n + 1, intent=True))
        positions = (plan or {}).get("from") or rec.get("to") or {}
        for sid in lake.storage.list_dirs("stores"):
            pos = positions.get(sid) or d._initial_position(sid)
            out[sid] = min(out.get(sid, pos[0]), pos[0])
    return out


def delivery_interval() -> float:
    try:
        return float(os.environ.get("LAKE_DELIVERY_INTERVAL", DEFAULT_INTERVAL))
    except ValueError:
        return DEFAULT_INTERVAL


class DeliveryService:
    """The server's background delivery: a round every `interval` seconds (default $LAKE_DELIVERY_INTERVAL or
    300), sooner after `kick()`. `close()` stops it (the service protocol of LakeServer.services).

    Other background services (aggregation, Insights) subclass it and override `_round` and `name`."""

    name = "delivery"

    def __init__(self, lake: Any, interval: float | None = None, stop_event: threading.Event | None = None):
        self.lake = lake
        self.interval = delivery_interval() if interval is None else interval
        self.stop_event = stop_event or threading.Event()
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"lake-{self.name}", daemon=True)
        self.rounds = 0

    def start(self) -> "DeliveryService":
        self.thread.start()
        return self

    def kick(self) -> None:
        self._wake.set()

    def _round(self) -> None:
        deliver_all(self.lake)

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._round()
            except Exception as e:  # noqa: BLE001 - keep running; the next round retries
                log.error("%s round failed: %s", self.name, e)
            self.rounds += 1
            self._wake.wait(self.interval)
            self._wake.clear()

    def close(self) -> None:
        self.stop_event.set()
        self._wake.set()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(timeout=60)


def start_delivery_thread(lake: Any, stop_event: threading.Event, interval: float | None = None
                          ) -> threading.Thread:
    """Deliver every trail of `lake` in a daemon thread until `stop_event` is set; the thread."""
    return DeliveryService(lake, interval, stop_event).start().thread


__all__ = ["SegmentIntegrityError", "undelivered_from", "Deliverer", "DeliveryReport", "DeliveryService",
           "deliver_all", "start_delivery_thread", "log_key",
           "unique_string", "envelope", "split_records", "windows_of", "MAX_FILE_BYTES", "DEFAULT_INTERVAL"]
