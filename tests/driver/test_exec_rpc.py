"""ExecTask, ExecTaskStreaming and TaskStats over the plugin's real socket, where no task is
needed: unknown tasks, protocol mistakes. (Sessions in running tasks: tests/e2e/test_exec*.py.)"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from plugin_proto import driver_pb2, driver_pb2_grpc
from tests.fixtures.plugin import PluginProcess

TIMEOUT = 10
Req = driver_pb2.ExecTaskStreamingRequest


def drv(pp: PluginProcess) -> Any:
    return driver_pb2_grpc.DriverStub(pp.channel)


def rpc_error(fn: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    return info.value


def test_unknown_task_is_not_found(plugin: PluginProcess) -> None:
    d = drv(plugin)
    err = rpc_error(lambda: list(d.TaskStats(
        driver_pb2.TaskStatsRequest(task_id="nope/web/1"), timeout=TIMEOUT)))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nope/web/1" in err.details()
    err = rpc_error(lambda: d.ExecTask(
        driver_pb2.ExecTaskRequest(task_id="nope/web/1", command=["true"]), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nope/web/1" in err.details()
    setup = Req(setup=Req.Setup(task_id="nope/web/1", command=["/bin/sh"], tty=True))
    err = rpc_error(lambda: list(d.ExecTaskStreaming(iter([setup]), timeout=TIMEOUT)))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "nope/web/1" in err.details()


@pytest.mark.parametrize(("first", "needle"), [
    (Req(stdin=driver_pb2.ExecTaskStreamingIOOperation(data=b"ls\n")),
     "first message should always be setup"),
    (Req(), "first message should always be setup"),  # a heartbeat first
    (Req(setup=Req.Setup(task_id="t", command=[])), "command is empty"),
    (None, "closed before its setup message"),
])
def test_exec_stream_protocol_errors(plugin: PluginProcess, first: Any, needle: str) -> None:
    msgs = [] if first is None else [first]
    err = rpc_error(lambda: list(drv(plugin).ExecTaskStreaming(iter(msgs), timeout=TIMEOUT)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.details()


def test_exec_task_with_no_command_is_invalid(plugin: PluginProcess) -> None:
    err = rpc_error(lambda: drv(plugin).ExecTask(
        driver_pb2.ExecTaskRequest(task_id="x", command=[]), timeout=TIMEOUT))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "command is empty" in err.details()
