"""The HTTP edge: Flask requests in, pRPC responses out.

This is the only module that knows Flask. It builds the service once per
instance (lazily, so that a configuration problem is reported to callers as
a retryable pRPC error instead of crashing the cold start), hands each
request to the pRPC server, and writes one log line per call.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import flask
from google.protobuf import empty_pb2
from werkzeug.exceptions import HTTPException

from dm import prpc
from dm.proto import activate_execution_pb2
from dm.rpc import Code
from dm.service import ExecutionService
from dm.store import FirestoreStore, Settings, StoreError

logger = logging.getLogger(__name__)

ACTIVATE_METHOD = "dm.Deps/ActivateExecution"
MSG_MISCONFIGURED = "the service is not configured; retry later"

_lock = threading.Lock()
_server: prpc.Server | None = None


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
        StoreError: when the environment does not name a usable database.
    """
    global _server
    if _server is None:
        with _lock:
            if _server is None:
                store = FirestoreStore(Settings.from_env())
                _server = build_server(ExecutionService(store))
    return _server


def reset() -> None:
    """Forgets the built server, so the next request reads the environment
    again (tests use this)."""
    global _server
    with _lock:
        _server = None


def handle(request: flask.Request) -> flask.Response:
    """Serves one HTTP request as a pRPC call."""
    started = time.monotonic()
    try:
        server = _get_server()
    except StoreError as exc:
        logger.error("configuration error: %s", exc)
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
    _log_call(request, response, time.monotonic() - started)
    return _to_flask(response)


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


def _log_call(request: flask.Request, response: prpc.Response, elapsed: float) -> None:
    """Writes the call's one structured line to stdout (Cloud Logging reads
    JSON lines there). Only the fields listed here are written; tokens and
    digests never reach the log fields."""
    entry: dict[str, Any] = {
        "severity": "WARNING" if response.status >= 500 else "INFO",
        "message": f"{request.method} {request.path[:100]} -> {response.code.name}",
        "code": response.code.name,
        "status": response.status,
        "latency_ms": round(elapsed * 1000, 3),
    }
    entry.update(response.log_fields)
    sys.stdout.write(json.dumps(entry, default=str) + "\n")


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
        return _to_flask(prpc.error_response(Code.NOT_FOUND, prpc.MSG_NOT_FOUND))
    if exc.code == 405:
        return _to_flask(
            prpc.error_response(
                Code.UNIMPLEMENTED, prpc.MSG_METHOD_NOT_ALLOWED, status=405
            )
        )
    if exc.code == 413:
        return _to_flask(
            prpc.error_response(Code.INVALID_ARGUMENT, prpc.MSG_BODY_TOO_LARGE)
        )
    if exc.code is not None and 400 <= exc.code < 500:
        return _to_flask(prpc.error_response(Code.INVALID_ARGUMENT, "bad request"))
    return _crash(exc)


def _crash(exc: BaseException) -> flask.Response:
    logger.error("unhandled %s at the HTTP edge", type(exc).__name__)
    return _to_flask(prpc.error_response(Code.INTERNAL, prpc.MSG_INTERNAL))
