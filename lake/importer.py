"""Batch import of historical CloudTrail logs: fast, resumable, idempotent, honest about failures.

Shape of a run (CloudTrail Lake's StartImport, on your own files):
1. list the sources (files, directories, `s3://` prefixes), skip digest files and objects whose key date is
   outside `--start/--end`, and skip objects already imported into the store (the per-store ledger of
   (location, ETag-or-size+mtime) markers, `stores/<id>/_sources/`);
2. cut the remaining objects, in key order, into chunks of about `chunk_bytes` and hand them to worker
   processes, which read, decode and convert them with the fast raw-JSON path and write one segment per
   (account, date) partition of the chunk (named with a fresh transaction id and declared by an intent);
3. in the parent, commit each finished chunk through `Store._commit_pending`, which removes events already in
   the store (rewriting an affected segment) and retries on concurrent commits; then record the chunk's
   objects in the ledger and its failures under `imports/<id>/failures/`.

A killed import resumes with the same id: objects in the ledger are skipped, and anything committed but
not yet in the ledger is caught by event-level dedupe, so each event is stored exactly once.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from multiprocessing import get_context
from typing import Any, Callable

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from . import limits, recordscan, segments
from .errors import InvalidParameter, NotFound
from .events import Converted, Reject, compact_json, convert_raw
from .log import now_iso
from .schema import TIMESTAMP
from .sources import LogObject, ObjectTooLarge, in_window, list_source, read_object, utc
from .storage import Storage
from .store import Pending, Store, keys_of, _dedupe_batch

DEFAULT_CHUNK_BYTES = 24 << 20  # of uncompressed JSON per worker task (~15,000 events): bounds memory
GZIP_RATIO = 5  # trail logs inflate ~4.5-5x (measured on realistic generated logs)
LEDGER = "_sources"


@dataclass
class ImportStatistics:
    """GetImport's ImportStatistics, plus what a careful operator also wants to know."""

    PrefixesFound: int = 0
    PrefixesCompleted: int = 0
    FilesFound: int = 0
    FilesCompleted: int = 0
    FilesFailed: int = 0  # not read at all (unreadable, damaged, too large, not a regular file): see failures
    FilesAlreadyImported: int = 0
    FilesOutsideTimeRange: int = 0
    DigestFilesSkipped: int = 0
    NonEventFilesSkipped: int = 0
    EventsCompleted: int = 0
    DuplicatesSkipped: int = 0
    EventsOutsideTimeRange: int = 0
    EventsPastRetention: int = 0
    FailedEntries: int = 0
    BytesRead: int = 0


@dataclass
class ImportReport:
    ImportId: str
    ImportStatus: str
    Destinations: list[str]
    ImportSource: list[str]
    StartEventTime: str | None
    EndEventTime: str | None
    CreatedTimestamp: str
    UpdatedTimestamp: str
    ImportStatistics: ImportStatistics = field(default_factory=ImportStatistics)
    ElapsedSeconds: float = 0.0
    EventsPerSecond: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


# ---- the worker side (top-level functions so they pickle) ---------------------------------------------

class _Envelope(msgspec.Struct):
    Records: list[msgspec.Raw]


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])


def split_raw(data: bytes, name: str, max_bytes: int | None = None) -> list[bytes]:
    """Compact JSON texts (as `events.compact_json` makes them) of the records in one log file's bytes,
    without building Python objects: CloudTrail's own `{"Records": [...]}` layout through the C scanner when
    it is built, anything else (and anything it declines) through msgspec. At most `max_bytes` are
    decompressed (`limits.MAX_OBJECT_BYTES` by default; a zip archive's members count together): past it
    `trailfiles.ObjectTooLarge`."""
    from .trailfiles import decode_bytes, zip_members

    if data[:2] == b"\x1f\x8b" and len(data) >= STREAM_SPLIT_BYTES:
        recs = _split_streamed(data, name, limits.MAX_OBJECT_BYTES if max_bytes is None else max_bytes)
        if recs is not None:
            return recs
    if data[:4] == b"PK\x03\x04":
        return [r for member, body in zip_members(data, name, max_bytes) for r in split_raw(body, member, max_bytes)]
    data = decode_bytes(data, name, max_bytes)
    recs = recordscan.split(data)
    return recs if recs is not None else [compact_json(r) for r in _split_python(data, name)]


STREAM_SPLIT_BYTES = 256 << 10  # gzip objects this big (compressed) are split while they are inflated
STREAM_PIECE = 4 << 20  # inflated bytes per step of that split
_RECORDS_HEAD = re.compile(rb'\s*\{\s*"Records"\s*:\s*\[')


def _split_streamed(data: bytes, name: str, max_bytes: int) -> list[bytes] | None:
    """The records of a gzip `{"Records":[...]}` log file (CloudTrail's own layout), split while the file is
    inflated STREAM_PIECE bytes at a time: its whole text is never held, only the records (which the usual
    path keeps as well), so a large object costs about half the memory, and the cap applies as it inflates.
    None when the C scanner is not built or the file is anything else (another layout, several gzip members,
    damage): the caller then takes the usual path, which also reports exactly what is wrong."""
    if not recordscan.available():
        return None
    from . import _recordscan
    from .trailfiles import ObjectTooLarge, _fast_zlib

    out: list[bytes] = []
    total, state, tail, head, done = 0, 0, b"", True, False
    d = _fast_zlib.decompressobj(31)
    rest = data
    try:
        while True:
            piece = d.decompress(rest, STREAM_PIECE)
            rest = d.unconsumed_tail
            if not piece and not rest and not d.eof:  # output still pending inside zlib (a long match)
                piece = d.decompress(b"", STREAM_PIECE)
            total += len(piece)
            if total > max_bytes:
                raise ObjectTooLarge(name, max_bytes)
            final = d.eof
            if (final and d.unused_data) or (not final and not piece and not rest):
                return None  # several members, or a stream that ends early
            text = tail + piece if tail else piece
            if head:
                m = _RECORDS_HEAD.match(text)
                if m is None:
                    if len(text) < 64 and not final:
                        tail = text
                        continue
                    return None
                text, head = text[m.end():], False
            if done:  # past the closing `]}`: only whitespace may follow
                if text.strip():
                    return None
                if final:
                    return out
                tail = b""
                continue
            got = _recordscan.split_more(text, state, final)
            if got is None:
                return None
            recs, used, state, done = got
            out.extend(recs)
            tail = text[used:]
            if final:
                return out if done else None
    except _fast_zlib.error:
        return None


def _split_python(data: bytes, name: str) -> list[bytes]:
    from .trailfiles import decode

    head = data.lstrip()[:1]
    if recordscan.too_deep([data], recordscan.MAX_DEPTH + 2):
        return [r if isinstance(r, (bytes, bytearray)) else orjson.dumps(r) for r in decode(data, name)]
    try:
        if head == b"{":
            try:
                return [bytes(r) for r in _ENVELOPE.decode(data).Records]
            except msgspec.ValidationError:
                pass  # a single record, or NDJSON
            except msgspec.DecodeError:
                pass  # NDJSON lines, handled below
        elif head == b"[":
            return [bytes(r) for r in _ARRAY.decode(data)]
    except (msgspec.DecodeError, RecursionError):  # too deep for msgspec: orjson's reader reports it below
        pass
    return [r if isinstance(r, (bytes, bytearray)) else orjson.dumps(r) for r in decode(data, name)]


def _die_with_parent(parent: int) -> None:
    """End this worker when the import process that started it dies. A pool worker blocks reading its task
    queue, and it holds that queue's write end too, so a SIGKILLed parent never gives it EOF: it lived on
    forever. Linux: the kernel sends SIGKILL on the parent's death (PR_SET_PDEATHSIG); everywhere: a daemon
    thread that notices the worker was re-parented (also covers a parent that died before prctl ran)."""
    import signal
    import threading

    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):  # not Linux
        pass
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="lake-import-parent-watch", daemon=True).start()


def _worker_init(parent: int | None = None) -> None:
    """Tie the worker's life to its parent's (`_die_with_parent`), and keep a worker's freed memory for
    reuse (glibc only). A chunk allocates tens of MB of column buffers;
    by default glibc returns each to the kernel and the next chunk faults fresh pages in, which cost ~1 us
    per event (measured: the C scan of a 13k-event chunk 2.7 -> 1.5 us per event)."""
    import gc

    if parent is not None:
        _die_with_parent(parent)
    gc.freeze()  # the modules loaded so far are never garbage: collections stop walking them
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS has no mallopt; Windows no CDLL(None))
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD: allocations below 32 MB come from the heap
    mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD: up to 512 MB of free heap is kept


def _process_chunk(task: dict) -> dict:
    """Read, decode, convert and write one chunk of log objects; return entries, keys and accounting."""
    storage = Storage(task["lake_uri"], task["storage_options"])
    prefix = task["store_prefix"]
    start, end, cutoff = task["start"], task["end"], task["cutoff"]
    failures: list[dict] = []
    raws: list[bytes] = []
    owners: list[int] = []  # object index per raw record
    files = []
    bytes_read = 0
    cap = task.get("max_object_bytes")
    for n, obj in enumerate(task["objects"]):
        try:
            if cap is not None and obj["size"] > cap:
                raise ObjectTooLarge(f"{obj['size']:,} bytes; the import limit per object is {cap:,} bytes "
                                     "(LAKE_IMPORT_MAX_OBJECT_BYTES)")
            data = read_object(obj["uri"], task["storage_options"], cap)
        except ObjectTooLarge as e:
            failures.append(_failure(obj["key"], e.code, str(e)))
            files.append({**obj, "events": 0, "ok": False})
            continue
        except (OSError, ValueError) as e:
            failures.append(_failure(obj["key"], "ReadError", f"cannot read object: {e}"))
            files.append({**obj, "events": 0, "ok": False})
            continue
        bytes_read += len(data)
        try:
            recs = split_raw(data, obj["key"], cap)
            del data  # the records are copies: free the file's bytes before converting
            if len(recs) == 1 and _is_digest(recs[0]):
                files.append({**obj, "events": 0, "ok": True, "digest": True})
                continue
            if len(recs) == 1 and not _looks_like_event(recs[0]):
                files.append({**obj, "events": 0, "ok": True, "other": True})
                continue
        except ValueError as e:
            failures.append(_failure(obj["key"], getattr(e, "code", "InvalidLogFile"), str(e)))
            files.append({**obj, "events": 0, "ok": False})
            continue
        except Exception as e:  # noqa: BLE001 - one object must never stop the import: it fails alone
            failures.append(_failure(obj["key"], "InvalidLogFile", f"cannot decode object: {type(e).__name__}: {e}"))
            files.append({**obj, "events": 0, "ok": False})
            continue
        raws.extend(recs)
        owners.extend([n] * len(recs))
        files.append({**obj, "events": 0, "ok": True})
    try:
        conv = convert_raw(raws, size_mode=task["size_mode"], compacted=True)
    except Exception:  # noqa: BLE001 - some object's records broke the batch: convert object by object
        conv = _convert_each(raws, owners, files, failures, task["size_mode"])
    for r in conv.rejects:
        obj = task["objects"][owners[r.index]]
        local = r.index - owners.index(owners[r.index])
        failures.append(_failure(f"{obj['key']}#{local}", r.code, r.message))
    table = conv.table
    counts = {"outside": 0, "expired": 0, "dups": 0}
    if table.num_rows:
        t = table.column("eventtime")
        window = None  # events outside --start/--end count as outside, even when also past retention
        if start is not None:
            window = pc.greater_equal(t, pa.scalar(start, TIMESTAMP))
        if end is not None:
            m2 = pc.less_equal(t, pa.scalar(end, TIMESTAMP))
            window = m2 if window is None else pc.and_(window, m2)
        in_window = table.num_rows if window is None else (pc.sum(window).as_py() or 0)
        mask = pc.greater_equal(t, pa.scalar(cutoff, TIMESTAMP))
        if window is not None:
            mask = pc.and_(mask, window)
        kept_n = pc.sum(mask).as_py() or 0
        counts["outside"] = table.num_rows - in_window
        counts["expired"] = in_window - kept_n
        # Filtering copies every column: only when some row goes (an import within its window, the usual
        # case, keeps all of them; the copy was ~1 us per event).
        kept = table.filter(mask) if kept_n < table.num_rows else table
        table, counts["dups"] = _dedupe_batch(kept)
    txn = uuid.uuid4().hex
    out = []
    parts = segments.split_partitions(table)
    if parts:
        storage.create(f"{prefix}/_txn/{txn}.json",
                       orjson.dumps({"txn": txn, "created": now_iso(), "operation": "IMPORT"}), durable=False)
    for n, (account, day, rows) in enumerate(parts):
        entry = segments.write_segment(storage, prefix, rows, account, day, f"part-{txn}-{n:05d}.parquet",
                                       compression_level=1)
        out.append({"entry": entry, "keys": keys_of(rows).to_arrow()})
    per_file: dict[int, int] = {}
    for i in conv.indexes:
        per_file[owners[i]] = per_file.get(owners[i], 0) + 1
    for n, f in enumerate(files):
        f["events"] = per_file.get(n, 0)
    return {"chunk": task["chunk"], "txn": txn, "segments": out, "files": files, "failures": failures,
            "events_in": len(raws), "bytes": bytes_read, **counts}


def _convert_each(raws: list[bytes], owners: list[int], files: list[dict], failures: list[dict],
                  size_mode: str) -> Converted:
    """`convert_raw` one object at a time, after the batch raised: an object whose records still raise fails
    as a whole (a failure entry), the others are converted as usual. Indexes stay positions in `raws`."""
    tables, rejects, indexes = [], [], []
    start = 0
    while start < len(raws):
        end = start
        while end < len(raws) and owners[end] == owners[start]:
            end += 1
        try:
            conv = convert_raw(raws[start:end], size_mode=size_mode, compacted=True)
        except Exception as e:  # noqa: BLE001
            f = files[owners[start]]
            f["ok"] = False
            failures.append(_failure(f["key"], "InvalidLogFile", f"cannot convert records: {type(e).__name__}: {e}"))
        else:
            tables.append(conv.table)
            rejects += [Reject(r.index + start, r.code, r.message, r.location) for r in conv.rejects]
            indexes += [i + start for i in conv.indexes]
        start = end
    table = pa.concat_tables(tables) if tables else convert_raw([]).table
    return Converted(table, rejects, indexes, 0)


def _is_digest(raw: bytes) -> bool:
    """A CloudTrail digest file (not events): recognised by its fields when its name does not say so."""
    return b'"digestStartTime"' in raw and b'"logFiles"' in raw and b'"eventTime"' not in raw


def _looks_like_event(raw: bytes) -> bool:
    """False for a lone JSON document that has none of the fields every CloudTrail event carries (a label
    file, a manifest, an API response saved next to the logs): such a file is skipped, not failed."""
    return any(k in raw for k in (b'"eventVersion"', b'"eventTime"', b'"eventID"', b'"eventName"',
                                  b'"eventSource"'))


def _failure_key(f: dict) -> tuple:
    return (f["Location"], f["ErrorType"], f["ErrorMessage"])


def _failure(location: str, error_type: str, message: str) -> dict:
    return {"Location": location, "Status": "FAILED", "ErrorType": error_type,
            "ErrorMessage": message.splitlines()[0][:500] if message else error_type,
            "LastUpdatedTime": now_iso()}


# ---- the parent side ----------------------------------------------------------------------------------

def _ledger_name(obj: LogObject) -> str:
    return hashlib.sha256(f"{obj.uri}\n{obj.identity}".encode()).hexdigest()


def imported_objects(store: Store) -> set[str]:
    """Ledger names of every object already imported into a store (one ledger file per committed chunk)."""
    storage = store.lake.storage
    done: set[str] = set()
    for f in storage.list(f"{store.prefix}/{LEDGER}"):
        try:
            done.update(o["name"] for o in orjson.loads(storage.read(f.path))["objects"])
        except (ValueError, KeyError, TypeError):
            continue  # a damaged ledger file only costs a re-read: events are deduplicated anyway
    return done


_DELIVERY_TIME = re.compile(r"_(\d{8}T\d{4})Z_[^/]*$")


def _delivery_time(key: str) -> str:
    """`YYYYMMDDTHHMM` from a trail log file name (`..._CloudTrail_<region>_<time>Z_<id>.json.gz`), or ""."""
    m = _DELIVERY_TIME.search(key)
    return m[1] if m else ""


class Importer:
    """One import run into one store. `run()` returns the report; progress goes to `progress(stats)`."""

    def __init__(self, store: Store, sources: list[str], *, start: datetime | None = None,
                 end: datetime | None = None, import_id: str | None = None, workers: int | None = None,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, storage_options: dict | None = None,
                 progress: Callable[[ImportStatistics, int], None] | None = None, now: datetime | None = None,
                 max_object_bytes: int | None = None, isolate: bool = False, confine_links: bool = True):
        """`max_object_bytes`: decompressed bytes one object may have (`limits.MAX_OBJECT_BYTES`, 256 MiB,
        by default); a bigger one is a failure entry. `isolate`: decode every chunk in a worker process, never
        in this one, even a single small chunk (a server passes it: a hostile object must not spend the
        server's memory or crash it). `confine_links`: a symbolic link to a file outside its source is a
        failure entry (whoever names the source over the API must not reach files beyond it); `lake import`,
        run by the operator who can read those files anyway, turns it off."""
        if not sources:
            raise InvalidParameter("give at least one import source (file, directory or s3:// prefix)")
        self.store = store
        self.lake = store.lake
        self.sources = list(sources)
        self.start, self.end = utc(start), utc(end)
        if self.start and self.end and self.start > self.end:
            raise InvalidParameter("--start is after --end")
        self.import_id = import_id or str(uuid.uuid4())
        self.workers = workers or os.cpu_count() or 1
        self.chunk_bytes = chunk_bytes
        self.storage_options = storage_options
        self.progress = progress
        self.now = now
        self.max_object_bytes = limits.MAX_OBJECT_BYTES if max_object_bytes is None else max_object_bytes
        self.isolate = isolate
        self.confine_links = confine_links
        self.stats = ImportStatistics()
        self.created = now_iso()
        self._failure_n = 0
        self._recorded: set[tuple] = set()

    # -- state files --------------------------------------------------------------------------------------
    @property
    def state_path(self) -> str:
        return f"imports/{self.import_id}/import.json"

    def _report(self, status: str, elapsed: float = 0.0) -> ImportReport:
        return ImportReport(self.import_id, status, [self.store.arn], self.sources,
                            _iso(self.start), _iso(self.end), self.created, now_iso(), self.stats, round(elapsed, 3),
                            round(self.stats.EventsCompleted / elapsed, 1) if elapsed else 0.0)

    def _save(self, status: str, elapsed: float = 0.0) -> ImportReport:
        rep = self._report(status, elapsed)
        self.lake.storage.write(self.state_path, orjson.dumps(rep.as_dict(), option=orjson.OPT_INDENT_2))
        return rep

    def _record_failures(self, failures: list[dict]) -> None:
        """Store new failure entries; a resumed import meets the same bad objects again and must not list
        them twice."""
        failures = [f for f in failures if _failure_key(f) not in self._recorded]
        self._recorded.update(map(_failure_key, failures))
        if not failures:
            return
        self._failure_n += 1
        path = f"imports/{self.import_id}/failures/{time.time_ns()}-{self._failure_n:06d}.json"
        self.lake.storage.create(path, orjson.dumps(failures))
        self.stats.FailedEntries += len(failures)

    # -- planning -----------------------------------------------------------------------------------------
    def _plan(self) -> list[list[LogObject]]:
        done = imported_objects(self.store)
        todo: list[LogObject] = []
        prefixes = set()
        for source in self.sources:
            for obj in list_source(source, self.storage_options, confine_links=self.confine_links):
                self.stats.FilesFound += 1
                if obj.problem is not None:  # never opened: a FIFO, a device, a bad symbolic link
                    self.stats.FilesFailed += 1
                    self._record_failures([_failure(obj.key, *obj.problem)])
                    continue
                if obj.is_digest:
                    self.stats.DigestFilesSkipped += 1
                    continue
                prefixes.add(obj.key.rsplit("/", 1)[0] if "/" in obj.key else "")
                if not in_window(obj, self.start, self.end):
                    self.stats.FilesOutsideTimeRange += 1
                    continue
                if _ledger_name(obj) in done:
                    self.stats.FilesAlreadyImported += 1
                    continue
                todo.append(obj)
        self.stats.PrefixesFound = len(prefixes)
        self._prefix_files: dict[str, int] = {}
        for o in todo:
            p = o.key.rsplit("/", 1)[0] if "/" in o.key else ""
            self._prefix_files[p] = self._prefix_files.get(p, 0) + 1
        self.stats.PrefixesCompleted = len(prefixes) - len(self._prefix_files)
        # Chunks follow (account, day, kind, delivery time) rather than key order, which walks one region's
        # days before the next region's: a chunk then holds a span of hours of one account-day and kind in
        # every region and becomes one segment, so an hour of events is in one or two segments per account and
        # kind (not one per region), and there is no thin segment per region and day (small segments cost
        # ~3 ms each to write, and slow queries).
        todo.sort(key=lambda o: (o.account or "", o.day or date.min, o.kind, _delivery_time(o.key), o.key))
        chunks, cur, size = [], [], 0
        for obj in todo:
            est = obj.size * (GZIP_RATIO if obj.key.endswith(".gz") else 1)
            if cur and size + est > self.chunk_bytes:
                chunks.append(cur)
                cur, size = [], 0
            cur.append(obj)
            size += est
        if cur:
            chunks.append(cur)
        self.total_bytes = sum(o.size for o in todo)
        return chunks

    # -- running ------------------------------------------------------------------------------------------
    def run(self) -> ImportReport:
        md = self.store.metadata
        if md["Status"] == "PENDING_DELETION":
            from .errors import InactiveStore
            raise InactiveStore(f"event data store {md['Name']} is pending deletion; restore it to import")
        t0 = time.monotonic()
        chunks = self._plan()
        self._save("IN_PROGRESS")
        make_pool = None
        # One chunk is faster inline than spawning workers, unless this process must not decode (a server).
        if chunks and (self.isolate or (self.workers > 1 and len(chunks) > 1)):
            # Worker processes use one core each: OpenBLAS's idle threads (numpy loads it) only spin.
            os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

            def make_pool() -> ProcessPoolExecutor:
                return ProcessPoolExecutor(max_workers=max(1, min(self.workers, len(chunks))),
                                           mp_context=get_context("spawn"), initializer=_worker_init,
                                           initargs=(os.getpid(),))
        self._run(t0, make_pool, md, chunks)  # returns once its worker pool (if any) is shut down
        # The final status only once the workers are gone: a caller that sees it may start the next import
        # (the server allows one per account) and must not find this one still running.
        elapsed = time.monotonic() - t0
        return self._save("FAILED" if self.stats.FailedEntries else "COMPLETED", elapsed)

    def _run(self, t0: float, make_pool: Callable[[], ProcessPoolExecutor] | None, md: dict,
             chunks: list) -> None:
        now = self.now or datetime.now(timezone.utc)
        cutoff = now - timedelta(days=md["RetentionPeriod"])
        base = {"lake_uri": self.lake.uri, "storage_options": self.lake.storage_options,
                "store_prefix": self.store.prefix, "start": self.start, "end": self.end, "cutoff": cutoff,
                "size_mode": md.get("MaxEventSize", "Standard"), "max_object_bytes": self.max_object_bytes}
        tasks = ({**base, "chunk": n, "objects": [_obj_dict(o) for o in chunk]} for n, chunk in enumerate(chunks))
        if make_pool is None:
            for task in tasks:
                self._absorb(_process_chunk(task), t0)
            return
        pool = make_pool()
        pending: dict = {}
        try:
            for task in tasks:
                if len(pending) >= self.workers * 2:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    pool = self._collect(finished, pending, pool, make_pool, t0)
                try:
                    pending[pool.submit(_process_chunk, task)] = task
                except BrokenProcessPool:
                    pool = self._recover(pending, pool, make_pool, t0, also=[task])
            pool = self._collect(list(pending), pending, pool, make_pool, t0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _collect(self, finished: Any, pending: dict, pool: ProcessPoolExecutor,
                 make_pool: Callable[[], ProcessPoolExecutor], t0: float) -> ProcessPoolExecutor:
        """Absorb the finished chunks; if the pool broke, recover (and return the pool to go on with)."""
        broken = False
        for f in finished:
            if isinstance(f.exception(), BrokenProcessPool):
                broken = True  # stays pending: _recover runs it again
                continue
            self._absorb(self._result(f, pending.pop(f)), t0)
        return self._recover(pending, pool, make_pool, t0) if broken else pool

    def _recover(self, pending: dict, pool: ProcessPoolExecutor, make_pool: Callable[[], ProcessPoolExecutor],
                 t0: float, also: list | None = None) -> ProcessPoolExecutor:
        """A worker died (killed for memory, a crash in a library): the standard library then fails every
        chunk in flight and every later submit with BrokenProcessPool. Chunks that finished are absorbed; the
        others run again one at a time in a fresh pool, so only a chunk that kills its worker on its own
        fails (its objects become failure entries), and the import goes on."""
        retry = list(also or [])
        for f, task in list(pending.items()):
            if f.done() and not f.cancelled() and f.exception() is None:
                self._absorb(f.result(), t0)
            else:
                retry.append(task)
        pending.clear()
        pool.shutdown(wait=True, cancel_futures=True)
        pool = make_pool()
        for task in sorted(retry, key=lambda t: t["chunk"]):
            f = pool.submit(_process_chunk, task)
            self._absorb(self._result(f, task), t0)
            if isinstance(f.exception(), BrokenProcessPool):
                pool.shutdown(wait=True, cancel_futures=True)
                pool = make_pool()
        return pool

    @staticmethod
    def _result(future, task: dict) -> dict:
        """A worker's result, or, when the worker died or raised (killed for memory, a crash in a library),
        a result that fails each of the chunk's objects: the import goes on with the other chunks."""
        try:
            return future.result()
        except Exception as e:  # noqa: BLE001 - includes BrokenProcessPool
            msg = f"the import worker failed on this object's chunk: {type(e).__name__}: {e}"
            return {"chunk": task["chunk"], "txn": uuid.uuid4().hex, "segments": [],
                    "files": [{**o, "events": 0, "ok": False} for o in task["objects"]],
                    "failures": [_failure(o["key"], "InternalError", msg) for o in task["objects"]],
                    "events_in": 0, "bytes": 0, "outside": 0, "expired": 0, "dups": 0}

    def _absorb(self, result: dict, t0: float) -> None:
        """Commit one finished chunk, then record its objects in the ledger and its failures."""
        st = self.stats
        pending = [Pending(s["entry"]["account"], s["entry"]["date"], _series(s["keys"]), entry=s["entry"])
                   for s in result["segments"]]
        dups = result["dups"]
        if pending:
            _, added, d = self.store._commit_pending(pending, operation="IMPORT", txn=result["txn"],
                                                     info={"import_id": self.import_id, "chunk": result["chunk"]})
            dups += d
            st.EventsCompleted += sum(e["rows"] for e in added)
        st.DuplicatesSkipped += dups
        st.EventsOutsideTimeRange += result["outside"]
        st.EventsPastRetention += result["expired"]
        st.BytesRead += result["bytes"]
        self._record_failures(result["failures"])
        ledger = [{"name": _ledger_name(LogObject(f["uri"], f["key"], f["size"], f["identity"])),
                   "location": f["uri"], "identity": f["identity"], "events": f["events"]}
                  for f in result["files"] if f["ok"]]
        if ledger:
            self.lake.storage.create(f"{self.store.prefix}/{LEDGER}/{result['txn']}.json",
                                     orjson.dumps({"import_id": self.import_id, "objects": ledger}),
                                     durable=False)
        for f in result["files"]:
            if f.get("digest"):
                st.DigestFilesSkipped += 1
            elif f.get("other"):
                st.NonEventFilesSkipped += 1
            elif f["ok"]:
                st.FilesCompleted += 1
            else:
                st.FilesFailed += 1
            p = f["key"].rsplit("/", 1)[0] if "/" in f["key"] else ""
            left = self._prefix_files.get(p, 0) - 1
            self._prefix_files[p] = left
            if left == 0:
                st.PrefixesCompleted += 1
        self._save("IN_PROGRESS", time.monotonic() - t0)
        if self.progress:
            self.progress(st, self.total_bytes)


def _series(arr):
    import polars as pl
    return pl.Series("k", arr)


def _obj_dict(o: LogObject) -> dict:
    return {"uri": o.uri, "key": o.key, "size": o.size, "identity": o.identity}


def _iso(dt: datetime | None) -> str | None:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


# ---- queries over past imports ------------------------------------------------------------------------

def list_imports(lake) -> list[dict]:
    out = []
    for d in lake.storage.list_dirs("imports"):
        try:
            out.append(orjson.loads(lake.storage.read(f"imports/{d}/import.json")))
        except FileNotFoundError:
            continue
    return sorted(out, key=lambda r: r.get("CreatedTimestamp", ""))


def get_import(lake, import_id: str) -> dict:
    try:
        return orjson.loads(lake.storage.read(f"imports/{import_id}/import.json"))
    except FileNotFoundError:
        raise NotFound(f"no import {import_id!r}; `lake imports list` shows them") from None


def import_failures(lake, import_id: str) -> list[dict]:
    """ListImportFailures: every failure entry of an import, oldest first."""
    get_import(lake, import_id)
    out: list[dict] = []
    for f in lake.storage.list(f"imports/{import_id}/failures"):
        out.extend(orjson.loads(lake.storage.read(f.path)))
    return out


def resume(lake, import_id: str, **kwargs: Any) -> Importer:
    """An importer that continues a killed or failed import with the same id, sources and window."""
    state = get_import(lake, import_id)
    store = lake.store(state["Destinations"][0])
    start = datetime.fromisoformat(state["StartEventTime"].replace("Z", "+00:00")) if state["StartEventTime"] else None
    end = datetime.fromisoformat(state["EndEventTime"].replace("Z", "+00:00")) if state["EndEventTime"] else None
    imp = Importer(store, state["ImportSource"], start=start, end=end, import_id=import_id, **kwargs)
    imp.created = state["CreatedTimestamp"]
    previous = import_failures(lake, import_id)
    imp._recorded = set(map(_failure_key, previous))
    imp.stats.FailedEntries = len(previous)
    return imp


__all__ = ["Importer", "ImportReport", "ImportStatistics", "list_imports", "get_import", "import_failures",
           "resume", "split_raw"]
