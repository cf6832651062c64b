"""Reading CloudTrail log files: gzip or plain, `{"Records": [...]}`, a JSON array, or NDJSON.

A file that cannot be decoded raises `TrailFileError` with the file name and the reason; callers record it
as a failure and go on with the next file.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from typing import Any

import orjson

try:
    from zlib_ng import zlib_ng as _fast_zlib
except ImportError:  # optional: the standard zlib gives the same bytes, slower
    _fast_zlib = zlib


class TrailFileError(ValueError):
    code = "InvalidLogFile"


def decode(data: bytes, name: str = "") -> list[Any]:
    """The records of one log file's bytes (a zip archive yields the records of every member)."""
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                out: list[Any] = []
                for member in sorted(z.namelist()):
                    if not member.endswith("/"):
                        out += decode(z.read(member), f"{name}!{member}")
                return out
        except zipfile.BadZipFile as e:
            raise TrailFileError(f"{name}: zip archive is damaged ({e})") from None
    text = decode_bytes(data, name).strip()
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


def gunzip(data: bytes) -> bytes:
    """A gzip file's content. One complete member (what CloudTrail writes) goes through zlib-ng when it is
    installed, ~1.8x faster than zlib (gunzip was ~10% of an import's CPU); anything else (several members,
    damage) through the standard library, for its exact behaviour and messages."""
    d = _fast_zlib.decompressobj(31)
    try:
        out = d.decompress(data)
        if d.eof and not d.unused_data:
            return out
    except _fast_zlib.error:
        pass
    return gzip.decompress(data)


def decode_bytes(data: bytes, name: str = "") -> bytes:
    """Decompress gzip if needed (zip archives are left to `decode`)."""
    if data[:2] == b"\x1f\x8b":
        try:
            return gunzip(data)
        except (OSError, EOFError, zlib.error) as e:
            raise TrailFileError(f"{name}: gzip data is damaged ({e})") from None
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
                raise TrailFileError(f"{name}: not JSON ({e})") from None
            out.append(line)  # left for the converter to reject with its line content
    return out


def encode_log_file(records: list[dict]) -> bytes:
    """A gzip trail log file, as CloudTrail delivers it."""
    return gzip.compress(orjson.dumps({"Records": records}), compresslevel=6)
