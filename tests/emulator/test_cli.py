"""`python -m dm` against the emulator and a real HTTP server."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading

import pytest
from werkzeug.serving import make_server

from dm import cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def url(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    # The in-process server logs to stdout too; keep only the CLI's output.
    out = "".join(
        line
        for line in captured.out.splitlines(keepends=True)
        if not line.startswith('{"severity"')
    )
    return code, out, captured.err


def schedule_auth(capsys, tmp_path, quest="cli-q", *extra) -> tuple[dict, str]:
    code, out, err = run(
        capsys,
        "schedule",
        "--quest",
        quest,
        "--attempt",
        "1",
        "--execution",
        "1",
        *extra,
    )
    assert code == 0, err
    auth = json.loads(out)
    path = tmp_path / f"{quest}.json"
    path.write_text(out)
    return auth, str(path)


def test_schedule_prints_auth_json(env, capsys, tmp_path):
    auth, _ = schedule_auth(capsys, tmp_path)
    assert auth["id"] == {"quest": "cli-q", "attempt": 1, "id": 1}
    assert len(base64.b64decode(auth["token"])) == 32


def test_schedule_refuses_existing(env, capsys, tmp_path):
    schedule_auth(capsys, tmp_path)
    code, out, err = run(
        capsys, "schedule", "--quest", "cli-q", "--attempt", "1", "--execution", "1"
    )
    assert code == cli.EXIT_ERROR and out == "" and "already exists" in err


def test_schedule_rejects_bad_id(env, capsys):
    with pytest.raises(SystemExit, match="quest"):
        cli.main(["schedule", "--quest", "a/b", "--attempt", "1", "--execution", "1"])


def test_activate_flow_and_exit_codes(env, url, capsys, tmp_path):
    auth, auth_file = schedule_auth(capsys, tmp_path)
    token_file = tmp_path / "exec.token"

    code, out, err = run(
        capsys,
        "activate",
        "--url",
        url,
        "--auth-file",
        auth_file,
        "--execution-token-file",
        str(token_file),
    )
    assert code == cli.EXIT_OK, err
    won = json.loads(out)
    assert won["id"] == auth["id"]
    assert base64.b64decode(won["token"]) == base64.b64decode(token_file.read_text())
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"

    # A restarted task with the same token file is still the winner.
    code, out2, _ = run(
        capsys,
        "activate",
        "--url",
        url + "/",
        "--auth-file",
        auth_file,
        "--execution-token-file",
        str(token_file),
    )
    assert (code, out2) == (cli.EXIT_OK, out)

    # A rival with a fresh token is told to cease.
    code, out, err = run(capsys, "activate", "--url", url, "--auth-file", auth_file)
    assert (code, out) == (cli.EXIT_ALREADY_EXISTS, "") and "ALREADY_EXISTS" in err

    # A wrong activation token is denied.
    bad = dict(auth, token=base64.b64encode(b"w" * 32).decode())
    bad_file = tmp_path / "bad.json"
    bad_file.write_text(json.dumps(bad))
    code, _, err = run(capsys, "activate", "--url", url, "--auth-file", str(bad_file))
    assert code == cli.EXIT_PERMISSION_DENIED and "PERMISSION_DENIED" in err

    code, out, _ = run(
        capsys, "show", "--quest", "cli-q", "--attempt", "1", "--execution", "1"
    )
    shown = json.loads(out)
    assert code == 0 and shown["state"] == "RUNNING"
    assert auth["token"] not in out and won["token"] not in out


def test_activate_invalid_argument_exit(env, url, capsys, tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps({"id": {"quest": "q", "attempt": 0, "id": 1}, "token": "AAAA"})
    )
    code, _, err = run(capsys, "activate", "--url", url, "--auth-file", str(path))
    assert code == cli.EXIT_INVALID_ARGUMENT and "attempt" in err


def test_activate_gives_up_on_unreachable_url(capsys, tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps({"id": {"quest": "q", "attempt": 1, "id": 1}, "token": "AAAA"})
    )
    code, _, err = run(
        capsys,
        "activate",
        "--url",
        "http://127.0.0.1:9",
        "--auth-file",
        str(path),
        "--max-time",
        "1",
    )
    assert code == cli.EXIT_GAVE_UP and "gave up" in err


def test_activate_retries_unavailable_then_succeeds(env, url, capsys, tmp_path, mocker):
    _, auth_file = schedule_auth(capsys, tmp_path)
    real = cli._call
    replies = iter([(14, 503, "storage is unavailable"), (10, 409, "contention")])

    def flaky(*args):
        return next(replies, None) or real(*args)

    mocker.patch.object(cli, "_call", side_effect=flaky)
    code, out, err = run(
        capsys, "activate", "--url", url, "--auth-file", auth_file, "--max-time", "30"
    )
    assert code == cli.EXIT_OK, err
    assert err.count("retrying") == 2
    sent = [c.args[1] for c in cli._call.call_args_list]
    assert len(sent) == 3 and len(set(sent)) == 1  # the identical request each time


def test_activate_reports_platform_refusal(capsys, tmp_path, mocker):
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps({"id": {"quest": "q", "attempt": 1, "id": 1}, "token": "AAAA"})
    )
    mocker.patch.object(cli, "_call", return_value=(None, 403, "Forbidden"))
    code, _, err = run(
        capsys, "activate", "--url", "http://127.0.0.1:9", "--auth-file", str(path)
    )
    assert code == cli.EXIT_AUTH and "without a pRPC code" in err
    assert "PERMISSION_DENIED" not in err


def test_activate_reports_wrong_url(capsys, tmp_path, mocker):
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps({"id": {"quest": "q", "attempt": 1, "id": 1}, "token": "AAAA"})
    )
    mocker.patch.object(cli, "_call", return_value=(None, 404, "Not Found"))
    code, _, err = run(
        capsys, "activate", "--url", "http://127.0.0.1:9", "--auth-file", str(path)
    )
    assert code == cli.EXIT_OTHER and "without a pRPC code" in err


def test_show_unknown(env, capsys):
    code, out, err = run(
        capsys, "show", "--quest", "nope", "--attempt", "1", "--execution", "1"
    )
    assert (code, out) == (cli.EXIT_ERROR, "") and "no such Execution" in err


def test_python_dash_m_dm_runs(env):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dm",
            "show",
            "--quest",
            "nope",
            "--attempt",
            "1",
            "--execution",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == cli.EXIT_ERROR and "no such Execution" in result.stderr
