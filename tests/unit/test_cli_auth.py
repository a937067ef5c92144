"""`python -m dm activate` against an IAM-protected function: the identity
token it sends, and how it reports the platform's refusals.

A stand-in function on a loopback port records each request's headers and
answers as configured; the identity-token seam of google-auth is mocked, so
nothing here reaches a metadata server or any other host.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from dm import cli
from tests import leakcheck

ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ0ZXN0In0.c2lnbmF0dXJlLWZvci10ZXN0cw"
ADC_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhZGMifQ.YWRjLXNpZ25hdHVyZS1mb3ItdGVzdHM"
for _token in (ID_TOKEN, ADC_TOKEN):
    leakcheck.REGISTRY.register(_token)


class StandIn:
    """A loopback HTTP server answering every POST with `reply`."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self.reply: tuple[int, dict[str, str], bytes] = (
            200,
            {"X-Prpc-Grpc-Code": "0", "Content-Type": cli.BINARY},
            b"",
        )
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stand_in.seen.append(dict(self.headers))
                status, headers, body = stand_in.reply
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def function():
    with StandIn() as stand_in:
        yield stand_in


@pytest.fixture
def auth_file(tmp_path):
    path = tmp_path / "auth.json"
    path.write_text(
        json.dumps({"id": {"quest": "q", "attempt": 1, "id": 1}, "token": "A" * 44})
    )
    return str(path)


@pytest.fixture
def fetch(mocker):
    """google-auth's identity-token seam; fails the test if used unless a
    test sets its return value."""
    return mocker.patch(
        "google.oauth2.id_token.fetch_id_token",
        side_effect=AssertionError("fetch_id_token must not be called"),
    )


@pytest.fixture(autouse=True)
def no_token_in_env(monkeypatch):
    monkeypatch.delenv(cli.ID_TOKEN_ENV, raising=False)


def activate(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["activate", *argv, "--max-time", "2"])
    captured = capsys.readouterr()
    for token in (ID_TOKEN, ADC_TOKEN):
        assert token not in captured.out + captured.err
    return code, captured.out, captured.err


def test_token_from_environment_is_sent(
    function, auth_file, capsys, monkeypatch, fetch
):
    monkeypatch.setenv(cli.ID_TOKEN_ENV, ID_TOKEN)
    code, _, err = activate(capsys, "--url", function.url, "--auth-file", auth_file)
    assert code == cli.EXIT_OK, err
    [headers] = function.seen
    assert headers["Authorization"] == f"Bearer {ID_TOKEN}"
    assert not fetch.called


def test_token_from_file_is_sent(function, auth_file, capsys, tmp_path, fetch):
    token_file = tmp_path / "id-token"
    token_file.write_text(ID_TOKEN + "\n")
    code, _, err = activate(
        capsys,
        "--url",
        function.url,
        "--auth-file",
        auth_file,
        "--id-token-file",
        str(token_file),
    )
    assert code == cli.EXIT_OK, err
    assert function.seen[0]["Authorization"] == f"Bearer {ID_TOKEN}"
    assert not fetch.called


def test_token_from_application_default_credentials(function, auth_file, capsys, fetch):
    fetch.side_effect = None
    fetch.return_value = ADC_TOKEN
    audience = "https://dm-activate-execution-abc123-uc.a.run.app"
    code, _, err = activate(
        capsys,
        "--url",
        function.url,
        "--auth-file",
        auth_file,
        "--audience",
        audience,
    )
    assert code == cli.EXIT_OK, err
    assert function.seen[0]["Authorization"] == f"Bearer {ADC_TOKEN}"
    [call] = fetch.call_args_list
    assert call.args[1] == audience


def test_https_url_uses_itself_as_audience(auth_file, capsys, fetch, mocker):
    # The credentials cannot mint a token: the call is never sent, and the
    # caller is told what to do instead.
    from google.auth import exceptions

    fetch.side_effect = exceptions.DefaultCredentialsError("no credentials")
    sender = mocker.patch.object(cli, "_call", side_effect=AssertionError("sent"))
    url = "https://dm-activate-execution-abc123-uc.a.run.app"
    code, _, err = activate(capsys, "--url", url + "/", "--auth-file", auth_file)
    assert code == cli.EXIT_AUTH
    assert fetch.call_args.args[1] == url
    assert not sender.called
    assert err.startswith("error: authentication: cannot get an identity token")
    assert "DM_ID_TOKEN" in err and "DefaultCredentialsError" in err


def test_plain_http_sends_no_token(function, auth_file, capsys, fetch):
    code, _, err = activate(capsys, "--url", function.url, "--auth-file", auth_file)
    assert code == cli.EXIT_OK, err
    assert "Authorization" not in function.seen[0]
    assert not fetch.called


def test_no_id_token_flag(auth_file, capsys, fetch, mocker):
    sender = mocker.patch.object(cli, "_call", return_value=(0, 200, ""))
    url = "https://dm-activate-execution-abc123-uc.a.run.app"
    code, _, _ = activate(
        capsys, "--url", url, "--auth-file", auth_file, "--no-id-token"
    )
    assert code == cli.EXIT_OK
    assert sender.call_args.args[3] is None
    assert not fetch.called


@pytest.mark.parametrize(
    "status, hint", [(401, "identity token"), (403, "run.invoker")]
)
def test_platform_refusal_is_an_authentication_problem(
    function, auth_file, capsys, monkeypatch, status, hint
):
    monkeypatch.setenv(cli.ID_TOKEN_ENV, ID_TOKEN)
    function.reply = (status, {"Content-Type": "text/html"}, b"<html>Forbidden</html>")
    code, out, err = activate(capsys, "--url", function.url, "--auth-file", auth_file)
    assert code == cli.EXIT_AUTH
    assert out == ""
    assert err.startswith(f"error: authentication: HTTP {status} from the platform")
    assert hint in err
    assert "PERMISSION_DENIED" not in err
    assert len(function.seen) == 1  # not retried


def test_service_permission_denied_is_not_an_authentication_problem(
    function, auth_file, capsys, monkeypatch
):
    monkeypatch.setenv(cli.ID_TOKEN_ENV, ID_TOKEN)
    function.reply = (
        403,
        {"X-Prpc-Grpc-Code": "7", "Content-Type": "text/plain"},
        b"activation token is wrong, or no such Execution\n",
    )
    code, _, err = activate(capsys, "--url", function.url, "--auth-file", auth_file)
    assert code == cli.EXIT_PERMISSION_DENIED
    assert err.startswith("error: PERMISSION_DENIED: ")
    assert "authentication" not in err


@pytest.mark.parametrize("via", ["env", "file"])
@pytest.mark.parametrize(
    "bad",
    [
        ID_TOKEN[:20] + "\n" + ID_TOKEN[20:],
        "WARNING: something\n" + ID_TOKEN,
        ID_TOKEN + " trailing words",
        ID_TOKEN.replace(".", "\r\n."),
    ],
)
def test_malformed_token_is_refused_and_never_shown(
    function, auth_file, capsys, monkeypatch, tmp_path, fetch, via, bad
):
    if via == "env":
        monkeypatch.setenv(cli.ID_TOKEN_ENV, bad)
        extra = []
    else:
        path = tmp_path / "id.token"
        path.write_text(bad)
        extra = ["--id-token-file", str(path)]
    code, out, err = activate(
        capsys, "--url", function.url, "--auth-file", auth_file, *extra
    )
    assert code == cli.EXIT_AUTH
    for part in bad.split():
        assert part not in out + err
    assert function.seen == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(function, auth_file, capsys, monkeypatch, status):
    with StandIn() as elsewhere:
        function.reply = (status, {"Location": elsewhere.url + "/steal"}, b"")
        monkeypatch.setenv(cli.ID_TOKEN_ENV, ID_TOKEN)
        code, out, err = activate(
            capsys, "--url", function.url, "--auth-file", auth_file
        )
        assert (code, out) == (cli.EXIT_OTHER, "")
        assert "redirect" in err
        assert elsewhere.seen == []
    assert len(function.seen) == 1  # an answer, not a transient failure


@pytest.mark.parametrize(
    "url, sent",
    [
        ("https://dm.example.invalid", True),
        ("http://127.0.0.1:8080", True),
        ("http://localhost:8080", True),
        ("http://[::1]:8080", True),
        ("http://dm.example.invalid", False),
        ("http://127.example.invalid", False),
    ],
)
def test_tokens_stay_off_plain_http_to_other_hosts(monkeypatch, capsys, url, sent):
    monkeypatch.setenv(cli.ID_TOKEN_ENV, ID_TOKEN)
    args = cli._parser().parse_args(["activate", "--url", url, "--auth-file", "unused"])
    assert (cli._id_token(args, url) == ID_TOKEN) is sent
    assert ("not sending" in capsys.readouterr().err) is not sent


def test_unusable_url_is_a_local_error(auth_file, capsys):
    code, _, err = activate(capsys, "--url", "http://[bad", "--auth-file", auth_file)
    assert code == cli.EXIT_ERROR and "--url" in err
