"""A lake: a root URI holding event data stores, and the catalog that names them."""

from __future__ import annotations

import os
import re
import uuid
from typing import Any

from .errors import AlreadyExists, InvalidParameter, LakeError, NotFound
from .log import Log, now_iso
from .selectors import DEFAULT_SELECTORS, SelectorError, validate_selectors
from .storage import Storage
from .store import DEFAULT_RETENTION, ENABLED, PENDING_DELETION, STOPPED, Store, validate_retention
from . import limits

DEFAULT_URI = "./lake-data"
# \Z, not $: `$` also matches before a trailing newline, which would accept "abc\n" as a name.
NAME_RE = re.compile(r"^[a-zA-Z0-9._\-]{3,128}\Z")
ARN_RE = re.compile(r"^arn:aws[a-z-]*:cloudtrail:[^:]*:[^:]*:eventdatastore/([A-Za-z0-9-]+)\Z")


def default_uri() -> str:
    return os.environ.get("LAKE_URI") or DEFAULT_URI


class Lake:
    """Event data stores under one root. `connect()` is the usual way to get one."""

    def __init__(self, uri: str | None = None, *, storage_options: dict[str, Any] | None = None,
                 region: str | None = None, account_id: str | None = None):
        self.uri = uri or default_uri()
        self.storage_options = storage_options
        self.storage = Storage(self.uri, storage_options)
        self.region = region or os.environ.get("LAKE_REGION", "us-east-1")
        self.account_id = account_id or os.environ.get("LAKE_ACCOUNT_ID", "123456789012")
        self._stores: dict[str, Store] = {}

    def __repr__(self) -> str:
        return f"<Lake {self.uri}>"

    # -- catalog --------------------------------------------------------------------------------------
    def _name_path(self, name: str, account: str | None = None) -> str:
        """The catalog entry of a store name. Names are unique per account, as in CloudTrail (one account must
        not learn or squat another's names): the lake's default account's at `_catalog/names/<name>` (the
        layout from before), another account's at `_catalog/names/@<account>/<name>` (`@` is no name
        character, so the two never collide)."""
        if account is None or account == self.account_id:
            return f"_catalog/names/{name}"
        return f"_catalog/names/@{account}/{name}"

    def owner_of(self, md: dict) -> str:
        """The account a store belongs to: its ARN's account field (the lake's default account otherwise)."""
        parts = str(md.get("EventDataStoreArn", "")).split(":")
        return parts[4] if len(parts) > 5 and parts[4] else self.account_id

    def _legacy_name(self, name: str, account: str) -> str | None:
        """The id the default namespace gives `name` when that store is `account`'s (names of other accounts'
        stores were claimed there before names had namespaces)."""
        if account == self.account_id:
            return None
        try:
            sid = self.storage.read(self._name_path(name)).decode()
            return sid if self.owner_of(self._open(sid).metadata) == account else None
        except (FileNotFoundError, NotFound, LakeError, ValueError):
            return None

    def _resolve_name(self, name: str, account: str | None) -> str | None:
        """The id of the store called `name`: in `account`'s namespace when given; else (the CLI, the operator)
        in the default one, then in any account's if exactly one has it."""
        try:
            return self.storage.read(self._name_path(name, account)).decode()
        except FileNotFoundError:
            pass
        if account is not None:
            return self._legacy_name(name, account)
        found = [f.path for f in self.storage.list("_catalog/names")
                 if f.path.startswith("_catalog/names/@") and f.path.rsplit("/", 1)[-1] == name]
        if len(found) > 1:
            raise InvalidParameter(f"several accounts have a store named {name!r}; name it by id or ARN")
        return self.storage.read(found[0]).decode() if found else None

    @staticmethod
    def _check_name(name: str) -> None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise InvalidParameter(f"store name {name!r} is invalid: use 3-128 characters from a-z A-Z 0-9 . _ -")

    def _claim_name(self, name: str, store_id: str, account: str | None = None) -> None:
        self._check_name(name)
        taken = AlreadyExists(f"an event data store named {name!r} already exists; pick another name")
        legacy = self._legacy_name(name, account) if account is not None else None
        if legacy is not None and legacy != store_id:
            raise taken
        if not self.storage.create(self._name_path(name, account), store_id.encode()):
            owner = self.storage.read(self._name_path(name, account)).decode()
            if owner != store_id:
                raise taken

    def _release_name(self, name: str, store_id: str, account: str | None = None) -> None:
        for path in dict.fromkeys([self._name_path(name, account), self._name_path(name)]):
            try:
                if self.storage.read(path).decode() == store_id:
                    self.storage.delete(path)
            except FileNotFoundError:
                pass

    # -- purges -----------------------------------------------------------------------------------------
    # Vacuum deletes a store in many steps (names, commit 0, every file, the folder); a crash may stop it
    # anywhere. The first step writes `_catalog/purging/<id>`: from then on the store is gone for every reader
    # and for `verify`, whatever of it is left, and the next vacuum finishes the purge (maintenance.purge_store).
    PURGING = "_catalog/purging"

    def _purge_path(self, store_id: str) -> str:
        return f"{self.PURGING}/{store_id}.json"

    def purging(self) -> set[str]:
        """Ids of stores whose purge has begun (and may have been interrupted): gone, whatever is left."""
        return {f.path.rsplit("/", 1)[-1][: -len(".json")] for f in self.storage.list(self.PURGING)
                if f.path.endswith(".json")}

    def _open(self, store_id: str) -> Store:
        st = self._stores.get(store_id)
        if st is None:
            st = Store(self, store_id)
            if not st.log.exists():
                raise NotFound(f"no event data store with id {store_id} in {self.uri}")
            self._stores[store_id] = st
        return st

    def store(self, ref: str, *, include_expired: bool = False, account: str | None = None) -> Store:
        """A store by name, id or ARN; a name in `account`'s namespace when given (see `_name_path`)."""
        m = ARN_RE.match(ref or "")
        store_id = m.group(1) if m else None
        if store_id is None and NAME_RE.match(ref or ""):
            store_id = self._resolve_name(ref, account) or ref  # else maybe an id
        if store_id is None:
            raise NotFound(f"no event data store {ref!r} in {self.uri}; `lake store list` shows what exists")
        missing = f"no event data store {ref!r} in {self.uri}; `lake store list` shows what exists"
        try:
            st = self._open(store_id)
            pending = st.metadata.get("Status") == PENDING_DELETION
            expired = pending and st.expired_deletion()
        except NotFound:
            raise NotFound(missing) from None
        except Exception:  # a half-deleted log: gone if its purge has begun, damage otherwise
            if self.storage.exists(self._purge_path(store_id)):
                self._stores.pop(store_id, None)
                raise NotFound(missing) from None
            raise
        # Only deleted stores are ever purged, so only they pay for the look-up of a purge marker.
        if pending and self.storage.exists(self._purge_path(store_id)):
            self._stores.pop(store_id, None)
            raise NotFound(missing)
        if not include_expired and expired:
            raise NotFound(f"event data store {ref!r} was deleted more than 7 days ago")
        return st

    def stores(self, *, include_expired: bool = False) -> list[Store]:
        """Every store, oldest first. Stores deleted more than 7 days ago are hidden."""
        out = []
        gone = self.purging()
        for store_id in self.storage.list_dirs("stores"):
            if store_id in gone:
                self._stores.pop(store_id, None)
                continue
            try:
                st = self._open(store_id)
            except NotFound:
                continue  # a creation that died before its first commit
            if not self.named(st):
                continue  # a creation that died before claiming its name, or lost the name race
            if include_expired or not st.expired_deletion():
                out.append(st)
        return sorted(out, key=lambda s: (s.metadata.get("CreatedTimestamp", ""), s.id))

    def named(self, st: Store) -> bool:
        """True if the catalog maps the store's current name to it (False for aborted creations)."""
        try:
            name, account = st.metadata["Name"], self.owner_of(st.metadata)
        except KeyError:
            return False
        try:
            return self.storage.read(self._name_path(name, account)).decode() == st.id
        except FileNotFoundError:
            return self._legacy_name(name, account) == st.id

    def create_store(self, name: str, *, selectors: list | None = None, retention_days: int | None = None,
                     termination_protection: bool = True,
                     billing_mode: str = "EXTENDABLE_RETENTION_PRICING", multi_region: bool = True,
                     organization: bool = False, max_event_size: str = limits.STANDARD,
                     kms_key_id: str | None = None, tags: list[dict] | None = None,
                     start_ingestion: bool = True, account_id: str | None = None,
                     region: str | None = None) -> Store:
        """CreateEventDataStore. Defaults follow CloudTrail: all management events, termination
        protection on, 366 days of retention (2,557 with FIXED_RETENTION_PRICING). `account_id`/`region`
        go into the ARN (the owner; default the lake's): the API creates stores owned by the caller from
        commit 0 on, so no other account ever sees them as its own."""
        if billing_mode not in DEFAULT_RETENTION:
            raise InvalidParameter(f"BillingMode must be one of {', '.join(DEFAULT_RETENTION)}")
        retention = validate_retention(retention_days if retention_days is not None
                                       else DEFAULT_RETENTION[billing_mode], billing_mode)
        try:
            sel = validate_selectors(selectors if selectors is not None else DEFAULT_SELECTORS)
        except SelectorError as e:
            raise InvalidParameter(str(e)) from None
        if max_event_size not in limits.MAX_EVENT_BYTES:
            raise InvalidParameter(f"MaxEventSize must be Standard or Large, got {max_event_size!r}")
        self._check_name(name)
        store_id = str(uuid.uuid4())
        ts = now_iso()
        md = {
            "EventDataStoreArn": f"arn:aws:cloudtrail:{region or self.region}:{account_id or self.account_id}:"
                                 f"eventdatastore/{store_id}",
            "EventDataStoreId": store_id,
            "Name": name,
            "Status": ENABLED if start_ingestion else STOPPED,
            "AdvancedEventSelectors": sel,
            "MultiRegionEnabled": bool(multi_region),
            "OrganizationEnabled": bool(organization),
            "RetentionPeriod": retention,
            "TerminationProtectionEnabled": bool(termination_protection),
            "BillingMode": billing_mode,
            "MaxEventSize": max_event_size,
            "TagsList": list(tags or []),
            "CreatedTimestamp": ts,
            "UpdatedTimestamp": ts,
        }
        if kms_key_id:
            md["KmsKeyId"] = kms_key_id
        # Commit 0 first, then the name: a crash in between leaves an unnamed store directory that no
        # listing shows and vacuum removes, never a name that points at nothing.
        log = Log(self.storage, f"stores/{store_id}")
        if log.try_commit(None, "CREATE", metadata=md) is None:  # pragma: no cover - uuid collision
            raise AlreadyExists(f"store id {store_id} already exists")
        try:
            self._claim_name(name, store_id, account_id)
        except Exception:
            self.storage.delete_tree(f"stores/{store_id}")
            raise
        return self._open(store_id)


def _sql(self, query: str, *, arrow: bool = False):
    """Run a CloudTrail Lake SQL query; a polars DataFrame (or a pyarrow Table with `arrow=True`)."""
    from .query import run
    df = run(self, query).df
    return df.to_arrow() if arrow else df


Lake.sql = _sql  # type: ignore[attr-defined]


def connect(uri: str | None = None, **kwargs: Any) -> Lake:
    """Open (or start) a lake at a local directory or fsspec URI; default `./lake-data` or `$LAKE_URI`."""
    return Lake(uri, **kwargs)
