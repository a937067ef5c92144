"""Fixtures for tests that run against a real Firestore emulator.

The session starts one emulator on a free loopback port and stops it at the
end; each test gets its own collection, so tests never see each other's
documents.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Iterator

import functions_framework
import pytest

from dm import edge
from dm.service import ExecutionService
from dm.store import ExecutionKey, FirestoreStore, Settings
from tools.emulator import Emulator

PROJECT = "demo-dm-test"


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("emulator") / "firestore-emulator.log"
    instance = Emulator(log)
    instance.start()
    yield instance
    instance.stop()


@pytest.fixture
def collection() -> str:
    return f"t_{uuid.uuid4().hex}"


@pytest.fixture
def settings(emulator: Emulator, collection: str) -> Settings:
    return Settings(project=PROJECT, collection=collection, emulator_host=emulator.host)


@pytest.fixture
def store(settings: Settings) -> Iterator[FirestoreStore]:
    instance = FirestoreStore(settings)
    yield instance
    instance.close()


@pytest.fixture
def service(store: FirestoreStore) -> ExecutionService:
    return ExecutionService(store)


Scheduler = Callable[..., tuple[ExecutionKey, bytes]]


@pytest.fixture
def schedule(service: ExecutionService) -> Scheduler:
    """Creates a fresh Execution; returns its key and activation token."""

    def make(start_timeout: float | None = None) -> tuple[ExecutionKey, bytes]:
        key = ExecutionKey(f"q-{uuid.uuid4().hex}", 1, 1)
        return key, service.schedule(key, start_timeout)

    return make


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    """Points the function's environment at this test's collection."""
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", settings.project)
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", str(settings.emulator_host))
    monkeypatch.setenv("DM_EXECUTIONS_COLLECTION", settings.collection)
    monkeypatch.delenv("DM_FIRESTORE_DATABASE", raising=False)
    edge.reset()
    return settings


@pytest.fixture
def app(env: Settings):
    """The function as functions-framework serves it, main.py loaded."""
    application = functions_framework.create_app("activate_execution", "main.py")
    yield application
    edge.reset()


@pytest.fixture
def http(app):
    return app.test_client()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
