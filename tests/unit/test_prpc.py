"""The pRPC codec and router, with a recording method in place of DM."""

from __future__ import annotations

import gzip
import io
import json
import zlib

import pytest
from google.protobuf import empty_pb2

from dm import prpc
from dm.proto import activate_execution_pb2
from dm.rpc import Code, Context, RpcError
from tests.support import CONTENT_TYPES, encode_req, make_req

PATH = "/prpc/dm.Deps/ActivateExecution"


class Recorder:
    def __init__(self, outcome=None):
        self.calls: list[
            tuple[activate_execution_pb2.ActivateExecutionReq, Context]
        ] = []
        self.outcome = outcome

    def __call__(self, req, ctx):
        self.calls.append((req, ctx))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome if self.outcome is not None else empty_pb2.Empty()


def make_server(recorder: Recorder) -> prpc.Server:
    method = prpc.Method(
        activate_execution_pb2.ActivateExecutionReq, empty_pb2.Empty, recorder
    )
    return prpc.Server(
        {"dm.Deps/ActivateExecution": method},
        aliases={"/": "dm.Deps/ActivateExecution"},
    )


def call(server, body=b"", headers=None, method="POST", path=PATH, length=None):
    return server.handle(
        prpc.Request(
            method=method,
            path=path,
            headers=headers or {},
            body=io.BytesIO(body),
            content_length=length,
        )
    )


def assert_prpc_error(response, code: Code, status: int | None = None):
    assert response.headers[prpc.CODE_HEADER] == str(int(code))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.status == (status or prpc.HTTP_STATUS[code])
    assert response.body.strip()


# Content-Type


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, prpc.Encoding.BINARY),
        ("", prpc.Encoding.BINARY),
        ("application/prpc; encoding=binary", prpc.Encoding.BINARY),
        ("application/prpc", prpc.Encoding.BINARY),
        ("application/prpc; encoding=json", prpc.Encoding.JSON),
        ("application/prpc; encoding=text", prpc.Encoding.TEXT),
        ("application/json", prpc.Encoding.JSON),
        ("application/json; charset=utf-8", prpc.Encoding.JSON),
        ("Application/JSON", prpc.Encoding.JSON),
        ('application/prpc; encoding="binary"', prpc.Encoding.BINARY),
    ],
)
def test_parse_content_type_accepts_prpc_media_types(value, expected):
    assert prpc.parse_content_type(value) is expected


@pytest.mark.parametrize(
    "value",
    ["text/html", "application/xml", "application/prpc; encoding=yaml", "*/*"],
)
def test_parse_content_type_rejects_others(value):
    with pytest.raises(RpcError) as info:
        prpc.parse_content_type(value)
    assert info.value.code is Code.INVALID_ARGUMENT


# Accept


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, prpc.Encoding.BINARY),
        ("*/*", prpc.Encoding.BINARY),
        ("application/*", prpc.Encoding.BINARY),
        ("application/json", prpc.Encoding.JSON),
        ("application/prpc; encoding=text", prpc.Encoding.TEXT),
        ("text/html, application/json", prpc.Encoding.JSON),
        (
            "application/json;q=0.5, application/prpc; encoding=binary",
            prpc.Encoding.BINARY,
        ),
        (
            "application/json;q=0.9, application/prpc; encoding=text;q=0.1",
            prpc.Encoding.JSON,
        ),
        ("application/json;q=0, */*;q=0.1", prpc.Encoding.BINARY),
        (
            "application/json;q=bogus, application/prpc; encoding=text",
            prpc.Encoding.TEXT,
        ),
    ],
)
def test_parse_accept_picks_best_supported(value, expected):
    assert prpc.parse_accept(value) is expected


@pytest.mark.parametrize("value", ["text/html", "application/json;q=0", "image/*"])
def test_parse_accept_rejects_when_nothing_supported(value):
    with pytest.raises(RpcError) as info:
        prpc.parse_accept(value)
    assert info.value.code is Code.INVALID_ARGUMENT


# X-Prpc-Grpc-Timeout


@pytest.mark.parametrize(
    "value, seconds",
    [
        ("1H", 3600.0),
        ("2M", 120.0),
        ("3S", 3.0),
        ("1500m", 1.5),
        ("250000u", 0.25),
        ("5000000n", 0.005),
        ("0S", 0.0),
        ("99999999S", 99999999.0),
    ],
)
def test_parse_timeout_units(value, seconds):
    assert prpc.parse_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["", "5", "S", "-1S", "1.5S", "5s", "123456789S", "5 S", "1Sx"]
)
def test_parse_timeout_rejects_malformed(value):
    with pytest.raises(RpcError) as info:
        prpc.parse_timeout(value)
    assert info.value.code is Code.INVALID_ARGUMENT


def test_parse_timeout_absent_is_none():
    assert prpc.parse_timeout(None) is None


# Bodies


def test_read_body_at_limit_is_accepted():
    body = b"x" * prpc.MAX_BODY_BYTES
    assert prpc.read_body(io.BytesIO(body), None, None) == body


def test_read_body_over_limit_is_rejected_without_content_length():
    with pytest.raises(RpcError) as info:
        prpc.read_body(io.BytesIO(b"x" * (prpc.MAX_BODY_BYTES + 1)), None, None)
    assert info.value.message == prpc.MSG_BODY_TOO_LARGE


def test_read_body_rejects_declared_oversize_before_reading():
    class Exploding(io.RawIOBase):
        def read(self, n=-1):
            raise AssertionError("the body was read")

    with pytest.raises(RpcError):
        prpc.read_body(Exploding(), prpc.MAX_BODY_BYTES + 1, None)


@pytest.mark.parametrize("error", [ValueError, OSError, EOFError])
def test_read_body_that_cannot_be_read_is_invalid_argument(error):
    """A broken chunked body or a client gone mid-upload makes the server's
    input stream raise; that is the request's fault, not an internal error."""

    class Broken(io.RawIOBase):
        def read(self, n=-1):
            raise error("invalid chunk size")

    with pytest.raises(RpcError) as info:
        prpc.read_body(Broken(), None, None)
    assert info.value.code is Code.INVALID_ARGUMENT
    assert info.value.message == prpc.MSG_BODY_UNREADABLE
    assert "chunk" not in info.value.message


def test_read_body_gunzips():
    assert prpc.read_body(io.BytesIO(gzip.compress(b"hello")), None, "gzip") == b"hello"


def test_read_body_gunzips_concatenated_members():
    data = gzip.compress(b"hel") + gzip.compress(b"lo")
    assert prpc.read_body(io.BytesIO(data), None, "GZIP") == b"hello"


def test_read_body_stops_inflating_a_gzip_bomb_at_the_limit(monkeypatch):
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < prpc.MAX_BODY_BYTES
    produced = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self, *a, **kw):
            self._obj = real(*a, **kw)

        def decompress(self, data, max_length=0):
            out = self._obj.decompress(data, max_length)
            produced.append(len(out))
            return out

        def __getattr__(self, name):
            return getattr(self._obj, name)

    monkeypatch.setattr(prpc.zlib, "decompressobj", Spy)
    with pytest.raises(RpcError) as info:
        prpc.read_body(io.BytesIO(bomb), None, "gzip")
    assert info.value.message == prpc.MSG_BODY_TOO_LARGE
    assert max(produced) <= prpc.MAX_BODY_BYTES + 1


def test_read_body_gzip_output_just_under_limit_is_accepted():
    data = b"y" * prpc.MAX_BODY_BYTES
    assert prpc.read_body(io.BytesIO(gzip.compress(data)), None, "gzip") == data


@pytest.mark.parametrize(
    "data",
    [b"not gzip at all", gzip.compress(b"hello")[:-6], gzip.compress(b"x") + b"junk"],
    ids=["corrupt", "truncated", "trailing-junk"],
)
def test_read_body_rejects_bad_gzip(data):
    with pytest.raises(RpcError) as info:
        prpc.read_body(io.BytesIO(data), None, "gzip")
    assert info.value.code is Code.INVALID_ARGUMENT


def test_read_body_rejects_unknown_content_encoding():
    with pytest.raises(RpcError):
        prpc.read_body(io.BytesIO(b""), None, "br")


# Whole calls


@pytest.mark.parametrize("encoding", ["binary", "json", "text"])
def test_server_decodes_each_request_encoding(encoding):
    recorder = Recorder()
    req = make_req()
    response = call(
        make_server(recorder),
        encode_req(req, encoding),
        {"Content-Type": CONTENT_TYPES[encoding]},
    )
    assert response.code is Code.OK
    assert recorder.calls[0][0] == req


@pytest.mark.parametrize(
    "accept, content_type, body",
    [
        (None, "application/prpc; encoding=binary", b""),
        ("application/json", "application/json", b")]}'\n{}"),
        ("application/prpc; encoding=text", "application/prpc; encoding=text", b""),
    ],
)
def test_server_encodes_each_response_encoding(accept, content_type, body):
    headers = {"Accept": accept} if accept else {}
    response = call(make_server(Recorder()), make_req().SerializeToString(), headers)
    assert response.status == 200
    assert response.headers == {
        prpc.CODE_HEADER: "0",
        "Content-Type": content_type,
        "X-Content-Type-Options": "nosniff",
    }
    assert response.body == body


def test_server_serves_the_bare_path_like_the_prpc_path():
    recorder = Recorder()
    response = call(make_server(recorder), make_req().SerializeToString(), path="/")
    assert response.code is Code.OK and len(recorder.calls) == 1


def test_server_gzip_request():
    recorder = Recorder()
    req = make_req()
    response = call(
        make_server(recorder),
        gzip.compress(req.SerializeToString()),
        {"Content-Encoding": "gzip"},
    )
    assert response.code is Code.OK and recorder.calls[0][0] == req


@pytest.mark.parametrize(
    "path, code, status",
    [
        ("/prpc/dm.Deps/WalkGraph", Code.UNIMPLEMENTED, 501),
        ("/prpc/other.Service/ActivateExecution", Code.UNIMPLEMENTED, 501),
        ("/prpc/", Code.UNIMPLEMENTED, 501),
        ("/elsewhere", Code.NOT_FOUND, 404),
        ("/prpc/dm.Deps/ActivateExecution/", Code.UNIMPLEMENTED, 501),
    ],
)
def test_server_unknown_routes(path, code, status):
    recorder = Recorder()
    response = call(make_server(recorder), make_req().SerializeToString(), path=path)
    assert_prpc_error(response, code, status)
    assert recorder.calls == []


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
def test_server_rejects_non_post(method):
    recorder = Recorder()
    response = call(make_server(recorder), method=method)
    assert_prpc_error(response, Code.UNIMPLEMENTED, 405)
    assert response.headers["Allow"] == "POST"
    assert recorder.calls == []


@pytest.mark.parametrize(
    "headers, body",
    [
        ({"Content-Type": "text/html"}, b""),
        ({"Accept": "text/html"}, b""),
        ({prpc.TIMEOUT_HEADER: "soon"}, b""),
        ({}, b"\xff\xff\xff"),
        ({"Content-Type": "application/json"}, b"{not json"),
        ({"Content-Type": "application/json"}, b"\xff\xfe"),
        ({"Content-Type": "application/json"}, b'{"auth": 5}'),
        ({"Content-Type": "application/prpc; encoding=text"}, b"nonsense {"),
        ({"Content-Encoding": "gzip"}, b"\x1f\x8b broken"),
    ],
)
def test_server_rejects_bad_requests_before_calling(headers, body):
    recorder = Recorder()
    response = call(make_server(recorder), body, headers)
    assert_prpc_error(response, Code.INVALID_ARGUMENT)
    assert recorder.calls == []


def test_server_json_ignores_unknown_fields():
    recorder = Recorder()
    req = make_req()
    doc = json.loads(encode_req(req, "json"))
    doc["fieldFromTheFuture"] = 1
    response = call(
        make_server(recorder),
        json.dumps(doc).encode(),
        {"Content-Type": "application/json"},
    )
    assert response.code is Code.OK and recorder.calls[0][0] == req


def test_server_passes_deadline_from_timeout_header():
    recorder = Recorder()
    call(make_server(recorder), b"", {prpc.TIMEOUT_HEADER: "5S"})
    remaining = recorder.calls[0][1].remaining()
    assert 4.0 < remaining <= 5.0


def test_server_method_error_becomes_prpc_error():
    response = call(make_server(Recorder(RpcError(Code.ALREADY_EXISTS, "taken"))))
    assert_prpc_error(response, Code.ALREADY_EXISTS)
    assert response.body == b"taken\n"


def test_server_crash_is_internal_and_hides_details(caplog):
    response = call(make_server(Recorder(KeyError("secret-internal-detail"))))
    assert_prpc_error(response, Code.INTERNAL)
    assert b"secret" not in response.body and b"KeyError" not in response.body
    assert "pRPC call failed" in caplog.text


def test_server_wrong_reply_type_is_internal():
    wrong = activate_execution_pb2.ActivateExecutionReq()
    response = call(make_server(Recorder(wrong)))
    assert_prpc_error(response, Code.INTERNAL)


def test_server_returns_what_the_method_logged():
    def impl(req, ctx):
        ctx.log_fields["execution"] = "x|1|1"
        return empty_pb2.Empty()

    server = prpc.Server(
        {
            "dm.Deps/ActivateExecution": prpc.Method(
                activate_execution_pb2.ActivateExecutionReq, empty_pb2.Empty, impl
            )
        }
    )
    assert call(server).log_fields == {"execution": "x|1|1"}
