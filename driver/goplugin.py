"""A go-plugin server in Python: what hashicorp/go-plugin's client expects from a gRPC plugin.

Magic-cookie check, the handshake line on stdout, a unix socket, an asyncio gRPC server with
unlimited message sizes, and the services go-plugin itself calls (``goplugin_services``, loaded
at their first call). It knows nothing of what the plugin serves: the caller registers its own
services in ``register``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import grpc

log = logging.getLogger("goplugin")

CORE_PROTOCOL_VERSION = 1
# sun_path is 108 bytes on Linux, 104 on FreeBSD (including the NUL).
MAX_SOCKET_PATH = 103
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
)


@dataclass(frozen=True)
class Handshake:
    """What the host application and its plugins agree on."""

    cookie_key: str
    cookie_value: str
    app_protocol_version: int


class HandshakeError(Exception):
    """The process was not started by a compatible go-plugin host; str() says what to do."""


class NoCookie(HandshakeError):
    """Not started by the host at all (run by hand): the caller explains what the program is."""


def check_environment(hs: Handshake, environ: Mapping[str, str]) -> None:
    """Raise HandshakeError unless the environment carries the cookie and our protocol version."""
    if environ.get(hs.cookie_key) != hs.cookie_value:
        raise NoCookie(f"{hs.cookie_key} is not set to the host's value")
    offered = environ.get("PLUGIN_PROTOCOL_VERSIONS", "")
    if offered:
        versions = {v.strip() for v in offered.split(",")}
        if str(hs.app_protocol_version) not in versions:
            raise HandshakeError(
                f"the host offers plugin protocol versions {offered}, but this plugin speaks "
                f"version {hs.app_protocol_version}; use a matching host release"
            )


def socket_path(environ: Mapping[str, str], pid: int | None = None) -> Path:
    """Where to listen: ``PLUGIN_UNIX_SOCKET_DIR`` or the temp dir, short enough for sun_path."""
    base = environ.get("PLUGIN_UNIX_SOCKET_DIR") or tempfile.gettempdir()
    path = Path(base) / f"plugin{pid if pid is not None else os.getpid()}"
    if len(os.fsencode(str(path))) > MAX_SOCKET_PATH:
        raise HandshakeError(
            f"unix socket path {path} is longer than {MAX_SOCKET_PATH} bytes; "
            "set PLUGIN_UNIX_SOCKET_DIR or TMPDIR to a shorter directory"
        )
    return path


def share_socket(path: Path, group: str) -> None:
    """Let the host's group use the socket, as go-plugin does for PLUGIN_UNIX_SOCKET_GROUP."""
    if not group:
        return
    import grp

    try:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise HandshakeError(f"PLUGIN_UNIX_SOCKET_GROUP names group {group!r}, which does not "
                             "exist on this host; create it or unset the variable") from exc
    os.chown(path, -1, gid)
    os.chmod(path, 0o660)


def handshake_line(hs: Handshake, path: Path) -> str:
    # No certificate field: the host enables no AutoMTLS, and a certificate would break it.
    return f"{CORE_PROTOCOL_VERSION}|{hs.app_protocol_version}|unix|{path}|grpc\n"


Register = Callable[[grpc.aio.Server, asyncio.Event], Awaitable[None] | None]
# What ``lazily`` loads: adds the plugin's services to a server (or a stand-in for one).
SyncRegister = Callable[[Any, asyncio.Event], None]


class _Collector:
    """Stands in for the server while a lazily loaded register() adds its services."""

    def __init__(self) -> None:
        self.handlers: list[grpc.GenericRpcHandler] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        pass  # the generated code adds a generic handler for the same methods too


class _LazyServices(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no stubs
    def __init__(self, load: Callable[[], SyncRegister], stop: asyncio.Event) -> None:
        self._load = load
        self._stop = stop
        self._handlers: list[grpc.GenericRpcHandler] | None = None

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        if self._handlers is None:
            collector = _Collector()
            self._load()(collector, self._stop)
            self._handlers = collector.handlers
        for handler in self._handlers:
            found = handler.service(handler_call_details)
            if found is not None:
                return found
        return None


def _go_plugin_services() -> SyncRegister:
    from driver import goplugin_services

    return goplugin_services.register


def lazily(load: Callable[[], SyncRegister]) -> Register:
    """A register that imports the plugin's services at their first call instead of before the
    handshake: the host waits for the handshake line of every plugin it launches, and only
    then calls anything. ``load`` returns the real (synchronous) register."""

    def register(server: grpc.aio.Server, stop: asyncio.Event) -> None:
        server.add_generic_rpc_handlers((_LazyServices(load, stop),))

    return register


async def run(
    hs: Handshake,
    register: Register,
    *,
    environ: Mapping[str, str] | None = None,
    stdout: IO[str] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Serve until the host calls Shutdown or SIGTERM arrives; returns the exit status.

    ``register(server, stop)`` adds the plugin's own services; it may set ``stop`` to exit.
    """
    env = os.environ if environ is None else environ
    out = sys.stdout if stdout is None else stdout
    stop = stop or asyncio.Event()
    path = socket_path(env)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # a leftover of a dead plugin with our pid

    server = grpc.aio.server(options=SERVER_OPTIONS)
    # go-plugin's own services, imported at the first call like the plugin's: before the
    # handshake the process imports grpc and nothing of protobuf.
    server.add_generic_rpc_handlers((_LazyServices(_go_plugin_services, stop),))
    maybe = register(server, stop)
    if maybe is not None:
        await maybe
    server.add_insecure_port(f"unix:{path}")
    await server.start()
    try:
        share_socket(path, env.get("PLUGIN_UNIX_SOCKET_GROUP", ""))
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        out.write(handshake_line(hs, path))
        out.flush()
        log.debug("plugin serving", extra={"address": str(path), "pid": os.getpid()})
        await stop.wait()
        log.debug("plugin stopping")
    finally:
        # A short grace lets the Shutdown response itself reach the host.
        await server.stop(grace=0.2)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return 0


def serve(hs: Handshake, register: Register, *, not_a_plugin_message: str) -> int:
    """The whole plugin process: check, ignore SIGINT, serve. Returns the exit status."""
    try:
        check_environment(hs, os.environ)
    except HandshakeError as exc:
        msg = not_a_plugin_message if isinstance(exc, NoCookie) else str(exc)
        sys.stderr.write(msg + "\n")
        return 1
    # The plugin shares the host's process group: a Ctrl-C meant for the host must not stop it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return asyncio.run(run(hs, register))
    except HandshakeError as exc:
        log.error(str(exc))
        return 1
