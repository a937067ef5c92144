"""Settings shared by every test, pure or not."""

import logging
import os
import secrets

import pytest

from tests import leakcheck

# Keep every test on this machine: if anything ever asked Google's auth
# library for default credentials, the metadata-server probe would go to a
# closed loopback port instead of the link-local metadata address.
os.environ["GCE_METADATA_HOST"] = "127.0.0.1:9"
os.environ["GCE_METADATA_IP"] = "127.0.0.1:9"
os.environ["NO_GCE_CHECK"] = "True"
os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)


@pytest.fixture(scope="session", autouse=True)
def no_token_in_any_log_line():
    """Fails the session when any token a test used, or its digest, shows up
    in any log record or JSON log line of the whole run (tests/leakcheck.py
    says how)."""
    registry = leakcheck.REGISTRY
    handler = leakcheck.CaptureHandler(registry)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    original = secrets.token_bytes

    def recording_token_bytes(nbytes=None):
        value = original(nbytes)
        registry.register(value)
        return value

    secrets.token_bytes = recording_token_bytes
    yield registry
    secrets.token_bytes = original
    root.removeHandler(handler)
    root.setLevel(old_level)
    leaks = registry.leaks()
    if leaks:
        shown = "\n".join(f"  {line[:300]}" for _, line in leaks[:10])
        pytest.fail(f"{len(leaks)} token(s) found in log lines:\n{shown}")


def pytest_runtest_logreport(report):
    # What a test printed and did not read back itself: keep its JSON log
    # lines for the check above.
    for _, text in report.sections:
        leakcheck.REGISTRY.add_output(text)
