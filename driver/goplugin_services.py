"""The services hashicorp/go-plugin's client itself calls on a gRPC plugin.

``plugin.GRPCController`` (Shutdown: exit promptly), ``plugin.GRPCStdio`` (held open; the plugin
writes nothing to stdout after the handshake) and ``grpc.health.v1.Health`` (service ``plugin``
SERVING). ``goplugin.run`` loads this module at the first RPC, so that the handshake waits for
no protobuf import.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from plugin_proto import (
    goplugin_controller_pb2,
    goplugin_controller_pb2_grpc,
    goplugin_stdio_pb2,
    goplugin_stdio_pb2_grpc,
    grpc_health_pb2,
    grpc_health_pb2_grpc,
)

log = logging.getLogger("goplugin")


class _Controller(goplugin_controller_pb2_grpc.GRPCControllerServicer):
    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    async def Shutdown(self, request: Any, context: Any) -> goplugin_controller_pb2.Empty:
        log.debug("shutdown requested by the host")
        self._stop.set()
        return goplugin_controller_pb2.Empty()


class _Stdio(goplugin_stdio_pb2_grpc.GRPCStdioServicer):
    """Held open until shutdown; the plugin writes nothing to stdout after the handshake."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    async def StreamStdio(
        self, request: Any, context: Any
    ) -> AsyncIterator[goplugin_stdio_pb2.StdioData]:
        await self._stop.wait()
        return
        yield  # an async generator that ends when the plugin stops


class _Health(grpc_health_pb2_grpc.HealthServicer):
    SERVICES = frozenset({"", "plugin"})

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop

    def _status(self, service: str, context: Any) -> grpc_health_pb2.HealthCheckResponse:
        if service not in self.SERVICES:
            context.set_code(grpc.StatusCode.NOT_FOUND)
            context.set_details(f"unknown health service {service!r}; ask for 'plugin'")
            return grpc_health_pb2.HealthCheckResponse(
                status=grpc_health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            )
        return grpc_health_pb2.HealthCheckResponse(
            status=grpc_health_pb2.HealthCheckResponse.SERVING
        )

    async def Check(self, request: Any, context: Any) -> grpc_health_pb2.HealthCheckResponse:
        return self._status(request.service, context)

    async def Watch(
        self, request: Any, context: Any
    ) -> AsyncIterator[grpc_health_pb2.HealthCheckResponse]:
        yield self._status(request.service, context)
        await self._stop.wait()


def register(server: Any, stop: asyncio.Event) -> None:
    """Add the three services to ``server`` (or ``goplugin``'s stand-in for one)."""
    goplugin_controller_pb2_grpc.add_GRPCControllerServicer_to_server(_Controller(stop), server)
    goplugin_stdio_pb2_grpc.add_GRPCStdioServicer_to_server(_Stdio(stop), server)
    grpc_health_pb2_grpc.add_HealthServicer_to_server(_Health(stop), server)
