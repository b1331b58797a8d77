"""The plugin process as go-plugin's client sees it: run by hand, handshake, socket, lifetime."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from plugin_proto import (
    goplugin_controller_pb2,
    goplugin_controller_pb2_grpc,
    goplugin_stdio_pb2_grpc,
    grpc_health_pb2,
    grpc_health_pb2_grpc,
)
from tests.fixtures.plugin import COOKIE_KEY, ROOT, PluginProcess, plugin_env, start_plugin

HANDSHAKE = re.compile(r"^1\|2\|unix\|(/[^|]+)\|grpc$")
GO_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$")
HCLOG_LEVELS = {"trace", "debug", "info", "warn", "error"}
# go-plugin's Kill waits this long for the process before SIGKILL.
GO_PLUGIN_KILL_WAIT_S = 2.0


def run_by_hand(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in plugin_env().items() if k != COOKIE_KEY}
    return subprocess.run([sys.executable, "-m", "driver", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)


def test_run_by_hand_prints_one_sentence_and_exits_1() -> None:
    res = run_by_hand()
    assert res.returncode == 1
    assert res.stdout == ""
    msg = res.stderr.strip()
    assert "\n" not in msg and msg.endswith(".")
    assert "Nomad" in msg and "install --plugin-dir" in msg


def test_wrong_cookie_is_refused_like_no_cookie() -> None:
    env = {**plugin_env(), COOKIE_KEY: "nope"}
    res = subprocess.run([sys.executable, "-m", "driver"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stdout == "" and "Nomad" in res.stderr


def test_protocol_version_not_offered_is_refused() -> None:
    env = {**plugin_env(), "PLUGIN_PROTOCOL_VERSIONS": "1"}
    res = subprocess.run([sys.executable, "-m", "driver"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stdout == ""
    assert "protocol versions 1" in res.stderr and "version 2" in res.stderr


def test_version_and_help_commands() -> None:
    res = run_by_hand("version")
    assert res.returncode == 0 and re.match(r"^nomad-driver-xc \d+\.\d+\.\d+", res.stdout)
    assert run_by_hand("--help").returncode == 0
    bad = run_by_hand("frobnicate")
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr


def test_handshake_line_and_socket(plugin: PluginProcess) -> None:
    m = HANDSHAKE.match(plugin.handshake)
    assert m, plugin.handshake
    path = Path(m.group(1))
    assert path.parent == plugin.sock_dir  # PLUGIN_UNIX_SOCKET_DIR is honoured
    assert path.is_socket()
    assert len(os.fsencode(str(path))) < 104


def test_health_reports_plugin_serving(plugin: PluginProcess) -> None:
    health = grpc_health_pb2_grpc.HealthStub(plugin.channel)
    for service in ("plugin", ""):
        resp = health.Check(grpc_health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert resp.status == grpc_health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(grpc_health_pb2.HealthCheckRequest(service="nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_controller_shutdown_exits_promptly_and_removes_the_socket() -> None:
    pp = start_plugin()
    try:
        sock = Path(pp.address)
        stdio = goplugin_stdio_pb2_grpc.GRPCStdioStub(pp.channel)
        from google.protobuf import empty_pb2

        stream = stdio.StreamStdio(empty_pb2.Empty())  # held open like go-plugin's client does
        goplugin_controller_pb2_grpc.GRPCControllerStub(pp.channel).Shutdown(
            goplugin_controller_pb2.Empty(), timeout=5)
        assert pp.wait_exit(GO_PLUGIN_KILL_WAIT_S) == 0, "plugin outlived go-plugin's Kill wait"
        assert not sock.exists()
        assert list(stream) == []  # the stdio stream ended cleanly with the plugin
    finally:
        pp.stop()


def test_sigint_is_ignored_and_sigterm_stops() -> None:
    pp = start_plugin()
    try:
        health = grpc_health_pb2_grpc.HealthStub(pp.channel)
        pp.proc.send_signal(signal.SIGINT)
        # Still serving after a Ctrl-C aimed at the agent's process group.
        resp = health.Check(grpc_health_pb2.HealthCheckRequest(service="plugin"), timeout=5)
        assert resp.status == grpc_health_pb2.HealthCheckResponse.SERVING
        assert pp.proc.poll() is None
        pp.proc.send_signal(signal.SIGTERM)
        assert pp.wait_exit(GO_PLUGIN_KILL_WAIT_S) == 0
    finally:
        pp.stop()


def test_stderr_is_hclog_json_and_stdout_only_the_handshake() -> None:
    pp = start_plugin()
    try:
        health = grpc_health_pb2_grpc.HealthStub(pp.channel)
        health.Check(grpc_health_pb2.HealthCheckRequest(service="plugin"), timeout=5)
    finally:
        pp.stop()
    lines = [ln for ln in pp.stderr_lines if ln]
    assert lines, "the plugin logs at debug level"
    for ln in lines:
        rec = json.loads(ln)
        assert rec["@level"] in HCLOG_LEVELS
        assert isinstance(rec["@message"], str)
        assert GO_TIMESTAMP.match(rec["@timestamp"]), rec["@timestamp"]
    assert any(json.loads(ln)["@message"] == "plugin serving" for ln in lines)


def test_two_plugins_side_by_side_get_their_own_sockets() -> None:
    a, b = start_plugin(), start_plugin()
    try:
        assert a.address != b.address
        for pp in (a, b):
            grpc_health_pb2_grpc.HealthStub(pp.channel).Check(
                grpc_health_pb2.HealthCheckRequest(service="plugin"), timeout=5)
    finally:
        a.stop()
        b.stop()


def test_socket_group_is_applied_like_go_plugin() -> None:
    import grp

    group = grp.getgrgid(os.getgid()).gr_name
    pp = start_plugin(env={"PLUGIN_UNIX_SOCKET_GROUP": group})
    try:
        st = Path(pp.address).stat()
        assert st.st_gid == os.getgid()
        assert st.st_mode & 0o777 == 0o660
    finally:
        pp.stop()


def test_unknown_socket_group_fails_with_a_clear_message() -> None:
    env = {**plugin_env(), "PLUGIN_UNIX_SOCKET_GROUP": "xctest-no-such-group"}
    res = subprocess.run([sys.executable, "-m", "driver"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stdout == ""
    assert "xctest-no-such-group" in res.stderr and "does not exist" in res.stderr


def test_too_long_socket_dir_fails_with_a_clear_message(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    deep.mkdir()
    env = {**plugin_env(), "PLUGIN_UNIX_SOCKET_DIR": str(deep)}
    res = subprocess.run([sys.executable, "-m", "driver"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and res.stdout == ""
    assert "PLUGIN_UNIX_SOCKET_DIR" in res.stderr and "shorter" in res.stderr


def test_sweep_ends_plugins_of_dead_sessions_only() -> None:
    import tempfile

    from tests.fixtures import plugin as fixture
    from tests.fixtures.sweep import is_stale

    orphan = start_plugin()  # stands in for a plugin a crashed session left behind
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    stale_dir = Path(tempfile.gettempdir()) / f"xctest-{dead}-plugin-orphan"
    try:
        stale_dir.mkdir()
        (stale_dir / fixture.PIDFILE).write_text((orphan.sock_dir / fixture.PIDFILE).read_text())
        live = start_plugin()  # ours: must survive the sweep
        try:
            fixture.sweep_leftovers(is_stale)
            assert orphan.wait_exit(5) is not None
            assert not stale_dir.exists()
            assert live.proc.poll() is None and live.sock_dir.exists()
        finally:
            live.stop()
    finally:
        orphan.stop()
        if stale_dir.exists():
            import shutil

            shutil.rmtree(stale_dir)
