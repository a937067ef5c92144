"""Faults over HTTP, with the function under functions-framework's gunicorn
stack and a private emulator that the tests stop, restart and freeze.

The service-level versions of these faults (mocked at one exact step) live
in test_activation.py; these are the real outages, seen by a caller.
"""

from __future__ import annotations

import secrets
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as api_exceptions
from google.cloud.firestore_v1.services.firestore import FirestoreClient
from google.cloud.firestore_v1.types import firestore

from bench.common import PrpcClient
from dm import prpc
from dm.rpc import Code
from dm.service import RPC_TIMEOUT_S, STORE_BUDGET_S, ExecutionService
from dm.store import ExecutionKey, FirestoreStore, Settings, StoreError
from tests.emulator.conftest import PROJECT
from tests.support import make_req
from tools.emulator import Emulator
from tools.function_server import FunctionServer

# A caller hears UNAVAILABLE within the service's storage budget; the rest
# is slack for a shared machine (this is a bound, not a benchmark).
OUTAGE_BOUND_S = STORE_BUDGET_S + 2.0

# gunicorn threads of the function under test (functions-framework reads
# THREADS); fixed, so that "more callers than threads" means the same on
# every machine.
SERVER_THREADS = 4


@pytest.fixture(scope="module")
def outage_emulator(tmp_path_factory) -> Iterator[Emulator]:
    """An emulator of this module's own, so stopping it harms no other test."""
    instance = Emulator(tmp_path_factory.mktemp("faults") / "emulator.log")
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def function(outage_emulator, tmp_path_factory) -> Iterator[FunctionServer]:
    server = FunctionServer(
        outage_emulator.host,
        "faults",
        tmp_path_factory.mktemp("function") / "function.log",
        project=PROJECT,
        extra_env={"THREADS": str(SERVER_THREADS)},
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def emu(outage_emulator) -> Iterator[Emulator]:
    """The module's emulator, guaranteed up and running after each test."""
    yield outage_emulator
    outage_emulator.resume()
    if not outage_emulator.is_up():
        outage_emulator.start()


@pytest.fixture
def fstore(outage_emulator) -> Iterator[FirestoreStore]:
    instance = FirestoreStore(
        Settings(
            project=PROJECT, collection="faults", emulator_host=outage_emulator.host
        )
    )
    yield instance
    instance.close()


def schedule_when_up(store: FirestoreStore) -> tuple[ExecutionKey, bytes]:
    """Schedules a fresh Execution, waiting (bounded) for storage to answer."""
    service = ExecutionService(store)
    key = ExecutionKey(f"f-{secrets.token_hex(8)}", 1, 1)
    deadline = time.monotonic() + 20
    while True:
        try:
            return key, service.schedule(key)
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def call(function: FunctionServer, req) -> tuple[int, Code | None, float]:
    client = PrpcClient(function.port, timeout=60)
    started = time.monotonic()
    try:
        status, code, _ = client.call(req.SerializeToString())
    finally:
        client.close()
    return status, code, time.monotonic() - started


def stored(store: FirestoreStore, key: ExecutionKey) -> dict:
    snapshot = store.get(key, timeout=5)
    assert snapshot is not None
    return dict(snapshot.fields)


def test_emulator_stopped_gives_bounded_unavailable_then_same_instance_recovers(
    function, emu, fstore
):
    key, token = schedule_when_up(fstore)
    assert call(function, make_req(key, token))[1] is Code.OK  # a warm instance
    pid = function.pid

    key, token = schedule_when_up(fstore)
    emu.stop()
    replies: list[tuple[int, Code | None, float]] = []

    def caller() -> None:
        replies.append(call(function, make_req(key, token)))

    # A few callers at once, no more than the server's threads.
    threads = [threading.Thread(target=caller) for _ in range(SERVER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for status, code, took in replies:
        assert (status, code) == (503, Code.UNAVAILABLE)
        assert took < OUTAGE_BOUND_S, took

    # Back on the same port, empty (the emulator keeps nothing). The same
    # function process recovers: a caller re-sending its request, as pRPC
    # clients do, is answered OK within seconds.
    emu.start()
    key, token = schedule_when_up(fstore)
    winner = make_req(key, token)
    assert until_ok(function, winner) < OUTAGE_BOUND_S
    assert call(function, winner)[1] is Code.OK
    assert call(function, make_req(key, token))[1] is Code.ALREADY_EXISTS
    assert function.pid == pid and function.running()


def test_outage_with_more_callers_than_threads_stays_bounded(function, emu, fstore):
    """Four times as many callers as the server has threads, storage down:
    the calls queue in gunicorn. Without a memory of the outage, each call
    held a thread for its whole retry budget, so the last caller waited four
    budgets (about 14 s here). Calls that find storage known to be down make
    one attempt and answer at once."""
    key, token = schedule_when_up(fstore)
    assert call(function, make_req(key, token))[1] is Code.OK
    bodies = [make_req(key, token) for _ in range(4 * SERVER_THREADS)]
    emu.stop()
    replies: list[tuple[int, Code | None, float]] = []

    def caller(req) -> None:
        replies.append(call(function, req))

    threads = [threading.Thread(target=caller, args=(r,)) for r in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {(status, code) for status, code, _ in replies} == {(503, Code.UNAVAILABLE)}
    slowest = max(took for _, _, took in replies)
    assert slowest < OUTAGE_BOUND_S, sorted(round(t, 1) for _, _, t in replies)

    # And once storage is back, the instance is back too.
    emu.start()
    key, token = schedule_when_up(fstore)
    assert until_ok(function, make_req(key, token)) < OUTAGE_BOUND_S


def test_hung_storage_with_a_deep_queue_stays_bounded(function, emu, fstore):
    """Storage hangs (frozen), six times as many callers as threads. Once
    the first wave has spent its budget, one queued call at a time probes
    storage (one RPC timeout) and the others answer at once; the slowest
    caller waits one budget plus one probe, however deep the queue. (With
    every queued call probing, each wave of threads cost another RPC
    timeout: about 15 s here.)"""
    key, token = schedule_when_up(fstore)
    winner = make_req(key, token)
    assert call(function, winner)[1] is Code.OK
    reqs = [make_req(key, token) for _ in range(6 * SERVER_THREADS)]
    emu.pause()
    replies: list[tuple[int, Code | None, float]] = []

    def caller(req) -> None:
        replies.append(call(function, req))

    threads = [threading.Thread(target=caller, args=(r,)) for r in reqs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    emu.resume()

    assert {(status, code) for status, code, _ in replies} == {(503, Code.UNAVAILABLE)}
    slowest = max(took for _, _, took in replies)
    bound = STORE_BUDGET_S + RPC_TIMEOUT_S + 3.0  # slack for a busy machine
    assert slowest < bound, sorted(round(t, 1) for _, _, t in replies)
    assert until_ok(function, winner) < OUTAGE_BOUND_S


def until_ok(function: FunctionServer, req, limit: float = 20.0) -> float:
    """Re-sends the identical request, as a pRPC client does, until OK;
    returns the seconds that took."""
    started = time.monotonic()
    while True:
        status, code, _ = call(function, req)
        if code is Code.OK:
            return time.monotonic() - started
        assert code is Code.UNAVAILABLE, (status, code)
        assert time.monotonic() - started < limit, "never recovered"
        time.sleep(0.2)


def test_frozen_emulator_gives_bounded_unavailable_and_writes_nothing(
    function, emu, fstore
):
    key, token = schedule_when_up(fstore)
    before = stored(fstore, key)
    req = make_req(key, token)

    emu.pause()  # connections stay open; nothing answers
    status, code, took = call(function, req)
    emu.resume()

    assert (status, code) == (503, Code.UNAVAILABLE)
    assert took < OUTAGE_BOUND_S, took
    assert stored(fstore, key) == before  # the read hung; nothing was written
    assert call(function, req)[1] is Code.OK


def _hold_lock(store: FirestoreStore, key: ExecutionKey) -> bytes:
    """A rival read-write transaction that reads the document and then sits
    on it, as a stuck admin script using @transactional would."""
    api, meta = store._api, store._metadata
    txn = api.begin_transaction(
        request=firestore.BeginTransactionRequest(database=store._database),
        metadata=meta,
        timeout=5,
    ).transaction
    for _ in api.batch_get_documents(
        request=firestore.BatchGetDocumentsRequest(
            database=store._database, documents=[store._name(key)], transaction=txn
        ),
        metadata=meta,
        timeout=5,
    ):
        pass
    return txn


def test_contention_outlasting_the_budget_is_retryable_never_wrong(
    function, emu, fstore
):
    key, token = schedule_when_up(fstore)
    req = make_req(key, token)
    txn = _hold_lock(fstore, key)
    status, code, took = call(function, req)
    fstore._api.rollback(
        request=firestore.RollbackRequest(database=fstore._database, transaction=txn),
        metadata=fstore._metadata,
        timeout=5,
    )
    assert code in (Code.UNAVAILABLE, Code.ABORTED), (status, code)
    assert took < OUTAGE_BOUND_S

    # A commit the function gave up on may still have landed once the lock
    # went away. Either way the document is whole, not half-written...
    fields = stored(fstore, key)
    if fields["state"] == 0:
        assert "execution_token_sha256" not in fields and "activated" not in fields
    else:
        assert fields["state"] == 1 and "activated" in fields
    # ...and the caller's identical retry wins, a rival does not.
    assert call(function, req)[1] is Code.OK
    assert call(function, make_req(key, token))[1] is Code.ALREADY_EXISTS


def test_reply_lost_on_the_wire_then_identical_retry_is_ok(function, emu, fstore):
    key, token = schedule_when_up(fstore)
    req = make_req(key, token)
    body = req.SerializeToString()
    head = (
        "POST /prpc/dm.Deps/ActivateExecution HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{function.port}\r\n"
        "Content-Type: application/prpc; encoding=binary\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", function.port), timeout=5) as sock:
        sock.sendall(head + body)  # and hang up without reading the reply

    deadline = time.monotonic() + 10
    while stored(fstore, key)["state"] != 1:
        assert time.monotonic() < deadline, "the request never took effect"
        time.sleep(0.05)
    assert call(function, req)[1] is Code.OK
    assert call(function, make_req(key, token))[1] is Code.ALREADY_EXISTS


# Exact steps the emulator cannot produce, through the in-process function.


def test_commit_applied_then_reply_and_storage_lost(http, schedule, store, mocker):
    """The commit lands, its reply is lost and storage stays down for the
    rest of the call: the caller hears a retryable code, and its identical
    retry, once storage is back, is OK."""
    key, token = schedule()
    real_commit = FirestoreClient.commit

    def commit_then_fail(self, *args, **kwargs):
        real_commit(self, *args, **kwargs)
        mocker.patch.object(
            FirestoreClient,
            "batch_get_documents",
            side_effect=api_exceptions.ServiceUnavailable("down"),
        )
        raise api_exceptions.ServiceUnavailable("reply lost")

    mocker.patch.object(FirestoreClient, "commit", commit_then_fail)
    req = make_req(key, token)
    body = req.SerializeToString()
    first = http.post("/prpc/dm.Deps/ActivateExecution", data=body)
    mocker.stopall()

    assert first.headers[prpc.CODE_HEADER] == str(int(Code.UNAVAILABLE))
    again = http.post("/prpc/dm.Deps/ActivateExecution", data=body)
    assert again.headers[prpc.CODE_HEADER] == "0"
    rival = http.post(
        "/prpc/dm.Deps/ActivateExecution",
        data=make_req(key, token).SerializeToString(),
    )
    assert rival.headers[prpc.CODE_HEADER] == str(int(Code.ALREADY_EXISTS))


def test_every_commit_aborted_is_aborted_over_http(http, schedule, service, mocker):
    key, token = schedule()
    mocker.patch.object(
        FirestoreClient,
        "commit",
        side_effect=api_exceptions.Aborted("too much contention"),
    )
    body = make_req(key, token).SerializeToString()
    response = http.post("/prpc/dm.Deps/ActivateExecution", data=body)
    mocker.stopall()
    assert response.status_code == 409
    assert response.headers[prpc.CODE_HEADER] == str(int(Code.ABORTED))
    assert service.show(key)["state"] == "SCHEDULING"
    assert (
        http.post("/prpc/dm.Deps/ActivateExecution", data=body).headers[
            prpc.CODE_HEADER
        ]
        == "0"
    )


def test_known_outage_makes_one_attempt_until_a_read_succeeds(store, schedule, mocker):
    from dm.rpc import Context, RpcError
    from dm.store import StoreUnavailable
    from tests.support import make_req

    service = ExecutionService(store, store_budget=0.5)
    key, token = schedule()
    req = make_req(key, token)
    real_get = store.get
    get = mocker.patch.object(store, "get", side_effect=StoreUnavailable("down"))

    with pytest.raises(RpcError) as first:
        service.activate(req, Context())
    assert first.value.code is Code.UNAVAILABLE and get.call_count > 1

    get.reset_mock()
    with pytest.raises(RpcError) as second:
        service.activate(req, Context())
    assert second.value.code is Code.UNAVAILABLE and get.call_count == 1

    # While one call probes, the others do not touch storage at all.
    get.reset_mock()
    with service._probe, pytest.raises(RpcError) as third:
        service.activate(req, Context())
    assert third.value.code is Code.UNAVAILABLE and get.call_count == 0

    # Storage answers again: the first read clears the outage, and a later
    # blip is retried within the budget as before.
    get.side_effect = real_get
    service.activate(req, Context())
    get.side_effect = [StoreUnavailable("blip"), real_get(key, timeout=5)]
    service.activate(req, Context())
