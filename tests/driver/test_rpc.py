"""The BasePlugin and Driver services over the real unix socket, as Nomad's client calls them."""

from __future__ import annotations

import concurrent.futures
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from driver import convert
from driver.config import PLUGIN_SCHEMA, TASK_SCHEMA
from driver.fingerprint import Fingerprint
from plugin_proto import base_pb2, base_pb2_grpc, driver_pb2, driver_pb2_grpc
from tests.driver.ctyenc import encode, hcldec, nomad_bytes
from tests.fixtures.plugin import PluginProcess
from tests.fixtures.zpool import Pool

TIMEOUT = 10


def base(pp: PluginProcess) -> Any:
    return base_pb2_grpc.BasePluginStub(pp.channel)


def drv(pp: PluginProcess) -> Any:
    return driver_pb2_grpc.DriverStub(pp.channel)


def set_config(pp: PluginProcess, user: dict[str, Any], nomad: bool = True) -> Any:
    req = base_pb2.SetConfigRequest(msgpack_config=nomad_bytes(PLUGIN_SCHEMA, user),
                                    plugin_api_version="v0.1.0")
    if nomad:
        req.nomad_config.CopyFrom(convert.nomad_info_to_proto(
            convert.NomadInfo(14000, 14512, 4000, 2)))
    return base(pp).SetConfig(req, timeout=TIMEOUT)


def rpc_error(fn: Any, *args: Any, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, **kw)
    return info.value


def next_within(stream: Any, seconds: float) -> Any:
    """The stream's next message, or None if none arrived in time (the stream still open)."""
    box: list[Any] = []

    def pull() -> None:
        try:
            box.append(next(stream))
        except Exception as exc:
            box.append(exc)

    t = threading.Thread(target=pull, daemon=True)
    t.start()
    t.join(seconds)
    if not box:
        return None
    if isinstance(box[0], Exception):
        raise box[0]
    return box[0]


# ---- BasePlugin ----


def test_plugin_info(plugin: PluginProcess) -> None:
    info = base(plugin).PluginInfo(base_pb2.PluginInfoRequest(), timeout=TIMEOUT)
    assert info.type == base_pb2.DRIVER
    assert info.name == "xc"
    assert list(info.plugin_api_versions) == ["v0.1.0"]
    assert info.plugin_version.count(".") == 2  # parses as a go-version


def test_config_schema_is_the_plugin_schema(plugin: PluginProcess) -> None:
    spec = base(plugin).ConfigSchema(base_pb2.ConfigSchemaRequest(), timeout=TIMEOUT).spec
    assert spec.WhichOneof("block") == "object"
    assert spec == convert.schema_to_proto(PLUGIN_SCHEMA)
    assert {"dataset", "backend", "volumes", "gc", "allowed_jail_params"} <= set(
        spec.object.attributes)


def test_set_config_good_twice_and_without_nomad_config(plugin: PluginProcess) -> None:
    # Agent start: the validation launch sends it twice without nomad_config ...
    set_config(plugin, {"dataset": "tank/xc"}, nomad=False)
    set_config(plugin, {"dataset": "tank/xc"}, nomad=False)
    # ... the driver-manager launch with it.
    set_config(plugin, {"dataset": "tank/xc", "backend": "linux"})
    # An empty msgpack_config (no config block sent) is all defaults.
    base(plugin).SetConfig(base_pb2.SetConfigRequest(), timeout=TIMEOUT)


def test_set_config_bad_value_names_the_field(plugin: PluginProcess) -> None:
    err = rpc_error(set_config, plugin, {"backend": "bhyve"})
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'config.backend: \'bhyve\' is not a backend; set backend = "auto"' in err.details()


def test_set_config_misspelled_key_names_it(plugin: PluginProcess) -> None:
    value = hcldec(PLUGIN_SCHEMA, {})
    assert value is not None
    value["alow_insecure_registries"] = ["x"]
    err = rpc_error(base(plugin).SetConfig,
                    base_pb2.SetConfigRequest(msgpack_config=encode(value)), timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.alow_insecure_registries: unknown key" in err.details()


def test_set_config_garbage_bytes_is_a_clear_error(plugin: PluginProcess) -> None:
    err = rpc_error(base(plugin).SetConfig,
                    base_pb2.SetConfigRequest(msgpack_config=b"\xc1"), timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "go-cty msgpack" in err.details()


# ---- Driver: schema, capabilities, init, shutdown ----


def test_task_config_schema(plugin: PluginProcess) -> None:
    spec = drv(plugin).TaskConfigSchema(driver_pb2.TaskConfigSchemaRequest(), timeout=TIMEOUT).spec
    assert spec == convert.schema_to_proto(TASK_SCHEMA)
    assert spec.object.attributes["image"].Attr.required


def test_capabilities_are_truthful(plugin: PluginProcess) -> None:
    caps = drv(plugin).Capabilities(driver_pb2.CapabilitiesRequest(), timeout=TIMEOUT).capabilities
    assert caps.send_signals and caps.exec
    assert caps.fs_isolation == driver_pb2.DriverCapabilities.IMAGE
    assert caps.mount_configs == driver_pb2.DriverCapabilities.ANY_MOUNTS
    # Linux (this host, backend auto): host and Nomad's group networks (the client makes the
    # netns, so must_create_network stays false).
    net = driver_pb2.NetworkIsolationSpec
    assert list(caps.network_isolation_modes) == [net.HOST, net.GROUP]
    assert not caps.must_create_network and not caps.disable_log_collection


def test_capabilities_follow_the_backend(plugin: PluginProcess) -> None:
    net = driver_pb2.NetworkIsolationSpec

    def modes() -> list[int]:
        return list(drv(plugin).Capabilities(driver_pb2.CapabilitiesRequest(),
                                             timeout=TIMEOUT).capabilities.network_isolation_modes)

    set_config(plugin, {"backend": "freebsd"})  # FreeBSD Nomad has no group networks
    assert modes() == [net.HOST]
    set_config(plugin, {"backend": "linux"})
    assert modes() == [net.HOST, net.GROUP]


def test_init_and_driver_shutdown_answer_ok(plugin: PluginProcess) -> None:
    drv(plugin).Init(driver_pb2.InitRequest(), timeout=TIMEOUT)
    drv(plugin).Shutdown(driver_pb2.ShutdownRequest(), timeout=TIMEOUT)
    # The Driver Shutdown RPC is not the process shutdown: still serving.
    base(plugin).PluginInfo(base_pb2.PluginInfoRequest(), timeout=TIMEOUT)


# ---- Fingerprint and TaskEvents ----


def test_fingerprint_healthy_on_a_real_pool_then_follows_config_changes(
    plugin: PluginProcess, zpool: Pool
) -> None:
    dataset = f"{zpool.name}/xc"
    set_config(plugin, {"dataset": dataset})
    stream = drv(plugin).Fingerprint(driver_pb2.FingerprintRequest(), timeout=120)
    try:
        first = convert.fingerprint_from_proto(next_within(stream, TIMEOUT))
        assert first.health == "healthy", first.description
        attrs = first.attributes
        assert attrs["driver.xc.backend"] == "linux"
        assert attrs["driver.xc.zfs.dataset"] == dataset
        assert attrs["driver.xc.version"] == base(plugin).PluginInfo(
            base_pb2.PluginInfoRequest(), timeout=TIMEOUT).plugin_version
        assert attrs["driver.xc.os.release"]
        # A change of config is a change of fingerprint, sent without waiting for the 30 s tick.
        set_config(plugin, {"dataset": "xctest-nosuchpool/xc"})
        second = convert.fingerprint_from_proto(next_within(stream, TIMEOUT))
        assert second.health == "unhealthy"
        assert "xctest-nosuchpool" in second.description
        # And the stream stays open afterwards.
        assert next_within(stream, 1.0) is None
    finally:
        stream.cancel()


def test_fingerprint_undetected_for_a_backend_of_another_os(plugin: PluginProcess) -> None:
    set_config(plugin, {"backend": "freebsd"})
    stream = drv(plugin).Fingerprint(driver_pb2.FingerprintRequest(), timeout=60)
    try:
        fp: Fingerprint = convert.fingerprint_from_proto(next_within(stream, TIMEOUT))
        assert fp.health == "undetected"
        assert 'set backend = "auto"' in fp.description
    finally:
        stream.cancel()


def test_task_events_stream_stays_open(plugin: PluginProcess) -> None:
    stream = drv(plugin).TaskEvents(driver_pb2.TaskEventsRequest(), timeout=60)
    try:
        assert next_within(stream, 1.0) is None  # no event yet, and not ended
        assert stream.running() or not stream.done()
    finally:
        stream.cancel()


def test_open_streams_do_not_starve_calls(plugin: PluginProcess) -> None:
    streams = [drv(plugin).TaskEvents(driver_pb2.TaskEventsRequest(), timeout=60)
               for _ in range(40)]
    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            infos = list(pool.map(
                lambda _: base(plugin).PluginInfo(base_pb2.PluginInfoRequest(), timeout=TIMEOUT),
                range(40)))
        assert all(i.name == "xc" for i in infos)
    finally:
        for s in streams:
            s.cancel()


# ---- StartTask's config decoding (no pool here: a good config then fails on the dataset) ----


def start(pp: PluginProcess, raw: bytes) -> grpc.RpcError:
    task = driver_pb2.TaskConfig(id="0b5c4d3e-1111-2222-3333-444455556666/web/1a2b3c4d",
                                 name="web", alloc_id="0b5c4d3e-1111-2222-3333-444455556666",
                                 msgpack_driver_config=raw)
    return rpc_error(drv(pp).StartTask, driver_pb2.StartTaskRequest(task=task), timeout=TIMEOUT)


def no_store(err: grpc.RpcError) -> bool:
    """The config was accepted and the start failed later, on the missing dataset zroot/xc."""
    return err.code() == grpc.StatusCode.FAILED_PRECONDITION and "zroot" in err.details()


def test_start_task_accepts_a_good_config_then_needs_the_store(
    plugin: PluginProcess, tmp_path: Path
) -> None:
    set_config(plugin, {"state_dir": str(tmp_path)})
    err = start(plugin, nomad_bytes(TASK_SCHEMA, {"image": "alpine:3.20", "args": ["-c", "true"]}))
    assert no_store(err), err.details()


def test_start_task_bad_config_is_invalid_argument_naming_the_field(
    plugin: PluginProcess,
) -> None:
    err = start(plugin, nomad_bytes(TASK_SCHEMA, {"command": "/bin/sh"}))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 'config.image: required; set image = "registry/name:tag"' in err.details()


def test_start_task_checks_the_operator_allow_list(plugin: PluginProcess, tmp_path: Path) -> None:
    raw = nomad_bytes(TASK_SCHEMA, {"image": "alpine", "jail_params": {"allow.mount": "1"}})
    err = start(plugin, raw)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.jail_params.allow.mount: not allowed" in err.details()
    set_config(plugin, {"allowed_jail_params": ["allow.mount"],
                        "state_dir": str(tmp_path)})
    assert no_store(start(plugin, raw))


def test_large_messages_are_accepted(plugin: PluginProcess, tmp_path: Path) -> None:
    # go-plugin allows MaxInt32 both ways; a big env must not hit grpc's 4 MiB default.
    raw = nomad_bytes(TASK_SCHEMA, {"image": "alpine", "args": ["x" * 1024] * 6000})
    set_config(plugin, {"state_dir": str(tmp_path)})
    assert no_store(start(plugin, raw))


@pytest.mark.parametrize(
    ("method", "request_msg"),
    [
        ("WaitTask", driver_pb2.WaitTaskRequest(task_id="x")),
        ("StopTask", driver_pb2.StopTaskRequest(task_id="x")),
        ("InspectTask", driver_pb2.InspectTaskRequest(task_id="x")),
        ("SignalTask", driver_pb2.SignalTaskRequest(task_id="x", signal="SIGHUP")),
    ],
)
def test_unknown_task_is_not_found(plugin: PluginProcess, method: str, request_msg: Any) -> None:
    err = rpc_error(getattr(drv(plugin), method), request_msg, timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "task 'x' is not known to the xc driver" in err.details()


def test_destroy_of_an_unknown_task_succeeds_and_recover_without_state_fails(
    plugin: PluginProcess,
) -> None:
    drv(plugin).DestroyTask(driver_pb2.DestroyTaskRequest(task_id="x", force=True),
                            timeout=TIMEOUT)
    err = rpc_error(drv(plugin).RecoverTask, driver_pb2.RecoverTaskRequest(), timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.NOT_FOUND and "no driver_state" in err.details()


@pytest.mark.parametrize(
    ("method", "request_msg"),
    [
        ("CreateNetwork", driver_pb2.CreateNetworkRequest(alloc_id="a")),
        ("DestroyNetwork", driver_pb2.DestroyNetworkRequest(alloc_id="a")),
    ],
)
def test_network_rpcs_answer_a_clear_unimplemented(
    plugin: PluginProcess, method: str, request_msg: Any
) -> None:
    err = rpc_error(getattr(drv(plugin), method), request_msg, timeout=TIMEOUT)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.details() == (f"xc: {method}: not needed: must_create_network is false, the "
                             "Nomad client makes a group's network namespace and xc tasks join "
                             "it")
