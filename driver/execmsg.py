"""The messages of an exec: what the client sends, what the session sends back, and the outcome
of a command run to completion (a script check). Pure data; ``driver.convert_io`` maps them to
and from the wire and ``driver.execsession`` runs them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from driver.errors import BadRequest

Stream = Literal["stdout", "stderr"]


class ExecProtocolError(BadRequest):
    """The client broke the exec stream protocol (e.g. no setup message first)."""


# ---- what the client sends -----------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    task_id: str
    command: tuple[str, ...]
    tty: bool


@dataclass(frozen=True)
class StdinData:
    data: bytes


@dataclass(frozen=True)
class StdinClose:
    pass


@dataclass(frozen=True)
class Resize:
    width: int
    height: int


ExecInput = Setup | StdinData | StdinClose | Resize

# ---- what the session sends ----------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    stream: Stream
    data: bytes


@dataclass(frozen=True)
class OutputClosed:
    stream: Stream


@dataclass(frozen=True)
class Exited:
    exit_code: int


ExecOutput = Output | OutputClosed | Exited


@dataclass(frozen=True)
class ExecOutcome:
    """A finished script-check style exec. ``timed_out``: killed at the deadline."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    signal: int = 0


def check_setup(setup: Setup) -> Setup:
    if not setup.task_id:
        raise ExecProtocolError("exec setup: task_id is empty; name the task to exec into")
    if not setup.command or not setup.command[0]:
        raise ExecProtocolError("exec setup: command is empty; give the program to run")
    return setup


async def first_setup(
    messages: AsyncIterator[tuple[ExecInput, ...]],
) -> tuple[Setup, list[ExecInput]]:
    """The setup the first message must carry, and anything else that message held."""
    try:
        first = await anext(messages)
    except StopAsyncIteration:
        raise ExecProtocolError(
            "exec stream closed before its setup message; the first message must be setup"
        ) from None
    setups = [m for m in first if isinstance(m, Setup)]
    if not setups:
        raise ExecProtocolError("first message should always be setup (task_id, command, tty)")
    return check_setup(setups[0]), [m for m in first if not isinstance(m, Setup)]
