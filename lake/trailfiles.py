"""Reading CloudTrail log files: gzip or plain, `{"Records": [...]}`, a JSON array, or NDJSON.

A file that cannot be decoded raises `TrailFileError` with the file name and the reason; callers record it
as a failure and go on with the next file. Decompression is capped (`limits.MAX_OBJECT_BYTES` by default):
output is produced in bounded steps, so a gzip or zip bomb fails with `ObjectTooLarge` before its memory is
spent.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from typing import Any

import orjson

from . import limits

try:
    from zlib_ng import zlib_ng as _fast_zlib
except ImportError:  # optional: the standard zlib gives the same bytes, slower
    _fast_zlib = zlib


class TrailFileError(ValueError):
    code = "InvalidLogFile"


class ObjectTooLarge(TrailFileError):
    """An object that is, or decompresses to, more bytes than the import accepts per object."""

    code = "ObjectTooLarge"

    def __init__(self, name: str, limit: int):
        super().__init__(f"{name}: more than {limit:,} bytes once decompressed; the import limit per object is "
                         f"{limit:,} bytes (LAKE_IMPORT_MAX_OBJECT_BYTES)")


def _limit(max_bytes: int | None) -> int:
    return limits.MAX_OBJECT_BYTES if max_bytes is None else max_bytes


def zip_members(data: bytes, name: str, max_bytes: int | None = None) -> list[tuple[str, bytes]]:
    """(name, bytes) of every file in a zip archive, in name order, reading at most `max_bytes` in all
    (a member's declared size is not trusted: each read stops one byte past what is left)."""
    left = _limit(max_bytes)
    out = []
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for member in sorted(z.namelist()):
                if member.endswith("/"):
                    continue
                with z.open(member) as f:
                    body = f.read(left + 1)
                if len(body) > left:
                    raise ObjectTooLarge(name, _limit(max_bytes))
                left -= len(body)
                out.append((f"{name}!{member}", body))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
        raise TrailFileError(f"{name}: zip archive is damaged ({e})") from None
    return out


def decode(data: bytes, name: str = "", max_bytes: int | None = None) -> list[Any]:
    """The records of one log file's bytes (a zip archive yields the records of every member)."""
    if data[:4] == b"PK\x03\x04":
        out: list[Any] = []
        for member, body in zip_members(data, name, max_bytes):
            out += decode(body, member, max_bytes)
        return out
    text = decode_bytes(data, name, max_bytes).strip()
    if not text:
        return []
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return _ndjson(text, name)
    if isinstance(doc, dict):
        if "Records" in doc:
            recs = doc["Records"]
            if not isinstance(recs, list):
                raise TrailFileError(f"{name}: 'Records' is not a list")
            return recs
        return [doc]
    if isinstance(doc, list):
        return doc
    raise TrailFileError(f"{name}: JSON {type(doc).__name__} is neither a record nor a list of records")


def gunzip(data: bytes, max_bytes: int | None = None, name: str = "") -> bytes:
    """A gzip file's content, at most `max_bytes` (default `limits.MAX_OBJECT_BYTES`; more raises
    `ObjectTooLarge` once one byte past it is produced, never after inflating the rest). One complete member
    (what CloudTrail writes) goes through zlib-ng when it is installed, ~1.8x faster than zlib (gunzip was
    ~10% of an import's CPU); anything else (several members, damage) through the standard library's
    streaming reader, for its exact behaviour and messages."""
    limit = _limit(max_bytes)
    d = _fast_zlib.decompressobj(31)
    try:
        out = d.decompress(data, limit + 1)
        if len(out) > limit:
            raise ObjectTooLarge(name, limit)
        if d.eof and not d.unused_data:
            return out
    except _fast_zlib.error:
        pass
    del d
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        out = f.read(limit + 1)
    if len(out) > limit:
        raise ObjectTooLarge(name, limit)
    return out


def decode_bytes(data: bytes, name: str = "", max_bytes: int | None = None) -> bytes:
    """Decompress gzip if needed (zip archives are left to `decode`); see `gunzip` for `max_bytes`."""
    if data[:2] == b"\x1f\x8b":
        try:
            return gunzip(data, max_bytes, name)
        except (OSError, EOFError, zlib.error) as e:
            raise TrailFileError(f"{name}: gzip data is damaged ({e})") from None
    if len(data) > _limit(max_bytes):
        raise ObjectTooLarge(name, _limit(max_bytes))
    return data


def _ndjson(text: bytes, name: str) -> list[Any]:
    out: list[Any] = []
    lines = text.split(b"\n")
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            if n == 1 and len(lines) == 1:
                raise TrailFileError(f"{name}: not JSON ({_utf8_problem(line) or e})") from None
            out.append(line)  # left for the converter to reject with its line content
    return out


def _utf8_problem(data: bytes) -> str | None:
    """Where `data` stops being UTF-8 (orjson says only "surrogates not allowed"), or None."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as u:
        return f"not valid UTF-8: byte {u.start:,} starts an invalid sequence ({data[u.start:u.start + 4].hex(' ')})"
    return None


def encode_log_file(records: list[dict]) -> bytes:
    """A gzip trail log file, as CloudTrail delivers it."""
    return gzip.compress(orjson.dumps({"Records": records}), compresslevel=6)
