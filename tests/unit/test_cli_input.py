"""The command line's handling of bad local input and token files."""

from __future__ import annotations

import base64
import multiprocessing
import os

import pytest

from dm import cli


def parse_error(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as info:
        cli._parser().parse_args(list(argv))
    assert info.value.code == cli.EXIT_USAGE
    return capsys.readouterr().err


ID = ["--quest", "q"]


@pytest.mark.parametrize("value", ["0", "-1", "4294967296", "1.5", "abc", ""])
@pytest.mark.parametrize("flag", ["--attempt", "--execution"])
def test_id_numbers_out_of_range_are_usage_errors(capsys, flag, value):
    argv = {"--attempt": "1", "--execution": "1", flag: value}
    err = parse_error(capsys, "show", *ID, *[x for kv in argv.items() for x in kv])
    assert flag in err and "Traceback" not in err


def test_largest_id_numbers_parse():
    args = cli._parser().parse_args(
        ["show", *ID, "--attempt", "4294967295", "--execution", "1"]
    )
    assert args.attempt == 2**32 - 1


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e300", "soon"])
def test_start_timeout_must_be_finite_and_sane(capsys, value):
    err = parse_error(
        capsys,
        "schedule",
        *ID,
        "--attempt",
        "1",
        "--execution",
        "1",
        f"--start-timeout={value}",
    )
    assert "--start-timeout" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-5"])
def test_max_time_must_be_finite(capsys, value):
    err = parse_error(
        capsys,
        "activate",
        "--url",
        "http://127.0.0.1:9",
        "--auth-file",
        "a",
        f"--max-time={value}",
    )
    assert "--max-time" in err


def test_token_file_is_created_once_with_mode_0600(tmp_path):
    path = tmp_path / "token"
    first = cli._execution_token(str(path))
    assert len(first) == cli.EXECUTION_TOKEN_BYTES
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert cli._execution_token(str(path)) == first
    assert os.listdir(tmp_path) == ["token"]  # no temporary files left


def _make_token(path: str, queue) -> None:
    queue.put(cli._execution_token(path))


def test_token_file_racing_creators_agree(tmp_path):
    path = str(tmp_path / "token")
    # spawn, not fork: the test process may hold gRPC threads by now.
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_make_token, args=(path, queue)) for _ in range(8)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    tokens = {queue.get(timeout=5) for _ in procs}
    assert [p.exitcode for p in procs] == [0] * 8
    assert tokens == {cli._execution_token(path)}


@pytest.mark.parametrize(
    "content, reason",
    [
        ("", "0-byte token"),
        ("\n", "0-byte token"),
        ("not base64!", "not base64"),
        (base64.b64encode(b"x" * 31).decode(), "31-byte token"),
        (base64.b64encode(b"x" * 513).decode(), "513-byte token"),
    ],
)
def test_unusable_token_file_is_a_local_error(tmp_path, content, reason):
    path = tmp_path / "token"
    path.write_text(content)
    with pytest.raises(SystemExit) as info:
        cli._execution_token(str(path))
    assert reason in str(info.value.code)


def test_token_file_in_missing_directory_is_a_local_error(tmp_path):
    with pytest.raises(SystemExit) as info:
        cli._execution_token(str(tmp_path / "missing" / "token"))
    assert "cannot create" in str(info.value.code)


def test_dangling_symlink_token_file_is_a_local_error(tmp_path):
    (tmp_path / "token").symlink_to(tmp_path / "nowhere")
    with pytest.raises(SystemExit) as info:
        cli._execution_token(str(tmp_path / "token"))
    assert "does not hold" in str(info.value.code)


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"GOOGLE_CLOUD_PROJECT": "p", "FIRESTORE_EMULATOR_HOST": "http://localhost"},
        {"GOOGLE_CLOUD_PROJECT": "p", "DM_EXECUTIONS_COLLECTION": "a/b"},
    ],
)
@pytest.mark.parametrize("command", ["schedule", "show"])
def test_configuration_errors_are_local_errors(monkeypatch, capsys, env, command):
    for name in (
        "GOOGLE_CLOUD_PROJECT",
        "FIRESTORE_EMULATOR_HOST",
        "DM_EXECUTIONS_COLLECTION",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    argv = [command, *ID, "--attempt", "1", "--execution", "1"]
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert str(info.value.code).startswith("error: configuration: ")
