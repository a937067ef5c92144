"""A framework-free pRPC server: HTTP request parts in, HTTP response out.

pRPC is LUCI's RPC protocol over HTTP/1.1: `POST /prpc/<service>/<method>`,
the request message encoded as binary protobuf, protobuf JSON or protobuf
text (chosen by `Content-Type`), the response encoded as `Accept` asks, and
the outcome carried as a gRPC code in the `X-Prpc-Grpc-Code` header. This
module knows the protocol and nothing of Flask, Firestore or DM's rules;
the HTTP edge feeds it and the service implements the methods.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import re
import time
import zlib
from collections.abc import Callable, Mapping
from typing import IO, Any, Generic, TypeVar

from google.protobuf import json_format, text_format
from google.protobuf.message import Message

from dm.rpc import HTTP_STATUS, Code, Context, RpcError

logger = logging.getLogger(__name__)

# The largest request body accepted, both as sent and after gunzip.
MAX_BODY_BYTES = 64 * 1024

CODE_HEADER = "X-Prpc-Grpc-Code"
TIMEOUT_HEADER = "X-Prpc-Grpc-Timeout"
_NOSNIFF = {"X-Content-Type-Options": "nosniff"}
_TEXT_PLAIN = "text/plain; charset=utf-8"
_JSON_PREFIX = b")]}'\n"

# Messages returned to callers. Kept here so tests can assert on them.
MSG_NOT_FOUND = "no such route; pRPC methods live at /prpc/<service>/<method>"
MSG_UNKNOWN_METHOD = "unknown service or method"
MSG_METHOD_NOT_ALLOWED = "pRPC requires POST"
MSG_BODY_TOO_LARGE = f"request body exceeds {MAX_BODY_BYTES} bytes"
MSG_BODY_UNREADABLE = "the request body could not be read"
MSG_INTERNAL = "internal error"


class Encoding(enum.Enum):
    """A message encoding, valued by the media type it is sent as."""

    BINARY = "application/prpc; encoding=binary"
    JSON = "application/json"
    TEXT = "application/prpc; encoding=text"


_PRPC_ENCODINGS = {
    "binary": Encoding.BINARY,
    "json": Encoding.JSON,
    "text": Encoding.TEXT,
}
_TIMEOUT_RE = re.compile(r"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}


def _split_media_type(value: str) -> tuple[str, dict[str, str]]:
    """Splits `type/subtype; k=v; ...` into a lowercase type and parameters."""
    kind, *raw_params = value.split(";")
    params = {}
    for raw in raw_params:
        key, _, val = raw.partition("=")
        params[key.strip().lower()] = val.strip().strip('"').lower()
    return kind.strip().lower(), params


def _encoding_of(kind: str, params: Mapping[str, str]) -> Encoding | None:
    if kind == "application/json":
        return Encoding.JSON
    if kind == "application/prpc":
        return _PRPC_ENCODINGS.get(params.get("encoding", "binary"))
    return None


def parse_content_type(value: str | None) -> Encoding:
    """Returns the request body's encoding named by a Content-Type header.

    Raises:
        RpcError: INVALID_ARGUMENT for a media type pRPC does not define.
    """
    if not value or not value.strip():
        return Encoding.BINARY
    encoding = _encoding_of(*_split_media_type(value))
    if encoding is None:
        raise RpcError(Code.INVALID_ARGUMENT, "unsupported Content-Type")
    return encoding


def parse_accept(value: str | None) -> Encoding:
    """Returns the response encoding that an Accept header prefers.

    Each listed media range may carry a q-value; the supported one with the
    highest q wins, the earliest on a tie. `*/*` and `application/*` mean
    binary, as does an absent header.

    Raises:
        RpcError: INVALID_ARGUMENT when no listed media range is supported.
    """
    if not value or not value.strip():
        return Encoding.BINARY
    best: Encoding | None = None
    best_q = 0.0
    for item in value.split(","):
        if not item.strip():
            continue
        kind, params = _split_media_type(item)
        try:
            q = float(params.get("q", "1"))
        except ValueError:
            continue
        if kind in ("*/*", "application/*"):
            encoding: Encoding | None = Encoding.BINARY
        else:
            encoding = _encoding_of(kind, params)
        if encoding is not None and q > best_q:
            best, best_q = encoding, q
    if best is None:
        raise RpcError(Code.INVALID_ARGUMENT, "unsupported Accept")
    return best


def parse_timeout(value: str | None) -> float | None:
    """Returns the seconds that an X-Prpc-Grpc-Timeout header allows, if any.

    Raises:
        RpcError: INVALID_ARGUMENT for a malformed value.
    """
    if value is None:
        return None
    match = _TIMEOUT_RE.fullmatch(value.strip())
    if match is None:
        raise RpcError(Code.INVALID_ARGUMENT, f"malformed {TIMEOUT_HEADER}")
    return int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]


def read_body(
    stream: IO[bytes], content_length: int | None, content_encoding: str | None
) -> bytes:
    """Reads a request body of at most MAX_BODY_BYTES, inflating gzip.

    Never reads or inflates more than one byte past the limit, so neither a
    huge upload nor a gzip bomb costs more than the limit in memory.

    Raises:
        RpcError: INVALID_ARGUMENT when the body is too large or cannot be
            read, the encoding is not supported, or the gzip stream is
            corrupt or truncated.
    """
    if content_length is not None and content_length > MAX_BODY_BYTES:
        raise RpcError(Code.INVALID_ARGUMENT, MSG_BODY_TOO_LARGE)
    try:
        raw = stream.read(MAX_BODY_BYTES + 1)
    except Exception as exc:
        # The server's input stream fails on a malformed chunked body or a
        # client that hung up mid-upload (gunicorn raises its own IOError
        # subclasses): the request's fault, whatever the class.
        raise RpcError(Code.INVALID_ARGUMENT, MSG_BODY_UNREADABLE) from exc
    if len(raw) > MAX_BODY_BYTES:
        raise RpcError(Code.INVALID_ARGUMENT, MSG_BODY_TOO_LARGE)

    coding = (content_encoding or "identity").strip().lower()
    if coding == "identity":
        return raw
    if coding != "gzip":
        raise RpcError(Code.INVALID_ARGUMENT, "unsupported Content-Encoding")
    return _gunzip(raw)


def _gunzip(data: bytes) -> bytes:
    """Inflates one or more concatenated gzip members, bounded by the limit."""
    out = bytearray()
    while True:
        inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            out += inflater.decompress(data, MAX_BODY_BYTES + 1 - len(out))
        except zlib.error as exc:
            raise RpcError(Code.INVALID_ARGUMENT, "corrupt gzip body") from exc
        if len(out) > MAX_BODY_BYTES:
            raise RpcError(Code.INVALID_ARGUMENT, MSG_BODY_TOO_LARGE)
        if not inflater.eof:
            raise RpcError(Code.INVALID_ARGUMENT, "truncated gzip body")
        data = inflater.unused_data
        if not data:
            return bytes(out)


def decode(encoding: Encoding, body: bytes, message: Message) -> None:
    """Fills `message` from `body`.

    Raises:
        RpcError: INVALID_ARGUMENT when the body does not decode.
    """
    try:
        if encoding is Encoding.BINARY:
            message.ParseFromString(body)
        elif encoding is Encoding.JSON:
            # Unknown fields are skipped, as they are in binary, so that a
            # client built against a newer interface still gets through.
            json_format.Parse(body.decode("utf-8"), message, ignore_unknown_fields=True)
        else:
            text_format.Parse(body.decode("utf-8"), message)
    except Exception as exc:
        # Decoding touches nothing but the input, so whatever it raises
        # (DecodeError, ParseError, UnicodeError, RecursionError on deep
        # nesting) is the input's fault.
        raise RpcError(
            Code.INVALID_ARGUMENT, f"could not decode the {encoding.name.lower()} body"
        ) from exc


def encode(encoding: Encoding, message: Message) -> bytes:
    """Serializes a response message in the given encoding."""
    if encoding is Encoding.BINARY:
        return message.SerializeToString()
    if encoding is Encoding.JSON:
        return _JSON_PREFIX + json_format.MessageToJson(message).encode("utf-8")
    return text_format.MessageToString(message, as_utf8=True).encode("utf-8")


@dataclasses.dataclass(frozen=True)
class Response:
    """An HTTP response, ready for any web framework to send."""

    status: int
    headers: dict[str, str]
    body: bytes
    code: Code
    # What the method recorded about the call, for the edge's log line.
    log_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def error_response(code: Code, message: str, *, status: int | None = None) -> Response:
    """Builds a pRPC error: text/plain message, code header, matching status."""
    headers = {
        CODE_HEADER: str(int(code)),
        "Content-Type": _TEXT_PLAIN,
        **_NOSNIFF,
    }
    if status == 405:
        headers["Allow"] = "POST"
    return Response(
        status=status or HTTP_STATUS[code],
        headers=headers,
        body=message.encode("utf-8") + b"\n",
        code=code,
    )


ReqT = TypeVar("ReqT", bound=Message)


@dataclasses.dataclass(frozen=True)
class Method(Generic[ReqT]):
    """One pRPC method: how to decode its request and what implements it."""

    request_type: type[ReqT]
    response_type: type[Message]
    impl: Callable[[ReqT, Context], Message]


@dataclasses.dataclass(frozen=True)
class Request:
    """The parts of an HTTP request that pRPC looks at."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: IO[bytes]
    content_length: int | None = None


class Server:
    """Routes pRPC requests to registered methods and encodes the outcome.

    Args:
        methods: implementations keyed by "<service>/<method>", e.g.
            "dm.Deps/ActivateExecution".
        aliases: extra paths (such as "/") served by one of those methods.
    """

    def __init__(
        self,
        methods: Mapping[str, Method[Any]],
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self._routes = {f"/prpc/{name}": m for name, m in methods.items()}
        for path, name in (aliases or {}).items():
            self._routes[path] = methods[name]

    def handle(self, request: Request) -> Response:
        """Serves one request; never raises."""
        ctx = Context()
        try:
            response = self._handle(request, ctx)
        except RpcError as exc:
            response = error_response(exc.code, exc.message)
        except Exception:
            logger.exception("pRPC call failed")
            response = error_response(Code.INTERNAL, MSG_INTERNAL)
        return dataclasses.replace(response, log_fields=ctx.log_fields)

    def _handle(self, request: Request, ctx: Context) -> Response:
        # Route first, so that a wrong path or verb costs no parsing.
        method = self._routes.get(request.path)
        if method is None:
            if request.path.startswith("/prpc/"):
                return error_response(Code.UNIMPLEMENTED, MSG_UNKNOWN_METHOD)
            return error_response(Code.NOT_FOUND, MSG_NOT_FOUND)
        if request.method != "POST":
            return error_response(
                Code.UNIMPLEMENTED, MSG_METHOD_NOT_ALLOWED, status=405
            )

        # Headers, then the body, then the message: each can only be
        # INVALID_ARGUMENT, and the method is not called unless all pass.
        headers = request.headers
        started = time.monotonic()
        request_encoding = parse_content_type(headers.get("Content-Type"))
        response_encoding = parse_accept(headers.get("Accept"))
        timeout = parse_timeout(headers.get(TIMEOUT_HEADER))
        body = read_body(
            request.body, request.content_length, headers.get("Content-Encoding")
        )
        message = method.request_type()
        decode(request_encoding, body, message)

        # The call itself.
        if timeout is not None:
            ctx.deadline = started + timeout
        reply = method.impl(message, ctx)
        if not isinstance(reply, method.response_type):
            raise TypeError(f"method returned {type(reply).__name__}")

        return Response(
            status=200,
            headers={
                CODE_HEADER: "0",
                "Content-Type": response_encoding.value,
                **_NOSNIFF,
            },
            body=encode(response_encoding, reply),
            code=Code.OK,
        )
