"""The lake audits itself: every mutating API call `lake serve` handles becomes a CloudTrail event.

Records look like the ones AWS writes for CloudTrail's own API (eventSource cloudtrail.amazonaws.com, eventVersion
1.11, userIdentity from the SigV4 principal, requestParameters/responseElements, errorCode/errorMessage on
failure), so the same queries work on the lake's own audit trail as on any account's. PutAuditEvents
(cloudtrail-data) is a data event on the channel, as in AWS; the audit store created here selects both.

Appending one event per request would add a commit (and a small segment) to every mutating call, so events
are queued and appended in batches by a background thread: after `flush_interval` seconds or `batch_size`
events, whichever comes first, and on shutdown. A failed append is logged and retried with the next batch
(up to ten batches are kept); auditing never fails the API call it records.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
import uuid
from datetime import timezone
from typing import Any

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


class AuditWriter:
    """Queues audit records and appends them to the audit store in batches on a background thread."""

    def __init__(self, lake, store_name: str, *, flush_interval: float = 1.0, batch_size: int = 100):
        self.store = open_audit_store(lake, store_name)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._queue: list[dict] = []
        self._retry: list[dict] = []
        self._first_at: float | None = None
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._closed = False
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="lake-audit", daemon=True)
        self._thread.start()

    def record(self, event: dict) -> None:
        with self._cond:
            if self._closed:
                self._write([event])  # late request during shutdown: write it directly
                return
            self._queue.append(event)
            if self._first_at is None:  # wake the writer: its flush deadline starts now
                self._first_at = time.monotonic()
                self._cond.notify()
            elif len(self._queue) >= self.batch_size:
                self._cond.notify()

    def _take(self) -> list[dict]:
        batch, self._queue, self._first_at = self._queue, [], None
        return batch

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
                        self._cond.wait()
                if self._closed:
                    return
                batch = self._take()
            self._write(batch)

    def _write(self, batch: list[dict]) -> None:
        with self._write_lock:
            batch, self._retry = self._retry + batch, []
            if not batch:
                return
            try:
                result = self.store.append(batch, source="live")
            except InactiveStore as e:  # stopped or deleted by the operator: their choice, not a fault
                self.dropped += len(batch)
                log.warning("audit: %d events not recorded: %s", len(batch), e)
                return
            except Exception as e:  # noqa: BLE001 - auditing must never take the server down
                if len(batch) <= 10 * self.batch_size:
                    self._retry = batch  # with the next batch (storage hiccup, commit conflict storm)
                else:
                    self.dropped += len(batch)
                log.error("audit: could not append %d events to %s: %s", len(batch), self.store.name, e)
                return
            self.written += result.appended
            for r in result.rejected:
                log.error("audit: event rejected by %s: %s", self.store.name, r.message)

    def flush(self) -> None:
        """Append everything queued so far, now (tests, shutdown)."""
        with self._cond:
            batch = self._take()
        self._write(batch)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=30)
        self.flush()
