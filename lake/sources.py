"""Finding CloudTrail log objects under import sources (files, directories, `s3://bucket/prefix`).

The trail layout `AWSLogs/[o-orgid/]<account>/CloudTrail[-Insight|-NetworkActivity|-Digest]/<region>/YYYY/MM/DD/`
and the file name `<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz` both carry the delivery date,
so `--start/--end` can skip objects before opening them, as CloudTrail Lake's StartImport does.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Iterator

import fsspec

from .storage import storage_options_from_env

_LAYOUT = re.compile(
    r"AWSLogs/(?:(?P<org>o-[a-z0-9]+)/)?(?P<account>\d{12})/(?P<kind>CloudTrail(?:-[A-Za-z]+)?)/"
    r"(?P<region>[a-z0-9-]+)/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/")
_NAME = re.compile(r"(?P<account>\d{12})_(?P<kind>CloudTrail(?:-[A-Za-z]+)?)_(?P<region>[a-z0-9-]+)_"
                   r"(?P<y>\d{4})(?P<m>\d{2})(?P<d>\d{2})T(?P<H>\d{2})(?P<M>\d{2})Z")
LOG_SUFFIXES = (".json.gz", ".json", ".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz", ".gz", ".zip")
EVENT_KINDS = ("CloudTrail", "CloudTrail-Insight", "CloudTrail-NetworkActivity")


@dataclass(frozen=True)
class LogObject:
    """One file to import. `identity` (ETag or size+mtime) decides whether it was imported before."""

    uri: str  # what to open (local path or protocol://bucket/key)
    key: str  # path relative to the source root, for messages and the ledger
    size: int
    identity: str
    kind: str = "CloudTrail"  # CloudTrail, CloudTrail-Insight, CloudTrail-NetworkActivity, CloudTrail-Digest
    account: str | None = None
    region: str | None = None
    day: date | None = None
    # Set for an entry found when listing that is never opened (a FIFO, a device, a broken, looping or
    # escaping symbolic link): (ErrorType, message). The import records it as a failure entry.
    problem: tuple[str, str] | None = None

    @property
    def is_digest(self) -> bool:
        return self.kind == "CloudTrail-Digest" or "_CloudTrail-Digest_" in self.key


def classify(key: str) -> dict:
    """Account, kind, region and delivery day from a trail object key (empty when it does not match)."""
    m = _LAYOUT.search(key) or _NAME.search(key.rsplit("/", 1)[-1])
    if not m:
        return {}
    try:
        day = date(int(m["y"]), int(m["m"]), int(m["d"]))
    except ValueError:
        day = None
    return {"account": m["account"], "kind": m["kind"], "region": m["region"], "day": day}


def _is_log_name(name: str) -> bool:
    low = name.lower()
    return not name.startswith(".") and low.endswith(LOG_SUFFIXES)


def _fs_options(proto: str, storage_options: dict | None) -> dict:
    opts = {**storage_options_from_env(proto), **(storage_options or {})}
    if proto in ("s3", "s3a"):
        opts.setdefault("use_listings_cache", False)
    return opts


def _fs_for(source: str, storage_options: dict | None):
    if "://" in source:
        proto = source.split("://", 1)[0]
        return fsspec.filesystem(proto, skip_instance_cache=True, **_fs_options(proto, storage_options)), proto
    return None, "file"


_READERS: dict[tuple, object] = {}


def _reader_fs(proto: str, storage_options: dict | None):
    """One filesystem per process and settings for reading objects. Building an s3fs filesystem (session,
    client, credential lookup) costs ~0.2 s, ~25x the GET of a small log object, so creating one per object
    made S3 imports of many small trail files crawl. Keyed by pid: a forked child never reuses its parent's
    client (aiobotocore sessions are not fork-safe)."""
    opts = _fs_options(proto, storage_options)
    key = (os.getpid(), proto, repr(sorted(opts.items(), key=lambda kv: kv[0])))
    fs = _READERS.get(key)
    if fs is None:
        fs = _READERS[key] = fsspec.filesystem(proto, skip_instance_cache=True, **opts)
    return fs


def list_source(source: str, storage_options: dict | None = None, *,
                confine_links: bool = True) -> Iterator[LogObject]:
    """Every log-looking object under one source, sorted by key (which groups account/region/day).
    `confine_links`: see `_walk_local`."""
    fs, proto = _fs_for(source, storage_options)
    if fs is None:
        root = os.path.abspath(os.path.expanduser(source))
        if os.path.lexists(root) and not (os.path.isfile(root) or os.path.isdir(root)):
            raise FileNotFoundError(f"import source {source!r} is not a regular file or a folder")
        if os.path.isfile(root):
            st = os.stat(root)
            name = os.path.basename(root)
            yield _obj(root, name, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")
            return
        if not os.path.isdir(root):
            raise FileNotFoundError(f"import source {source!r} does not exist")
        yield from sorted(_walk_local(root, confine_links), key=lambda o: o.key)
        return
    base = source.split("://", 1)[1].rstrip("/")
    if fs.isfile(base):
        info = fs.info(base)
        yield _obj(source, base.rsplit("/", 1)[-1], int(info.get("size") or 0), _etag(info))
        return
    found = []
    for path, info in fs.find(base, detail=True).items():
        if info.get("type") == "directory" or not _is_log_name(path.rsplit("/", 1)[-1]):
            continue
        found.append(_obj(f"{proto}://{path}", path[len(base) + 1:], int(info.get("size") or 0), _etag(info)))
    if not found and not fs.exists(base):
        raise FileNotFoundError(f"import source {source!r} does not exist or is empty")
    yield from sorted(found, key=lambda o: o.key)


def _walk_local(root: str, confine_links: bool = True) -> list[LogObject]:
    """Log files under a local folder, keyed by their '/'-joined path below it. Like os.walk (symlinked
    folders are not entered), but with scandir entries and string keys: os.walk + relpath spent ~12 us per
    file, a second for a month of trail logs, while the import workers waited.

    Only regular files are ever opened: opening a FIFO blocks forever (holding the import slot) and a device
    never ends. A symbolic link to a file is followed only when its target is a regular file inside the
    source (a link out of it would import files the source's owner did not give; with `confine_links`
    off, for the operator's own `lake import`, anywhere); a link that loops, dangles
    or escapes, and any other non-regular log-named entry, is listed with a `problem`, which the import
    records as a failure entry without opening it."""
    found = []
    real_root = os.path.realpath(root)
    stack = [(root, "")]
    while stack:
        path, rel = stack.pop()
        with os.scandir(path) as entries:
            for e in entries:
                if e.is_dir(follow_symlinks=False):
                    stack.append((e.path, f"{rel}{e.name}/"))
                elif not _is_log_name(e.name):
                    continue
                elif e.is_symlink():
                    found.append(_linked(e.path, rel + e.name, real_root if confine_links else None))
                elif e.is_file(follow_symlinks=False):
                    st = e.stat(follow_symlinks=False)
                    found.append(_obj(e.path, rel + e.name, st.st_size, f"{st.st_size}-{st.st_mtime_ns}"))
                else:
                    found.append(_problem(e.path, rel + e.name, "NotARegularFile",
                                          "not a regular file (a FIFO, socket or device); not opened"))
    return found


def _linked(path: str, key: str, real_root: str | None) -> LogObject:
    """The object behind a symbolic link (read through its resolved path), or the reason it is not read."""
    try:
        target = os.path.realpath(path, strict=True)
    except OSError as e:  # ELOOP for a loop, ENOENT for a dangling link
        return _problem(path, key, "BrokenSymlink", f"symbolic link cannot be followed: {e.strerror}")
    if real_root is not None and os.path.commonpath([real_root, target]) != real_root:
        return _problem(path, key, "SymlinkOutsideSource", "symbolic link points outside the import source; "
                                                           "not followed")
    st = os.stat(target)
    if not stat.S_ISREG(st.st_mode):
        return _problem(path, key, "NotARegularFile", "symbolic link to something that is not a regular file; "
                                                      "not opened")
    return _obj(target, key, st.st_size, f"{st.st_size}-{st.st_mtime_ns}")


def _problem(uri: str, key: str, code: str, message: str) -> LogObject:
    c = classify(key)
    return LogObject(uri, key, 0, "", c.get("kind", "CloudTrail"), c.get("account"), c.get("region"),
                     c.get("day"), problem=(code, message))


def _etag(info: dict) -> str:
    tag = info.get("ETag") or info.get("etag")
    if tag:
        return str(tag).strip('"')
    return f"{info.get('size')}-{info.get('LastModified') or info.get('mtime')}"


def _obj(uri: str, key: str, size: int, identity: str) -> LogObject:
    c = classify(key)
    return LogObject(uri, key, size, identity, c.get("kind", "CloudTrail"), c.get("account"), c.get("region"),
                     c.get("day"))


def in_window(obj: LogObject, start: datetime | None, end: datetime | None) -> bool:
    """Whether an object's delivery day can hold events in [start, end]. Files are delivered up to about
    15 minutes after their events, and a day's folder holds events from just before midnight, so a
    one-day margin keeps every event that could be in range (eventTime filtering is exact afterwards)."""
    if obj.day is None:
        return True
    start, end = utc(start), utc(end)
    if start is not None and obj.day < (start - timedelta(days=1)).date():
        return False
    if end is not None and obj.day > (end + timedelta(days=1)).date():
        return False
    return True


class ObjectTooLarge(ValueError):
    code = "ObjectTooLarge"


def read_object(uri: str, storage_options: dict | None = None, max_bytes: int | None = None) -> bytes:
    """The bytes of one object (local path or URI), at most `max_bytes` (`ObjectTooLarge` past it: nothing
    decompresses to fewer bytes than it has, so a bigger object would fail the decompressed cap anyway).
    A local path is opened non-blocking and read only if it is a regular file: it may have been replaced by
    a FIFO since it was listed."""
    if "://" not in uri:
        fd = os.open(uri, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{uri} is not a regular file")
            data = f.read() if max_bytes is None else f.read(max_bytes + 1)
    else:
        proto, path = uri.split("://", 1)
        fs = _reader_fs(proto, storage_options)
        data = fs.cat_file(path) if max_bytes is None else fs.cat_file(path, start=0, end=max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ObjectTooLarge(f"more than {max_bytes:,} bytes; the import limit per object is {max_bytes:,} bytes "
                             "(LAKE_IMPORT_MAX_OBJECT_BYTES)")
    return data


def utc(dt: datetime | None) -> datetime | None:
    """The same instant as an aware UTC datetime (naive values are taken as UTC). Converting, not just
    labelling, matters: callers format it with a literal `Z` and take its `.date()` for key-date skipping."""
    if dt is None:
        return None
    return dt.astimezone(timezone.utc) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
