"""Request builders shared by the tests."""

from __future__ import annotations

import gzip
import secrets

from google.protobuf import json_format, text_format

from dm.proto import activate_execution_pb2
from dm.store import ExecutionKey
from tests import leakcheck

ActivateExecutionReq = activate_execution_pb2.ActivateExecutionReq

CONTENT_TYPES = {
    "binary": "application/prpc; encoding=binary",
    "json": "application/json",
    "text": "application/prpc; encoding=text",
}


def make_req(
    key: ExecutionKey | None = None,
    token: bytes = b"a" * 32,
    execution_token: bytes | None = None,
) -> ActivateExecutionReq:
    key = key or ExecutionKey("quest-1", 1, 1)
    req = ActivateExecutionReq(
        execution_token=secrets.token_bytes(32)
        if execution_token is None
        else execution_token
    )
    req.auth.id.quest = key.quest
    req.auth.id.attempt = key.attempt
    req.auth.id.id = key.execution
    req.auth.token = token
    leakcheck.REGISTRY.register(token)
    leakcheck.REGISTRY.register(req.execution_token)
    return req


def encode_req(req: ActivateExecutionReq, encoding: str) -> bytes:
    if encoding == "binary":
        return req.SerializeToString()
    if encoding == "json":
        return json_format.MessageToJson(req).encode()
    return text_format.MessageToString(req).encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data)
