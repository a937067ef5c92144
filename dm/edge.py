"""The HTTP edge: Flask requests in, pRPC responses out.

This is the only module that knows Flask. It builds the service once per
instance (lazily, so that a configuration problem is reported to callers as
a retryable pRPC error instead of crashing the cold start), hands each
request to the pRPC server, and writes one log line per call.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import flask
from google.protobuf import empty_pb2
from werkzeug.exceptions import HTTPException

from dm import logs, prpc
from dm.proto import activate_execution_pb2
from dm.rpc import Code
from dm.service import ExecutionService
from dm.store import FirestoreStore, Settings, StoreError

logs.install("dm")
logger = logging.getLogger(__name__)
_request_logger = logging.getLogger("dm.requests")

ACTIVATE_METHOD = "dm.Deps/ActivateExecution"
MSG_MISCONFIGURED = "the service is not configured; retry later"

# After a failed build, the next attempt waits this long, so that a
# misconfigured instance does not rebuild (and re-probe credentials) on
# every request.
_REBUILD_AFTER_S = 5.0

_lock = threading.Lock()
_server: prpc.Server | None = None
_config_error: str | None = None
_config_error_at = 0.0

# Log severity of each outcome: what an operator should look at.
_ERROR_CODES = frozenset({Code.INTERNAL, Code.UNKNOWN, Code.DATA_LOSS})
_WARNING_CODES = frozenset(
    {Code.UNAVAILABLE, Code.ABORTED, Code.DEADLINE_EXCEEDED, Code.RESOURCE_EXHAUSTED}
)


def build_server(service: ExecutionService) -> prpc.Server:
    """Wires the service's methods into a pRPC server.

    The function is reachable at its pRPC path and at its bare URL ("/").
    """
    activate = prpc.Method(
        request_type=activate_execution_pb2.ActivateExecutionReq,
        response_type=empty_pb2.Empty,
        impl=service.activate,
    )
    return prpc.Server({ACTIVATE_METHOD: activate}, aliases={"/": ACTIVATE_METHOD})


def _get_server() -> prpc.Server:
    """Returns this instance's server, building it on first use.

    Raises:
        StoreError: when the environment does not name a usable database,
            or the Firestore client cannot be made; the error is kept for
            `_REBUILD_AFTER_S` and raised again without another attempt.
    """
    global _server, _config_error, _config_error_at
    if _server is not None:
        return _server
    with _lock:
        if _server is not None:
            return _server
        now = time.monotonic()
        if _config_error is not None and now - _config_error_at < _REBUILD_AFTER_S:
            raise StoreError(_config_error)
        try:
            settings = Settings.from_env()
            store = FirestoreStore(settings)
        except StoreError as exc:
            _config_error, _config_error_at = str(exc), now
            raise
        except Exception as exc:
            # Building touches only the environment and the client library;
            # whatever else fails there is a configuration problem too, and
            # must answer as one, never as an INTERNAL crash.
            _config_error = f"cannot build the Firestore client: {type(exc).__name__}"
            _config_error_at = now
            raise StoreError(_config_error) from exc
        _server = build_server(
            ExecutionService(store, finished_ttl=settings.finished_ttl)
        )
        _config_error = None
        return _server


def reset() -> None:
    """Forgets the built server and any configuration error, so the next
    request reads the environment again (tests use this)."""
    global _server, _config_error
    with _lock:
        _server = None
        _config_error = None


def handle(request: flask.Request) -> flask.Response:
    """Serves one HTTP request as a pRPC call and logs it in one line."""
    started = time.monotonic()
    with _traced(request):
        config_error = None
        try:
            server = _get_server()
        except StoreError as exc:
            config_error = f"configuration: {exc}"
            response = prpc.error_response(Code.UNAVAILABLE, MSG_MISCONFIGURED)
        else:
            response = server.handle(
                prpc.Request(
                    method=request.method,
                    path=request.path,
                    headers=request.headers,
                    body=request.stream,
                    content_length=request.content_length,
                )
            )
        _log_call(request, response, time.monotonic() - started, config_error)
    return _to_flask(response)


@contextlib.contextmanager
def _traced(request: flask.Request) -> Iterator[None]:
    """Adds the request's trace fields to every line logged inside."""
    bound = logs.bind(
        logs.trace_fields(request.headers, os.environ.get("GOOGLE_CLOUD_PROJECT"))
    )
    try:
        yield
    finally:
        logs.unbind(bound)


def _to_flask(response: prpc.Response) -> flask.Response:
    # NOTE: an iterable body makes this a "streamed" response, and that stops
    # functions-framework's after-request hook (`read_request`) from reading
    # whatever request body is left. That read has no size limit and runs
    # outside every error handler: a huge body would be held in memory, and
    # a malformed chunked one crashed into an HTML 500 without a pRPC code.
    # What we leave unread, gunicorn discards in small pieces before it reads
    # the connection's next request.
    headers = {**response.headers, "Content-Length": str(len(response.body))}
    return flask.Response(
        response=iter((response.body,)), status=response.status, headers=headers
    )


def _log_call(
    request: flask.Request,
    response: prpc.Response,
    elapsed: float | None,
    config_error: str | None,
) -> None:
    """Writes the call's one structured line. Only the fields named here and
    the service's `log_fields` (never a token or digest) are written:

    - `execution`: quest|attempt|id, once the request was valid;
    - `code`, `status`: the pRPC code's name and the HTTP status;
    - `latency_ms`: time spent in the function (not for answers the web
      framework gave on its own, such as an unknown path);
    - `rounds`: Firestore read-decide-write attempts made;
    - `error`: what went wrong with storage or configuration, if anything;
    - `misconfigured`: true when Firestore refused in a way only an operator
      can fix (no such database, no permission).
    """
    fields: dict[str, Any] = {"code": response.code.name, "status": response.status}
    if elapsed is not None:
        fields["latency_ms"] = round(elapsed * 1000, 3)
    fields.update(response.log_fields)
    if config_error is not None:
        fields["error"] = config_error
        level = logging.ERROR
    elif response.code in _ERROR_CODES or fields.get("misconfigured"):
        level = logging.ERROR
    elif response.code in _WARNING_CODES:
        level = logging.WARNING
    else:
        level = logging.INFO
    message = f"{request.method} {request.path[:100]} -> {response.code.name}"
    if "execution" in fields:
        message += f" execution={fields['execution']}"
    if "error" in fields:
        message += f" ({fields['error']})"
    _request_logger.log(level, message, extra={"json_fields": fields})


def install_error_handlers(register: Callable[..., Any]) -> None:
    """Makes the web framework's own errors (unrouted paths, crashes) answer
    in pRPC too.

    Args:
        register: the framework's `errorhandler(code_or_exception)`
            decorator factory.
    """
    register(HTTPException)(_http_exception)
    register(Exception)(_crash)


def _http_exception(exc: HTTPException) -> flask.Response:
    if exc.code == 404:
        return _answer(prpc.error_response(Code.NOT_FOUND, prpc.MSG_NOT_FOUND))
    if exc.code == 405:
        return _answer(
            prpc.error_response(
                Code.UNIMPLEMENTED, prpc.MSG_METHOD_NOT_ALLOWED, status=405
            )
        )
    if exc.code == 413:
        return _answer(
            prpc.error_response(Code.INVALID_ARGUMENT, prpc.MSG_BODY_TOO_LARGE)
        )
    if exc.code is not None and 400 <= exc.code < 500:
        return _answer(prpc.error_response(Code.INVALID_ARGUMENT, "bad request"))
    return _crash(exc)


def _crash(exc: BaseException) -> flask.Response:
    logger.error("unhandled %s at the HTTP edge", type(exc).__name__)
    return _answer(prpc.error_response(Code.INTERNAL, prpc.MSG_INTERNAL))


def _answer(response: prpc.Response) -> flask.Response:
    """A framework-level answer, logged like any other call."""
    if flask.has_request_context():
        with _traced(flask.request):
            _log_call(flask.request, response, None, None)
    return _to_flask(response)
