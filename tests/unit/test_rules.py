"""Request validation and the activation rules, without storage."""

from __future__ import annotations

import datetime
import hashlib

import pytest

from dm.rpc import Code, RpcError
from dm.service import (
    F_ACTIVATE_BY,
    F_ACTIVATION_SHA256,
    F_EXECUTION_SHA256,
    F_STATE,
    State,
    Verdict,
    decide,
    validate,
)
from dm.store import ExecutionKey
from tests.support import ActivateExecutionReq, make_req

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def invalid(req) -> str:
    with pytest.raises(RpcError) as info:
        validate(req)
    assert info.value.code is Code.INVALID_ARGUMENT
    return info.value.message


@pytest.mark.parametrize(
    "quest",
    ["a", "A-Z_a.z~0", "x" * 256, "...", "._~-", "q" + "9" * 255, ".a", "a.."],
)
def test_validate_accepts_quest(quest):
    assert validate(make_req(ExecutionKey(quest, 1, 1))).key.quest == quest


@pytest.mark.parametrize(
    "quest",
    [
        "",
        ".",
        "..",
        "x" * 257,
        "a/b",
        "a b",
        "é",
        "a\0b",
        "__name__/x",
        "a%2Fb",
        "+",
        "a=b",
    ],
)
def test_validate_rejects_quest(quest):
    assert "quest" in invalid(make_req(ExecutionKey(quest, 1, 1)))


def test_validate_requires_auth():
    assert (
        invalid(ActivateExecutionReq(execution_token=b"e" * 32)) == "auth is required"
    )


def test_validate_requires_auth_id():
    req = ActivateExecutionReq(execution_token=b"e" * 32)
    req.auth.token = b"t"
    assert invalid(req) == "auth.id is required"


@pytest.mark.parametrize(
    "attempt, execution, field", [(0, 1, "attempt"), (1, 0, "id.id")]
)
def test_validate_numbers_start_at_one(attempt, execution, field):
    assert field in invalid(make_req(ExecutionKey("q", attempt, execution)))


def test_validate_accepts_largest_numbers():
    top = 2**32 - 1
    assert validate(make_req(ExecutionKey("q", top, top))).key == ExecutionKey(
        "q", top, top
    )


@pytest.mark.parametrize("size", [0, 513])
def test_validate_rejects_activation_token_size(size):
    assert "auth.token" in invalid(make_req(token=b"t" * size))


@pytest.mark.parametrize("size", [0, 1, 31, 513, 4096])
def test_validate_rejects_execution_token_size(size):
    assert "execution_token" in invalid(make_req(execution_token=b"e" * size))


@pytest.mark.parametrize("size", [32, 512])
def test_validate_accepts_execution_token_bounds(size):
    assert validate(make_req(execution_token=b"e" * size))


def test_validate_digests_tokens():
    activation = validate(make_req(token=b"A" * 32, execution_token=b"E" * 32))
    assert activation.activation_sha256 == hashlib.sha256(b"A" * 32).digest()
    assert activation.execution_sha256 == hashlib.sha256(b"E" * 32).digest()


# decide(): every state, right and wrong tokens.

ACT = validate(make_req(token=b"A" * 32, execution_token=b"E" * 32))
OTHER = validate(make_req(token=b"A" * 32, execution_token=b"F" * 32))
WRONG = validate(make_req(token=b"B" * 32, execution_token=b"E" * 32))


def doc(state, winner: bytes | None = None, activate_by=None):
    fields = {F_STATE: state, F_ACTIVATION_SHA256: ACT.activation_sha256}
    if winner is not None:
        fields[F_EXECUTION_SHA256] = winner
    if activate_by is not None:
        fields[F_ACTIVATE_BY] = activate_by
    return fields


@pytest.mark.parametrize(
    "fields, activation, verdict",
    [
        (None, ACT, Verdict.DENIED),
        (doc(State.SCHEDULING), ACT, Verdict.ACTIVATE),
        (doc(State.SCHEDULING), WRONG, Verdict.DENIED),
        (
            doc(State.SCHEDULING, activate_by=NOW + datetime.timedelta(seconds=1)),
            ACT,
            Verdict.ACTIVATE,
        ),
        (doc(State.SCHEDULING, activate_by=NOW), ACT, Verdict.EXPIRE),
        (doc(State.SCHEDULING, activate_by=NOW), WRONG, Verdict.DENIED),
        (doc(State.RUNNING, ACT.execution_sha256), ACT, Verdict.ALREADY_OURS),
        (doc(State.RUNNING, ACT.execution_sha256), OTHER, Verdict.TAKEN),
        (doc(State.RUNNING, ACT.execution_sha256), WRONG, Verdict.DENIED),
        (
            doc(State.RUNNING, ACT.execution_sha256, activate_by=NOW),
            ACT,
            Verdict.ALREADY_OURS,
        ),
        (doc(State.RUNNING), ACT, Verdict.TAKEN),
        (doc(State.STOPPING, ACT.execution_sha256), ACT, Verdict.CLOSED),
        (doc(State.FINISHED, ACT.execution_sha256), ACT, Verdict.CLOSED),
        (doc(State.ABNORMAL_FINISHED), ACT, Verdict.CLOSED),
        (doc(State.FINISHED), WRONG, Verdict.DENIED),
        ({F_STATE: State.SCHEDULING}, ACT, Verdict.DENIED),
    ],
)
def test_decide(fields, activation, verdict):
    assert decide(fields, activation, NOW) is verdict
