"""A deliberately broken Nomad driver plugin: each MODE makes one mistake real Nomad rejects.

    python tests/rig/misbehaving_plugin.py MODE

``ok`` is the well-behaved baseline, so a test can show the rig accepts what it should. Every
other mode differs from it in exactly one way. The plugin serves BasePlugin, Driver (schemas,
capabilities, streams) and GRPCController.Shutdown, which exits at once so go-plugin's Kill does
not wait.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc

from plugin_proto import (
    base_pb2,
    base_pb2_grpc,
    driver_pb2,
    driver_pb2_grpc,
    goplugin_controller_pb2,
    goplugin_controller_pb2_grpc,
    hclspec_pb2,
    structs_pb2,
)

COOKIE_KEY = "NOMAD_PLUGIN_MAGIC_COOKIE"
COOKIE = "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255"

HANDSHAKE_MODES = {
    "ok": "1|2|unix|{path}|grpc",
    "app-version-1": "1|1|unix|{path}|grpc",  # the go-plugin Python example's line
    "core-version-2": "2|2|unix|{path}|grpc",
    "netrpc": "1|2|unix|{path}",  # no protocol field: go-plugin assumes netrpc
    "unix-prefix": "1|2|unix|unix:{path}|grpc",
}


def attr(name: str, typ: str, required: bool = False) -> hclspec_pb2.Spec:
    return hclspec_pb2.Spec(Attr=hclspec_pb2.Attr(name=name, type=typ, required=required))


def default(primary: hclspec_pb2.Spec, literal: str) -> hclspec_pb2.Spec:
    return hclspec_pb2.Spec(
        default=hclspec_pb2.Default(
            primary=primary, default=hclspec_pb2.Spec(literal=hclspec_pb2.Literal(value=literal))
        )
    )


def obj(attrs: dict[str, hclspec_pb2.Spec]) -> hclspec_pb2.Spec:
    return hclspec_pb2.Spec(object=hclspec_pb2.Object(attributes=attrs))


def config_spec(mode: str) -> hclspec_pb2.Spec:
    fields = {
        "shell": default(attr("shell", "string"), '"sh"'),
        "retries": attr("retries", "number"),
        "tags": attr("tags", "list(string)"),
    }
    if mode == "schema-unknown-node":
        fields["mystery"] = hclspec_pb2.Spec()  # no oneof member set
    elif mode == "schema-default-attr-noname":
        fields["shell"] = default(attr("", "string"), '"sh"')
    elif mode == "schema-unquoted-literal":
        fields["shell"] = default(attr("shell", "string"), "sh")
    elif mode == "schema-quoted-type":
        fields["retries"] = attr("retries", '"number"')
    elif mode == "schema-mistyped":
        fields["retries"] = attr("retries", "numbr")
    return obj(fields)


def reference_task_spec() -> hclspec_pb2.Spec:
    """A task spec with a block list, Defaults and block attrs: the shape whose encoding
    ``tests/rig/test_rig_catches.py`` pins (REFERENCE_MSGPACK)."""
    mount = obj(
        {
            "source": attr("source", "string", True),
            "target": attr("target", "string", True),
            "readonly": default(attr("readonly", "bool"), "false"),
        }
    )
    logging = obj(
        {
            "driver": attr("driver", "string"),
            "options": hclspec_pb2.Spec(
                block_attrs=hclspec_pb2.BlockAttrs(name="options", type="string")
            ),
        }
    )
    return obj(
        {
            "image": attr("image", "string", True),
            "args": attr("args", "list(string)"),
            "work_dir": default(attr("work_dir", "string"), '"/"'),
            "mount": hclspec_pb2.Spec(block_list=hclspec_pb2.BlockList(name="mount", nested=mount)),
            "logging": hclspec_pb2.Spec(
                block_value=hclspec_pb2.Block(name="logging", nested=logging)
            ),
        }
    )


class Base(base_pb2_grpc.BasePluginServicer):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def PluginInfo(self, request: Any, context: Any) -> base_pb2.PluginInfoResponse:
        versions = ["v0.2.0"] if self.mode == "info-api-version" else ["v0.1.0"]
        kind = base_pb2.UNKNOWN if self.mode == "info-type" else base_pb2.DRIVER
        return base_pb2.PluginInfoResponse(
            type=kind, plugin_api_versions=versions, plugin_version="0.0.1", name="broken"
        )

    def ConfigSchema(self, request: Any, context: Any) -> base_pb2.ConfigSchemaResponse:
        return base_pb2.ConfigSchemaResponse(spec=config_spec(self.mode))

    def SetConfig(self, request: Any, context: Any) -> base_pb2.SetConfigResponse:
        return base_pb2.SetConfigResponse()


class Driver(driver_pb2_grpc.DriverServicer):
    def __init__(self, mode: str) -> None:
        self.mode = mode

    def TaskConfigSchema(self, request: Any, context: Any) -> driver_pb2.TaskConfigSchemaResponse:
        if self.mode == "task-schema-unset":
            return driver_pb2.TaskConfigSchemaResponse()
        return driver_pb2.TaskConfigSchemaResponse(spec=reference_task_spec())

    def Capabilities(self, request: Any, context: Any) -> driver_pb2.CapabilitiesResponse:
        return driver_pb2.CapabilitiesResponse(capabilities=driver_pb2.DriverCapabilities())

    def Fingerprint(self, request: Any, context: Any) -> Iterator[driver_pb2.FingerprintResponse]:
        yield driver_pb2.FingerprintResponse(
            health=driver_pb2.FingerprintResponse.HEALTHY,
            health_description="ok",
            attributes={"driver.broken.mode": structs_pb2.Attribute(string_val=self.mode)},
        )
        if self.mode == "fingerprint-ends":
            return
        while context.is_active():
            time.sleep(0.05)

    def ExecTaskStreaming(
        self, requests: Iterator[driver_pb2.ExecTaskStreamingRequest], context: Any
    ) -> Iterator[driver_pb2.ExecTaskStreamingResponse]:
        """Echo stdin to stdout; the exit code is the number of stdin frames."""
        io_op = driver_pb2.ExecTaskStreamingIOOperation
        setup = next(requests)
        if not setup.HasField("setup"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first message should always be setup")
        frames = 0
        for req in requests:
            if req.HasField("stdin") and req.stdin.close:
                break
            if req.HasField("stdin"):
                frames += 1
                yield driver_pb2.ExecTaskStreamingResponse(stdout=io_op(data=req.stdin.data))
        yield driver_pb2.ExecTaskStreamingResponse(stdout=io_op(close=True))
        yield driver_pb2.ExecTaskStreamingResponse(
            exited=True, result=driver_pb2.ExitResult(exit_code=frames)
        )

    def TaskEvents(self, request: Any, context: Any) -> Iterator[driver_pb2.DriverTaskEvent]:
        if self.mode == "events-ends":
            return
        while context.is_active():
            time.sleep(0.05)
        yield from ()


class Controller(goplugin_controller_pb2_grpc.GRPCControllerServicer):
    def __init__(self, done: threading.Event, mode: str) -> None:
        self.done = done
        self.mode = mode

    def Shutdown(self, request: Any, context: Any) -> goplugin_controller_pb2.Empty:
        if self.mode != "ignore-shutdown":
            self.done.set()
        return goplugin_controller_pb2.Empty()


def log_line(mode: str) -> str:
    if mode == "bad-logs":
        # 'warning' is no hclog level and the timestamp has 3 fractional digits.
        return '{"@level":"warning","@message":"hello","@timestamp":"2026-01-02T03:04:05.123Z"}'
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000000Z"
    return '{"@level":"info","@message":"hello","@timestamp":"' + ts + '"}'


def main(mode: str) -> int:
    if os.environ.get(COOKIE_KEY) != COOKIE:
        sys.stderr.write("this is a test plugin for the nomadsim rig; run it through the rig\n")
        return 1
    done = threading.Event()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    base_pb2_grpc.add_BasePluginServicer_to_server(Base(mode), server)
    # The unimplemented lifecycle RPCs answer UNIMPLEMENTED from the generated base class.
    driver_pb2_grpc.add_DriverServicer_to_server(Driver(mode), server)  # type: ignore[abstract]
    goplugin_controller_pb2_grpc.add_GRPCControllerServicer_to_server(
        Controller(done, mode), server
    )
    path = os.path.join(tempfile.gettempdir(), f"broken-{os.getpid()}.sock")
    server.add_insecure_port("unix:" + path)
    server.start()
    sys.stderr.write(log_line(mode) + "\n")
    sys.stderr.flush()
    if mode == "banner":
        sys.stdout.write("starting broken plugin\n")
    if mode == "exit-before-handshake":
        return 3
    if mode != "silent":
        line = HANDSHAKE_MODES.get(mode, HANDSHAKE_MODES["ok"]).format(path=path)
        sys.stdout.write(line + "\n")
    sys.stdout.flush()
    done.wait(120)
    time.sleep(0.05)  # let the Shutdown reply leave before the process goes
    with contextlib.suppress(OSError):
        os.unlink(path)
    # Exit like a Go plugin does, without waiting for grpc's threads to wind down.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "ok"))
