"""Commands run inside a running task: ``nomad alloc exec`` sessions and script checks.

A session owns one ``jails.InteractiveExec`` (a pty, or three pipes) and moves bytes between it and
the client without blocking the event loop: non-blocking fds watched by the loop, no thread per
session. Whatever way a session ends (the command exits, the client goes away, an error), the
exec'd process is killed and reaped and its fds closed.

No protobuf here: ``driver.convert_io`` maps these types to and from the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from driver.errors import BadRequest, TaskConflict
from driver.execmsg import (
    ExecInput,
    ExecOutcome,
    ExecOutput,
    Exited,
    Output,
    OutputClosed,
    Resize,
    StdinClose,
    StdinData,
    Stream,
    first_setup,
)
from driver.ports import TaskSource
from jails import InteractiveExec, Runtime
from jails.errors import NotRunning

CHUNK = 32 * 1024
# After the command exits, output still arriving (a background child holding the pipe) is
# forwarded until the fds stay quiet this long.
EXIT_DRAIN_IDLE_S = 0.5
KILL_REAP_S = 5.0
# Script check output is capped (Nomad keeps a few KiB of it); the rest is read and dropped.
CAPTURE_LIMIT = 1024 * 1024
EOF_CHAR = b"\x04"  # a terminal's VEOF: how "stdin closed" reaches a program reading a tty


# ---- fd plumbing on the event loop ---------------------------------------------------------


async def _ready(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


async def _write_all(fd: int, data: bytes) -> bool:
    """False when the reading side is gone (the command exited); the rest is dropped."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            await _ready(fd, write=True)
            continue
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EIO, errno.EBADF):
                return False
            raise
        view = view[n:]
    return True


async def _wait_exit(ie: InteractiveExec) -> int:
    """The command's exit code, waited for on the loop (pidfd where there is one)."""
    pidfd = None
    if hasattr(os, "pidfd_open"):
        with contextlib.suppress(OSError):
            pidfd = os.pidfd_open(ie.pid)
    try:
        delay = 0.01
        while True:
            try:
                return ie.wait(0)
            except subprocess.TimeoutExpired:
                pass
            if pidfd is not None:
                await _ready(pidfd, write=False)
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
    finally:
        if pidfd is not None:
            os.close(pidfd)


# ---- the session ---------------------------------------------------------------------------


class ExecSession:
    """One running exec and its client. ``run`` yields outputs; the last one is ``Exited``."""

    def __init__(self, ie: InteractiveExec) -> None:
        self.ie = ie
        self.tty = ie.tty
        if ie.tty:
            assert ie.master_fd is not None
            self._in_fd: int | None = ie.master_fd
            self._outs: list[tuple[Stream, int]] = [("stdout", ie.master_fd)]
        else:
            assert ie.stdin is not None and ie.stdout is not None and ie.stderr is not None
            self._in_fd = ie.stdin.fileno()
            self._outs = [("stdout", ie.stdout.fileno()), ("stderr", ie.stderr.fileno())]
        for fd in {self._in_fd, *(fd for _, fd in self._outs)}:
            os.set_blocking(fd, False)
        self.exit_code: int | None = None
        self._stdin_lock = asyncio.Lock()

    @classmethod
    async def open(cls, start: Callable[[], InteractiveExec]) -> ExecSession:
        """Start the command (``start`` is e.g. ``lambda: runtime.exec_interactive(...)``)."""
        starting = asyncio.ensure_future(asyncio.to_thread(start))
        try:
            ie = await asyncio.shield(starting)
        except asyncio.CancelledError:
            # The client left while the command was starting: kill it once it has started.
            starting.add_done_callback(_discard_started)
            raise
        try:
            return cls(ie)
        except BaseException:
            ie.kill()
            ie.close()
            raise

    # -- input --

    async def feed(self, msg: ExecInput) -> None:
        if isinstance(msg, StdinData):
            if msg.data:
                await self._write(msg.data)
        elif isinstance(msg, StdinClose):
            await self.close_stdin()
        elif isinstance(msg, Resize) and self.tty and msg.width > 0 and msg.height > 0:
            with contextlib.suppress(OSError):
                self.ie.resize(msg.width, msg.height)
        # Setup after the first message: nothing to do (the Go server ignores it too).

    async def _write(self, data: bytes) -> None:
        async with self._stdin_lock:
            if self._in_fd is None:
                return  # stdin was closed: late data is dropped, as on a closed pipe
            if not await _write_all(self._in_fd, data):
                await self._drop_stdin()

    async def close_stdin(self) -> None:
        async with self._stdin_lock:
            if self._in_fd is None:
                return
            if self.tty:
                # The pty is stdout too: a terminal signals end of input with VEOF, not a close.
                await _write_all(self._in_fd, EOF_CHAR)
                self._in_fd = None
            else:
                await self._drop_stdin()

    async def _drop_stdin(self) -> None:
        fd, self._in_fd = self._in_fd, None
        if fd is not None and not self.tty and self.ie.stdin is not None:
            with contextlib.suppress(OSError):
                self.ie.stdin.close()

    async def _feed_all(self, inputs: AsyncIterator[tuple[ExecInput, ...]]) -> None:
        # The client half-closing its side is not a disconnect: the command keeps running.
        async for batch in inputs:
            for msg in batch:
                await self.feed(msg)

    # -- output --

    async def _pump(
        self, stream: Stream, fd: int, queue: asyncio.Queue[ExecOutput], exited: asyncio.Future[int]
    ) -> None:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                if not await self._readable_or_quiet(fd, exited):
                    break
                continue
            except OSError as exc:
                if exc.errno == errno.EIO:  # pty: every slave side closed, the command is done
                    break
                raise
            if not data:
                break
            await queue.put(Output(stream, data))
        await queue.put(OutputClosed(stream))

    async def _readable_or_quiet(self, fd: int, exited: asyncio.Future[int]) -> bool:
        """Wait until fd is readable: True. False once the command has exited and fd stayed
        quiet for EXIT_DRAIN_IDLE_S (someone else still holds the write end)."""
        ready = asyncio.ensure_future(_ready(fd, write=False))
        try:
            if not exited.done():
                either: list[asyncio.Future[Any]] = [ready, exited]
                await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                await asyncio.wait([ready], timeout=EXIT_DRAIN_IDLE_S)
            return ready.done()
        finally:
            ready.cancel()

    async def run(self, inputs: AsyncIterator[tuple[ExecInput, ...]]) -> AsyncIterator[ExecOutput]:
        """Feed ``inputs`` to the command and yield its output: frames, one close per stream,
        then ``Exited``. Leaving early (the consumer stops, is cancelled or fails) kills it."""
        queue: asyncio.Queue[ExecOutput] = asyncio.Queue(maxsize=16)
        exited = asyncio.ensure_future(_wait_exit(self.ie))
        feeder = asyncio.ensure_future(self._feed_all(inputs))
        pumps = [asyncio.ensure_future(self._pump(s, fd, queue, exited)) for s, fd in self._outs]
        helpers = [feeder, *pumps]
        pending_closes = len(pumps)
        resync = self.tty
        try:
            while pending_closes:
                out = await _next(queue, helpers)
                if isinstance(out, OutputClosed):
                    pending_closes -= 1
                elif resync:
                    # the command is up and talking: make sure its terminal has our size
                    resync = False
                    with contextlib.suppress(OSError):
                        self.ie.resync_size()
                yield out
            self.exit_code = await exited
            yield Exited(self.exit_code)
        finally:
            for t in (*helpers, exited):
                t.cancel()
            # Let them unhook from the loop before their fds are closed (fd numbers get reused).
            await asyncio.gather(*helpers, exited, return_exceptions=True)
            await self.aclose()

    async def aclose(self) -> None:
        """Kill the command unless it has exited, reap it, close every fd. Idempotent."""
        if self.exit_code is None:
            try:
                self.exit_code = self.ie.wait(0)
            except subprocess.TimeoutExpired:
                self.ie.kill()
                with contextlib.suppress(TimeoutError):
                    self.exit_code = await asyncio.wait_for(_wait_exit(self.ie), KILL_REAP_S)
        self.ie.close()


async def _next(
    queue: asyncio.Queue[ExecOutput], helpers: Sequence[asyncio.Future[None]]
) -> ExecOutput:
    """The next output; a helper (stdin feeder, output pump) failing is raised here instead."""
    get = asyncio.ensure_future(queue.get())
    try:
        while True:
            watched: list[asyncio.Future[Any]] = [get, *(h for h in helpers if not h.done())]
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if get in done:
                return get.result()
            for h in done:
                exc = h.exception()
                if exc is not None:
                    raise exc
    finally:
        get.cancel()


def _discard_started(fut: asyncio.Future[InteractiveExec]) -> None:
    if fut.cancelled() or fut.exception() is not None:
        return
    ie = fut.result()
    ie.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        ie.wait(KILL_REAP_S)
    ie.close()


# ---- script checks -------------------------------------------------------------------------


async def run_to_completion(
    start: Callable[[], InteractiveExec], timeout_s: float | None
) -> ExecOutcome:
    """Run a command with stdin closed and capture its output; kill it at ``timeout_s``."""
    session = await ExecSession.open(start)
    captured: dict[Stream, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}

    async def no_input() -> AsyncIterator[tuple[ExecInput, ...]]:
        yield (StdinClose(),)

    async def collect() -> int:
        code = -1
        async for out in session.run(no_input()):
            if isinstance(out, Output):
                buf = captured[out.stream]
                buf += out.data[: max(CAPTURE_LIMIT - len(buf), 0)]
            elif isinstance(out, Exited):
                code = out.exit_code
        return code

    try:
        code = await asyncio.wait_for(collect(), timeout_s)
    except TimeoutError:
        await session.aclose()
        note = f"xc: command did not finish within {timeout_s:g}s and was killed\n".encode()
        return ExecOutcome(
            session.exit_code if session.exit_code is not None else 128 + signal.SIGKILL,
            bytes(captured["stdout"]),
            bytes(captured["stderr"]) + note,
            timed_out=True,
            signal=signal.SIGKILL,
        )
    finally:
        await session.aclose()
    return ExecOutcome(code, bytes(captured["stdout"]), bytes(captured["stderr"]))


def exec_start(
    runtime: Runtime, name: str, argv: Sequence[str], *, tty: bool,
    size: tuple[int, int] | None = None,
) -> Callable[[], InteractiveExec]:
    """The ``start`` callable for ``runtime.exec_interactive`` (blocking: run it in a thread).
    ``size``: (cols, rows) of the terminal from the start."""
    return lambda: runtime.exec_interactive(name, list(argv), tty=tty, size=size)


async def pump_inputs(
    messages: AsyncIterator[tuple[ExecInput, ...]], first: list[ExecInput]
) -> AsyncIterator[tuple[ExecInput, ...]]:
    """The rest of the client's messages, starting with what rode along with its setup."""
    if first:
        yield tuple(first)
    async for batch in messages:
        yield batch


# ---- what the ExecTask and ExecTaskStreaming RPCs call ----


def _starter(
    driver: TaskSource, task_id: str, argv: Sequence[str], tty: bool,
    size: tuple[int, int] | None = None,
) -> Callable[[], InteractiveExec]:
    name = driver.task(task_id).name
    start = exec_start(driver.runtime, name, argv, tty=tty, size=size)

    def checked() -> InteractiveExec:
        try:
            return start()
        except NotRunning:
            raise TaskConflict(
                f"task {task_id!r} is not running; commands run only in a running task"
            ) from None

    return checked


async def serve_stream(
    driver: TaskSource, messages: AsyncIterator[tuple[ExecInput, ...]]
) -> AsyncIterator[ExecOutput]:
    """A whole ``nomad alloc exec`` session: setup first, then the command's output, ``Exited``
    last. Raises ExecProtocolError, TaskNotFound or TaskConflict before any output."""
    setup, rest = await first_setup(messages)
    # A size sent along with the setup applies from the start (no resize after the fact).
    sizes = [(m.width, m.height) for m in rest if isinstance(m, Resize) and m.width > 0
             and m.height > 0]
    size = sizes[-1] if setup.tty and sizes else None
    session = await ExecSession.open(
        _starter(driver, setup.task_id, setup.command, setup.tty, size))
    try:
        async for out in session.run(pump_inputs(messages, rest)):
            yield out
    finally:
        await session.aclose()


async def run_once(
    driver: TaskSource, task_id: str, argv: Sequence[str], timeout_s: float | None
) -> ExecOutcome:
    """A script check: run argv in the task, capture its output, kill it at timeout_s."""
    if not argv or not argv[0]:
        raise BadRequest("exec: command is empty; give the program to run and its arguments")
    return await run_to_completion(_starter(driver, task_id, argv, False), timeout_s)
