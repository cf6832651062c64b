"""Tenancy rules for locations a caller names: which server folders and S3 prefixes an account may read
(StartImport) or write (StartQuery's DeliveryS3Uri) through `lake serve`.

The server reads and writes with its own privileges, so a location in a request is never trusted as such:
- **Local folders** only under a *root* the operator configured for the account (`lake serve --import-root
  ACCOUNT=PATH`, `ServerConfig.import_roots`, copied to `ctx.services["import_roots"]`). Without a root an
  account names no local path at all. Path and root are both resolved (symlinks, `..`) before the
  containment check, and the lake's own folder is never a valid location, whatever the roots say.
- **S3 prefixes** (`s3://bucket/prefix`) unless they lie under a root declared for another account, in the
  lake's own storage, or in the bucket another account's trail delivers to. When the account has `s3://`
  roots of its own, the location must lie under one of them. Keys must not hold `.`/`..` segments,
  backslashes or control characters (the same prefix must name the same place on every filesystem).
The command line (`lake import`, the operator) is not subject to these rules.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from .errors import LakeError

ACCOUNT_RE = re.compile(r"\d{12}")
S3_URI_RE = re.compile(r"s3://[a-z0-9][.\-a-z0-9]{1,61}[a-z0-9](/.*)?")


def parse_roots(values: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """`ACCOUNT=PATH` items (`lake serve --import-root`) as {account: roots}. PATH is an absolute local folder
    or an `s3://bucket[/prefix]` URI; an account may have several roots. ValueError (one line) otherwise."""
    out: dict[str, list[str]] = {}
    for item in values:
        account, sep, root = str(item).partition("=")
        if not sep or not ACCOUNT_RE.fullmatch(account):
            raise ValueError(f"import root {item!r} must be ACCOUNT=PATH with a 12-digit account id")
        if root.startswith("s3://"):
            if not S3_URI_RE.fullmatch(root) or bad_key(root[len("s3://"):]):
                raise ValueError(f"import root {item!r}: {root!r} is not an s3://bucket[/prefix] URI")
        elif not os.path.isabs(root) or "\x00" in root:
            raise ValueError(f"import root {item!r}: {root!r} must be an absolute path or an s3:// URI")
        out.setdefault(account, []).append(root)
    return {k: tuple(v) for k, v in out.items()}


def bad_key(key: str) -> bool:
    """True for an S3 key (prefix) that would not name the same place on every filesystem: `.`/`..`
    segments, backslashes or control characters."""
    return any(seg in (".", "..") for seg in key.split("/")) or "\\" in key \
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in key)


def roots(ctx: Any) -> dict[str, tuple[str, ...]]:
    """The operator's roots ({account: roots}) from `ctx.services["import_roots"]`; `ACCOUNT=PATH` strings
    are accepted too."""
    raw = ctx.services.get("import_roots") if ctx.services else None
    if not raw:
        return {}
    if isinstance(raw, dict):
        return {str(k): tuple([v] if isinstance(v, str) else v) for k, v in raw.items()}
    return parse_roots(raw)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _others(lake: Any, account: str, all_roots: dict[str, tuple[str, ...]]) -> list[str]:
    """Resolved local folders that hold what is not `account`'s: the lake itself, other accounts' roots, and
    the folders other accounts' trails deliver to (a root given too generously must not reach them)."""
    out = [os.path.realpath(lake.storage.root)] if lake.storage.local else []
    out += [os.path.realpath(r) for a, rs in all_roots.items() if a != account for r in rs
            if not r.startswith("s3://")]
    from .trails import TrailCatalog, bucket_target

    for t in TrailCatalog(lake).list():
        if t.owner != account:
            target, _ = bucket_target(lake, t.bucket, t.extension.get("Destination"))
            if "://" not in target or target.startswith("file://"):
                out.append(os.path.realpath(target.removeprefix("file://")))
    return out


def local_location(lake: Any, path: str, account_roots: Iterable[str], *, must_exist: bool,
                   account: str | None = None, all_roots: dict[str, tuple[str, ...]] | None = None) -> str | None:
    """The resolved `path` when it lies under one of the local `account_roots` once both are resolved (and
    exists as a file or folder with `must_exist`), and neither lies in nor contains the lake's folder, another
    account's root or another account's trail bucket folder; None otherwise, whatever the reason, so that no
    answer tells "missing" from "forbidden"."""
    if not os.path.isabs(path) or "\x00" in path:
        return None
    try:
        real = os.path.realpath(path)
        if any(_inside(real, o) or _inside(o, real) for o in _others(lake, account or "", all_roots or {})):
            return None
        for root in account_roots:
            if root.startswith("s3://"):
                continue
            if _inside(real, os.path.realpath(root)):
                if must_exist and not (os.path.isdir(real) or os.path.isfile(real)):
                    return None
                return real
    except (OSError, ValueError):
        return None
    return None


def _s3_inside(uri: str, root: str) -> bool:
    a, b = uri.rstrip("/"), root.rstrip("/")
    return a == b or a.startswith(b + "/")


def s3_allowed(lake: Any, uri: str, account: str, all_roots: dict[str, tuple[str, ...]]) -> bool:
    """Whether `account` may name `s3://` location `uri` (well-formed, see the module docstring)."""
    if not S3_URI_RE.fullmatch(uri) or bad_key(uri[len("s3://"):]):
        return False
    own = [r for r in all_roots.get(account, ()) if r.startswith("s3://")]
    if own:
        return any(_s3_inside(uri, r) for r in own)
    for other, rs in all_roots.items():
        if other != account and any(r.startswith("s3://") and (_s3_inside(uri, r) or _s3_inside(r, uri))
                                    for r in rs):
            return False
    st = lake.storage
    if st.protocol in ("s3", "s3a"):
        lake_root = f"s3://{st.root.strip('/')}"
        if _s3_inside(uri, lake_root) or _s3_inside(lake_root, uri):
            return False
    from .trails import TrailCatalog, bucket_target

    bucket = uri[len("s3://"):].split("/", 1)[0]
    try:
        for t in TrailCatalog(lake).list():
            if t.owner == account:
                continue
            target, _ = bucket_target(lake, t.bucket, t.extension.get("Destination"))
            if target.startswith("s3://") and target[len("s3://"):].split("/", 1)[0] == bucket:
                return False
    except (LakeError, OSError, ValueError):
        return False
    return True


def location(ctx: Any, uri: str, account: str, *, must_exist: bool = True) -> str | None:
    """What the server may use for `uri` on behalf of `account`: a resolved local path (for `file://` and
    plain absolute paths) or the `s3://` URI; None when the account may not name it (or, with `must_exist`,
    a local one does not exist). Other schemes are never allowed."""
    all_roots = roots(ctx)
    if uri.startswith("s3://"):
        return uri if s3_allowed(ctx.lake, uri, account, all_roots) else None
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    elif "://" in uri:
        return None
    return local_location(ctx.lake, uri, all_roots.get(account, ()), must_exist=must_exist, account=account,
                          all_roots=all_roots)


__all__ = ["ACCOUNT_RE", "S3_URI_RE", "bad_key", "local_location", "location", "parse_roots", "roots",
           "s3_allowed"]
