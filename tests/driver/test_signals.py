"""driver.driver.parse_signal: Nomad's kill_signal / SignalTask names -> numbers."""

from __future__ import annotations

import signal

import pytest

from driver.driver import parse_signal
from driver.errors import BadRequest
from driver.taskstore import name_from_task_id


@pytest.mark.parametrize(
    ("text", "want"),
    [("", signal.SIGINT), ("SIGTERM", signal.SIGTERM), ("TERM", signal.SIGTERM),
     ("sigusr1", signal.SIGUSR1), (" SIGHUP ", signal.SIGHUP), ("9", signal.SIGKILL)],
)
def test_parse_signal(text: str, want: int) -> None:
    assert parse_signal(text) == want


@pytest.mark.parametrize("text", ["SIGNOPE", "0", "999", "-1", "TERM9"])
def test_unknown_signal_is_a_bad_request_naming_it(text: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_signal(text)
    assert repr(text) in str(err.value)


@pytest.mark.parametrize(
    ("task_id", "name"),
    [("0b5c4d3e-1111-2222-3333-444455556666/web/1a2b3c4d", "xc-0b5c4d3e-web"),
     ("x", None), ("a/b", None), ("/web/1", None)],
)
def test_jail_name_from_task_id(task_id: str, name: str | None) -> None:
    assert name_from_task_id(task_id) == name
