"""File access for a lake root: the only module that touches files.

Two primitives carry the commit protocol: `create` (write a whole file only if the name is free, never
exposing a partial file) and `read`. Locally `create` writes a temp file and hard-links it into place,
which is atomic and fails when the name exists; on S3 it is a PUT with `If-None-Match: *`, which s3fs issues
for mode "xb". Everything else (listing, deleting, streaming Parquet) is plain fsspec.

Local files are created with mode 0600 and directories 0700 (the lake holds every account's events, the
NextToken signing key and service state: nobody but the lake's own user should read them), whatever the
umask. Operators who need group access set `$LAKE_FILE_MODE` (e.g. `0640`: directories then get `0750`).
S3 objects have no modes; their access is the bucket's policy.
"""

from __future__ import annotations

import os
import posixpath
import stat
import uuid
from dataclasses import dataclass
from typing import IO, Any

import fsspec


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI and what to check."""


FILE_MODE_ENV = "LAKE_FILE_MODE"
DEFAULT_FILE_MODE = 0o600


def file_mode_from_env() -> int:
    """The mode of new local files: `$LAKE_FILE_MODE` (octal, read/write for the owner, no execute or
    special bits, e.g. 0600, 0640, 0660) or 0600."""
    text = os.environ.get(FILE_MODE_ENV, "").strip()
    if not text:
        return DEFAULT_FILE_MODE
    try:
        mode = int(text, 8)
    except ValueError:
        mode = -1
    if mode < 0 or mode & ~0o666 or mode & 0o600 != 0o600:
        raise StorageError(f"${FILE_MODE_ENV}={text!r} is not a file mode for lake files: give octal permissions "
                           "with read and write for the owner and no execute bits, e.g. 0600 (default) or 0640")
    return mode


def dir_mode_for(file_mode: int) -> int:
    """Directories get rwx for the owner and, for group and others, r-x where files are readable and w
    where they are writable (0600 -> 0700, 0640 -> 0750, 0660 -> 0770)."""
    return 0o700 | (file_mode & 0o066) | ((file_mode & 0o044) >> 2)


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

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None, file_mode: int | None = None):
        self.uri = uri
        self.protocol, self.root = _split_uri(uri)
        self.local = self.protocol in ("file", "local")
        if self.local:
            self.fs = None
            self.file_mode = file_mode if file_mode is not None else file_mode_from_env()
            self.dir_mode = dir_mode_for(self.file_mode)
        else:
            opts = {**storage_options_from_env(self.protocol), **(storage_options or {})}
            opts.setdefault("skip_instance_cache", True)
            if self.protocol in ("s3", "s3a"):
                opts.setdefault("use_listings_cache", False)
            self.fs = fsspec.filesystem(self.protocol, **opts)

    # -- paths ----------------------------------------------------------------------------------------
    def full(self, path: str) -> str:
        # Every key stays under the root whatever built it (a trail's prefix, a partition value, an id): a `..`
        # segment is refused here as the last line of defence (issue 15: no write leaves its destination).
        if ".." in path.split("/"):
            raise ValueError(f"storage key {path[:300]!r} has a '..' segment: it would leave {self.uri}")
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
            self._makedirs(os.path.dirname(full))
            tmp = os.path.join(os.path.dirname(full), f".tmp-{uuid.uuid4().hex}")
            with self._open_new(tmp, os.O_EXCL) as f:
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
            self._makedirs(os.path.dirname(full))
            tmp = os.path.join(os.path.dirname(full), f".tmp-{uuid.uuid4().hex}")
            with self._open_new(tmp, os.O_EXCL) as f:
                f.write(data)
            os.replace(tmp, full)
            return
        with self.fs.open(self.full(path), "wb") as f:
            f.write(data)

    def open_write(self, path: str) -> IO[bytes]:
        """A binary stream for a new file (segments); parent directories are created as needed."""
        full = self.full(path)
        if self.local:
            self._makedirs(os.path.dirname(full))
            return self._open_new(full, os.O_TRUNC)
        return self.fs.open(full, "wb")

    def _open_new(self, full: str, flag: int) -> IO[bytes]:
        """A local file opened for writing with the lake's file mode from its first byte (the opener's
        os.open mode; then fchmod, because the umask may have removed bits the operator asked for). Built on
        the `open` builtin so that crash-injection tests can wrap it (tests/test_concurrency.py)."""
        mode = self.file_mode

        def opener(path: str, flags: int) -> int:
            fd = os.open(path, flags | flag | os.O_CLOEXEC, mode)
            try:
                if stat.S_IMODE(os.fstat(fd).st_mode) != mode:
                    os.fchmod(fd, mode)
            except BaseException:
                os.close(fd)
                raise
            return fd

        return open(full, "wb", opener=opener)

    def _makedirs(self, full: str) -> None:
        """os.makedirs, but every directory it creates gets the lake's directory mode (os.makedirs applies
        its mode to the last one only, and through the umask); existing directories are left alone."""
        if os.path.isdir(full):
            return
        parent = os.path.dirname(full)
        if parent and parent != full:
            self._makedirs(parent)
        try:
            os.mkdir(full, self.dir_mode)
        except FileExistsError:
            return
        os.chmod(full, self.dir_mode)

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
