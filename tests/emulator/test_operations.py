"""What an operator sees: the per-call log line, and configuration errors
answered as retryable pRPC errors with one clear line."""

from __future__ import annotations

import datetime
import json

import pytest
from google.api_core import exceptions

from dm import edge, service
from dm.rpc import Code
from dm.store import StoreError
from tests import leakcheck
from tests.emulator.test_http import PATH, assert_headers, code_of, post
from tests.support import make_req
from tools.emulator import free_port

TRACE_ID = "105445aa7843bc8bf206b12000100000"


def log_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def the_line(capsys) -> dict:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    [line] = log_lines(captured.out)
    return line


def test_log_line_fields(http, schedule, capsys, env):
    key, token = schedule()
    capsys.readouterr()
    response = post(
        http,
        make_req(key, token),
        headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/1234;o=1"},
    )
    assert code_of(response) is Code.OK
    line = the_line(capsys)
    execution = f"{key.quest}|1|1"
    assert line["severity"] == "INFO"
    assert line["message"] == f"POST {PATH} -> OK execution={execution}"
    assert line["execution"] == execution
    assert (line["code"], line["status"], line["rounds"]) == ("OK", 200, 1)
    assert 0 < line["latency_ms"] < 5000
    assert line["logging.googleapis.com/trace"] == (
        f"projects/{env.project}/traces/{TRACE_ID}"
    )
    assert line["logging.googleapis.com/spanId"] == f"{1234:016x}"
    assert line["logging.googleapis.com/trace_sampled"] is True


def test_log_line_never_holds_the_callers_identity_token(http, schedule, capsys):
    identity = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0YXNrIn0.aWRlbnRpdHktc2lnbmF0dXJl"
    leakcheck.REGISTRY.register(identity)
    key, token = schedule()
    capsys.readouterr()
    req = make_req(key, token)
    post(http, req, headers={"Authorization": f"Bearer {identity}"})
    captured = capsys.readouterr()
    assert len(log_lines(captured.out)) == 1
    assert (
        leakcheck.find_leaks(
            [captured.out, captured.err],
            [identity.encode(), token, req.execution_token],
        )
        == []
    )


def test_log_line_takes_traceparent(http, schedule, capsys, env):
    key, token = schedule()
    capsys.readouterr()
    post(
        http,
        make_req(key, token),
        headers={
            "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00",
            "X-Cloud-Trace-Context": f"{'f' * 32}/1;o=1",
        },
    )
    line = the_line(capsys)
    assert line["logging.googleapis.com/trace"].endswith(f"/traces/{TRACE_ID}")
    assert line["logging.googleapis.com/spanId"] == "00f067aa0ba902b7"
    assert line["logging.googleapis.com/trace_sampled"] is False


@pytest.mark.parametrize(
    "make, code, severity",
    [
        (lambda key, token: make_req(key, b"w" * 32), "PERMISSION_DENIED", "INFO"),
        (lambda key, token: make_req(key, token, b"short"), "INVALID_ARGUMENT", "INFO"),
    ],
)
def test_log_line_for_refusals(http, schedule, capsys, make, code, severity):
    key, token = schedule()
    capsys.readouterr()
    post(http, make(key, token))
    line = the_line(capsys)
    assert (line["code"], line["severity"]) == (code, severity)
    assert "logging.googleapis.com/trace" not in line  # no trace header sent


def test_routing_errors_are_logged_too(http, capsys):
    http.get("/favicon.ico")
    line = the_line(capsys)
    assert (line["code"], line["status"], line["severity"]) == (
        "NOT_FOUND",
        404,
        "INFO",
    )


def built_service() -> service.ExecutionService:
    server = edge._get_server()
    return server._routes[PATH].impl.__self__


def test_unknown_database_answers_unavailable_at_once(http, schedule, mocker, capsys):
    key, token = schedule()
    built_service()
    store = built_service()._store
    mocker.patch.object(
        store._api,
        "batch_get_documents",
        side_effect=exceptions.NotFound("database not found"),
    )
    capsys.readouterr()
    response = post(http, make_req(key, token))
    assert (code_of(response), response.status_code) == (Code.UNAVAILABLE, 503)
    assert_headers(response)
    line = the_line(capsys)
    assert line["severity"] == "ERROR" and line["rounds"] == 1
    assert line["misconfigured"] is True
    assert line["error"] == (
        "storage: get: NotFound: no Firestore database "
        f"the Firestore emulator at {store.settings.emulator_host}"
    )
    assert store._api.batch_get_documents.call_count == 1


def test_missing_permission_is_named(http, schedule, mocker, capsys):
    key, token = schedule()
    store = built_service()._store
    mocker.patch.object(
        store._api,
        "batch_get_documents",
        side_effect=exceptions.PermissionDenied("Missing or insufficient permissions"),
    )
    capsys.readouterr()
    assert code_of(post(http, make_req(key, token))) is Code.UNAVAILABLE
    line = the_line(capsys)
    assert "roles/datastore.user" in line["error"] and line["severity"] == "ERROR"


def test_unreachable_emulator_is_one_clear_line(http, monkeypatch, capsys):
    host = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
    edge.reset()
    built_service()._store_budget = 0.5
    capsys.readouterr()
    response = post(http, make_req())
    assert (code_of(response), response.status_code) == (Code.UNAVAILABLE, 503)
    assert_headers(response)
    assert b"<html" not in response.data.lower()
    line = the_line(capsys)
    assert line["severity"] == "WARNING"
    assert line["error"].startswith("storage: get: ")
    assert line["error"].endswith(f" from the Firestore emulator at {host}")
    assert line["rounds"] >= 1


@pytest.mark.parametrize(
    "var, value, error",
    [
        ("GOOGLE_CLOUD_PROJECT", None, "GOOGLE_CLOUD_PROJECT is not set"),
        (
            "FIRESTORE_EMULATOR_HOST",
            "http://localhost",
            "FIRESTORE_EMULATOR_HOST must be HOST:PORT, not 'http://localhost'",
        ),
        (
            "DM_FIRESTORE_DATABASE",
            "My_DB",
            "DM_FIRESTORE_DATABASE is not a Firestore database ID: 'My_DB'",
        ),
        (
            "DM_FINISHED_TTL_DAYS",
            "-1",
            "DM_FINISHED_TTL_DAYS must be 1 to 36500 days, not '-1'",
        ),
    ],
)
def test_bad_setting_is_one_clear_line(http, monkeypatch, capsys, var, value, error):
    if value is None:
        monkeypatch.delenv(var)
    else:
        monkeypatch.setenv(var, value)
    edge.reset()
    response = post(http, make_req())
    assert (code_of(response), response.status_code) == (Code.UNAVAILABLE, 503)
    assert_headers(response)
    assert response.data == b"the service is not configured; retry later\n"
    line = the_line(capsys)
    assert line["severity"] == "ERROR"
    assert line["error"] == f"configuration: {error}"


def test_missing_credentials_are_a_configuration_error(
    http, monkeypatch, mocker, capsys
):
    import google.auth
    from google.auth import exceptions as auth_exceptions

    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST")
    fake_default = mocker.patch.object(
        google.auth,
        "default",
        side_effect=auth_exceptions.DefaultCredentialsError("no credentials"),
    )
    edge.reset()
    response = post(http, make_req())
    assert code_of(response) is Code.UNAVAILABLE
    assert fake_default.called
    line = the_line(capsys)
    assert line["error"] == (
        "configuration: cannot make the Firestore client for "
        f"projects/{edge.os.environ['GOOGLE_CLOUD_PROJECT']}/databases/(default): "
        "DefaultCredentialsError"
    )


def test_configuration_error_is_not_rebuilt_on_every_request(http, mocker, capsys):
    edge.reset()
    build = mocker.patch.object(
        edge, "FirestoreStore", side_effect=StoreError("cannot make it")
    )
    for _ in range(3):
        assert code_of(post(http, make_req())) is Code.UNAVAILABLE
    assert build.call_count == 1
    lines = log_lines(capsys.readouterr().out)
    assert [line["error"] for line in lines] == ["configuration: cannot make it"] * 3


def test_configuration_is_read_again_after_a_while(http, schedule, monkeypatch, env):
    key, token = schedule()
    monkeypatch.setattr(edge, "_REBUILD_AFTER_S", 0.0)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "nonsense")
    edge.reset()
    assert code_of(post(http, make_req(key, token))) is Code.UNAVAILABLE
    # The environment stands in for a cause that can clear (credentials
    # coming back): once the pause is over, the next build succeeds.
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", env.emulator_host)
    assert code_of(post(http, make_req(key, token))) is Code.OK


def test_expired_execution_gets_expire_at_for_ttl(http, schedule, monkeypatch, store):
    monkeypatch.setenv("DM_FINISHED_TTL_DAYS", "7")
    edge.reset()
    key, token = schedule(start_timeout=0.001)
    response = post(http, make_req(key, token))
    assert code_of(response) is Code.PERMISSION_DENIED
    fields = store.get(key, timeout=5).fields
    assert fields[service.F_EXPIRED] is True
    assert fields[service.F_EXPIRE_AT] - fields[service.F_FINISHED] == (
        datetime.timedelta(days=7)
    )


def test_no_expire_at_without_ttl(http, schedule, store):
    key, token = schedule(start_timeout=0.001)
    assert code_of(post(http, make_req(key, token))) is Code.PERMISSION_DENIED
    assert service.F_EXPIRE_AT not in store.get(key, timeout=5).fields
