"""The plugin answers the handshake before importing its services: Nomad waits for the
handshake line of every plugin process it launches, and the services come at the first RPC."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from plugin_proto import base_pb2, base_pb2_grpc, driver_pb2, driver_pb2_grpc, grpc_health_pb2
from tests.fixtures.plugin import ROOT, PluginProcess, plugin_env, start_plugin

# What the first RPC may import, and answering the handshake must not.
NOT_BEFORE_HANDSHAKE = (
    "driver.servicer", "driver.plugin", "driver.driver", "driver.config", "driver.convert",
    "driver.stats", "driver.execsession", "driver.fingerprint", "jails", "zfsimage", "requests",
    # go-plugin's own services too: grpc itself needs no protobuf
    "driver.goplugin_services", "plugin_proto", "google.protobuf",
)

# Runs the plugin's own main() and records the loaded modules the moment the handshake line is
# written (then exits: nothing after the handshake matters here).
_PROBE = """
import json, os, sys
from driver.__main__ import main

class Out:
    def write(self, s):
        if s.startswith("1|2|unix|"):
            sys.__stderr__.write("MODULES " + json.dumps(sorted(sys.modules)) + "\\n")
            sys.__stderr__.flush()
            os._exit(0)
        return len(s)

    def flush(self):
        pass

sys.stdout = Out()
sys.exit(main([]))
"""


def test_the_handshake_comes_before_the_services_are_imported(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", _PROBE], cwd=ROOT, env=plugin_env(tmp_path),
                         capture_output=True, text=True, timeout=60)
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("MODULES ")]
    assert res.returncode == 0 and lines, res.stderr
    loaded = set(json.loads(lines[0].removeprefix("MODULES ")))
    assert "driver.goplugin" in loaded  # the probe did run the serve path
    early = sorted(m for m in NOT_BEFORE_HANDSHAKE if m in loaded)
    assert early == [], f"imported before the handshake line: {early}"


@pytest.fixture
def fresh_plugin() -> Iterator[PluginProcess]:
    pp = start_plugin()
    yield pp
    pp.stop()


def test_the_first_rpcs_of_each_service_load_them_and_answer(fresh_plugin: PluginProcess) -> None:
    # Nomad's first calls after the handshake, on a plugin that has loaded nothing yet.
    info = base_pb2_grpc.BasePluginStub(fresh_plugin.channel).PluginInfo(
        base_pb2.PluginInfoRequest(), timeout=30)
    assert info.name == "xc" and info.type == base_pb2.DRIVER
    caps = driver_pb2_grpc.DriverStub(fresh_plugin.channel).Capabilities(
        driver_pb2.CapabilitiesRequest(), timeout=30)
    assert caps.HasField("capabilities")
    health = fresh_plugin.channel.unary_unary(
        "/grpc.health.v1.Health/Check",
        request_serializer=grpc_health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=grpc_health_pb2.HealthCheckResponse.FromString)
    reply = health(grpc_health_pb2.HealthCheckRequest(service="plugin"), timeout=30)
    assert reply.status == grpc_health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as err:
        fresh_plugin.channel.unary_unary("/no.Such/Method")(b"", timeout=30)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
