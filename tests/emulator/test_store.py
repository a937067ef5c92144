"""FirestoreStore against the emulator."""

from __future__ import annotations

import datetime
import threading

import pytest
from google.api_core import exceptions as api_exceptions

from dm.store import (
    AlreadyExists,
    ExecutionKey,
    FirestoreStore,
    Settings,
    StoreContention,
    StoreError,
    StoreUnavailable,
)

KEY = ExecutionKey("quest", 1, 1)
T = 5.0


def test_get_missing_is_none(store):
    assert store.get(KEY, timeout=T) is None


def test_create_then_get_round_trips_every_kind(store):
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=datetime.UTC)
    fields = {"i": 7, "b": True, "s": "text", "y": b"\x00\xff", "t": when, "n": None}
    store.create(KEY, fields, timeout=T)
    assert dict(store.get(KEY, timeout=T).fields) == fields


def test_create_refuses_existing(store):
    store.create(KEY, {"v": 1}, timeout=T)
    with pytest.raises(AlreadyExists):
        store.create(KEY, {"v": 2}, timeout=T)
    assert store.get(KEY, timeout=T).fields["v"] == 1


def test_update_if_unchanged_applies_and_keeps_other_fields(store):
    store.create(KEY, {"a": 1, "b": 2}, timeout=T)
    snap = store.get(KEY, timeout=T)
    assert store.update_if_unchanged(KEY, snap.version, {"b": 3}, timeout=T) is True
    after = store.get(KEY, timeout=T)
    assert dict(after.fields) == {"a": 1, "b": 3}
    assert after.version != snap.version


def test_update_if_unchanged_refuses_stale_version(store):
    store.create(KEY, {"a": 1}, timeout=T)
    stale = store.get(KEY, timeout=T)
    assert store.update_if_unchanged(KEY, stale.version, {"a": 2}, timeout=T)
    assert store.update_if_unchanged(KEY, stale.version, {"a": 3}, timeout=T) is False
    assert store.get(KEY, timeout=T).fields["a"] == 2


def test_update_if_unchanged_races_have_one_winner(store):
    store.create(KEY, {"owner": 0}, timeout=T)
    version = store.get(KEY, timeout=T).version
    results: dict[int, bool] = {}
    barrier = threading.Barrier(20)

    def race(n: int) -> None:
        barrier.wait()
        results[n] = store.update_if_unchanged(KEY, version, {"owner": n}, timeout=T)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(1, 21)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [n for n, won in results.items() if won]
    assert len(results) == 20 and len(winners) == 1
    assert store.get(KEY, timeout=T).fields["owner"] == winners[0]


def test_collections_are_separate(settings):
    other = FirestoreStore(
        Settings(
            settings.project,
            collection=settings.collection + "x",
            emulator_host=settings.emulator_host,
        )
    )
    mine = FirestoreStore(settings)
    mine.create(KEY, {"v": 1}, timeout=T)
    assert other.get(KEY, timeout=T) is None


def test_document_lives_at_hashed_id_in_configured_collection(store, settings):
    store.create(ExecutionKey("..", 1, 1), {"v": 1}, timeout=T)
    database = f"projects/{settings.project}/databases/(default)"
    name = f"{database}/documents/{settings.collection}/"
    doc = store._api.get_document(
        request={"name": name + ExecutionKey("..", 1, 1).document_id()},
        metadata=store._metadata,
    )
    assert doc.fields["v"].integer_value == 1


@pytest.mark.parametrize(
    "error, kind",
    [
        (api_exceptions.Aborted("x"), StoreContention),
        (api_exceptions.ServiceUnavailable("x"), StoreUnavailable),
        (api_exceptions.DeadlineExceeded("x"), StoreUnavailable),
        (api_exceptions.InvalidArgument("x"), StoreUnavailable),
        (api_exceptions.PermissionDenied("x"), StoreUnavailable),
        (api_exceptions.NotFound("database"), StoreUnavailable),
        (api_exceptions.InternalServerError("x"), StoreUnavailable),
        (RuntimeError("library bug"), StoreUnavailable),
    ],
)
def test_commit_errors_become_store_errors(store, mocker, error, kind):
    store.create(KEY, {"a": 1}, timeout=T)
    snap = store.get(KEY, timeout=T)
    if isinstance(error, api_exceptions.NotFound):
        # NotFound at begin (e.g. an unknown database) is a storage fault.
        mocker.patch.object(store._api, "begin_transaction", side_effect=error)
    else:
        mocker.patch.object(store._api, "commit", side_effect=error)
    with pytest.raises(kind):
        store.update_if_unchanged(KEY, snap.version, {"a": 2}, timeout=T)


@pytest.mark.parametrize(
    "error",
    [
        api_exceptions.InvalidArgument("x"),
        api_exceptions.PermissionDenied("x"),
        api_exceptions.NotFound("database"),
        ValueError("x"),
    ],
)
def test_get_errors_become_store_errors(store, mocker, error):
    mocker.patch.object(store._api, "batch_get_documents", side_effect=error)
    with pytest.raises(StoreError):
        store.get(KEY, timeout=T)


@pytest.mark.parametrize(
    "env, message",
    [
        ({}, "GOOGLE_CLOUD_PROJECT is not set"),
        (
            {"GOOGLE_CLOUD_PROJECT": "p", "DM_EXECUTIONS_COLLECTION": "a/b"},
            "collection",
        ),
        (
            {"GOOGLE_CLOUD_PROJECT": "p", "DM_EXECUTIONS_COLLECTION": "__x__"},
            "collection",
        ),
        # Non-ASCII digits pass str.isdigit() but not int().
        ({"GOOGLE_CLOUD_PROJECT": "p", "DM_FINISHED_TTL_DAYS": "\u00b2"}, "TTL"),
        ({"GOOGLE_CLOUD_PROJECT": "p", "DM_FINISHED_TTL_DAYS": "\u0661"}, "TTL"),
        (
            {"GOOGLE_CLOUD_PROJECT": "p", "FIRESTORE_EMULATOR_HOST": "h:\u00b3"},
            "EMULATOR",
        ),
    ],
)
def test_settings_from_env_rejects_bad_configuration(env, message):
    with pytest.raises(StoreError, match=message):
        Settings.from_env(env)


def test_settings_from_env_defaults():
    assert Settings.from_env({"GOOGLE_CLOUD_PROJECT": "p"}) == Settings(
        project="p", database="(default)", collection="dm_executions"
    )
