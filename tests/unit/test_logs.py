"""Trace fields and the JSON line format (dm/logs.py), and the settings
read from the environment (dm/store.py)."""

from __future__ import annotations

import datetime
import json
import logging

import pytest

from dm import logs
from dm.store import Settings, StoreError

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "headers, expected",
    [
        (
            {"X-Cloud-Trace-Context": f"{TRACE_ID}/17;o=1"},
            (TRACE_ID, "0000000000000011", True),
        ),
        ({"X-Cloud-Trace-Context": f"{TRACE_ID.upper()}"}, (TRACE_ID, None, False)),
        (
            {"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
            (TRACE_ID, "00f067aa0ba902b7", True),
        ),
        ({"X-Cloud-Trace-Context": "not-a-trace"}, None),
        ({"X-Cloud-Trace-Context": f"{'0' * 32}/1;o=1"}, None),
        ({"traceparent": f"ff-{TRACE_ID}-00f067aa0ba902b7-01"}, None),
        ({"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7"}, None),
        ({}, None),
    ],
)
def test_trace_fields(headers, expected):
    fields = logs.trace_fields(headers, "my-proj")
    if expected is None:
        assert fields == {}
        return
    trace_id, span_id, sampled = expected
    assert fields[logs.TRACE] == f"projects/my-proj/traces/{trace_id}"
    assert fields.get(logs.SPAN_ID) == span_id
    assert fields[logs.TRACE_SAMPLED] is sampled


def test_trace_fields_need_a_project():
    assert logs.trace_fields({"X-Cloud-Trace-Context": TRACE_ID}, None) == {}


def test_format_record_adds_bound_trace_and_fields():
    record = logging.LogRecord("dm.x", logging.WARNING, "f", 1, "a %s", ("b",), None)
    token = logs.bind({logs.TRACE: "projects/p/traces/t"})
    try:
        entry = json.loads(logs.format_record(record))
    finally:
        logs.unbind(token)
    assert entry == {
        "severity": "WARNING",
        "message": "a b",
        "logger": "dm.x",
        logs.TRACE: "projects/p/traces/t",
    }
    record.json_fields = {"code": "OK"}
    assert json.loads(logs.format_record(record)) == {
        "severity": "WARNING",
        "message": "a b",
        "code": "OK",
    }


def test_install_is_idempotent_and_writes_stdout(capsys):
    logger = logs.install("test_logs_install")
    logs.install("test_logs_install")
    assert sum(isinstance(h, logs.JsonLineHandler) for h in logger.handlers) == 1
    logger.info("hello")
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["message"] == "hello"


@pytest.mark.parametrize(
    "environ, error",
    [
        ({}, "GOOGLE_CLOUD_PROJECT is not set"),
        ({"DM_FIRESTORE_DATABASE": "ab"}, "DM_FIRESTORE_DATABASE"),
        ({"DM_FIRESTORE_DATABASE": "db-"}, "DM_FIRESTORE_DATABASE"),
        ({"FIRESTORE_EMULATOR_HOST": "localhost"}, "FIRESTORE_EMULATOR_HOST"),
        ({"FIRESTORE_EMULATOR_HOST": "h:0"}, "FIRESTORE_EMULATOR_HOST"),
        ({"FIRESTORE_EMULATOR_HOST": "h:70000"}, "FIRESTORE_EMULATOR_HOST"),
        ({"FIRESTORE_EMULATOR_HOST": "http://h:80"}, "FIRESTORE_EMULATOR_HOST"),
        ({"DM_FINISHED_TTL_DAYS": "0"}, "DM_FINISHED_TTL_DAYS"),
        ({"DM_FINISHED_TTL_DAYS": "1.5"}, "DM_FINISHED_TTL_DAYS"),
        ({"DM_EXECUTIONS_COLLECTION": "a/b"}, "DM_EXECUTIONS_COLLECTION"),
    ],
)
def test_settings_refuse_unusable_values(environ, error):
    if environ:
        environ = {"GOOGLE_CLOUD_PROJECT": "p", **environ}
    with pytest.raises(StoreError, match=error):
        Settings.from_env(environ)


def test_settings_accept_good_values():
    settings = Settings.from_env(
        {
            "GOOGLE_CLOUD_PROJECT": "p",
            "DM_FIRESTORE_DATABASE": "dm-db",
            "FIRESTORE_EMULATOR_HOST": "[::1]:8080",
            "DM_FINISHED_TTL_DAYS": "30",
        }
    )
    assert settings.database == "dm-db"
    assert settings.emulator_host == "[::1]:8080"
    assert settings.finished_ttl == datetime.timedelta(days=30)
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p"}).finished_ttl is None
