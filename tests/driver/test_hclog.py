"""hclog JSON lines: what go-plugin parses to re-log a plugin's stderr at the right level."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from driver import hclog

GO_LAYOUT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture
def lines() -> tuple[logging.Logger, io.StringIO]:
    buf = io.StringIO()
    logger = logging.getLogger("xc-test-hclog")
    handler = hclog.SafeStreamHandler(buf)
    handler.setFormatter(hclog.HclogFormatter("xc"))
    logger.handlers = [handler]
    logger.setLevel(hclog.TRACE)
    logger.propagate = False
    return logger, buf


@pytest.mark.parametrize(
    ("level", "expected"),
    [(hclog.TRACE, "trace"), (logging.DEBUG, "debug"), (logging.INFO, "info"),
     (logging.WARNING, "warn"), (logging.ERROR, "error"), (logging.CRITICAL, "error")],
)
def test_levels_are_hclog_levels(
    lines: tuple[logging.Logger, io.StringIO], level: int, expected: str
) -> None:
    logger, buf = lines
    logger.log(level, "hello %s", "world", extra={"task_id": "a/b/c"})
    rec = json.loads(buf.getvalue())
    assert rec["@level"] == expected
    assert rec["@message"] == "hello world"
    assert rec["@module"] == "xc.xc-test-hclog"
    assert GO_LAYOUT.match(rec["@timestamp"]), rec["@timestamp"]
    assert rec["task_id"] == "a/b/c"


def test_timestamp_always_has_six_fractional_digits() -> None:
    for when in (0.0, 1700000000.0, 1700000000.5, 1700000000.000001):
        assert GO_LAYOUT.match(hclog.timestamp(when))


def test_exceptions_become_an_error_field(lines: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buf = lines
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed")
    rec = json.loads(buf.getvalue())
    assert rec["@level"] == "error" and "RuntimeError: boom" in rec["error"]
    assert "\n" not in buf.getvalue().rstrip("\n")  # one line per record


def test_broken_stderr_does_not_raise() -> None:
    class Broken(io.StringIO):
        def write(self, s: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    logger = logging.getLogger("xc-test-broken")
    handler = hclog.SafeStreamHandler(Broken())
    handler.setFormatter(hclog.HclogFormatter("xc"))
    logger.handlers = [handler]
    logger.propagate = False
    logger.error("the agent is gone")  # must not raise
