"""driver.execsession against real runc containers through ``jails`` (no plugin, no gRPC)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from driver.execmsg import (
    ExecInput,
    ExecOutput,
    ExecProtocolError,
    Exited,
    Output,
    OutputClosed,
    Resize,
    Setup,
    StdinClose,
    StdinData,
    first_setup,
)
from driver.execsession import ExecSession, exec_start, pump_inputs, run_to_completion
from jails import JailSpec, Runtime
from tests.fixtures.sweep import test_name

pytestmark = pytest.mark.root
_N = itertools.count()
T = TypeVar("T")


@pytest.fixture(scope="module")
def rt(linux_runtime_factory: Callable[[], object]) -> Runtime:
    return cast(Runtime, linux_runtime_factory())


@pytest.fixture(scope="module")
def task(
    rt: Runtime, busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One long-running container shared by the module's sessions."""
    d = tmp_path_factory.mktemp("exectask")
    spec = JailSpec(
        name=test_name(f"exec{next(_N)}"),
        rootfs=busybox_rootfs,
        argv=("/bin/sleep", "600"),
        stdout_path=d / "out",
        stderr_path=d / "err",
        env={"TASK_VAR": "from-task"},
    )
    rt.start(spec)
    yield spec.name
    rt.destroy(spec.name)


class Client:
    """The client's half of a session: messages go in through a queue, None ends the stream."""

    def __init__(self) -> None:
        self.q: asyncio.Queue[tuple[ExecInput, ...] | None] = asyncio.Queue()

    def send(self, *msgs: ExecInput) -> None:
        self.q.put_nowait(tuple(msgs))

    def half_close(self) -> None:
        self.q.put_nowait(None)

    async def messages(self) -> AsyncIterator[tuple[ExecInput, ...]]:
        while (m := await self.q.get()) is not None:
            yield m


async def _open(rt: Runtime, task: str, argv: list[str], tty: bool) -> ExecSession:
    return await ExecSession.open(exec_start(rt, task, argv, tty=tty))


def _run(coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def _text(outs: list[ExecOutput], stream: str) -> bytes:
    return b"".join(o.data for o in outs if isinstance(o, Output) and o.stream == stream)


async def _collect_until(
    it: AsyncIterator[ExecOutput], outs: list[ExecOutput], needle: bytes, timeout: float = 10
) -> None:
    async def go() -> None:
        while needle not in _text(outs, "stdout"):
            outs.append(await anext(it))

    try:
        await asyncio.wait_for(go(), timeout)
    except TimeoutError:
        raise AssertionError(f"no {needle!r} in {outs!r}") from None


def _ps(rt: Runtime, task: str) -> str:
    start = exec_start(rt, task, ["/bin/ps", "-o", "pid,args"], tty=False)
    return _run(run_to_completion(start, 10)).stdout.decode()


def test_tty_shell_session(rt: Runtime, task: str) -> None:
    async def main() -> list[ExecOutput]:
        c = Client()
        session = await _open(rt, task, ["/bin/sh"], tty=True)
        outs: list[ExecOutput] = []
        it = session.run(c.messages())
        c.send(Resize(width=91, height=33))  # as Nomad's CLI does, right after setup
        c.send()  # heartbeat
        # A user types once the prompt is there (runc may still be setting the terminal up
        # before: the shell's first `stty size` can then fail).
        await _collect_until(it, outs, b"# ")
        c.send(StdinData(b"echo hello-$((6*7)) $TASK_VAR; stty size\n"))
        await _collect_until(it, outs, b"33 91")
        c.send()
        c.send(StdinData(b"exit 3\n"))
        outs += [o async for o in it]
        return outs

    outs = _run(main())
    out = _text(outs, "stdout")
    assert b"hello-42 from-task" in out
    assert b"33 91" in out
    assert not any(isinstance(o, Output) and o.stream == "stderr" for o in outs)  # tty: merged
    assert outs[-2:] == [OutputClosed("stdout"), Exited(3)]
    assert sum(isinstance(o, OutputClosed) for o in outs) == 1


def test_pipes_keep_streams_apart_and_stdin_close(rt: Runtime, task: str) -> None:
    async def main() -> list[ExecOutput]:
        c = Client()
        session = await _open(
            rt, task, ["/bin/sh", "-c", "echo to-out; echo to-err >&2; tr a-z A-Z; exit 4"],
            tty=False)
        c.send(StdinData(b"abc\n"), StdinData(b"def\n"))
        c.send(StdinClose())
        c.send(StdinData(b"after close is dropped\n"))
        return [o async for o in session.run(c.messages())]

    outs = _run(main())
    assert _text(outs, "stdout") == b"to-out\nABC\nDEF\n"
    assert _text(outs, "stderr") == b"to-err\n"
    closes = [o for o in outs if isinstance(o, OutputClosed)]
    assert sorted(c.stream for c in closes) == ["stderr", "stdout"]
    assert outs[-1] == Exited(4)
    assert all(not isinstance(o, Exited) for o in outs[:-1])


def test_tty_stdin_close_ends_input(rt: Runtime, task: str) -> None:
    async def main() -> list[ExecOutput]:
        c = Client()
        session = await _open(rt, task, ["/bin/sh", "-c", "cat; echo cat-done; exit 5"], tty=True)
        c.send(StdinData(b"line\n"))
        c.send(StdinClose())
        return [o async for o in session.run(c.messages())]

    outs = _run(main())
    assert b"cat-done" in _text(outs, "stdout")
    assert outs[-1] == Exited(5)


def test_half_closed_client_is_not_a_disconnect(rt: Runtime, task: str) -> None:
    async def main() -> list[ExecOutput]:
        c = Client()
        session = await _open(rt, task, ["/bin/sh", "-c", "sleep 0.5; echo still-ran"], tty=False)
        c.half_close()
        return [o async for o in session.run(c.messages())]

    outs = _run(main())
    assert _text(outs, "stdout") == b"still-ran\n"
    assert outs[-1] == Exited(0)


@pytest.mark.parametrize("tty", [True, False])
def test_client_going_away_kills_the_process(rt: Runtime, task: str, tty: bool) -> None:
    marker = f"{4000 + next(_N)}.25"  # a sleep argument no other test uses

    async def main() -> None:
        c = Client()
        session = await _open(rt, task, ["/bin/sleep", marker], tty=tty)
        it = session.run(c.messages())
        consumer = asyncio.ensure_future(anext(it))
        await asyncio.sleep(0.5)
        assert marker in await asyncio.to_thread(_ps, rt, task)
        consumer.cancel()  # what gRPC does when the client disconnects
        with pytest.raises(asyncio.CancelledError):
            await consumer
        await it.aclose()

    _run(main())
    deadline = time.monotonic() + 5
    while marker in _ps(rt, task) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker not in _ps(rt, task)


def test_output_written_after_the_command_exits_is_delivered(rt: Runtime, task: str) -> None:
    async def main() -> list[ExecOutput]:
        c = Client()
        session = await _open(
            rt, task, ["/bin/sh", "-c", "(sleep 0.3; echo late) & echo early"], tty=False)
        return [o async for o in session.run(c.messages())]

    outs = _run(main())
    assert _text(outs, "stdout") == b"early\nlate\n"
    assert outs[-1] == Exited(0)


def test_first_message_must_be_setup() -> None:
    async def msgs(*batches: tuple[ExecInput, ...]) -> AsyncIterator[tuple[ExecInput, ...]]:
        for b in batches:
            yield b

    async def main() -> None:
        with pytest.raises(ExecProtocolError, match="first message should always be setup"):
            await first_setup(msgs((StdinData(b"x"),)))
        with pytest.raises(ExecProtocolError, match="first message should always be setup"):
            await first_setup(msgs(()))  # a heartbeat first
        with pytest.raises(ExecProtocolError, match="before its setup"):
            await first_setup(msgs())
        with pytest.raises(ExecProtocolError, match="command is empty"):
            await first_setup(msgs((Setup("t", (), True),)))
        with pytest.raises(ExecProtocolError, match="task_id is empty"):
            await first_setup(msgs((Setup("", ("sh",), True),)))
        setup, rest = await first_setup(msgs((Setup("t", ("sh",), False), StdinData(b"x"))))
        assert setup == Setup("t", ("sh",), False)
        assert rest == [StdinData(b"x")]
        got = [b async for b in pump_inputs(msgs((StdinClose(),)), rest)]
        assert got == [(StdinData(b"x"),), (StdinClose(),)]

    _run(main())


def test_run_to_completion_captures_output(rt: Runtime, task: str) -> None:
    start = exec_start(rt, task,
                       ["/bin/sh", "-c", "echo ok; echo warn >&2; cat; exit 2"], tty=False)
    outcome = _run(run_to_completion(start, 10))
    assert (outcome.exit_code, outcome.stdout, outcome.stderr, outcome.timed_out) == (
        2, b"ok\n", b"warn\n", False)


def test_run_to_completion_timeout_kills(rt: Runtime, task: str) -> None:
    marker = f"{5000 + next(_N)}.5"
    start = exec_start(rt, task,
                       ["/bin/sh", "-c", f"echo partial; exec sleep {marker}"], tty=False)
    outcome = _run(run_to_completion(start, 0.8))
    assert outcome.timed_out
    assert outcome.exit_code == 137 and outcome.signal == 9
    assert outcome.stdout == b"partial\n"
    assert b"did not finish within 0.8s" in outcome.stderr
    assert marker not in _ps(rt, task)


def test_exec_in_exited_task_fails_clearly(
    rt: Runtime, busybox_rootfs: Path, tmp_path: Path
) -> None:
    from jails.errors import NotRunning

    spec = JailSpec(name=test_name(f"exec{next(_N)}"), rootfs=busybox_rootfs, argv=("/bin/true",),
                    stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")
    rt.start(spec)
    try:
        rt.wait(spec.name, 20)
        with pytest.raises(NotRunning):
            _run(_open(rt, spec.name, ["/bin/sh"], tty=True))
    finally:
        rt.destroy(spec.name)


@pytest.mark.parametrize("tty", [True, False])
def test_missing_program_is_reported_to_the_user(rt: Runtime, task: str, tty: bool) -> None:
    async def main() -> list[ExecOutput]:
        session = await _open(rt, task, ["/no/such/program"], tty=tty)
        return [o async for o in session.run(Client().messages())]

    outs = _run(main())
    said = _text(outs, "stdout" if tty else "stderr")
    assert b"/no/such/program" in said and b"no such file" in said
    last = outs[-1]
    assert isinstance(last, Exited) and last.exit_code != 0


def test_terminal_size_from_the_start(rt: Runtime, task: str) -> None:
    async def main() -> list[ExecOutput]:
        c = Client()
        session = await ExecSession.open(exec_start(rt, task, ["/bin/sh"], tty=True,
                                                    size=(132, 50)))
        outs: list[ExecOutput] = []
        it = session.run(c.messages())
        await _collect_until(it, outs, b"# ")
        c.send(StdinData(b"stty size; exit\n"))
        outs += [o async for o in it]
        return outs

    outs = _run(main())
    assert b"50 132" in _text(outs, "stdout")
    assert outs[-1] == Exited(0)
