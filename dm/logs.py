"""Structured log lines on stdout, in the JSON form Cloud Logging reads.

Cloud Functions (2nd gen) hands every stdout line to Cloud Logging; a line
that is a JSON object becomes a structured entry whose `severity` and
`message` fields are understood, and whose `logging.googleapis.com/trace`
field ties it to the request's trace. Everything else lands in
`jsonPayload`.

The standard library does this in a few dozen lines, at no import cost
once the function is loaded; google-cloud-logging would add about 30 ms to
a cold start (README, "Logs") for the same lines.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

TRACE = "logging.googleapis.com/trace"
SPAN_ID = "logging.googleapis.com/spanId"
TRACE_SAMPLED = "logging.googleapis.com/trace_sampled"

# The request's trace fields, added to every line logged while it runs.
_request: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "dm_log_request", default=None
)

# X-Cloud-Trace-Context: TRACE_ID[/SPAN_ID][;o=OPTIONS], SPAN_ID decimal.
_CLOUD_TRACE_RE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=([0-9]+))?")
# traceparent (W3C): VERSION-TRACE_ID-PARENT_ID-FLAGS, all hex.
_TRACEPARENT_RE = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:-.*)?"
)


def trace_fields(headers: Mapping[str, str], project: str | None) -> dict[str, Any]:
    """Cloud Logging's trace fields for a request, from `traceparent` or
    `X-Cloud-Trace-Context`; empty when neither is usable or no project is
    known."""
    if not project:
        return {}
    trace_id = span_id = None
    sampled = False
    parent = _TRACEPARENT_RE.fullmatch(headers.get("traceparent", "").strip())
    if parent and parent.group(1) != "ff":
        trace_id, span_id = parent.group(2), parent.group(3)
        sampled = bool(int(parent.group(4), 16) & 1)
    else:
        cloud = _CLOUD_TRACE_RE.fullmatch(
            headers.get("X-Cloud-Trace-Context", "").strip()
        )
        if cloud:
            trace_id = cloud.group(1).lower()
            if cloud.group(2) and int(cloud.group(2)) < 2**64:
                span_id = f"{int(cloud.group(2)):016x}"
            sampled = cloud.group(3) == "1"
    if trace_id is None or trace_id == "0" * 32:
        return {}
    fields: dict[str, Any] = {
        TRACE: f"projects/{project}/traces/{trace_id}",
        TRACE_SAMPLED: sampled,
    }
    if span_id and span_id != "0" * 16:
        fields[SPAN_ID] = span_id
    return fields


def bind(fields: Mapping[str, Any]) -> contextvars.Token[Mapping[str, Any] | None]:
    """Adds `fields` to every line logged in this context until `unbind`."""
    return _request.set(fields)


def unbind(token: contextvars.Token[Mapping[str, Any] | None]) -> None:
    _request.reset(token)


class JsonLineHandler(logging.Handler):
    """Writes each record as one JSON line to the current `sys.stdout`.

    Fields passed as `extra={"json_fields": {...}}` go into the entry as
    they are. The stream is looked up at each write, so that whatever
    stands in for stdout at the time (a test's capture) gets the line.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = format_record(record)
            stream = sys.stdout
            stream.write(line + "\n")
            stream.flush()
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


def format_record(record: logging.LogRecord) -> str:
    """The JSON line for one record."""
    message = record.getMessage()
    if record.exc_info:
        # Cloud Error Reporting finds a stack trace inside `message`.
        message += "\n" + logging.Formatter().formatException(record.exc_info)
    entry: dict[str, Any] = {"severity": record.levelname, "message": message}
    fields = getattr(record, "json_fields", None)
    if fields:
        entry.update(fields)
    else:
        entry["logger"] = record.name
    entry.update(_request.get() or {})
    return json.dumps(entry, default=str, separators=(", ", ": "))


def install(name: str = "dm") -> logging.Logger:
    """Sends the named logger's records (INFO and up) to stdout as JSON
    lines; calling it again changes nothing."""
    logger = logging.getLogger(name)
    if not any(isinstance(h, JsonLineHandler) for h in logger.handlers):
        logger.addHandler(JsonLineHandler())
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return logger
