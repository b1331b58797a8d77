"""Logging to stderr as hclog JSON lines, the format go-plugin re-logs at the right level in Nomad.

go-plugin parses each stderr line as JSON and needs ``@level`` to be one of trace, debug, info,
warn, error and ``@timestamp`` to carry exactly six fractional digits; anything else is logged
verbatim at debug. Writes never raise: once the Nomad agent dies, stderr is a broken pipe and the
plugin must keep serving its tasks.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

TRACE = 5
# Libraries whose debug lines would drown ours (grpc logs every event-loop lookup).
QUIET_LIBRARIES = ("grpc", "asyncio")
logging.addLevelName(TRACE, "TRACE")

# Fields of a LogRecord that are not user key/values.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def hclog_level(levelno: int) -> str:
    """The hclog level name for a Python level number (``warning`` is not an hclog level)."""
    if levelno <= TRACE:
        return "trace"
    if levelno <= logging.DEBUG:
        return "debug"
    if levelno <= logging.INFO:
        return "info"
    if levelno <= logging.WARNING:
        return "warn"
    return "error"


def timestamp(when: float) -> str:
    """RFC 3339 with exactly six fractional digits, the layout go-plugin accepts."""
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="microseconds")


class HclogFormatter(logging.Formatter):
    """One JSON object per record; ``extra=`` key/values become fields of the line."""

    def __init__(self, module: str) -> None:
        super().__init__()
        self.module = module

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "@level": hclog_level(record.levelno),
            "@message": record.getMessage(),
            "@module": f"{self.module}.{record.name}" if record.name != "root" else self.module,
            "@timestamp": timestamp(record.created),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class SafeStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that drops the line instead of raising when the stream is gone."""

    def handleError(self, record: logging.LogRecord) -> None:
        return


def setup(module: str, level: int = TRACE, stream: IO[str] | None = None) -> logging.Handler:
    """Route the root logger to ``stream`` (stderr) as hclog JSON; returns the handler."""
    handler = SafeStreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(HclogFormatter(module))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in QUIET_LIBRARIES:
        logging.getLogger(noisy).setLevel(max(level, logging.INFO))
    logging.raiseExceptions = False
    return handler
