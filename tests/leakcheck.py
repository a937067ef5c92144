"""A suite-wide check that no token used by a test ever reaches a log line.

Tests register the tokens they use (`register`); `secrets.token_bytes` is
wrapped for the whole session so that every token the product or a test
makes is registered too. Every log record of the session, and every JSON
log line a test's stdout carried, is kept; at the end each token is looked
for in every form a careless log line could hold it: raw, hex, base64
(standard and URL-safe), Python's bytes repr, and its SHA-256 digest in the
same forms.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Iterable

# Shorter values are too likely to occur by chance; every real token here
# is at least 32 bytes.
MIN_SECRET_BYTES = 16


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.secrets: set[bytes] = set()
        self.lines: list[str] = []

    def register(self, value: bytes | str) -> None:
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        if len(data) >= MIN_SECRET_BYTES:
            with self._lock:
                self.secrets.add(data)

    def forget(self, value: bytes) -> None:
        with self._lock:
            self.secrets.discard(value)

    def add_line(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def add_output(self, text: str) -> None:
        """Keeps the JSON log lines (objects with a `severity`) of a
        captured output; other output, such as the Auth JSON that
        `schedule` prints on purpose, is not a log line."""
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and "severity" in entry:
                self.add_line(line)

    def leaks(self) -> list[tuple[str, str]]:
        """(form, line) for every registered token found in a kept line."""
        with self._lock:
            lines = list(self.lines)
            secrets = list(self.secrets)
        return find_leaks(lines, secrets)


def forms(secret: bytes) -> set[str]:
    """The strings a log line would hold if it carried `secret`."""
    out = set()
    for data in (secret, hashlib.sha256(secret).digest()):
        out.add(data.hex())
        out.add(data.hex().upper())
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(data).decode("ascii")
            out.add(text)
            out.add(text.rstrip("="))
        out.add(repr(data)[2:-1])  # inside b'...'
        out.add(json.dumps(data.decode("latin-1"))[1:-1])
    try:
        out.add(secret.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    return {form for form in out if len(form) >= MIN_SECRET_BYTES}


def find_leaks(lines: Iterable[str], secrets: Iterable[bytes]) -> list[tuple[str, str]]:
    text = "\n".join(lines)
    hits = []
    for secret in secrets:
        for form in forms(secret):
            at = text.find(form)
            if at >= 0:
                start = text.rfind("\n", 0, at) + 1
                end = text.find("\n", at)
                hits.append((form, text[start : end if end >= 0 else None]))
    return hits


class CaptureHandler(logging.Handler):
    """Keeps every log record of the session, formatted as the product's
    JSON line and as plain text with its traceback."""

    def __init__(self, registry: Registry) -> None:
        super().__init__(logging.DEBUG)
        self._registry = registry

    def emit(self, record: logging.LogRecord) -> None:
        from dm import logs

        self._registry.add_line(logs.format_record(record))
        self._registry.add_line(logging.Formatter().format(record))


REGISTRY = Registry()
