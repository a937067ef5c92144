"""The committed generated code matches the .proto files."""

from __future__ import annotations

import pathlib
import subprocess
import sys

from dm.proto import activate_execution_pb2, graph_data_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts/gen_protos.py"), str(tmp_path)], check=True
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2.py*"))
    assert [str(p) for p in generated] == [
        "dm/proto/activate_execution_pb2.py",
        "dm/proto/activate_execution_pb2.pyi",
        "dm/proto/graph_data_pb2.py",
        "dm/proto/graph_data_pb2.pyi",
    ]
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), (
            f"{rel} is stale"
        )


def test_wire_numbers_match_upstream():
    req = activate_execution_pb2.ActivateExecutionReq.DESCRIPTOR
    assert req.full_name == "dm.ActivateExecutionReq"
    assert {f.name: f.number for f in req.fields} == {"auth": 1, "execution_token": 2}
    auth = graph_data_pb2.Execution.Auth.DESCRIPTOR
    assert auth.full_name == "dm.Execution.Auth"
    assert {f.name: f.number for f in auth.fields} == {"id": 1, "token": 2}
    ident = graph_data_pb2.Execution.ID.DESCRIPTOR
    assert {f.name: (f.number, f.type) for f in ident.fields} == {
        "quest": (1, ident.fields_by_name["quest"].TYPE_STRING),
        "attempt": (2, ident.fields_by_name["attempt"].TYPE_UINT32),
        "id": (3, ident.fields_by_name["id"].TYPE_UINT32),
    }
    assert dict(graph_data_pb2.Execution.State.items()) == {
        "SCHEDULING": 0,
        "RUNNING": 1,
        "STOPPING": 2,
        "FINISHED": 3,
        "ABNORMAL_FINISHED": 4,
    }


def test_upstream_bytes_decode():
    # Hand-assembled wire bytes, as an upstream client would send them:
    # auth{id{quest:"qq" attempt:2 id:3} token:"tk"} execution_token:"x"*32
    ident = b"\x0a\x02qq\x10\x02\x18\x03"
    auth = b"\x0a" + bytes([len(ident)]) + ident + b"\x12\x02tk"
    wire = b"\x0a" + bytes([len(auth)]) + auth + b"\x12\x20" + b"x" * 32
    req = activate_execution_pb2.ActivateExecutionReq.FromString(wire)
    assert (req.auth.id.quest, req.auth.id.attempt, req.auth.id.id) == ("qq", 2, 3)
    assert req.auth.token == b"tk" and req.execution_token == b"x" * 32
