"""Thin gRPC adapters: convert the request, call the plugin, convert the answer.

Lifecycle errors map to one status each (``_status_of``); StartTask failures carry Nomad's
RecoverableError detail. The streams Nomad keeps open (Fingerprint, TaskEvents) never end.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf import any_pb2

from driver import convert, convert_io, execsession, stats
from driver.config import PLUGIN_SCHEMA, TASK_SCHEMA, ConfigError
from driver.driver import describe
from driver.errors import BadRequest, StartFailed, TaskConflict, TaskGone, TaskNotFound
from driver.plugin import XcPlugin
from driver.version import API_VERSION, DRIVER_NAME, version
from plugin_proto import (
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    rpc_status_pb2,
    structs_pb2,
)

log = logging.getLogger("servicer")

LIFECYCLE_PENDING = "the task lifecycle is not implemented in this version of the xc driver yet"
NO_NETWORKS = ("not needed: must_create_network is false, the Nomad client makes a group's "
               "network namespace and xc tasks join it")

Ctx: TypeAlias = Any  # grpc.aio.ServicerContext; grpc ships no type stubs


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, bool | None]:
    """gRPC code for a lifecycle error, and the RecoverableError flag to attach (None: none).
    Never UNAVAILABLE or CANCELLED: Nomad reads those as a dead plugin."""
    if isinstance(exc, ConfigError | BadRequest):
        return grpc.StatusCode.INVALID_ARGUMENT, False
    if isinstance(exc, StartFailed):
        return grpc.StatusCode.FAILED_PRECONDITION, exc.recoverable
    if isinstance(exc, TaskNotFound | TaskGone):
        return grpc.StatusCode.NOT_FOUND, None
    if isinstance(exc, TaskConflict):
        return grpc.StatusCode.FAILED_PRECONDITION, None
    return grpc.StatusCode.INTERNAL, None


def status_details(code: grpc.StatusCode, message: str, recoverable: bool) -> bytes:
    """The ``grpc-status-details-bin`` trailer Nomad's client reads a RecoverableError from."""
    detail = any_pb2.Any()
    detail.Pack(structs_pb2.RecoverableError(recoverable=recoverable))
    return rpc_status_pb2.Status(code=code.value[0], message=message,
                                 details=[detail]).SerializeToString()


async def _abort(context: Ctx, exc: BaseException, method: str) -> NoReturn:
    code, recoverable = _status_of(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.error(f"{method} failed", exc_info=exc)
    message = f"xc: {exc}" if not isinstance(exc, ConfigError) else f"xc task config: {exc}"
    trailer: tuple[tuple[str, bytes], ...] = ()
    if recoverable is not None:
        trailer = (("grpc-status-details-bin", status_details(code, message, recoverable)),)
    await context.abort(code, message, trailing_metadata=trailer)
    raise AssertionError("abort returned")  # pragma: no cover


async def _unimplemented(context: Ctx, method: str, why: str = LIFECYCLE_PENDING) -> NoReturn:
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"xc: {method}: {why}")
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
            nomad = convert.nomad_task_from_proto(task)
            state = await self.plugin.driver.start_task(nomad, cfg)
            net = await self.plugin.driver.driver_network(state)
        except Exception as exc:
            log.warning("task start failed", extra={"task_id": task.id, "error": str(exc)})
            await _abort(context, exc, "StartTask")
        return driver_pb2.StartTaskResponse(
            result=driver_pb2.StartTaskResponse.SUCCESS,
            handle=convert.task_handle_to_proto(task, state),
            network_override=convert.driver_network_to_proto(net) if net is not None else None)

    async def Shutdown(self, request: Any, context: Ctx) -> driver_pb2.ShutdownResponse:
        # The agent is going away; tasks outlive the plugin, so there is nothing to stop here.
        return driver_pb2.ShutdownResponse()

    async def RecoverTask(
        self, request: driver_pb2.RecoverTaskRequest, context: Ctx
    ) -> driver_pb2.RecoverTaskResponse:
        # Nomad never sets task_id here; the handle's config carries it.
        task_id = request.handle.config.id or request.task_id
        try:
            await self.plugin.driver.recover_task(task_id, request.handle.driver_state)
        except Exception as exc:
            await _abort(context, exc, "RecoverTask")
        return driver_pb2.RecoverTaskResponse()

    async def WaitTask(
        self, request: driver_pb2.WaitTaskRequest, context: Ctx
    ) -> driver_pb2.WaitTaskResponse:
        try:
            outcome = await self.plugin.driver.wait_task(request.task_id)
        except Exception as exc:
            await _abort(context, exc, "WaitTask")
        return driver_pb2.WaitTaskResponse(
            result=convert.exit_result_to_proto(outcome.status), err=outcome.error)

    async def StopTask(
        self, request: driver_pb2.StopTaskRequest, context: Ctx
    ) -> driver_pb2.StopTaskResponse:
        try:
            await self.plugin.driver.stop_task(
                request.task_id, request.signal, request.timeout.ToTimedelta().total_seconds())
        except Exception as exc:
            await _abort(context, exc, "StopTask")
        return driver_pb2.StopTaskResponse()

    async def DestroyTask(
        self, request: driver_pb2.DestroyTaskRequest, context: Ctx
    ) -> driver_pb2.DestroyTaskResponse:
        try:
            await self.plugin.driver.destroy_task(request.task_id, request.force)
        except Exception as exc:
            await _abort(context, exc, "DestroyTask")
        return driver_pb2.DestroyTaskResponse()

    async def InspectTask(
        self, request: driver_pb2.InspectTaskRequest, context: Ctx
    ) -> driver_pb2.InspectTaskResponse:
        try:
            entry = self.plugin.driver.inspect_task(request.task_id)
        except Exception as exc:
            await _abort(context, exc, "InspectTask")
        return driver_pb2.InspectTaskResponse(
            task=convert.task_status_to_proto(entry.state, entry.exited, entry.exit_status),
            driver=driver_pb2.TaskDriverStatus(attributes=describe(entry)))

    async def TaskStats(
        self, request: driver_pb2.TaskStatsRequest, context: Ctx
    ) -> AsyncIterator[driver_pb2.TaskStatsResponse]:
        task_id, interval_s = convert_io.stats_request_from_proto(request)
        try:
            samples = stats.task_stream(self.plugin.driver, task_id, interval_s,
                                        convert_io.topology_from_nomad(self.plugin.nomad))
            async for sample in samples:
                yield convert_io.stats_to_proto(sample)
        except Exception as exc:
            await _abort(context, exc, "TaskStats")

    async def SignalTask(
        self, request: driver_pb2.SignalTaskRequest, context: Ctx
    ) -> driver_pb2.SignalTaskResponse:
        try:
            await self.plugin.driver.signal_task(request.task_id, request.signal)
        except Exception as exc:
            await _abort(context, exc, "SignalTask")
        return driver_pb2.SignalTaskResponse()

    async def ExecTask(
        self, request: driver_pb2.ExecTaskRequest, context: Ctx
    ) -> driver_pb2.ExecTaskResponse:
        task_id, argv, timeout_s = convert_io.exec_request_from_proto(request)
        try:
            outcome = await execsession.run_once(self.plugin.driver, task_id, argv, timeout_s)
        except Exception as exc:
            await _abort(context, exc, "ExecTask")
        return convert_io.exec_outcome_to_proto(outcome)

    async def ExecTaskStreaming(
        self, request_iterator: AsyncIterator[driver_pb2.ExecTaskStreamingRequest], context: Ctx
    ) -> AsyncIterator[driver_pb2.ExecTaskStreamingResponse]:
        # The client going away cancels this generator; the session's finally kills the command.
        messages = convert_io.exec_inputs_stream(request_iterator)
        try:
            async for out in execsession.serve_stream(self.plugin.driver, messages):
                yield convert_io.exec_output_to_proto(out)
        except Exception as exc:
            await _abort(context, exc, "ExecTaskStreaming")

    async def CreateNetwork(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "CreateNetwork", NO_NETWORKS)

    async def DestroyNetwork(self, request: Any, context: Ctx) -> Any:
        await _unimplemented(context, "DestroyNetwork", NO_NETWORKS)


def register(server: grpc.aio.Server, stop: asyncio.Event, plugin: XcPlugin | None = None) -> None:
    plugin = plugin or XcPlugin()
    base_pb2_grpc.add_BasePluginServicer_to_server(BasePluginServicer(plugin), server)
    driver_pb2_grpc.add_DriverServicer_to_server(DriverServicer(plugin), server)
