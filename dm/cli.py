"""`python -m dm`: schedule, activate and show Executions.

    schedule  create an Execution and print the Auth a distributor hands on
    activate  what a started task runs: claim the Execution over pRPC
    show      print an Execution's state and times (never its tokens)

`schedule` and `show` talk to Firestore directly (GOOGLE_CLOUD_PROJECT,
FIRESTORE_EMULATOR_HOST, DM_FIRESTORE_DATABASE, DM_EXECUTIONS_COLLECTION);
`activate` talks only to the function's URL, with an identity token when
the function requires IAM authentication (--id-token-file, DM_ID_TOKEN, or
Application Default Credentials).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
import json
import math
import os
import pathlib
import random
import re
import secrets
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import TYPE_CHECKING

from google.protobuf import json_format

from dm.proto import activate_execution_pb2, graph_data_pb2

if TYPE_CHECKING:
    from dm.service import ExecutionService
    from dm.store import ExecutionKey

# The Firestore client is imported only by the commands that use it, so
# that `activate` on a task machine starts fast.

ACTIVATE_PATH = "/prpc/dm.Deps/ActivateExecution"
BINARY = "application/prpc; encoding=binary"
EXECUTION_TOKEN_BYTES = 32
# What the service accepts as an ExecutionToken (dm.service enforces it too).
EXECUTION_TOKEN_RANGE = (32, 512)
_UINT32_MAX = 2**32 - 1
# Longest --start-timeout / --max-time: a year, far past any real use and
# well inside what a timestamp can hold.
_MAX_SECONDS = 366 * 24 * 3600.0

# Exit statuses of `activate` (and of the other commands where they apply).
EXIT_OK = 0
EXIT_ERROR = 1  # bad local input, or (schedule) the Execution exists
EXIT_USAGE = 2  # argparse's own
EXIT_INVALID_ARGUMENT = 3
EXIT_PERMISSION_DENIED = 4
EXIT_ALREADY_EXISTS = 5
EXIT_GAVE_UP = 6  # transient failures outlasted --max-time
EXIT_OTHER = 7  # any other final answer (a wrong URL, ...)
EXIT_AUTH = 8  # the platform refused the identity token, or none could be had

ID_TOKEN_ENV = "DM_ID_TOKEN"

_CODE_EXITS = {
    3: EXIT_INVALID_ARGUMENT,
    7: EXIT_PERMISSION_DENIED,
    6: EXIT_ALREADY_EXISTS,
}
# gRPC codes after which re-sending cannot help.
_FINAL_CODES = {3, 5, 6, 7, 12, 16}


def _execution_id(args: argparse.Namespace) -> ExecutionKey:
    from dm.rpc import RpcError
    from dm.service import validate_id

    try:
        return validate_id(args.quest, args.attempt, args.execution)
    except RpcError as exc:
        raise SystemExit(f"error: {exc.message}") from None


def _service() -> ExecutionService:
    """The service over the configured store; a configuration problem is a
    local error (exit 1), not a storage failure worth retrying."""
    from dm.service import ExecutionService
    from dm.store import FirestoreStore, Settings, StoreError

    try:
        return ExecutionService(FirestoreStore(Settings.from_env()))
    except StoreError as exc:
        raise SystemExit(f"error: configuration: {exc}") from None


def cmd_schedule(args: argparse.Namespace) -> int:
    from dm.store import AlreadyExists, StoreError

    key = _execution_id(args)
    try:
        token = _service().schedule(key, args.start_timeout)
    except AlreadyExists:
        print("error: that Execution already exists", file=sys.stderr)
        return EXIT_ERROR
    except StoreError as exc:
        print(f"error: storage: {exc}", file=sys.stderr)
        return EXIT_GAVE_UP
    auth = graph_data_pb2.Execution.Auth(token=token)
    auth.id.quest, auth.id.attempt, auth.id.id = (
        args.quest,
        args.attempt,
        args.execution,
    )
    print(json_format.MessageToJson(auth, indent=None))
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from dm.store import StoreError

    key = _execution_id(args)
    try:
        shown = _service().show(key)
    except StoreError as exc:
        print(f"error: storage: {exc}", file=sys.stderr)
        return EXIT_GAVE_UP
    if shown is None:
        print("error: no such Execution", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(shown, indent=2))
    return EXIT_OK


def _read_auth(path: str) -> graph_data_pb2.Execution.Auth:
    auth = graph_data_pb2.Execution.Auth()
    try:
        json_format.Parse(pathlib.Path(path).read_text(encoding="utf-8"), auth)
    except (OSError, UnicodeError, json_format.ParseError) as exc:
        raise SystemExit(f"error: cannot read the Auth JSON in {path}: {exc}") from None
    return auth


def _execution_token(path: str | None) -> bytes:
    """Reads the ExecutionToken (base64) from `path`, or makes one.

    A token made for a named file is written there first (mode 0600) and
    published atomically: it is written and synced under a temporary name,
    then linked into place, so a reader never sees a partial token. When two
    copies of a task start together, the one that loses the link reads the
    winner's token, and both are recognised as the same task.
    """
    if path is None:
        return secrets.token_bytes(EXECUTION_TOKEN_BYTES)
    file = pathlib.Path(path)
    if os.path.lexists(file):
        return _read_token_file(file)

    token = secrets.token_bytes(EXECUTION_TOKEN_BYTES)
    try:
        fd, temp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.")
    except OSError as exc:
        raise SystemExit(f"error: cannot create {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(base64.b64encode(token).decode("ascii") + "\n")
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(temp, file)
        except FileExistsError:
            return _read_token_file(file)
        except OSError as exc:
            raise SystemExit(f"error: cannot create {path}: {exc.strerror}") from None
    finally:
        os.unlink(temp)
    return token


def _read_token_file(file: pathlib.Path) -> bytes:
    low, high = EXECUTION_TOKEN_RANGE
    try:
        token = base64.b64decode(
            file.read_text(encoding="ascii").strip(), validate=True
        )
    except (OSError, UnicodeError, binascii.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not base64"
        raise SystemExit(
            f"error: {file} does not hold a base64 ExecutionToken ({reason})"
        ) from None
    if not low <= len(token) <= high:
        raise SystemExit(
            f"error: {file} holds a {len(token)}-byte token; an ExecutionToken "
            f"is {low} to {high} bytes (delete the file only if this task "
            "never activated with it)"
        )
    return token


class AuthError(Exception):
    """No identity token could be had; the message says why, never a token."""


def _fetch_id_token(audience: str) -> str:
    """Gets an identity token for `audience` from Application Default
    Credentials (a service account key, or the metadata server where the
    task runs on Google Cloud).

    Raises:
        AuthError: when the credentials cannot mint one.
    """
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.id_token

    try:
        return str(
            google.oauth2.id_token.fetch_id_token(
                google.auth.transport.requests.Request(), audience
            )
        )
    except google.auth.exceptions.GoogleAuthError as exc:
        raise AuthError(
            f"cannot get an identity token for {audience} from Application "
            f"Default Credentials ({type(exc).__name__}); give one with "
            f"--id-token-file or {ID_TOKEN_ENV}, e.g. from "
            "`gcloud auth print-identity-token`"
        ) from None


# An identity token is a JWT: base64url segments joined by dots. Anything
# else (an inner newline from a captured warning, say) is refused before it
# reaches a header, where the HTTP library would echo it in its error.
_ID_TOKEN_RE = re.compile(r"[A-Za-z0-9_=-]+(?:\.[A-Za-z0-9_=-]+)*")
_ID_TOKEN_MAX = 16 * 1024


def _checked_token(token: str, source: str) -> str:
    if len(token) > _ID_TOKEN_MAX or not _ID_TOKEN_RE.fullmatch(token):
        raise AuthError(
            f"the identity token from {source} is not one line of JWT text "
            "(it is not shown)"
        )
    return token


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _id_token(args: argparse.Namespace, base_url: str) -> str | None:
    """The identity token to send, or None to send none.

    In order: --id-token-file, $DM_ID_TOKEN, none with --no-id-token, and
    else one from Application Default Credentials when the URL is https
    (a deployed function) or an --audience is named. Plain http URLs (a
    local function) get none.

    Raises:
        AuthError: when a token was needed and none could be had.
    """
    if args.id_token_file:
        try:
            token = pathlib.Path(args.id_token_file).read_text("utf-8").strip()
        except (OSError, UnicodeError) as exc:
            raise AuthError(
                f"cannot read --id-token-file {args.id_token_file}: "
                f"{type(exc).__name__}"
            ) from None
        if not token:
            raise AuthError(f"--id-token-file {args.id_token_file} is empty")
        return _plain_http_guard(_checked_token(token, "--id-token-file"), base_url)
    token = os.environ.get(ID_TOKEN_ENV, "").strip()
    if token:
        return _plain_http_guard(_checked_token(token, f"${ID_TOKEN_ENV}"), base_url)
    if args.no_id_token:
        return None
    if args.audience or base_url.startswith("https://"):
        return _fetch_id_token(args.audience or base_url)
    return None


def _plain_http_guard(token: str, base_url: str) -> str | None:
    """Keeps a bearer token off plain http, except to this machine (a
    function run locally); says so on stderr when it drops one."""
    if base_url.startswith("https://") or _is_loopback(base_url):
        return token
    print(
        "warning: not sending the identity token over plain http:// to another host",
        file=sys.stderr,
    )
    return None


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Turns every redirect into an answer of its own: following one would
    re-send the bearer token to wherever it points, and take that place's
    reply as the verdict."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects())


def _call(
    url: str, body: bytes, timeout: float, id_token: str | None = None
) -> tuple[int | None, int, str]:
    """POSTs one pRPC request; returns (grpc code or None, HTTP status, text)."""
    headers = {
        "Content-Type": BINARY,
        "Accept": BINARY,
        "X-Prpc-Grpc-Timeout": f"{max(1, int(timeout * 1000))}m",
    }
    if id_token is not None:
        headers["Authorization"] = f"Bearer {id_token}"
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout) as reply:
            status, headers, text = reply.status, reply.headers, ""
    except urllib.error.HTTPError as exc:
        status, headers = exc.code, exc.headers
        text = exc.read(2048).decode("utf-8", "replace").strip()
    code = headers.get("X-Prpc-Grpc-Code")
    try:
        return (int(code) if code is not None else None), status, text
    except ValueError:
        return None, status, text


def cmd_activate(args: argparse.Namespace) -> int:
    auth = _read_auth(args.auth_file)
    execution_token = _execution_token(args.execution_token_file)
    req = activate_execution_pb2.ActivateExecutionReq(
        auth=auth, execution_token=execution_token
    )
    body = req.SerializeToString()
    base_url = args.url.rstrip("/")
    url = base_url + ACTIVATE_PATH
    try:
        host = urllib.parse.urlsplit(base_url).hostname
    except ValueError:
        host = None
    if not url.startswith(("http://", "https://")) or not host:
        print("error: --url must be an http:// or https:// URL", file=sys.stderr)
        return EXIT_ERROR
    try:
        id_token = _id_token(args, base_url)
    except AuthError as exc:
        print(f"error: authentication: {exc}", file=sys.stderr)
        return EXIT_AUTH

    give_up_at = time.monotonic() + args.max_time
    attempt = 0
    while True:
        attempt += 1
        left = give_up_at - time.monotonic()
        try:
            code, status, text = _call(url, body, max(0.5, min(left, 30.0)), id_token)
        except (OSError, urllib.error.URLError) as exc:
            code, status, text = None, 0, f"network error: {exc}"

        if code == 0:
            won = graph_data_pb2.Execution.Auth(id=auth.id, token=execution_token)
            print(json_format.MessageToJson(won, indent=None))
            return EXIT_OK
        if code in _FINAL_CODES:
            print(f"error: {_code_name(code)}: {text}", file=sys.stderr)
            return _CODE_EXITS.get(code, EXIT_OTHER)
        if code is None and 300 <= status < 400:
            print(
                f"error: HTTP {status} redirect, not followed: check --url",
                file=sys.stderr,
            )
            return EXIT_OTHER
        if code is None and status in (401, 403):
            # The platform refused the call before it reached the service:
            # this is not the service's PERMISSION_DENIED, which carries a
            # pRPC code.
            print(f"error: authentication: {_AUTH_HINTS[status]}", file=sys.stderr)
            return EXIT_AUTH
        if code is None and 400 <= status < 500 and status not in (408, 429):
            # Refused before reaching the service (no pRPC code): a wrong
            # URL, say.
            print(
                f"error: HTTP {status} without a pRPC code: {text[:200]}",
                file=sys.stderr,
            )
            return EXIT_OTHER

        delay = min(0.2 * 2 ** (attempt - 1), 5.0) * random.uniform(0.5, 1.0)
        if time.monotonic() + delay >= give_up_at:
            reason = _code_name(code) if code is not None else f"HTTP {status}"
            print(
                f"error: gave up after {attempt} attempts: {reason}: {text}",
                file=sys.stderr,
            )
            return EXIT_GAVE_UP
        reason = _code_name(code) if code is not None else text
        print(f"retrying in {delay:.2f}s after {reason}", file=sys.stderr)
        time.sleep(delay)


_AUTH_HINTS = {
    401: "HTTP 401 from the platform, without a pRPC code: the function "
    "requires an identity token for its URL, and none was sent or it was "
    "expired or for another audience",
    403: "HTTP 403 from the platform, without a pRPC code: the caller's "
    "identity may not invoke the function (it needs roles/run.invoker on it)",
}


def _code_name(code: int | None) -> str:
    from dm.rpc import Code

    try:
        return Code(code).name
    except ValueError:
        return f"code {code}"


def _id_number(text: str) -> int:
    """argparse type: an attempt or execution number, 1 to 2**32-1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= _UINT32_MAX:
        raise argparse.ArgumentTypeError(f"must be 1 to {_UINT32_MAX}")
    return value


def _seconds(text: str) -> float:
    """argparse type: a finite number of seconds, 0 to a year."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and 0 <= value <= _MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"must be 0 to {_MAX_SECONDS:.0f} seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dm", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def add_id(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--quest", required=True)
        sub.add_argument("--attempt", required=True, type=_id_number)
        sub.add_argument("--execution", required=True, type=_id_number)

    schedule = commands.add_parser("schedule", help="create an Execution in SCHEDULING")
    add_id(schedule)
    schedule.add_argument(
        "--start-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="refuse activation after this many seconds",
    )
    schedule.set_defaults(run=cmd_schedule)

    activate = commands.add_parser("activate", help="claim an Execution over pRPC")
    activate.add_argument("--url", required=True, help="the function's base URL")
    activate.add_argument("--auth-file", required=True, help="Auth JSON from schedule")
    activate.add_argument(
        "--execution-token-file",
        help="base64 ExecutionToken; created (0600) with a fresh token if missing",
    )
    activate.add_argument(
        "--max-time",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="give up retrying transient failures after this long (default 60)",
    )
    activate.add_argument(
        "--id-token-file",
        metavar="FILE",
        help=f"identity token for an IAM-protected function (else ${ID_TOKEN_ENV},"
        " else Application Default Credentials for https URLs)",
    )
    activate.add_argument(
        "--audience",
        help="audience of the identity token from Application Default "
        "Credentials (default: --url)",
    )
    activate.add_argument(
        "--no-id-token",
        action="store_true",
        help="send no identity token (a function that allows unauthenticated calls)",
    )
    activate.set_defaults(run=cmd_activate)

    show = commands.add_parser("show", help="print an Execution's state and times")
    add_id(show)
    show.set_defaults(run=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    return int(args.run(args))
