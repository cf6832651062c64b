"""CloudTrail event size modes, per-field caps and the truncation order, applied to one record before storage.

Why this module exists: CloudTrail never stores an event of unbounded size. An event data store runs in one of two
modes (``PutEventConfiguration`` ``MaxEventSize``): ``Standard`` (256 KB, the default) or ``Large`` (1 MB, needed
for ``eventContext`` enrichment). Within those modes a few free-text and free-form fields have their own caps, and
AWS shrinks them (truncating strings, omitting objects) instead of rejecting the whole event. Lake reproduces that
so a record stored here has the same shape and size as the one CloudTrail would have stored, and so that one
oversized record never stops a batch: it is either shrunk or rejected with ``EventTooLarge`` (error code
``"EventTooLarge"``) and the caller records the rejection.

Documented behaviour (reference: cloudtrail-format.md, sections 1.3 and 6.9)
---------------------------------------------------------------------------
* Caps: ``userAgent``, ``errorCode``, ``errorMessage``, ``requestID`` 1 KB, truncated; ``requestParameters``,
  ``responseElements``, ``serviceEventDetails`` 100 KB, omitted; ``additionalEventData`` 28 KB, omitted;
  ``edgeDeviceDetails`` 28 KB, truncated.
* Standard mode: the caps always apply; an event still above 256 KB is not stored.
* Large mode: a field is shrunk only if the whole event exceeds 1 MB *and* the field exceeds its cap, walking
  ``annotation -> requestID -> additionalEventData -> serviceEventDetails -> userAgent -> errorCode ->
  eventContext -> responseElements -> requestParameters -> errorMessage``; an event that still does not fit is
  not stored.

Choices made where AWS is silent or ambiguous (UNCONFIRMED)
-----------------------------------------------------------
1. **Units.** "1 KB" is 1024 bytes and "100 KB" is 102,400 bytes. A string field is measured as the UTF-8 byte
   length of the string itself (no quotes, no JSON escapes); every other value, and every field whose action is
   "omit", is measured as the byte length of its compact JSON serialisation (``orjson.dumps``). The event is
   measured as ``len(orjson.dumps(record))``. A field "exceeds" its cap when its size is strictly greater.
2. **Omitted representation.** An omitted field's value becomes ``{"omitted": true, "originalSize": <bytes>}``
   where ``originalSize`` is the compact-JSON size of the value that was dropped. This follows the 1.10-era doc
   sentence "If a field is truncated, ``omitted`` is present with a value of true" (the 1.11 page dropped it);
   ``originalSize`` is a Lake addition so the loss is measurable. The key stays present, so queries can find
   omitted events with ``element_at(requestParameters, 'omitted') = 'true'``.
3. **Truncated strings** are cut to the longest prefix of at most ``cap`` UTF-8 bytes that does not split a
   code point. No marker is added (AWS documents none for strings); the field name is reported to the caller.
   Grapheme clusters (combining marks, ZWJ emoji sequences) may be split; code points never are.
4. **"Truncated" applied to a non-string** (``edgeDeviceDetails`` is an object; a malformed record may carry an
   object in ``userAgent``) means *omitted*: there is no meaningful prefix of a JSON object, so it gets the
   omitted marker of choice 2.
5. **``annotation``** (undocumented on the record page; first in the truncation order) has a 1 KB cap and is
   truncated like the other short strings.
6. **``eventContext``** is in the truncation order but has no documented cap; Lake uses 28 KB, omitted.
7. **``edgeDeviceDetails``** has a cap but is absent from the documented truncation order, so in Large mode it is
   never shrunk; in Standard mode its cap applies like every other cap.
8. Only the exact camelCase top-level keys are capped (CloudTrail keys are case-sensitive). Nested content is
   never inspected or rewritten, so keys that differ only by case (``Tagging``/``tagging`` inside
   ``requestParameters``) survive exactly as received.

The returned record is a shallow copy when something changed: untouched nested values are shared with the input,
and the input itself is never mutated.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any, Final, NamedTuple

import orjson

__all__ = [
    "STANDARD",
    "LARGE",
    "MAX_EVENT_BYTES",
    "TRUNCATE",
    "OMIT",
    "FieldCap",
    "FIELD_CAPS",
    "TRUNCATION_ORDER",
    "EventTooLarge",
    "event_size",
    "omitted_marker",
    "apply_size_limits",
    "EARLIEST_EVENT_TIME",
    "MAX_FUTURE_EVENT_TIME",
    "MAX_OBJECT_BYTES",
    "latest_event_time",
    "event_time_range_text",
]

STANDARD: Final = "Standard"
LARGE: Final = "Large"

#: Whole-event limit per ``MaxEventSize`` mode, in bytes of compact JSON.
MAX_EVENT_BYTES: Final[dict[str, int]] = {STANDARD: 256 * 1024, LARGE: 1024 * 1024}

TRUNCATE: Final = "truncate"
OMIT: Final = "omit"

_KB = 1024


class FieldCap(NamedTuple):
    """A per-field cap: the largest allowed size in bytes and what happens above it (``TRUNCATE`` or ``OMIT``)."""

    max_bytes: int
    action: str


#: Per-field caps (top-level camelCase keys only). See the module docstring for the units and the UNCONFIRMED rows.
FIELD_CAPS: Final[dict[str, FieldCap]] = {
    "annotation": FieldCap(1 * _KB, TRUNCATE),  # UNCONFIRMED cap (choice 5)
    "requestID": FieldCap(1 * _KB, TRUNCATE),
    "additionalEventData": FieldCap(28 * _KB, OMIT),
    "serviceEventDetails": FieldCap(100 * _KB, OMIT),
    "userAgent": FieldCap(1 * _KB, TRUNCATE),
    "errorCode": FieldCap(1 * _KB, TRUNCATE),
    "eventContext": FieldCap(28 * _KB, OMIT),  # UNCONFIRMED cap (choice 6)
    "responseElements": FieldCap(100 * _KB, OMIT),
    "requestParameters": FieldCap(100 * _KB, OMIT),
    "errorMessage": FieldCap(1 * _KB, TRUNCATE),
    "edgeDeviceDetails": FieldCap(28 * _KB, TRUNCATE),  # an object, so in practice omitted (choice 4)
}

#: AWS's documented order for shrinking fields when an event exceeds 1 MB (Large mode).
TRUNCATION_ORDER: Final[tuple[str, ...]] = (
    "annotation",
    "requestID",
    "additionalEventData",
    "serviceEventDetails",
    "userAgent",
    "errorCode",
    "eventContext",
    "responseElements",
    "requestParameters",
    "errorMessage",
)

# Standard mode applies every cap; reporting them in the AWS order (then the rest) keeps the output deterministic.
_STANDARD_ORDER: Final[tuple[str, ...]] = TRUNCATION_ORDER + tuple(
    name for name in FIELD_CAPS if name not in TRUNCATION_ORDER
)
# No field of an event whose total size is at most this can exceed any cap (a part is never larger than the whole).
_MIN_CAP: Final = min(cap.max_bytes for cap in FIELD_CAPS.values())
_MAX_ID_IN_MESSAGE: Final = 64


class EventTooLarge(ValueError):
    """An event that does not fit its mode's limit even after every allowed truncation; it must not be stored.

    A ``ValueError`` so generic validation handlers catch it; ``code`` is the error code the ingestion path
    records next to the rejected record, and the message is a single line fit for a rejection report.
    """

    code: str = "EventTooLarge"

    def __init__(self, event_id: Any, size: int, mode: str, limit: int, truncated: list[str] | None = None) -> None:
        self.event_id = event_id
        self.size = size
        self.mode = mode
        self.limit = limit
        self.truncated = list(truncated or [])
        super().__init__(
            f"event {_describe_id(event_id)} is {size:,} bytes after truncation; "
            f"the {mode} limit is {limit:,} bytes"
        )


def _describe_id(event_id: Any) -> str:
    """Render an eventID for a one-line message: never multi-line, never unbounded (IDs come from untrusted input)."""
    if event_id is None:
        return "(no eventID)"
    text = event_id if isinstance(event_id, str) and event_id.isprintable() else repr(event_id)
    if len(text) > _MAX_ID_IN_MESSAGE:
        text = text[: _MAX_ID_IN_MESSAGE - 1] + "…"
    return text


def event_size(record: dict) -> int:
    """The size CloudTrail limits are checked against: UTF-8 bytes of the compact JSON serialisation.

    Compact ``orjson.dumps`` output is what Lake stores as ``eventjson``, so the size checked is the size kept.
    """
    return len(orjson.dumps(record))


def omitted_marker(original_size: int) -> dict[str, Any]:
    """The value that replaces an omitted field (UNCONFIRMED representation; see module docstring, choice 2)."""
    return {"omitted": True, "originalSize": original_size}


def _exceeds(value: Any, cap: FieldCap, bound: int | None) -> bool:
    """Whether ``value`` is larger than ``cap``, avoiding serialisation whenever a cheap bound decides it.

    ``bound`` is an upper bound on the field's size (the whole event's size), or None when unknown.
    """
    if bound is not None and bound <= cap.max_bytes:
        return False
    if cap.action == TRUNCATE and isinstance(value, str):
        n = len(value)  # code points: each is 1..4 UTF-8 bytes
        if n > cap.max_bytes:
            return True
        if 4 * n <= cap.max_bytes:
            return False
        return len(value.encode("utf-8")) > cap.max_bytes
    return len(orjson.dumps(value)) > cap.max_bytes


def _truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding is at most ``max_bytes`` bytes, never splitting a code
    point."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    end = max_bytes
    # data[end] is the first byte dropped; while it is a continuation byte (10xxxxxx) we would cut a character.
    while end > 0 and (data[end] & 0xC0) == 0x80:
        end -= 1
    return data[:end].decode("utf-8")


def _shrink(value: Any, cap: FieldCap) -> tuple[Any, int]:
    """Apply ``cap`` to a value known to exceed it: return (new value, change in the event's serialised size).

    The delta is exact because a compact JSON object's size is the sum of its parts: replacing one member's value
    changes the total by the difference of the two values' serialisations.
    """
    old_json = len(orjson.dumps(value))
    if cap.action == TRUNCATE and isinstance(value, str):
        new: Any = _truncate_utf8(value, cap.max_bytes)
    else:
        new = omitted_marker(old_json)
    return new, len(orjson.dumps(new)) - old_json


def apply_size_limits(record: dict, mode: str = STANDARD, size: int | None = None) -> tuple[dict, list[str]]:
    """Return (record_to_store, names_of_fields_truncated_or_omitted) for ``mode`` (``STANDARD`` or ``LARGE``).

    The input dict is never mutated. When nothing changes the SAME object and ``[]`` are returned, so the common
    case costs no copy. ``size`` lets callers that already serialised the record pass ``event_size(record)`` (or
    any upper bound of it) and skip re-serialising it: with a small enough size the function only does a few dict
    look-ups. The hint decides only whether work is needed; when something must change the record is measured
    again, so a pessimistic hint is harmless.

    Raises ``EventTooLarge`` if the event still exceeds the mode's limit after every allowed truncation, and
    ``ValueError`` for an unknown mode.
    """
    limit = MAX_EVENT_BYTES.get(mode) if isinstance(mode, str) else None
    if limit is None:
        raise ValueError(f"unknown event size mode {mode!r}; expected {STANDARD!r} or {LARGE!r}")
    if size is None:
        size = event_size(record)

    if mode == LARGE:
        if size <= limit:
            return record, []
        return _shrink_in_order(record, limit)

    # Standard: every cap applies regardless of the event's size.
    if size <= limit and size <= _MIN_CAP:
        return record, []
    over = [
        name
        for name in _STANDARD_ORDER
        if name in record and _exceeds(record[name], FIELD_CAPS[name], size)
    ]
    if not over and size <= limit:
        return record, []

    actual = event_size(record)
    result = record
    if over:
        result = dict(record)
        for name in over:
            result[name], delta = _shrink(record[name], FIELD_CAPS[name])
            actual += delta
    if actual > limit:
        raise EventTooLarge(record.get("eventID"), actual, STANDARD, limit, over)
    return result, over


def _shrink_in_order(record: dict, limit: int) -> tuple[dict, list[str]]:
    """Large mode: shrink over-cap fields in ``TRUNCATION_ORDER`` only until the event fits, as AWS does, so that
    as much of the event as possible survives."""
    actual = event_size(record)
    if actual <= limit:  # the caller's hint was pessimistic
        return record, []
    result: dict | None = None
    touched: list[str] = []
    for name in TRUNCATION_ORDER:
        if name not in record:
            continue
        cap = FIELD_CAPS[name]
        value = record[name]
        if not _exceeds(value, cap, None):
            continue
        if result is None:
            result = dict(record)
        result[name], delta = _shrink(value, cap)
        actual += delta
        touched.append(name)
        if actual <= limit:
            return result, touched
    raise EventTooLarge(record.get("eventID"), actual, LARGE, limit, touched)


# ---- bounds on what a record or a log object may claim (docs/security.md, "Limits and defaults") ----------

def _env_number(name: str, default: float) -> float:
    """A positive number from the environment; an unusable value is reported once and the default used
    (a typo in an operator's setting must not make every command fail with a traceback at import)."""
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
        if value > 0:
            return value
    except ValueError:
        pass
    import sys

    print(f"lake: ignoring {name}={raw!r} (not a positive number); using {default:,}", file=sys.stderr)
    return default


#: The earliest eventTime stored. CloudTrail began in 2013; anything before the Unix epoch is a damaged or
#: forged record, and dates before year 1 (or after 9999) cannot even be written as a partition date.
EARLIEST_EVENT_TIME: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: How far past the current time an eventTime may lie. eventTime is when the request completed, on an
#: NTP-synced clock, so a real event is never in the future; one day leaves room for skewed clocks of
#: PutAuditEvents callers. AWS documents no bound; without one a year-9999 event never expires under any
#: retention period. `LAKE_MAX_FUTURE_EVENT_DAYS` changes it.
MAX_FUTURE_EVENT_TIME: Final = timedelta(days=_env_number("LAKE_MAX_FUTURE_EVENT_DAYS", 1))

#: Decompressed bytes one import object (gzip file, or all members of a zip archive) may expand to. Real
#: trail log files are a few MB to a few tens of MB uncompressed; the cap stops a gzip bomb (3 MB of zeros is
#: 3 GB) before the memory is spent. `LAKE_IMPORT_MAX_OBJECT_BYTES` changes it.
MAX_OBJECT_BYTES: Final = int(_env_number("LAKE_IMPORT_MAX_OBJECT_BYTES", 256 << 20))


def latest_event_time(now: datetime | None = None) -> datetime:
    """The latest eventTime accepted now (`MAX_FUTURE_EVENT_TIME` past the wall clock)."""
    return (now or datetime.now(timezone.utc)) + MAX_FUTURE_EVENT_TIME


def event_time_range_text() -> str:
    """The accepted eventTime range, for reject messages."""
    days = MAX_FUTURE_EVENT_TIME / timedelta(days=1)
    return (f"from {EARLIEST_EVENT_TIME:%Y-%m-%dT%H:%M:%SZ} to {days:g} day{'s' if days != 1 else ''} after "
            "the current time")
