"""ExecTask / ExecTaskStreaming proto conversions: round trips and the wire details Nomad needs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from driver import convert_io
from driver.execmsg import (
    ExecInput,
    ExecOutcome,
    ExecOutput,
    Exited,
    Output,
    OutputClosed,
    Resize,
    Setup,
    StdinClose,
    StdinData,
)
from plugin_proto import driver_pb2


@pytest.mark.parametrize("inputs", [
    (Setup("alloc/web/abc123", ("/bin/sh", "-c", "echo hi"), True),),
    (Setup("t", ("sh",), False),),
    (StdinData(b"\x00binary\xff"),),
    (StdinClose(),),
    (StdinData(b"last words"), StdinClose()),
    (Resize(width=120, height=40),),
    (Resize(width=80, height=24), StdinData(b"x")),
    (),  # heartbeat
])
def test_exec_inputs_round_trip(inputs: tuple[ExecInput, ...]) -> None:
    assert convert_io.exec_inputs_from_proto(convert_io.exec_inputs_to_proto(inputs)) == inputs


def test_heartbeat_is_an_empty_message() -> None:
    assert convert_io.exec_inputs_from_proto(driver_pb2.ExecTaskStreamingRequest()) == ()
    # an empty stdin operation (neither data nor close) asks for nothing either
    req = driver_pb2.ExecTaskStreamingRequest(stdin=driver_pb2.ExecTaskStreamingIOOperation())
    assert convert_io.exec_inputs_from_proto(req) == ()


@pytest.mark.parametrize("out", [
    Output("stdout", b"hello\r\n"),
    Output("stderr", b"oops\n"),
    OutputClosed("stdout"),
    OutputClosed("stderr"),
    Exited(0),
    Exited(130),
])
def test_exec_outputs_round_trip(out: ExecOutput) -> None:
    assert convert_io.exec_output_from_proto(convert_io.exec_output_to_proto(out)) == out


def test_exit_frame_has_exited_and_result() -> None:
    msg = convert_io.exec_output_to_proto(Exited(0))
    assert msg.exited and msg.HasField("result") and msg.result.exit_code == 0
    frame = convert_io.exec_output_to_proto(OutputClosed("stderr"))
    assert frame.HasField("stderr") and frame.stderr.close and not frame.HasField("stdout")
    assert not frame.exited and not frame.HasField("result")


def test_exec_request_round_trip() -> None:
    for timeout in (30.0, 0.5, None):
        req = convert_io.exec_request_to_proto("a/b/c", ["/bin/check", "-v"], timeout)
        assert convert_io.exec_request_from_proto(req) == ("a/b/c", ("/bin/check", "-v"), timeout)
    # a zero timeout is Nomad's "none given"
    req = convert_io.exec_request_to_proto("t", ["x"], 0.0)
    assert convert_io.exec_request_from_proto(req) == ("t", ("x",), None)


@pytest.mark.parametrize("o", [
    ExecOutcome(0, b"ok\n", b""),
    ExecOutcome(2, b"", b"critical\n"),
    ExecOutcome(137, b"partial", b"killed\n", signal=9),
])
def test_exec_outcome_round_trip(o: ExecOutcome) -> None:
    msg = convert_io.exec_outcome_to_proto(o)
    assert msg.HasField("result")  # Nomad dereferences it unchecked
    assert convert_io.exec_outcome_from_proto(msg) == o


def test_exec_inputs_stream_converts_each_message() -> None:
    async def reqs() -> AsyncIterator[driver_pb2.ExecTaskStreamingRequest]:
        yield convert_io.exec_inputs_to_proto((Setup("t", ("sh",), True),))
        yield driver_pb2.ExecTaskStreamingRequest()
        yield convert_io.exec_inputs_to_proto((StdinData(b"a"),))

    async def main() -> list[tuple[ExecInput, ...]]:
        return [b async for b in convert_io.exec_inputs_stream(reqs())]

    assert asyncio.run(main()) == [(Setup("t", ("sh",), True),), (), (StdinData(b"a"),)]
