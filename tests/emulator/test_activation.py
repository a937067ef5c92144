"""ActivateExecution's outcomes through the service layer, on the emulator."""

from __future__ import annotations

import datetime
import hashlib
import secrets
import threading
import time
from collections import Counter

import pytest

from dm.rpc import Code, Context, RpcError
from dm.service import ExecutionService, State
from dm.store import ExecutionKey, StoreUnavailable
from tests.support import make_req


def outcome(service, req, ctx: Context | None = None) -> Code:
    try:
        service.activate(req, ctx or Context())
    except RpcError as exc:
        return exc.code
    return Code.OK


def state_of(service, key) -> str:
    return service.show(key)["state"]


def test_first_activation_is_ok_and_running(service, schedule):
    key, token = schedule()
    assert outcome(service, make_req(key, token)) is Code.OK
    shown = service.show(key)
    assert shown["state"] == "RUNNING" and "activated" in shown


def test_identical_retry_is_ok(service, schedule):
    key, token = schedule()
    req = make_req(key, token)
    assert [outcome(service, req) for _ in range(3)] == [Code.OK] * 3


def test_other_execution_token_is_already_exists(service, schedule):
    key, token = schedule()
    assert outcome(service, make_req(key, token)) is Code.OK
    assert outcome(service, make_req(key, token)) is Code.ALREADY_EXISTS
    assert state_of(service, key) == "RUNNING"


@pytest.mark.parametrize("running", [False, True])
def test_wrong_activation_token_is_denied(service, schedule, running):
    key, token = schedule()
    winner = make_req(key, token)
    if running:
        assert outcome(service, winner) is Code.OK
    wrong = make_req(key, secrets.token_bytes(32), winner.execution_token)
    assert outcome(service, wrong) is Code.PERMISSION_DENIED
    assert state_of(service, key) == ("RUNNING" if running else "SCHEDULING")


def test_unknown_execution_is_denied_like_a_wrong_token(service, schedule):
    key, token = schedule()
    missing = ExecutionKey(key.quest, 1, 2)
    for req in (make_req(missing, token), make_req(key, b"w" * 32)):
        with pytest.raises(RpcError) as info:
            service.activate(req, Context())
        assert info.value.code is Code.PERMISSION_DENIED
        assert info.value.message == "activation token is wrong, or no such Execution"
    assert service.show(missing) is None


@pytest.mark.parametrize(
    "state", [State.STOPPING, State.FINISHED, State.ABNORMAL_FINISHED]
)
def test_closed_execution_is_denied_even_to_the_winner(service, store, schedule, state):
    key, token = schedule()
    winner = make_req(key, token)
    assert outcome(service, winner) is Code.OK
    snap = store.get(key, timeout=5)
    assert store.update_if_unchanged(key, snap.version, {"state": state}, timeout=5)
    assert outcome(service, winner) is Code.PERMISSION_DENIED
    assert outcome(service, make_req(key, token)) is Code.PERMISSION_DENIED


def test_expired_execution_is_denied_and_finished(service, schedule):
    key, token = schedule(start_timeout=0.0)
    assert outcome(service, make_req(key, token)) is Code.PERMISSION_DENIED
    shown = service.show(key)
    assert shown["state"] == "ABNORMAL_FINISHED" and shown["expired"] is True
    assert outcome(service, make_req(key, token)) is Code.PERMISSION_DENIED


def test_activation_before_deadline_then_retry_after_it(store, schedule):
    clock = [datetime.datetime.now(datetime.UTC)]
    service = ExecutionService(store, clock=lambda: clock[0])
    key, token = ExecutionKey("late", 1, 1), None
    token = service.schedule(key, start_timeout=60)
    req = make_req(key, token)
    assert outcome(service, req) is Code.OK
    clock[0] += datetime.timedelta(minutes=5)
    assert outcome(service, req) is Code.OK


def test_expiry_uses_the_clock(store):
    clock = [datetime.datetime.now(datetime.UTC)]
    service = ExecutionService(store, clock=lambda: clock[0])
    key = ExecutionKey("slow", 1, 1)
    token = service.schedule(key, start_timeout=60)
    clock[0] += datetime.timedelta(seconds=61)
    assert outcome(service, make_req(key, token)) is Code.PERMISSION_DENIED
    assert service.show(key)["state"] == "ABNORMAL_FINISHED"


def test_tokens_are_stored_only_as_digests(service, store, schedule):
    key, token = schedule()
    req = make_req(key, token)
    assert outcome(service, req) is Code.OK
    fields = store.get(key, timeout=5).fields
    stored = b"".join(v for v in fields.values() if isinstance(v, bytes))
    assert token not in stored and req.execution_token not in stored
    assert hashlib.sha256(token).digest() in fields.values()
    assert hashlib.sha256(req.execution_token).digest() in fields.values()
    assert not any(
        isinstance(v, str) and (token.hex() in v or req.execution_token.hex() in v)
        for v in fields.values()
    )


def test_show_never_includes_tokens(service, schedule):
    key, token = schedule()
    assert outcome(service, make_req(key, token)) is Code.OK
    assert set(service.show(key)) <= {
        "id",
        "state",
        "created",
        "activated",
        "activate_by",
        "finished",
        "expired",
    }


def test_schedule_refuses_existing(service, schedule):
    from dm.store import AlreadyExists

    key, _ = schedule()
    with pytest.raises(AlreadyExists):
        service.schedule(key)


def race(service, key, token, callers: int) -> tuple[Counter, float, list]:
    reqs = [make_req(key, token) for _ in range(callers)]
    codes: list[Code | None] = [None] * callers
    slowest = [0.0]
    barrier = threading.Barrier(callers)

    def run(i: int) -> None:
        barrier.wait()
        started = time.monotonic()
        codes[i] = outcome(service, reqs[i])
        slowest[0] = max(slowest[0], time.monotonic() - started)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return (
        Counter(codes),
        slowest[0],
        [reqs[i] for i, c in enumerate(codes) if c is Code.OK],
    )


@pytest.mark.parametrize("callers", [30, 50])
def test_race_has_exactly_one_winner(service, schedule, callers):
    key, token = schedule()
    counts, slowest, winners = race(service, key, token, callers)
    assert counts == Counter({Code.OK: 1, Code.ALREADY_EXISTS: callers - 1}), counts
    # The stored winner is the one that was told OK, and its retry is OK.
    assert outcome(service, winners[0]) is Code.OK


def test_race_with_identical_retries_all_ok(service, schedule):
    key, token = schedule()
    req = make_req(key, token)
    codes = []
    threads = [
        threading.Thread(target=lambda: codes.append(outcome(service, req)))
        for _ in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [Code.OK] * 10


# Faults at exact steps, which the emulator cannot produce on its own.


def test_lost_commit_reply_is_settled_by_reading_again(
    service, store, schedule, mocker
):
    key, token = schedule()
    real = store._api.commit

    def commit_then_lose_reply(*args, **kwargs):
        real(*args, **kwargs)
        from google.api_core import exceptions

        raise exceptions.ServiceUnavailable("connection reset")

    mocker.patch.object(store._api, "commit", side_effect=commit_then_lose_reply)
    req = make_req(key, token)
    assert outcome(service, req) is Code.OK
    mocker.stopall()
    assert outcome(service, req) is Code.OK
    assert outcome(service, make_req(key, token)) is Code.ALREADY_EXISTS


def test_lost_reply_to_the_caller_then_identical_retry_is_ok(service, schedule):
    key, token = schedule()
    req = make_req(key, token)
    service.activate(req, Context())  # the reply never reaches the caller
    assert outcome(service, req) is Code.OK


def test_storage_outage_is_unavailable_and_bounded(store, schedule, mocker):
    service = ExecutionService(store, store_budget=0.5)
    key, token = schedule()
    mocker.patch.object(store, "get", side_effect=StoreUnavailable("get: down"))
    started = time.monotonic()
    assert outcome(service, make_req(key, token)) is Code.UNAVAILABLE
    assert time.monotonic() - started < 1.5


def test_persistent_contention_is_aborted_not_a_verdict(store, schedule, mocker):
    from dm.store import StoreContention

    service = ExecutionService(store, store_budget=0.5)
    key, token = schedule()
    mocker.patch.object(store, "update_if_unchanged", side_effect=StoreContention("x"))
    assert outcome(service, make_req(key, token)) is Code.ABORTED
    assert state_of(service, key) == "SCHEDULING"


def test_endless_lost_races_end_retryable(store, schedule, mocker):
    service = ExecutionService(store)
    key, token = schedule()
    mocker.patch.object(store, "update_if_unchanged", return_value=False)
    assert outcome(service, make_req(key, token)) is Code.UNAVAILABLE
    assert state_of(service, key) == "SCHEDULING"


def test_caller_deadline_is_deadline_exceeded(store, schedule, mocker):
    service = ExecutionService(store)
    key, token = schedule()
    mocker.patch.object(store, "get", side_effect=StoreUnavailable("slow"))
    ctx = Context(deadline=time.monotonic() + 0.2)
    started = time.monotonic()
    assert outcome(service, make_req(key, token), ctx) is Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.0


def test_invalid_request_reads_nothing(service, store, mocker):
    spy = mocker.spy(store, "get")
    assert (
        outcome(service, make_req(ExecutionKey("a/b", 1, 1))) is Code.INVALID_ARGUMENT
    )
    assert spy.call_count == 0


# schedule() and lost replies.


def test_schedule_lost_create_reply_still_returns_a_working_token(
    service, store, mocker
):
    from google.api_core import exceptions

    real = store._api.commit

    def commit_then_lose_reply(*args, **kwargs):
        real(*args, **kwargs)
        raise exceptions.ServiceUnavailable("connection reset")

    mocker.patch.object(store._api, "commit", side_effect=commit_then_lose_reply)
    key = ExecutionKey("lost-create", 1, 1)
    token = service.schedule(key)
    mocker.stopall()
    assert outcome(service, make_req(key, token)) is Code.OK


def _fail_first_commit(store, mocker) -> None:
    """The store's next Commit fails unapplied; later ones go through."""
    from google.api_core import exceptions

    real = store._api.commit
    failures = iter([exceptions.ServiceUnavailable("blip")])

    def fail_once(*args, **kwargs):
        error = next(failures, None)
        if error is not None:
            raise error
        return real(*args, **kwargs)

    mocker.patch.object(store._api, "commit", side_effect=fail_once)


def test_schedule_retries_a_create_that_failed(service, store, mocker):

    _fail_first_commit(store, mocker)
    key = ExecutionKey("blip-create", 1, 1)
    token = service.schedule(key)
    mocker.stopall()
    assert outcome(service, make_req(key, token)) is Code.OK


def test_schedule_after_lost_reply_never_claims_someone_elses_execution(
    service, store, schedule, mocker
):

    from dm.store import AlreadyExists

    key, _ = schedule()
    _fail_first_commit(store, mocker)
    with pytest.raises(AlreadyExists):
        service.schedule(key)


def _slow_storage(store, mocker, fraction: float, failing_commit: bool = False):
    """Makes every storage RPC wait `fraction` of its timeout first, as a
    slow but answering Firestore would; the commit then optionally times
    out."""
    from google.api_core import exceptions

    for name in ("batch_get_documents", "begin_transaction", "commit"):
        real = getattr(store._api, name)

        def slow(*args, _real=real, _name=name, **kwargs):
            time.sleep(fraction * kwargs["timeout"])
            if failing_commit and _name == "commit":
                raise exceptions.DeadlineExceeded("commit timed out")
            return _real(*args, **kwargs)

        mocker.patch.object(store._api, name, side_effect=slow)


def test_slow_storage_never_outlasts_the_callers_deadline(store, schedule, mocker):
    key, token = schedule()
    service = ExecutionService(store)
    _slow_storage(store, mocker, 0.8, failing_commit=True)
    started = time.monotonic()
    ctx = Context(deadline=started + 1.0)
    assert outcome(service, make_req(key, token), ctx) is Code.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 1.5  # was 2.4 s and more before the fix


def test_slow_storage_never_outlasts_the_budget(store, schedule, mocker):
    key, token = schedule()
    service = ExecutionService(store, store_budget=1.0)
    _slow_storage(store, mocker, 0.95, failing_commit=True)
    started = time.monotonic()
    assert outcome(service, make_req(key, token)) is Code.UNAVAILABLE
    assert time.monotonic() - started < 1.5  # was 2.8 s and more before the fix


def test_slow_storage_within_deadline_still_activates(store, schedule, mocker):
    key, token = schedule()
    service = ExecutionService(store)
    _slow_storage(store, mocker, 0.05)
    assert (
        outcome(service, make_req(key, token), Context(time.monotonic() + 3)) is Code.OK
    )


# Short caller deadlines and the storage-down mode.


def test_tiny_deadline_is_deadline_exceeded_and_touches_nothing(service, store, mocker):
    spy = mocker.spy(store, "get")
    ctx = Context(deadline=time.monotonic() + 0.0008)
    assert outcome(service, make_req(), ctx) is Code.DEADLINE_EXCEEDED
    assert spy.call_count == 0
    assert service._storage_down is False


def test_deadline_after_one_refusal_leaves_storage_up(store, schedule, mocker):
    service = ExecutionService(store)
    key, token = schedule()
    real = store.get
    refusals = iter([StoreUnavailable("get: refused")])

    def refuse_once(*args, **kwargs):
        error = next(refusals, None)
        if error is not None:
            raise error
        return real(*args, **kwargs)

    mocker.patch.object(store, "get", side_effect=refuse_once)
    mocker.patch("dm.service.random.uniform", return_value=1.0)  # 100 ms backoff
    ctx = Context(deadline=time.monotonic() + 0.05)
    assert outcome(service, make_req(key, token), ctx) is Code.DEADLINE_EXCEEDED
    assert service._storage_down is False


def test_short_deadlines_with_refused_storage_mark_it_down(store, schedule, mocker):
    service = ExecutionService(store)
    key, token = schedule()
    mocker.patch.object(store, "get", side_effect=StoreUnavailable("get: refused"))
    ctx = Context(deadline=time.monotonic() + 0.6)
    assert outcome(service, make_req(key, token), ctx) is Code.DEADLINE_EXCEEDED
    assert service._storage_down is True
    # The next call is the one probe, and a successful read clears the mode.
    mocker.stopall()
    assert outcome(service, make_req(key, token)) is Code.OK
    assert service._storage_down is False


def test_short_deadlines_with_timing_out_storage_never_mark_it_down(
    store, schedule, mocker
):
    service = ExecutionService(store)
    key, token = schedule()
    slow = StoreUnavailable("get: DeadlineExceeded", timed_out=True)
    mocker.patch.object(store, "get", side_effect=slow)
    for _ in range(3):
        ctx = Context(deadline=time.monotonic() + 0.3)
        assert outcome(service, make_req(key, token), ctx) is Code.DEADLINE_EXCEEDED
    assert service._storage_down is False


def test_schedule_lost_reply_then_failed_confirmation_read_still_settles(
    service, store, mocker
):
    from google.api_core import exceptions

    real_commit, real_get = store._api.commit, store.get

    def commit_then_lose_reply(*args, **kwargs):
        real_commit(*args, **kwargs)
        raise exceptions.ServiceUnavailable("connection reset")

    reads = iter([StoreUnavailable("get: blip")])

    def get_fails_once(*args, **kwargs):
        error = next(reads, None)
        if error is not None:
            raise error
        return real_get(*args, **kwargs)

    mocker.patch.object(store._api, "commit", side_effect=commit_then_lose_reply)
    mocker.patch.object(store, "get", side_effect=get_fails_once)
    key = ExecutionKey("lost-and-blip", 1, 1)
    token = service.schedule(key)
    mocker.stopall()
    assert outcome(service, make_req(key, token)) is Code.OK
