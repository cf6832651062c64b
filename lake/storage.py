"""File access for a lake root: the only module that touches files.

Two primitives carry the commit protocol: `create` (write a whole file only if the name is free, never
exposing a partial file) and `read`. Locally `create` writes a temp file and hard-links it into place,
which is atomic and fails when the name exists; on S3 it is a PUT with `If-None-Match: *`, which s3fs issues
for mode "xb". Everything else (listing, deleting, streaming Parquet) is plain fsspec.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass
from typing import IO, Any

import fsspec


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and what to check."""


@dataclass(frozen=True)
class FileInfo:
    path: str  # relative to the lake root, '/' separated
    size: int
    mtime: float  # seconds since the epoch


def _split_uri(uri: str) -> tuple[str, str]:
    if "://" in uri:
        proto, rest = uri.split("://", 1)
        return proto, rest.rstrip("/")
    return "file", os.path.abspath(os.path.expanduser(uri))


def storage_options_from_env(protocol: str) -> dict[str, Any]:
    """S3 settings a user can give through the environment (an S3-compatible endpoint, e.g. MinIO)."""
    if protocol not in ("s3", "s3a"):
        return {}
    opts: dict[str, Any] = {}
    endpoint = os.environ.get("LAKE_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL_S3") \
        or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    return opts


class Storage:
    """A lake root on the local disk or any fsspec filesystem."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        self.uri = uri
        self.protocol, self.root = _split_uri(uri)
        self.local = self.protocol in ("file", "local")
        if self.local:
            self.fs = None
        else:
            opts = {**storage_options_from_env(self.protocol), **(storage_options or {})}
            opts.setdefault("skip_instance_cache", True)
            if self.protocol in ("s3", "s3a"):
                opts.setdefault("use_listings_cache", False)
            self.fs = fsspec.filesystem(self.protocol, **opts)

    # -- paths ----------------------------------------------------------------------------------------
    def full(self, path: str) -> str:
        return posixpath.join(self.root, path) if not self.local else os.path.join(self.root, *path.split("/"))

    def uri_of(self, path: str) -> str:
        """The user-facing URI of a file (for DuckDB/Spark, and messages)."""
        return self.full(path) if self.local else f"{self.protocol}://{self.full(path)}"

    def _rel(self, full: str) -> str:
        if self.local:
            return os.path.relpath(full, self.root).replace(os.sep, "/")
        root = self.root.rstrip("/") + "/"
        return full[len(root):] if full.startswith(root) else full

    # -- reads ----------------------------------------------------------------------------------------
    def read(self, path: str) -> bytes:
        """The whole file; FileNotFoundError if absent."""
        if self.local:
            with open(self.full(path), "rb") as f:
                return f.read()
        return self.fs.cat_file(self.full(path))

    def exists(self, path: str) -> bool:
        if self.local:
            return os.path.exists(self.full(path))
        return self.fs.exists(self.full(path))

    def list(self, prefix: str) -> list[FileInfo]:
        """Every file under `prefix` (recursive), relative paths; empty if the prefix does not exist.
        Local `.tmp-` scratch files of `create`/`write` are not listed: a writer killed inside them leaves
        one behind (possibly empty), which is not a file of the lake (an empty one in `_txn/` failed verify)."""
        out: list[FileInfo] = []
        if self.local:
            base = self.full(prefix)
            for dirpath, _, files in os.walk(base):
                for name in files:
                    if name.startswith(".tmp-"):
                        continue
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    out.append(FileInfo(self._rel(full), st.st_size, st.st_mtime))
            return sorted(out, key=lambda f: f.path)
        try:
            found = self.fs.find(self.full(prefix), detail=True)
        except FileNotFoundError:
            return []
        for full, d in found.items():
            if d.get("type") == "directory":
                continue
            out.append(FileInfo(self._rel(full), int(d.get("size") or 0), _mtime(d)))
        return sorted(out, key=lambda f: f.path)

    def list_dirs(self, prefix: str) -> list[str]:
        """Names of the immediate sub-directories of `prefix`."""
        if self.local:
            base = self.full(prefix)
            if not os.path.isdir(base):
                return []
            return sorted(n for n in os.listdir(base) if os.path.isdir(os.path.join(base, n)))
        try:
            entries = self.fs.ls(self.full(prefix), detail=True)
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "directory")

    # -- writes ---------------------------------------------------------------------------------------
    def create(self, path: str, data: bytes, durable: bool = True) -> bool:
        """Write `data` at `path` only if nothing is there. True if created, False if the name was taken.
        `durable=False` skips the fsync for files whose loss at power failure is harmless (intents, ledger)."""
        if self.local:
            full = self.full(path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            tmp = os.path.join(os.path.dirname(full), f".tmp-{uuid.uuid4().hex}")
            with open(tmp, "wb") as f:
                f.write(data)
                if durable:
                    f.flush()
                    os.fsync(f.fileno())
            try:
                os.link(tmp, full)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        try:
            with self.fs.open(self.full(path), "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            # A retried PUT whose first attempt succeeded also lands here: the object then holds our bytes.
            try:
                return self.fs.cat_file(self.full(path)) == data
            except FileNotFoundError:
                return False

    def write(self, path: str, data: bytes) -> None:
        """Replace a file atomically (only for hints that are never trusted, e.g. `_last_checkpoint`)."""
        if self.local:
            full = self.full(path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            tmp = os.path.join(os.path.dirname(full), f".tmp-{uuid.uuid4().hex}")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, full)
            return
        with self.fs.open(self.full(path), "wb") as f:
            f.write(data)

    def open_write(self, path: str) -> IO[bytes]:
        """A binary stream for a new file (segments); parent directories are created as needed."""
        full = self.full(path)
        if self.local:
            os.makedirs(os.path.dirname(full), exist_ok=True)
            return open(full, "wb")
        return self.fs.open(full, "wb")

    def open_read(self, path: str) -> IO[bytes]:
        if self.local:
            return open(self.full(path), "rb")
        return self.fs.open(self.full(path), "rb")

    def delete(self, path: str) -> None:
        try:
            if self.local:
                os.unlink(self.full(path))
            else:
                self.fs.rm_file(self.full(path))
        except FileNotFoundError:
            pass

    def delete_tree(self, prefix: str) -> None:
        import shutil
        if self.local:
            shutil.rmtree(self.full(prefix), ignore_errors=True)
            return
        try:
            self.fs.rm(self.full(prefix), recursive=True)
        except FileNotFoundError:
            pass

    # -- polars/pyarrow access ------------------------------------------------------------------------
    def scan_target(self, path: str) -> str:
        """What polars/pyarrow should open for a file: a local path or a full URI."""
        return self.uri_of(path)

    def polars_storage_options(self) -> dict[str, Any] | None:
        """Options for polars' native object-store reader, derived from the fsspec settings."""
        if self.local or self.protocol not in ("s3", "s3a"):
            return None
        fs = self.fs
        opts: dict[str, Any] = {}
        ck = getattr(fs, "client_kwargs", {}) or {}
        if ck.get("endpoint_url"):
            opts["aws_endpoint_url"] = ck["endpoint_url"]
            opts["aws_allow_http"] = "true" if ck["endpoint_url"].startswith("http://") else "false"
        if ck.get("region_name"):
            opts["aws_region"] = ck["region_name"]
        if getattr(fs, "key", None):
            opts["aws_access_key_id"] = fs.key
        if getattr(fs, "secret", None):
            opts["aws_secret_access_key"] = fs.secret
        return opts


def _mtime(d: dict) -> float:
    m = d.get("LastModified") or d.get("mtime") or d.get("created")
    if m is None:
        return 0.0
    if hasattr(m, "timestamp"):
        return m.timestamp()
    try:
        return float(m)
    except (TypeError, ValueError):
        return 0.0
