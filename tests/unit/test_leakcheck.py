"""The suite-wide token check in tests/leakcheck.py can fail."""

from __future__ import annotations

import base64
import hashlib
import logging
import secrets

from tests import leakcheck


def test_find_leaks_sees_every_form():
    secret = bytes(range(40))
    for form in leakcheck.forms(secret):
        assert leakcheck.find_leaks([f'{{"message": "x {form} y"}}'], [secret])
    digest = hashlib.sha256(secret).digest()
    assert leakcheck.find_leaks([base64.b64encode(digest).decode()], [secret])
    assert leakcheck.find_leaks([f"got {secret!r}"], [secret])
    assert not leakcheck.find_leaks(['{"message": "clean"}'], [secret])


def test_find_leaks_sees_text_tokens():
    token = "eyJhbGciOiJSUzI1NiJ9.identity-token-for-a-test"
    assert leakcheck.find_leaks([f"Authorization: Bearer {token}"], [token.encode()])


def test_session_capture_sees_product_log_records():
    registry = leakcheck.REGISTRY
    secret = secrets.token_bytes(32)  # registered by the session's wrapper
    assert secret in registry.secrets
    try:
        logging.getLogger("dm.edge").warning("careless %s", secret.hex())
        assert any(form == secret.hex() for form, _ in registry.leaks())
    finally:
        registry.forget(secret)
    assert not any(form == secret.hex() for form, _ in registry.leaks())


def test_output_capture_keeps_only_json_log_lines():
    registry = leakcheck.Registry()
    secret = secrets.token_bytes(32)
    registry.register(secret)
    registry.add_output(f'{{"id": 1, "token": "{secret.hex()}"}}\nplain {secret.hex()}')
    assert registry.leaks() == []
    registry.add_output(f'{{"severity": "INFO", "message": "{secret.hex()}"}}')
    assert len(registry.leaks()) == 1
