"""Firestore storage of Executions: one document each, versioned writes.

The store knows documents, not DM's rules. It offers three operations, each
one bounded in time and never retried behind the caller's back:

- `get`: one BatchGetDocuments RPC for one document, no transaction.
- `create`: one Commit whose write requires that the document not exist.
- `update_if_unchanged`: a read-write transaction (BeginTransaction, then
  Commit) whose only write requires that the document's `update_time` still
  be the one the caller read. The transaction reads nothing, so it holds no
  lock while the caller decides; racing writers cannot deadlock one another,
  and exactly one of them can commit against a given version.

Every failure of Firestore or of the client library leaves this module as a
`StoreError`, so that callers never mistake a storage problem for a verdict
on their request.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import grpc
from google.api_core import exceptions as api_exceptions
from google.cloud.firestore_v1.types import common, document, firestore, write
from google.protobuf import timestamp_pb2

if TYPE_CHECKING:
    from google.cloud.firestore_v1.services.firestore import FirestoreClient


DEFAULT_COLLECTION = "dm_executions"
DEFAULT_DATABASE = "(default)"

# Values a document field may hold here. A `bytes` value is stored as a
# Firestore bytes value; `None` as null.
FieldValue = int | bool | str | bytes | datetime.datetime | None

# The gRPC channel reconnects quickly after an outage, so that an instance
# that lost Firestore for a while recovers within about a second of its
# return instead of waiting out gRPC's default backoff of up to two minutes.
_CHANNEL_OPTIONS = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 30_000),
)


class StoreError(Exception):
    """Firestore could not be used; the caller may retry later."""


class StoreUnavailable(StoreError):
    """Firestore did not answer in time, or failed in a way worth retrying.

    A write that ends in this error may or may not have been applied.
    `timed_out` tells a call that ran out of time (which may be the
    caller's short deadline, not Firestore's fault) from one that Firestore
    or the network refused outright.
    """

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class StoreMisconfigured(StoreUnavailable):
    """Firestore refused the call in a way that retrying within this call
    cannot fix: the database does not exist, or the function may not use
    it. Callers still retry later; the operator has to act."""


class StoreContention(StoreError):
    """Firestore aborted the transaction because of concurrent access."""


class AlreadyExists(StoreError):
    """`create` found the document already there."""


@dataclasses.dataclass(frozen=True)
class ExecutionKey:
    """Names one Execution: quest, attempt number, execution number."""

    quest: str
    attempt: int
    execution: int

    def document_id(self) -> str:
        """Returns the Execution's document ID.

        The ID is the hex SHA-256 of an unambiguous encoding of the key, so
        no quest ID can name another collection, a reserved ID or a path,
        and IDs are spread evenly over the key space (no hot-spotting from
        sequential attempt or execution numbers).
        """
        digest = hashlib.sha256()
        digest.update(b"dm.Execution.ID\0")
        digest.update(self.quest.encode("utf-8") + b"\0")
        digest.update(self.attempt.to_bytes(4, "big"))
        digest.update(self.execution.to_bytes(4, "big"))
        return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """A document as read, with the version needed to update it safely."""

    fields: Mapping[str, FieldValue]
    # The document's update_time, kept as the exact protobuf value: a
    # datetime would drop nanoseconds and never match the precondition.
    version: timestamp_pb2.Timestamp


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where the Executions live, read from the environment by `from_env`."""

    project: str
    database: str = DEFAULT_DATABASE
    collection: str = DEFAULT_COLLECTION
    emulator_host: str | None = None
    # How long a finished Execution is kept before Firestore's TTL policy
    # may delete it; None when no `expire_at` is written.
    finished_ttl: datetime.timedelta | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Reads GOOGLE_CLOUD_PROJECT, DM_FIRESTORE_DATABASE,
        DM_EXECUTIONS_COLLECTION, FIRESTORE_EMULATOR_HOST and
        DM_FINISHED_TTL_DAYS. Only their form is checked: nothing is sent.

        Raises:
            StoreError: when the project is not set, or a value is unusable;
                the message names the variable.
        """
        project = environ.get("GOOGLE_CLOUD_PROJECT", "").strip()
        if not project:
            raise StoreError("GOOGLE_CLOUD_PROJECT is not set")
        collection = environ.get("DM_EXECUTIONS_COLLECTION", "").strip()
        collection = collection or DEFAULT_COLLECTION
        if (
            "/" in collection
            or collection in (".", "..")
            or (collection.startswith("__") and collection.endswith("__"))
        ):
            raise StoreError("DM_EXECUTIONS_COLLECTION is not a collection ID")
        database = environ.get("DM_FIRESTORE_DATABASE", "").strip()
        database = database or DEFAULT_DATABASE
        if not _DATABASE_RE.fullmatch(database):
            raise StoreError(
                f"DM_FIRESTORE_DATABASE is not a Firestore database ID: {database!r}"
            )
        emulator_host = environ.get("FIRESTORE_EMULATOR_HOST", "").strip() or None
        if emulator_host is not None and not _is_host_port(emulator_host):
            raise StoreError(
                f"FIRESTORE_EMULATOR_HOST must be HOST:PORT, not {emulator_host!r}"
            )
        ttl_days = environ.get("DM_FINISHED_TTL_DAYS", "").strip()
        finished_ttl = None
        if ttl_days:
            # ASCII digits only: str.isdigit() also takes "²", which int()
            # then refuses.
            if not _DIGITS_RE.fullmatch(ttl_days) or not 1 <= int(ttl_days) <= 36500:
                raise StoreError(
                    f"DM_FINISHED_TTL_DAYS must be 1 to 36500 days, not {ttl_days!r}"
                )
            finished_ttl = datetime.timedelta(days=int(ttl_days))
        return cls(
            project=project,
            database=database,
            collection=collection,
            emulator_host=emulator_host,
            finished_ttl=finished_ttl,
        )


_DIGITS_RE = re.compile(r"[0-9]{1,6}")
# "(default)", or 4 to 63 of a-z 0-9 -, starting with a letter and not
# ending with a hyphen.
_DATABASE_RE = re.compile(r"\(default\)|[a-z][a-z0-9-]{2,61}[a-z0-9]")


def _is_host_port(value: str) -> bool:
    host, sep, port = value.rpartition(":")
    if not sep or not host or "/" in host or not _DIGITS_RE.fullmatch(port):
        return False
    if host.startswith("["):
        host = host.removeprefix("[").removesuffix("]")
    return bool(host) and 0 < int(port) < 65536


def _make_api(settings: Settings) -> tuple[FirestoreClient, list[tuple[str, str]]]:
    """Builds the Firestore API client and the metadata every call sends."""
    from google.cloud.firestore_v1.services.firestore import FirestoreClient
    from google.cloud.firestore_v1.services.firestore.transports.grpc import (
        FirestoreGrpcTransport,
    )

    database = f"projects/{settings.project}/databases/{settings.database}"
    metadata = [("google-cloud-resource-prefix", database)]
    if settings.emulator_host:
        # The emulator speaks plain gRPC and accepts any bearer token; no
        # credentials are looked up, so nothing leaves the machine.
        channel = grpc.insecure_channel(
            settings.emulator_host, options=_CHANNEL_OPTIONS
        )
        metadata.append(("authorization", "Bearer owner"))
    else:
        channel = FirestoreGrpcTransport.create_channel(
            "firestore.googleapis.com", options=_CHANNEL_OPTIONS
        )
    return FirestoreClient(transport=FirestoreGrpcTransport(channel=channel)), metadata


class FirestoreStore:
    """Documents of one collection in one Firestore database."""

    def __init__(self, settings: Settings) -> None:
        """Makes the client; no RPC is sent until the first call.

        Raises:
            StoreError: when the client cannot be made, for instance
                because no credentials are found.
        """
        self._database = f"projects/{settings.project}/databases/{settings.database}"
        if settings.emulator_host:
            self._target = f"the Firestore emulator at {settings.emulator_host}"
        else:
            self._target = self._database
        try:
            self._api, self._metadata = _make_api(settings)
        except Exception as exc:
            raise StoreError(
                f"cannot make the Firestore client for {self._target}: "
                f"{type(exc).__name__}"
            ) from exc
        self._prefix = f"{self._database}/documents/{settings.collection}/"
        self.settings = settings

    def close(self) -> None:
        """Closes the gRPC channel."""
        self._api.transport.close()

    def _error(self, exc: Exception, step: str) -> StoreError:
        return _classify(exc, step, self._target)

    def _name(self, key: ExecutionKey) -> str:
        return self._prefix + key.document_id()

    def get(self, key: ExecutionKey, *, timeout: float) -> Snapshot | None:
        """Reads the Execution's document; None when it does not exist.

        Raises:
            StoreError: when Firestore fails or does not answer in time.
        """
        # BatchGetDocuments reports a missing document in-band, so that every
        # NOT_FOUND error (an unknown database, say) is a storage fault and
        # can never pass for "no such Execution".
        request = firestore.BatchGetDocumentsRequest(
            database=self._database, documents=[self._name(key)]
        )
        try:
            for reply in self._api.batch_get_documents(
                request=request, retry=None, timeout=timeout, metadata=self._metadata
            ):
                raw = firestore.BatchGetDocumentsResponse.pb(reply)
                if raw.HasField("found"):
                    return Snapshot(
                        fields={k: _from_value(v) for k, v in raw.found.fields.items()},
                        version=raw.found.update_time,
                    )
                if raw.missing:
                    return None
        except Exception as exc:
            raise self._error(exc, "get") from exc
        raise StoreUnavailable("get: no document in the reply")

    def create(
        self, key: ExecutionKey, fields: Mapping[str, FieldValue], *, timeout: float
    ) -> None:
        """Creates the Execution's document; fails if it exists.

        Raises:
            AlreadyExists: when the document is already there.
            StoreError: when Firestore fails or does not answer in time.
        """
        precondition = common.Precondition(exists=False)
        try:
            self._api.commit(
                request=firestore.CommitRequest(
                    database=self._database,
                    writes=[self._write(key, fields, precondition)],
                ),
                retry=None,
                timeout=timeout,
                metadata=self._metadata,
            )
        except api_exceptions.AlreadyExists as exc:
            raise AlreadyExists("the Execution already exists") from exc
        except Exception as exc:
            raise self._error(exc, "create") from exc

    def update_if_unchanged(
        self,
        key: ExecutionKey,
        version: timestamp_pb2.Timestamp,
        changes: Mapping[str, FieldValue],
        *,
        timeout: float,
    ) -> bool:
        """Applies `changes` in a transaction if the document is still at
        `version`.

        Args:
            key: the Execution.
            version: the `Snapshot.version` the caller based its decision on.
            changes: the fields to set; other fields are left as they are.
            timeout: seconds allowed for the two RPCs together.

        Returns:
            True when committed; False when the document changed since it
            was read (the caller should read it again and decide again).

        Raises:
            StoreContention: when Firestore aborted the transaction.
            StoreUnavailable: when Firestore failed or did not answer; the
                write may or may not have been applied.
        """
        give_up_at = time.monotonic() + timeout
        try:
            begun = self._api.begin_transaction(
                request=firestore.BeginTransactionRequest(database=self._database),
                retry=None,
                timeout=timeout,
                metadata=self._metadata,
            )
        except Exception as exc:
            raise self._error(exc, "begin") from exc

        precondition = common.Precondition(update_time=version)
        try:
            self._api.commit(
                request=firestore.CommitRequest(
                    database=self._database,
                    writes=[self._write(key, changes, precondition, mask=True)],
                    transaction=begun.transaction,
                ),
                retry=None,
                timeout=max(0.001, give_up_at - time.monotonic()),
                metadata=self._metadata,
            )
        except (api_exceptions.FailedPrecondition, api_exceptions.NotFound):
            # A failed commit ends its transaction; nothing to roll back.
            return False
        except Exception as exc:
            raise self._error(exc, "commit") from exc
        return True

    def _write(
        self,
        key: ExecutionKey,
        fields: Mapping[str, FieldValue],
        precondition: common.Precondition,
        *,
        mask: bool = False,
    ) -> write.Write:
        doc = document.Document(
            name=self._name(key),
            fields={k: _to_value(v) for k, v in fields.items()},
        )
        return write.Write(
            update=doc,
            update_mask=common.DocumentMask(field_paths=list(fields)) if mask else None,
            current_document=precondition,
        )


def _classify(exc: Exception, step: str, target: str) -> StoreError:
    """Classifies whatever a Firestore call raised as a StoreError whose
    text says, in one line, what an operator should look at."""
    if isinstance(exc, api_exceptions.Aborted):
        return StoreContention(f"{step}: aborted by contention")
    name = type(exc).__name__
    if isinstance(exc, api_exceptions.NotFound):
        return StoreMisconfigured(f"{step}: {name}: no Firestore database {target}")
    if isinstance(
        exc, api_exceptions.PermissionDenied | api_exceptions.Unauthenticated
    ):
        return StoreMisconfigured(
            f"{step}: {name}: the function's service account may not use "
            f"{target} (it needs roles/datastore.user)"
        )
    if isinstance(exc, api_exceptions.FailedPrecondition):
        return StoreMisconfigured(
            f"{step}: {name}: {target} is not usable in Firestore Native mode"
        )
    # Everything else (unreachable, timed out, a bug in the client library)
    # is worth retrying; the class name and where we called are enough.
    timed_out = isinstance(
        exc, api_exceptions.DeadlineExceeded | api_exceptions.RetryError
    )
    return StoreUnavailable(f"{step}: {name} from {target}", timed_out=timed_out)


_UTC = datetime.UTC


def _to_value(value: FieldValue) -> document.Value:
    if value is None:
        return document.Value(null_value=0)
    if isinstance(value, bool):
        return document.Value(boolean_value=value)
    if isinstance(value, int):
        return document.Value(integer_value=value)
    if isinstance(value, str):
        return document.Value(string_value=value)
    if isinstance(value, bytes):
        return document.Value(bytes_value=value)
    if isinstance(value, datetime.datetime):
        stamp = timestamp_pb2.Timestamp()
        stamp.FromDatetime(value.astimezone(_UTC))
        return document.Value(timestamp_value=stamp)
    raise TypeError(f"cannot store {type(value).__name__}")


def _from_value(value: document.Value) -> FieldValue:
    kind = value.WhichOneof("value_type")
    if kind == "integer_value":
        return value.integer_value
    if kind == "boolean_value":
        return value.boolean_value
    if kind == "string_value":
        return value.string_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind == "timestamp_value":
        return value.timestamp_value.ToDatetime(tzinfo=_UTC)
    # Null, and any kind this service never writes.
    return None


__all__: Sequence[str] = (
    "AlreadyExists",
    "ExecutionKey",
    "FirestoreStore",
    "Settings",
    "Snapshot",
    "StoreContention",
    "StoreError",
    "StoreMisconfigured",
    "StoreUnavailable",
)
