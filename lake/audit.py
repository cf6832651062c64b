"""The lake audits itself: every mutating API call `lake serve` handles becomes a CloudTrail event.

Records look like the ones AWS writes for CloudTrail's own API (eventSource cloudtrail.amazonaws.com, eventVersion
1.11, userIdentity from the SigV4 principal, requestParameters/responseElements, errorCode/errorMessage on
failure), so the same queries work on the lake's own audit trail as on any account's. PutAuditEvents
(cloudtrail-data) is a data event on the channel, as in AWS; the audit store created here selects both.

Appending one event per request would add a commit (and a small segment) to every mutating call, so events
are queued and appended in batches by a background thread: after `flush_interval` seconds or `batch_size`
events, whichever comes first, and on shutdown. A failed append is logged and retried with the next batch
(up to ten batches are kept); auditing never fails the API call it records.

A queue alone loses what it holds when the server dies (302 of 1,941 acknowledged calls over 8 SIGKILLs), so
every record is first written to an append-only journal and fsynced before `record` returns, and the server
answers the call only after that (write-ahead). fsyncs are shared (group commit): a record waits for one
fsync already under way to finish and the next one covers every record written meanwhile, so N concurrent
calls cost about one fsync, not N. Each flush starts a new journal file; a file is deleted once its events
are committed to the audit store. A journal whose server is gone (its lock file is not locked any more) is
replayed into the audit store when a server starts and on each flush: the store skips events it already
holds (same eventID and account), so replaying a journal that was partly committed stores nothing twice.
Events that cannot be stored (the audit store stopped or deleted, events the store rejects, a journal
that cannot be written) are counted in `stats()` (and `/health`) and logged with the running total.

The journal lives in `<lake>/_audit/journal` for a local lake and in `$LAKE_AUDIT_JOURNAL` (default
`~/.local/state/lake/audit-journal/<hash of the lake URI>`) otherwise: it must be on a local disk.
"""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import logging
import os
import threading
import time
import uuid
from datetime import timezone
from typing import Any

import orjson

from .apicore import SERVICE_DATA, ApiContext, Principal
from .errors import AlreadyExists, InactiveStore, NotFound

log = logging.getLogger("lake.audit")

EVENT_VERSION = "1.11"
AUDIT_SELECTORS = [
    {"Name": "Management events", "FieldSelectors": [{"Field": "eventCategory", "Equals": ["Management"]}]},
    {"Name": "PutAuditEvents on channels", "FieldSelectors": [
        {"Field": "eventCategory", "Equals": ["Data"]},
        {"Field": "resources.type", "Equals": ["AWS::CloudTrail::Channel"]}]},
]


def _unique_id(prefix: str, arn: str) -> str:
    """A stable IAM-style unique id (AIDA.../AROA...) for a configured principal: AWS's are opaque too."""
    digest = base64.b32encode(hashlib.sha256(arn.encode()).digest()).decode()
    return prefix + digest[:17]


def user_identity(p: Principal) -> dict:
    """userIdentity for a principal, with the type AWS would report for its ARN."""
    account = p.account_id
    parts = p.arn.split(":", 5)
    resource = parts[5] if len(parts) == 6 else ""
    if p.anonymous:
        return {"type": "Unknown", "principalId": "anonymous", "accountId": account}
    kind, _, rest = resource.partition("/")
    base = {"accountId": account, "accessKeyId": p.access_key_id}
    if kind == "user":
        name = rest.rsplit("/", 1)[-1]
        return {"type": "IAMUser", "principalId": _unique_id("AIDA", p.arn), "arn": p.arn, **base,
                "userName": name}
    if kind in ("assumed-role", "role"):
        role, _, session = rest.rpartition("/") if kind == "assumed-role" else (rest, "", p.access_key_id)
        role_name = role.rsplit("/", 1)[-1]
        role_arn = f"arn:{parts[1]}:iam::{account}:role/{role}"
        role_id = _unique_id("AROA", role_arn)
        return {"type": "AssumedRole", "principalId": f"{role_id}:{session}", "arn": p.arn, **base,
                "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": role_id, "arn": role_arn,
                                                     "accountId": account, "userName": role_name},
                                   "attributes": {"mfaAuthenticated": "false"}}}
    if resource == "root":
        return {"type": "Root", "principalId": account, "arn": p.arn, **base}
    return {"type": "Unknown", "principalId": p.access_key_id, "arn": p.arn, **base}


def make_event(ctx: ApiContext, operation: str, service: str, params: dict | None, response: Any,
               error: tuple[str, str] | None) -> dict:
    """One CloudTrail record for a handled call. `response` is the JSON-ready response (None on error);
    `error` is (code, message) for failed calls."""
    data = service == SERVICE_DATA
    rec: dict[str, Any] = {
        "eventVersion": EVENT_VERSION,
        "userIdentity": user_identity(ctx.principal),
        "eventTime": ctx.now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": f"{service}.amazonaws.com",
        "eventName": operation,
        "awsRegion": ctx.region,
        "sourceIPAddress": ctx.source_ip,
        "userAgent": ctx.user_agent,
        "requestParameters": params or None,
        "responseElements": response if (response and not data) else None,
        "requestID": ctx.request_id,
        "eventID": str(uuid.uuid4()),
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": not data,
        "recipientAccountId": ctx.principal.account_id,
        "eventCategory": "Data" if data else "Management",
    }
    if data:
        # The payload of PutAuditEvents is the events themselves: the channel is what the call is about.
        params = dict(params or {})
        params.pop("auditEvents", None)
        rec["requestParameters"] = params or None
        channel = params.get("channelArn")
        if channel:
            rec["resources"] = [{"type": "AWS::CloudTrail::Channel", "ARN": channel,
                                 "accountId": ctx.principal.account_id}]
    if error:
        rec["errorCode"], rec["errorMessage"] = error
    return rec


def open_audit_store(lake, name: str):
    """The audit store, created on first use with selectors for management and channel data events."""
    try:
        return lake.store(name)
    except NotFound:
        pass
    try:
        return lake.create_store(name, selectors=AUDIT_SELECTORS)
    except AlreadyExists:  # another server created it meanwhile
        return lake.store(name)


JOURNAL_ENV = "LAKE_AUDIT_JOURNAL"
REPLAY_CHUNK = 5000  # journal events appended per commit when a dead server's journal is replayed


def journal_dir(lake) -> str:
    """Where this lake's audit journals are written (see the module docstring): on a local disk."""
    if os.environ.get(JOURNAL_ENV):
        return os.environ[JOURNAL_ENV]
    if lake.storage.local:
        return lake.storage.full("_audit/journal")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "lake", "audit-journal", hashlib.sha256(lake.uri.encode()).hexdigest()[:16])


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_journal(path: str) -> tuple[list[dict], int]:
    """The events of one journal file and the number of lines that are not a whole record (a write cut short
    by the crash: its call was never answered, since the answer waits for the fsync)."""
    events, torn = [], 0
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], 0
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            ev = orjson.loads(line)
        except orjson.JSONDecodeError:
            torn += 1
            continue
        if isinstance(ev, dict):
            events.append(ev)
        else:
            torn += 1
    return events, torn


class AuditWriter:
    """Journals audit records durably (write-ahead), then appends them to the audit store in batches on a
    background thread."""

    def __init__(self, lake, store_name: str, *, flush_interval: float = 1.0, batch_size: int = 100,
                 journal: str | None = None):
        self.store = open_audit_store(lake, store_name)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._queue: list[dict] = []
        self._retry: list[dict] = []
        self._retry_files: list[str] = []
        self._parked_files: list[str] = []  # journals of batches too big to retry: stored before unlinked
        self._first_at: float | None = None
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._sync_lock = threading.Lock()  # one fsync at a time; taken before _cond, never after
        self._closed = False
        self.written = 0
        self.dropped = 0
        self.journaled = 0
        self.replayed = 0
        self.journal_errors = 0
        self._journal_dir = journal or journal_dir(lake)
        self._id = uuid.uuid4().hex
        self._seq = 0
        self._wseq = 0  # journal lines written
        self._sseq = 0  # journal lines known to be on disk
        self._fd: int | None = None
        self._path: str | None = None
        self._lock_fd: int | None = None
        self._open_journal()
        self.replay()  # what a server that died left behind, before this one answers anything
        self._thread = threading.Thread(target=self._run, name="lake-audit", daemon=True)
        self._thread.start()

    # -- the journal ----------------------------------------------------------------------------------
    def _open_journal(self) -> None:
        os.makedirs(self._journal_dir, mode=0o700, exist_ok=True)
        # The lock file is locked before it gets its name, so no replayer ever sees it unlocked while we live.
        tmp = os.path.join(self._journal_dir, f".tmp-{self._id}.lock")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, os.path.join(self._journal_dir, f"{self._id}.lock"))
        self._lock_fd = fd
        self._new_file()

    def _new_file(self) -> None:
        self._seq += 1
        self._path = os.path.join(self._journal_dir, f"{self._id}-{self._seq:08d}.jsonl")
        self._fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._torn = False
        _fsync_dir(self._journal_dir)  # the file's name survives a power cut too, not only its lines

    def _sync(self, mine: int) -> None:
        """Return once journal line `mine` is on disk (group commit: one fsync covers every line written
        before it started)."""
        with self._sync_lock:
            if self._sseq >= mine:
                return
            with self._cond:
                fd, target = self._fd, self._wseq
            if fd is not None:
                os.fsync(fd)
            self._sseq = max(self._sseq, target)

    def record(self, event: dict) -> None:
        """Journal `event` durably, then queue it for the audit store. The server answers the call after
        this returns, so every acknowledged call's record survives a crash."""
        line = orjson.dumps(event) + b"\n"
        with self._cond:
            if self._closed:
                self._write([event], [])  # late request during shutdown: write it directly
                return
            mine = 0
            if self._fd is not None:
                try:
                    # After a failed or short write the file may end in part of a line: start a new one, so
                    # the torn piece never swallows this record.
                    data = (b"\n" + line) if self._torn else line
                    if os.write(self._fd, data) != len(data):
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                    self._torn = False
                    self._wseq += 1
                    self.journaled += 1
                    mine = self._wseq
                except OSError as e:  # disk full, ...: the record still goes to the store, undurably
                    self._torn = True
                    self.journal_errors += 1
                    log.error("audit: cannot journal a record (%s); it is only queued (%d so far)",
                              os.strerror(e.errno or errno.EIO), self.journal_errors)
            self._queue.append(event)
            if self._first_at is None:  # wake the writer: its flush deadline starts now
                self._first_at = time.monotonic()
                self._cond.notify()
            elif len(self._queue) >= self.batch_size:
                self._cond.notify()
        if mine:
            try:
                self._sync(mine)
            except OSError as e:
                self.journal_errors += 1
                log.error("audit: journal fsync failed (%s) (%d so far)", os.strerror(e.errno or errno.EIO),
                          self.journal_errors)

    def _take(self) -> tuple[list[dict], list[str]]:
        """The queued events and the journal file holding them; later records go to a new file. Every line
        of the current file is an event of the queue (both change together under `_cond`)."""
        with self._sync_lock:
            with self._cond:
                batch, self._queue, self._first_at = self._queue, [], None
                if not batch or self._fd is None:
                    return batch, []
                old_fd, old_path, target = self._fd, self._path, self._wseq
                self._new_file()
            try:
                os.fsync(old_fd)
            finally:
                os.close(old_fd)
            self._sseq = max(self._sseq, target)
        return batch, [old_path]

    def replay(self) -> int:
        """Append the journals of servers that are gone to the audit store; returns the events found."""
        try:
            names = os.listdir(self._journal_dir)
        except FileNotFoundError:
            return 0
        owners = sorted({n.split("-", 1)[0] for n in names if n.endswith(".jsonl")} - {self._id})
        found = 0
        for owner in owners:
            lock_path = os.path.join(self._journal_dir, f"{owner}.lock")
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its server is alive and flushes its own journal
                files = sorted(os.path.join(self._journal_dir, n) for n in os.listdir(self._journal_dir)
                               if n.startswith(owner + "-") and n.endswith(".jsonl"))
                events, torn = [], 0
                for f in files:
                    ev, t = _read_journal(f)
                    events += ev
                    torn += t
                if torn:
                    log.warning("audit: %d torn journal lines of server %s skipped (calls never answered)",
                                torn, owner)
                try:
                    stored = 0
                    for i in range(0, len(events), REPLAY_CHUNK):
                        stored += self._append(events[i:i + REPLAY_CHUNK])
                except Exception as e:  # noqa: BLE001 - kept for the next try
                    log.error("audit: replaying the journal of server %s failed (kept for the next flush): %s",
                              owner, e)
                    continue
                found += len(events)
                self.replayed += stored
                if events:
                    log.warning("audit: replayed %d journaled events of server %s (%d were not yet in %s)",
                                len(events), owner, stored, self.store.name)
                for f in files:
                    os.unlink(f)
                os.unlink(lock_path)
            finally:
                os.close(fd)
        return found

    # -- the store ------------------------------------------------------------------------------------
    def _append(self, batch: list[dict]) -> int:
        """Append to the audit store; events it cannot take are counted as dropped. Returns events stored."""
        try:
            result = self.store.append(batch, source="live")
        except InactiveStore as e:  # stopped or deleted by the operator: their choice, not a fault
            self._drop(len(batch), str(e))
            return 0
        for r in result.rejected:
            log.error("audit: event rejected by %s: %s", self.store.name, r.message)
        if result.rejected:
            self._drop(len(result.rejected), "rejected by the audit store")
        return result.appended

    def _drop(self, n: int, why: str) -> None:
        self.dropped += n
        log.error("audit: %d events not recorded (%s); %d dropped since the server started", n, why,
                  self.dropped)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if len(self._queue) >= self.batch_size:
                        break
                    if self._first_at is not None:
                        left = self._first_at + self.flush_interval - time.monotonic()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    else:
                        self._cond.wait(self.flush_interval * 10)
                        if self._first_at is None:
                            break  # idle: look for journals of dead servers now and then
                if self._closed:
                    return
            batch, files = self._take()
            self._write(batch, files)
            try:
                self.replay()
            except Exception as e:  # noqa: BLE001 - auditing must never take the server down
                log.error("audit: replay failed: %s", e)

    def _write(self, batch: list[dict], files: list[str]) -> None:
        with self._write_lock:
            batch, self._retry = self._retry + batch, []
            files, self._retry_files = self._retry_files + files, []
            if not batch:
                for f in files:
                    _unlink(f)
                return
            try:
                self.written += self._append(batch)
            except Exception as e:  # noqa: BLE001 - auditing must never take the server down
                if len(batch) <= 10 * self.batch_size:
                    self._retry, self._retry_files = batch, files  # with the next batch
                else:  # too big to keep in memory: its journals stay until a later append stores them
                    self._parked_files += files
                log.error("audit: could not append %d events to %s: %s", len(batch), self.store.name, e)
                return
            for f in files:  # committed: the journal has done its work
                _unlink(f)
            self._store_parked()

    def _store_parked(self) -> None:
        """Append the journals parked by earlier failures, one file at a time, now that the store takes
        appends again (the store's dedupe makes a repeat harmless); a file is unlinked only once stored."""
        while self._parked_files:
            path = self._parked_files[0]
            events, _ = _read_journal(path)
            try:
                if events:
                    self.written += self._append(events)
            except Exception as e:  # noqa: BLE001 - auditing must never take the server down
                log.error("audit: parked journal %s not stored yet: %s", path, e)
                return
            _unlink(path)
            self._parked_files.pop(0)

    def stats(self) -> dict:
        """Counters for operators (`/health`): events journaled, stored, replayed, dropped, journal errors."""
        with self._cond:
            queued = len(self._queue) + len(self._retry)
        return {"store": self.store.name, "journaled": self.journaled, "written": self.written,
                "replayed": self.replayed, "queued": queued, "dropped": self.dropped,
                "journalErrors": self.journal_errors, "journal": self._journal_dir}

    def flush(self) -> None:
        """Append everything queued so far, now (tests, shutdown)."""
        batch, files = self._take()
        self._write(batch, files)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self.flush()
        with self._sync_lock, self._cond:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                if not (self._retry_files or self._parked_files):  # else the next start replays them
                    _unlink(self._path)
            if self._lock_fd is not None:
                if not (self._retry_files or self._parked_files):
                    _unlink(os.path.join(self._journal_dir, f"{self._id}.lock"))
                os.close(self._lock_fd)
                self._lock_fd = None


def _unlink(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
