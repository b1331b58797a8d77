"""Thin gRPC adapters: convert the request, call the plugin, convert the answer.

Every Driver RPC the task lifecycle will implement answers UNIMPLEMENTED with a clear message
until it lands; the streams Nomad keeps open (Fingerprint, TaskEvents) never end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn, TypeAlias

import grpc

from driver import convert
from driver.config import PLUGIN_SCHEMA, TASK_SCHEMA, ConfigError
from driver.plugin import XcPlugin
from driver.version import API_VERSION, DRIVER_NAME, version
from plugin_proto import base_pb2, base_pb2_grpc, driver_pb2, driver_pb2_grpc

log = logging.getLogger("servicer")

LIFECYCLE_PENDING = "the task lifecycle is not implemented in this version of the xc driver yet"

Ctx: TypeAlias = Any  # grpc.aio.ServicerContext; grpc ships no type stubs


async def _unimplemented(context: Ctx, method: str) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"xc: {method}: {LIFECYCLE_PENDING}")
    raise AssertionError("abort returned")  # pragma: no cover


class BasePluginServicer(base_pb2_grpc.BasePluginServicer):
    def __init__(self, plugin: XcPlugin) -> None:
        self.plugin = plugin

    async def PluginInfo(self, request: Any, context: Ctx) -> base_pb2.PluginInfoResponse:
        return base_pb2.PluginInfoResponse(
            type=base_pb2.DRIVER, plugin_api_versions=[API_VERSION],
            plugin_version=version(), name=DRIVER_NAME)

    async def ConfigSchema(self, request: Any, context: Ctx) -> base_pb2.ConfigSchemaResponse:
        return base_pb2.ConfigSchemaResponse(spec=convert.schema_to_proto(PLUGIN_SCHEMA))

    async def SetConfig(
        self, request: base_pb2.SetConfigRequest, context: Ctx
    ) -> base_pb2.SetConfigResponse:
        nomad = (convert.nomad_info_from_proto(request.nomad_config)
                 if request.HasField("nomad_config") else None)
        try:
            self.plugin.set_config(request.msgpack_config, nomad)
        except ConfigError as exc:
            log.error("plugin config rejected", extra={"error": str(exc)})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"xc plugin config: {exc}")
        return base_pb2.SetConfigResponse()


class DriverServicer(driver_pb2_grpc.DriverServicer):
    def __init__(self, plugin: XcPlugin) -> None:
        self.plugin = plugin

    async def Init(self, request: Any, context: Ctx) -> driver_pb2.InitResponse:
        return driver_pb2.InitResponse()

    async def TaskConfigSchema(
        self, request: Any, context: Ctx
    ) -> driver_pb2.TaskConfigSchemaResponse:
        return driver_pb2.TaskConfigSchemaResponse(spec=convert.schema_to_proto(TASK_SCHEMA))

    async def Capabilities(self, request: Any, context: Ctx) -> driver_pb2.CapabilitiesResponse:
        return driver_pb2.CapabilitiesResponse(
            capabilities=convert.capabilities_to_proto(self.plugin.capabilities))

    async def Fingerprint(
        self, request: Any, context: Ctx
    ) -> AsyncIterator[driver_pb2.FingerprintResponse]:
        async for fp in self.plugin.fingerprinter.stream():
            yield convert.fingerprint_to_proto(fp)

    async def TaskEvents(
        self, request: Any, context: Ctx
    ) -> AsyncIterator[driver_pb2.DriverTaskEvent]:
        async for ev in self.plugin.events.subscribe():
            yield convert.event_to_proto(ev)

    async def StartTask(
        self, request: driver_pb2.StartTaskRequest, context: Ctx
    ) -> driver_pb2.StartTaskResponse:
        task = request.task
        try:
            cfg = self.plugin.decode_task_config(task.msgpack_driver_config)
        except ConfigError as exc:
            log.warning("task config rejected", extra={"task_id": task.id, "error": str(exc)})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"xc task config: {exc}")
        log.debug("task config decoded", extra={"task_id": task.id, "config": repr(cfg)})
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"task config accepted; but {LIFECYCLE_PENDING}, so task {task.name!r} cannot start",
        )
        raise AssertionError("abort returned")  # pragma: no cover

    async def Shutdown(self, request: Any, context: Ctx) -> driver_pb2.ShutdownResponse:
        # The agent is going away; tasks outlive the plugin, so there is nothing to stop here.
        return driver_pb2.ShutdownResponse()

    async def RecoverTask(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "RecoverTask")

    async def WaitTask(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "WaitTask")

    async def StopTask(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "StopTask")

    async def DestroyTask(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "DestroyTask")

    async def InspectTask(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "InspectTask")

    async def TaskStats(
        self, request: Any, context: Ctx
    ) -> AsyncIterator[driver_pb2.TaskStatsResponse]:
        await _unimplemented(context, "TaskStats")
        yield driver_pb2.TaskStatsResponse()  # unreachable; makes this a stream handler

    async def SignalTask(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "SignalTask")

    async def ExecTask(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "ExecTask")

    async def ExecTaskStreaming(
        self, request_iterator: Any, context: Ctx
    ) -> AsyncIterator[driver_pb2.ExecTaskStreamingResponse]:
        await _unimplemented(context, "ExecTaskStreaming")
        yield driver_pb2.ExecTaskStreamingResponse()  # unreachable; makes this a stream handler

    async def CreateNetwork(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "CreateNetwork")

    async def DestroyNetwork(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "DestroyNetwork")


def register(server: grpc.aio.Server, stop: asyncio.Event, plugin: XcPlugin | None = None) -> None:
    plugin = plugin or XcPlugin()
    base_pb2_grpc.add_BasePluginServicer_to_server(BasePluginServicer(plugin), server)
    driver_pb2_grpc.add_DriverServicer_to_server(DriverServicer(plugin), server)
