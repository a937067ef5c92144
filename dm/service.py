"""DM's Execution rules: scheduling, activation and inspection.

ActivateExecution decides who runs an Execution. It returns:

- OK when the Execution was SCHEDULING and is now RUNNING under the
  caller's ExecutionToken, or was already RUNNING under that same token
  (an identical retry, including one whose first reply was lost);
- ALREADY_EXISTS when the activation token is right but the Execution is
  RUNNING under another ExecutionToken;
- PERMISSION_DENIED when the activation token is wrong, the Execution does
  not exist (the two are indistinguishable), the Execution is STOPPING or
  finished, or its activation deadline has passed (it then becomes
  ABNORMAL_FINISHED);
- INVALID_ARGUMENT when the request breaks the rules in `validate`;
- UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED when storage failed, contention
  did not settle, or the caller's deadline ran out: retry the same request.

The decision is made on a plain read. Outcomes that change nothing answer
from that read alone; a state change is committed in a transaction whose
write requires the document to be unchanged since the read, and a lost race
is settled by reading again.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import hmac
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import empty_pb2

from dm.proto import activate_execution_pb2, graph_data_pb2
from dm.rpc import Code, Context, RpcError
from dm.store import (
    AlreadyExists,
    ExecutionKey,
    FieldValue,
    FirestoreStore,
    Snapshot,
    StoreContention,
    StoreError,
    StoreMisconfigured,
    StoreUnavailable,
)

State = graph_data_pb2.Execution.State

# Request limits (see `validate`).
QUEST_MAX_CHARS = 256
TOKEN_MAX_BYTES = 512
EXECUTION_TOKEN_MIN_BYTES = 32
ACTIVATION_TOKEN_BYTES = 32
_QUEST_RE = re.compile(rf"[A-Za-z0-9._~-]{{1,{QUEST_MAX_CHARS}}}")

# Time limits. An activation spends at most STORE_BUDGET_S on Firestore
# (fewer if the caller's own deadline is nearer), and no single RPC waits
# longer than RPC_TIMEOUT_S. Once a call has spent its whole budget on
# storage failures, the instance takes storage to be down until a read
# succeeds again: meanwhile one call at a time probes storage with a single
# attempt, and the others answer UNAVAILABLE at once, instead of each
# holding a server thread for a full budget while callers queue.
#
# A call cut short by its caller's deadline says little about storage, so
# it marks storage down only after HARD_FAILURES_FOR_DOWN consecutive
# failures that were refusals (a closed port, a reset connection), not time
# running out: a short X-Prpc-Grpc-Timeout alone can never do it.
STORE_BUDGET_S = 5.0
RPC_TIMEOUT_S = 2.0
MAX_ROUNDS = 8
HARD_FAILURES_FOR_DOWN = 2
# Less time than this is too little to start a storage call in.
_MIN_RPC_S = 0.001

# Messages returned to callers.
MSG_DENIED = "activation token is wrong, or no such Execution"
MSG_CLOSED = "the Execution is no longer open to activation"
MSG_EXPIRED = "the Execution's activation deadline has passed"
MSG_TAKEN = "another ExecutionToken already activated this Execution"
MSG_UNAVAILABLE = "storage is unavailable; retry the same request"
MSG_CONTENTION = "contention on the Execution did not settle; retry"
MSG_DEADLINE = "the call's deadline passed; retry the same request"

# Document fields. Tokens are kept only as SHA-256 digests.
F_QUEST = "quest"
F_ATTEMPT = "attempt"
F_EXECUTION = "execution"
F_STATE = "state"
F_ACTIVATION_SHA256 = "activation_token_sha256"
F_EXECUTION_SHA256 = "execution_token_sha256"
F_CREATED = "created"
F_ACTIVATED = "activated"
F_FINISHED = "finished"
F_ACTIVATE_BY = "activate_by"
F_EXPIRED = "expired"
# When Firestore's TTL policy may delete a finished Execution (written only
# when the service is given a `finished_ttl`; deploy.sh --ttl sets both).
F_EXPIRE_AT = "expire_at"

# Compared against when no document exists, so that an unknown Execution
# costs the same constant-time comparison as a wrong token.
_NO_DIGEST = bytes(32)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def validate_id(quest: str, attempt: int, execution: int) -> ExecutionKey:
    """Checks an Execution ID and returns its key.

    Raises:
        RpcError: INVALID_ARGUMENT naming the first rule broken.
    """
    if not _QUEST_RE.fullmatch(quest) or quest in (".", ".."):
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"auth.id.quest must be 1 to {QUEST_MAX_CHARS} characters of "
            "A-Z a-z 0-9 - _ . ~ and not '.' or '..'",
        )
    if attempt < 1:
        raise RpcError(Code.INVALID_ARGUMENT, "auth.id.attempt must be at least 1")
    if execution < 1:
        raise RpcError(Code.INVALID_ARGUMENT, "auth.id.id must be at least 1")
    return ExecutionKey(quest, attempt, execution)


@dataclasses.dataclass(frozen=True)
class Activation:
    """A validated ActivateExecutionReq, tokens already digested."""

    key: ExecutionKey
    activation_sha256: bytes
    execution_sha256: bytes


def validate(req: activate_execution_pb2.ActivateExecutionReq) -> Activation:
    """Checks every field of the request; nothing is read or written first.

    Raises:
        RpcError: INVALID_ARGUMENT naming the first rule broken.
    """
    if not req.HasField("auth"):
        raise RpcError(Code.INVALID_ARGUMENT, "auth is required")
    if not req.auth.HasField("id"):
        raise RpcError(Code.INVALID_ARGUMENT, "auth.id is required")
    key = validate_id(req.auth.id.quest, req.auth.id.attempt, req.auth.id.id)
    if not 1 <= len(req.auth.token) <= TOKEN_MAX_BYTES:
        raise RpcError(
            Code.INVALID_ARGUMENT, f"auth.token must be 1 to {TOKEN_MAX_BYTES} bytes"
        )
    if not EXECUTION_TOKEN_MIN_BYTES <= len(req.execution_token) <= TOKEN_MAX_BYTES:
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"execution_token must be {EXECUTION_TOKEN_MIN_BYTES} to "
            f"{TOKEN_MAX_BYTES} bytes",
        )
    return Activation(
        key=key,
        activation_sha256=_sha256(req.auth.token),
        execution_sha256=_sha256(req.execution_token),
    )


class Verdict(enum.Enum):
    """What an activation request gets, given the Execution as read."""

    ACTIVATE = "activate"  # SCHEDULING and in time: claim it.
    EXPIRE = "expire"  # SCHEDULING but late: close it, then deny.
    ALREADY_OURS = "already_ours"  # RUNNING under this token: OK.
    TAKEN = "taken"  # RUNNING under another token.
    DENIED = "denied"  # wrong token or no such Execution.
    CLOSED = "closed"  # STOPPING or finished.


def decide(
    fields: Mapping[str, FieldValue] | None,
    activation: Activation,
    now: datetime.datetime,
) -> Verdict:
    """The whole of ActivateExecution's rules, as a pure function."""
    stored = fields.get(F_ACTIVATION_SHA256) if fields else None
    if not isinstance(stored, bytes):
        hmac.compare_digest(_NO_DIGEST, activation.activation_sha256)
        return Verdict.DENIED
    if not hmac.compare_digest(stored, activation.activation_sha256):
        return Verdict.DENIED

    assert fields is not None
    state = fields.get(F_STATE)
    if state == State.RUNNING:
        winner = fields.get(F_EXECUTION_SHA256)
        if isinstance(winner, bytes) and hmac.compare_digest(
            winner, activation.execution_sha256
        ):
            return Verdict.ALREADY_OURS
        return Verdict.TAKEN
    if state == State.SCHEDULING:
        activate_by = fields.get(F_ACTIVATE_BY)
        if isinstance(activate_by, datetime.datetime) and now >= activate_by:
            return Verdict.EXPIRE
        return Verdict.ACTIVATE
    return Verdict.CLOSED


_FINAL_VERDICTS = {
    Verdict.ALREADY_OURS: None,
    Verdict.TAKEN: RpcError(Code.ALREADY_EXISTS, MSG_TAKEN),
    Verdict.DENIED: RpcError(Code.PERMISSION_DENIED, MSG_DENIED),
    Verdict.CLOSED: RpcError(Code.PERMISSION_DENIED, MSG_CLOSED),
}


class ExecutionService:
    """Schedules, activates and shows Executions kept in a FirestoreStore.

    Args:
        store: where Executions live.
        clock: returns the current UTC time (tests move it).
        store_budget: seconds one call may spend on Firestore in all.
        finished_ttl: when set, an Execution this service finishes gets an
            `expire_at` field this far in the future, for a TTL policy.
    """

    def __init__(
        self,
        store: FirestoreStore,
        *,
        clock: Callable[[], datetime.datetime] = _utcnow,
        store_budget: float = STORE_BUDGET_S,
        finished_ttl: datetime.timedelta | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._store_budget = store_budget
        self._finished_ttl = finished_ttl
        # Set when a call ran out of budget on storage failures; cleared by
        # the next read that succeeds. Shared by the instance's threads.
        self._storage_down = False
        # Held by the one call that may try storage while it is down.
        self._probe = threading.Lock()

    def activate(
        self, req: activate_execution_pb2.ActivateExecutionReq, ctx: Context
    ) -> empty_pb2.Empty:
        """Implements dm.Deps.ActivateExecution (outcomes: module docstring).

        Raises:
            RpcError: for every outcome but OK.
        """
        activation = validate(req)
        ctx.log_fields["execution"] = _describe(activation.key)
        if not self._storage_down:
            return self._activate(activation, ctx)
        if not self._probe.acquire(blocking=False):
            # Storage is down and another call is finding out whether it is
            # back: answer now, the caller retries anyway.
            ctx.log_fields["storage_down"] = True
            raise RpcError(Code.UNAVAILABLE, MSG_UNAVAILABLE)
        try:
            return self._activate(activation, ctx)
        finally:
            self._probe.release()

    def _activate(self, activation: Activation, ctx: Context) -> empty_pb2.Empty:
        """The read-decide-write rounds of one call, within its budgets."""
        budget_end = time.monotonic() + self._store_budget
        failure = RpcError(Code.UNAVAILABLE, MSG_UNAVAILABLE)
        storage_failed = False  # did the last round fail on storage?
        hard_failures = 0  # consecutive refusals, not timeouts, from storage
        for round_no in range(1, MAX_ROUNDS + 1):
            ctx.log_fields["rounds"] = round_no
            if self._rpc_timeout(ctx, budget_end) is None:
                break
            try:
                if self._activate_once(activation, ctx, budget_end):
                    return empty_pb2.Empty()
                # Lost a race for the document: read it again at once.
                storage_failed, hard_failures = False, 0
                continue
            except StoreContention:
                failure = RpcError(Code.ABORTED, MSG_CONTENTION)
                storage_failed, hard_failures = False, 0
            except StoreError as exc:
                # The call's one log line says what storage did last.
                ctx.log_fields["error"] = f"storage: {exc}"
                failure = RpcError(Code.UNAVAILABLE, MSG_UNAVAILABLE)
                storage_failed = True
                timed_out = isinstance(exc, StoreUnavailable) and exc.timed_out
                hard_failures = 0 if timed_out else hard_failures + 1
                if isinstance(exc, StoreMisconfigured):
                    ctx.log_fields["misconfigured"] = True
                    # Retrying cannot help before an operator acts; the
                    # caller is told to retry later all the same.
                    break
                if self._storage_down:
                    # A known outage: answer now, the caller retries anyway.
                    ctx.log_fields["storage_down"] = True
                    break
            _backoff(round_no, budget_end, ctx)

        call_left = ctx.remaining()
        if call_left is not None and call_left <= min(
            _MIN_RPC_S, budget_end - time.monotonic()
        ):
            # The caller's deadline, not the storage budget, ended the call.
            if storage_failed and hard_failures >= HARD_FAILURES_FOR_DOWN:
                self._storage_down = True
            raise RpcError(Code.DEADLINE_EXCEEDED, MSG_DEADLINE)
        if storage_failed:
            self._storage_down = True
        raise failure

    def _rpc_timeout(self, ctx: Context, budget_end: float) -> float | None:
        """Seconds the next RPC may take; None when no time is left."""
        left = budget_end - time.monotonic()
        call_left = ctx.remaining()
        if call_left is not None:
            left = min(left, call_left)
        if left <= _MIN_RPC_S:
            return None
        return min(left, RPC_TIMEOUT_S)

    def _time_left(self, ctx: Context, budget_end: float) -> float:
        """The timeout for the next storage call.

        Raises:
            StoreUnavailable: when no time is left for one.
        """
        timeout = self._rpc_timeout(ctx, budget_end)
        if timeout is None:
            raise StoreUnavailable("no time left for storage", timed_out=True)
        return timeout

    def _activate_once(
        self, activation: Activation, ctx: Context, budget_end: float
    ) -> bool:
        """One read-decide-write round. Each storage call gets only the time
        still left, so a round never outlasts the budget or the caller's
        deadline, however slowly storage answers.

        Returns:
            True when the caller now holds the Execution; False when the
            document changed under us and must be read again.

        Raises:
            RpcError: for a final outcome other than OK.
            StoreError: when Firestore failed.
        """
        snapshot = self._store.get(
            activation.key, timeout=self._time_left(ctx, budget_end)
        )
        self._storage_down = False
        now = self._clock()
        verdict = decide(snapshot.fields if snapshot else None, activation, now)

        if verdict in _FINAL_VERDICTS:
            error = _FINAL_VERDICTS[verdict]
            if error is not None:
                raise error
            return True

        assert snapshot is not None
        if verdict is Verdict.ACTIVATE:
            changes: dict[str, FieldValue] = {
                F_STATE: State.RUNNING,
                F_EXECUTION_SHA256: activation.execution_sha256,
                F_ACTIVATED: now,
            }
            return self._commit(
                activation.key, snapshot, changes, self._time_left(ctx, budget_end)
            )

        # Verdict.EXPIRE: close the Execution, then deny. If someone else
        # changed it first, read again and decide on what they did.
        changes = {
            F_STATE: State.ABNORMAL_FINISHED,
            F_FINISHED: now,
            F_EXPIRED: True,
        }
        if self._finished_ttl is not None:
            changes[F_EXPIRE_AT] = now + self._finished_ttl
        timeout = self._time_left(ctx, budget_end)
        if self._commit(activation.key, snapshot, changes, timeout):
            raise RpcError(Code.PERMISSION_DENIED, MSG_EXPIRED)
        return False

    def _commit(
        self,
        key: ExecutionKey,
        snapshot: Snapshot,
        changes: dict[str, FieldValue],
        timeout: float,
    ) -> bool:
        return self._store.update_if_unchanged(
            key, snapshot.version, changes, timeout=timeout
        )

    def schedule(self, key: ExecutionKey, start_timeout: float | None = None) -> bytes:
        """Creates an Execution in SCHEDULING; returns its activation token.

        A create whose reply is lost may have been applied. Its retry then
        finds the document; if that document carries this call's token
        digest, the create was ours and the token is returned, so a lost
        reply never strands an Execution whose token nobody holds.

        Args:
            key: the Execution to create.
            start_timeout: seconds from now within which it must be
                activated, or None for no limit.

        Raises:
            AlreadyExists: when the Execution exists already (made by
                someone else).
            StoreError: when Firestore failed for the whole budget.
        """
        token = secrets.token_bytes(ACTIVATION_TOKEN_BYTES)
        digest = _sha256(token)
        now = self._clock()
        fields: dict[str, FieldValue] = {
            F_QUEST: key.quest,
            F_ATTEMPT: key.attempt,
            F_EXECUTION: key.execution,
            F_STATE: State.SCHEDULING,
            F_ACTIVATION_SHA256: digest,
            F_CREATED: now,
        }
        if start_timeout is not None:
            fields[F_ACTIVATE_BY] = now + datetime.timedelta(seconds=start_timeout)

        give_up_at = time.monotonic() + self._store_budget
        ctx = Context()
        uncertain = False  # may an earlier create have landed unseen?
        for round_no in range(1, MAX_ROUNDS + 1):
            timeout = min(RPC_TIMEOUT_S, max(_MIN_RPC_S, give_up_at - time.monotonic()))
            try:
                if uncertain:
                    snapshot = self._store.get(key, timeout=timeout)
                    if snapshot is not None:
                        stored = snapshot.fields.get(F_ACTIVATION_SHA256)
                        if isinstance(stored, bytes) and hmac.compare_digest(
                            stored, digest
                        ):
                            return token
                        break  # someone else's Execution
                self._store.create(key, fields, timeout=timeout)
                return token
            except AlreadyExists:
                if not uncertain:
                    raise
                # Absent when read, present when created: read it again to
                # learn whose it is.
            except StoreMisconfigured:
                raise
            except StoreUnavailable:
                uncertain = True
                if round_no == MAX_ROUNDS or time.monotonic() >= give_up_at:
                    raise
            _backoff(round_no, give_up_at, ctx)
        else:
            raise StoreUnavailable("schedule: storage did not settle")
        raise AlreadyExists("the Execution already exists")

    def show(self, key: ExecutionKey) -> dict[str, Any] | None:
        """Returns the Execution's state and times, never its digests.

        Returns:
            None when the Execution does not exist.
        """
        snapshot = self._store.get(key, timeout=self._store_budget)
        if snapshot is None:
            return None
        fields = snapshot.fields
        state = fields.get(F_STATE)
        shown: dict[str, Any] = {
            "id": {"quest": key.quest, "attempt": key.attempt, "id": key.execution},
            "state": State.Name(state) if isinstance(state, int) else None,
        }
        for name in (F_CREATED, F_ACTIVATE_BY, F_ACTIVATED, F_FINISHED):
            value = fields.get(name)
            if isinstance(value, datetime.datetime):
                shown[name] = value.isoformat()
        if fields.get(F_EXPIRED):
            shown[F_EXPIRED] = True
        return shown


def _describe(key: ExecutionKey) -> str:
    return f"{key.quest}|{key.attempt}|{key.execution}"


def _backoff(round_no: int, budget_end: float, ctx: Context) -> None:
    """Sleeps before another round: jittered, growing, within the budgets."""
    delay = random.uniform(0.5, 1.0) * min(0.05 * 2**round_no, 1.0)
    limit = budget_end - time.monotonic()
    call_left = ctx.remaining()
    if call_left is not None:
        limit = min(limit, call_left)
    if limit > 0:
        time.sleep(min(delay, limit))


__all__ = [
    "AlreadyExists",
    "Activation",
    "ExecutionService",
    "Verdict",
    "decide",
    "validate",
    "validate_id",
]
