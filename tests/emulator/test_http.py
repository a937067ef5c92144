"""The function as deployed: functions-framework, main.py, the emulator."""

from __future__ import annotations

import gzip
import secrets

import pytest

from dm import prpc
from dm.rpc import Code
from dm.service import ExecutionService
from tests.support import CONTENT_TYPES, encode_req, make_req

PATH = "/prpc/dm.Deps/ActivateExecution"


def post(http, req, encoding="binary", path=PATH, headers=None, body=None):
    sent = {"Content-Type": CONTENT_TYPES[encoding], **(headers or {})}
    return http.post(
        path, data=encode_req(req, encoding) if body is None else body, headers=sent
    )


def code_of(response) -> Code:
    return Code(int(response.headers[prpc.CODE_HEADER]))


def assert_headers(response):
    assert prpc.CODE_HEADER in response.headers
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    if code_of(response) is not Code.OK:
        assert response.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize("encoding", ["binary", "json", "text"])
@pytest.mark.parametrize("path", [PATH, "/"])
def test_contract_rows_over_http(http, schedule, encoding, path):
    key, token = schedule()
    winner = make_req(key, token)
    rows = [
        (winner, Code.OK, 200),
        (winner, Code.OK, 200),
        (make_req(key, token), Code.ALREADY_EXISTS, 409),
        (make_req(key, secrets.token_bytes(32)), Code.PERMISSION_DENIED, 403),
    ]
    for req, code, status in rows:
        response = post(http, req, encoding, path)
        assert (code_of(response), response.status_code) == (code, status)
        assert_headers(response)


@pytest.mark.parametrize(
    "accept, content_type, body",
    [
        ("*/*", "application/prpc; encoding=binary", b""),
        ("application/json", "application/json", b")]}'\n{}"),
        ("application/prpc; encoding=text", "application/prpc; encoding=text", b""),
    ],
)
def test_ok_response_encodings(http, schedule, accept, content_type, body):
    key, token = schedule()
    response = post(http, make_req(key, token), headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.data == body
    assert_headers(response)


def test_gzip_request(http, schedule):
    key, token = schedule()
    req = make_req(key, token)
    response = post(
        http,
        req,
        body=gzip.compress(req.SerializeToString()),
        headers={"Content-Encoding": "gzip"},
    )
    assert code_of(response) is Code.OK


def test_closed_execution_is_denied_over_http(http, store, schedule):
    key, token = schedule(start_timeout=0)
    response = post(http, make_req(key, token))
    assert (code_of(response), response.status_code) == (Code.PERMISSION_DENIED, 403)


@pytest.mark.parametrize(
    "body, headers",
    [
        (b"\x0a\x03\x0a\x01", {}),
        (b"x" * (prpc.MAX_BODY_BYTES + 1), {}),
        (gzip.compress(b"\0" * 10_000_000), {"Content-Encoding": "gzip"}),
        (b"{}", {"Content-Type": "application/json"}),
        (b"", {}),
    ],
    ids=["truncated", "oversize", "gzip-bomb", "empty-json", "empty"],
)
def test_invalid_requests_write_nothing(http, store, collection, body, headers):
    response = http.post(PATH, data=body, headers=headers)
    assert (code_of(response), response.status_code) == (Code.INVALID_ARGUMENT, 400)
    assert_headers(response)
    docs = list(
        store._api.list_documents(
            request={
                "parent": store._prefix.rsplit("/", 2)[0],
                "collection_id": collection,
            },
            metadata=store._metadata,
        )
    )
    assert docs == []


@pytest.mark.parametrize(
    "method, path, code, status",
    [
        ("GET", PATH, Code.UNIMPLEMENTED, 405),
        ("GET", "/", Code.UNIMPLEMENTED, 405),
        ("PUT", PATH, Code.UNIMPLEMENTED, 405),
        ("DELETE", "/", Code.UNIMPLEMENTED, 405),
        ("OPTIONS", PATH, Code.UNIMPLEMENTED, 405),
        ("POST", "/prpc/dm.Deps/WalkGraph", Code.UNIMPLEMENTED, 501),
        ("POST", "/somewhere", Code.NOT_FOUND, 404),
        ("GET", "/favicon.ico", Code.NOT_FOUND, 404),
        ("POST", "/robots.txt", Code.NOT_FOUND, 404),
    ],
)
def test_routing_errors_speak_prpc(http, method, path, code, status):
    response = http.open(path, method=method)
    assert (code_of(response), response.status_code) == (code, status)
    assert_headers(response)
    assert b"<html" not in response.data.lower()


def test_storage_errors_never_reach_the_caller_as_final(http, schedule, mocker, app):
    key, token = schedule()
    from google.api_core import exceptions

    from dm import edge

    post(http, make_req(key, b"w" * 32))  # builds the server
    service = edge._server._routes[PATH].impl.__self__
    service._store_budget = 0.3
    store = service._store
    for error in (
        exceptions.InvalidArgument("bad"),
        exceptions.PermissionDenied("iam"),
        exceptions.NotFound("db"),
    ):
        mocker.patch.object(store._api, "batch_get_documents", side_effect=error)
        response = post(http, make_req(key, token))
        assert code_of(response) in (Code.UNAVAILABLE, Code.INTERNAL, Code.ABORTED)
        assert b"iam" not in response.data and b"bad" not in response.data


def test_internal_error_hides_details(http, schedule, mocker):
    key, token = schedule()
    mocker.patch.object(
        ExecutionService, "activate", side_effect=ZeroDivisionError("hidden detail")
    )
    response = post(http, make_req(key, token))
    assert (code_of(response), response.status_code) == (Code.INTERNAL, 500)
    assert b"hidden" not in response.data and b"Traceback" not in response.data


def test_missing_project_is_a_retryable_error(http, monkeypatch):
    from dm import edge

    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT")
    edge.reset()
    response = post(http, make_req())
    assert (code_of(response), response.status_code) == (Code.UNAVAILABLE, 503)
    assert_headers(response)


def test_any_failure_building_the_client_is_a_retryable_error(
    http, monkeypatch, mocker
):
    from dm import edge

    # Not a StoreError: the class of failure the edge must still contain.
    mocker.patch.object(edge, "FirestoreStore", side_effect=ValueError("x"))
    edge.reset()
    response = post(http, make_req())
    assert (code_of(response), response.status_code) == (Code.UNAVAILABLE, 503)
    assert_headers(response)
    assert b"ValueError" not in response.data


def test_one_log_line_per_call_without_tokens(http, schedule, capsys):
    key, token = schedule()
    req = make_req(key, token)
    post(http, req)
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and '"code": "OK"' in lines[0]
    import base64
    import hashlib

    for secret in (token, req.execution_token, hashlib.sha256(token).digest()):
        for form in (secret.hex(), base64.b64encode(secret).decode(), repr(secret)):
            assert form not in out
