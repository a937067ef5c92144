"""Pieces shared by the benchmark and the load run: a private emulator and
function server on loopback ports, an RPC counter, and a small pRPC client
that keeps its connection open so that the server is what gets measured.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import pathlib
import secrets
import statistics
import tempfile
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from dm.proto import activate_execution_pb2
from dm.rpc import Code
from dm.store import ExecutionKey, FirestoreStore, Settings
from tools.emulator import Emulator

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROJECT = "demo-dm-bench"
PATH = "/prpc/dm.Deps/ActivateExecution"
BINARY = "application/prpc; encoding=binary"

# Every client-side RPC method of the generated FirestoreClient that could
# be used; the counter wraps whichever of them the installed version has.
RPC_METHODS = (
    "batch_get_documents",
    "batch_write",
    "begin_transaction",
    "commit",
    "create_document",
    "delete_document",
    "get_document",
    "list_collection_ids",
    "list_documents",
    "listen",
    "partition_query",
    "rollback",
    "run_aggregation_query",
    "run_query",
    "update_document",
    "write",
)


def make_req(
    key: ExecutionKey, token: bytes, execution_token: bytes | None = None
) -> activate_execution_pb2.ActivateExecutionReq:
    req = activate_execution_pb2.ActivateExecutionReq(
        execution_token=execution_token or secrets.token_bytes(32)
    )
    req.auth.id.quest = key.quest
    req.auth.id.attempt = key.attempt
    req.auth.id.id = key.execution
    req.auth.token = token
    return req


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def new_quest(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class RpcCounter:
    """Counts the RPCs a FirestoreClient really issues, by method name.

    Wraps the client's methods on the instance; the wrapped method is the
    one that sends the RPC, so a call counted is a call made.
    """

    def __init__(self, api: Any) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._api = api
        self._originals: dict[str, Callable[..., Any]] = {}
        for name in RPC_METHODS:
            original = getattr(api, name, None)
            if original is None:
                continue
            self._originals[name] = original
            setattr(api, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.counts[name] += 1
            return original(*args, **kwargs)

        return counted

    def take(self) -> Counter[str]:
        """Returns the counts so far and starts again from zero."""
        with self._lock:
            taken, self.counts = self.counts, Counter()
        return taken

    def remove(self) -> None:
        for name in self._originals:
            delattr(self._api, name)


class PrpcClient:
    """A binary pRPC client on one persistent HTTP/1.1 connection."""

    def __init__(self, port: int, timeout: float = 30.0) -> None:
        self._port = port
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def call(
        self, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, Code | None, bytes]:
        """POSTs one request; returns (HTTP status, pRPC code, body)."""
        sent = {"Content-Type": BINARY, **(headers or {})}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(
                    "127.0.0.1", self._port, timeout=self._timeout
                )
            try:
                self._conn.request("POST", PATH, body=body, headers=sent)
                reply = self._conn.getresponse()
                data = reply.read()
            except (ConnectionError, http.client.HTTPException):
                # The server closed an idle keep-alive connection: reconnect
                # once. (Never twice: a request that fails on a fresh
                # connection is an outcome to report, not to hide.)
                self.close()
                if attempt == 2:
                    raise
                continue
            code = reply.getheader("X-Prpc-Grpc-Code")
            if reply.getheader("Connection", "").lower() == "close":
                self.close()
            return reply.status, Code(int(code)) if code is not None else None, data
        raise AssertionError("unreachable")

    def connect(self) -> None:
        """Opens the connection now, rather than on the first call."""
        if self._conn is None:
            self._conn = http.client.HTTPConnection(
                "127.0.0.1", self._port, timeout=self._timeout
            )
            self._conn.connect()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextlib.contextmanager
def private_emulator(work: pathlib.Path) -> Iterator[Emulator]:
    emulator = Emulator(work / "emulator.log")
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@contextlib.contextmanager
def workdir(prefix: str) -> Iterator[pathlib.Path]:
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield pathlib.Path(path)


def store_for(emulator_host: str, collection: str) -> FirestoreStore:
    return FirestoreStore(
        Settings(project=PROJECT, collection=collection, emulator_host=emulator_host)
    )


def summarize(samples_s: list[float]) -> dict[str, float]:
    """Median, 90th and 99th percentile and max, in milliseconds."""
    ordered = sorted(samples_s)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "p90_ms": round(pct(0.90), 3),
        "p99_ms": round(pct(0.99), 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }
