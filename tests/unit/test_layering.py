"""The architecture, enforced: which module may import which.

Imports go one way (main -> edge -> {prpc, service} -> rpc, service ->
store); only the edge knows the web framework, and only the store knows
Firestore and gRPC. Function-level imports count too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Project modules each module may import (dm.proto.* counts as dm.proto).
ALLOWED_PROJECT = {
    "main": {"dm.edge"},
    "dm.edge": {"dm.logs", "dm.prpc", "dm.proto", "dm.rpc", "dm.service", "dm.store"},
    "dm.prpc": {"dm.rpc"},
    "dm.rpc": set(),
    "dm.logs": set(),
    "dm.service": {"dm.proto", "dm.rpc", "dm.store"},
    "dm.store": set(),
    "dm.cli": {"dm.proto", "dm.rpc", "dm.service", "dm.store"},
    "dm.__main__": {"dm.cli"},
}
WEB = ("flask", "werkzeug", "functions_framework")
STORAGE = ("google.cloud", "google.api_core", "grpc")


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    return ".".join(rel.parts)


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "dm":
                names.update(f"dm.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
    return names


def _project(name: str) -> str | None:
    if name.startswith("dm.proto"):
        return "dm.proto"
    if name == "dm" or name.startswith("dm."):
        return name
    return None


MODULES = sorted(
    [ROOT / "main.py"]
    + [p for p in (ROOT / "dm").glob("*.py") if p.name != "__init__.py"]
)


def test_every_module_has_a_rule():
    assert {_module_name(p) for p in MODULES} == set(ALLOWED_PROJECT)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_imports_go_one_way(path):
    name = _module_name(path)
    used = {_project(i) for i in _imports(path)} - {None}
    assert used <= ALLOWED_PROJECT[name], used - ALLOWED_PROJECT[name]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_only_the_edge_knows_the_web_framework(path):
    web = {i for i in _imports(path) if i.split(".")[0] in WEB}
    if _module_name(path) in ("main", "dm.edge"):
        return
    assert web == set()


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_only_the_store_knows_firestore_and_grpc(path):
    storage = {i for i in _imports(path) if i.startswith(STORAGE)}
    if _module_name(path) == "dm.store":
        assert storage, "the store should be the one that talks to Firestore"
        return
    assert storage == set()
