"""The driver's own task networks, without a host: the task's request (pure), Nomad's
DriverNetwork, the conversions, the config options, errors, fingerprint and sweep."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from driver import convert
from driver.config import (
    PLUGIN_SCHEMA,
    TASK_SCHEMA,
    ConfigError,
    PluginConfig,
    TaskConfig,
    decode_plugin_config,
    decode_task_config,
)
from driver.driver import XcDriver
from driver.errors import StartFailed
from driver.fingerprint import compute
from driver.network import NomadNetwork
from driver.state import DriverState
from driver.tasknet import (
    DriverNetwork,
    NetRequest,
    NomadPort,
    _start_error,
    driver_network,
    request_of,
)
from driver.taskspec import NomadTask
from driver.taskstore import TaskStore
from jails.errors import JailError
from jails.net import AllocNetwork, NetworkConfig, NetworkError, NetworkProbe
from jails.net import PortMapping as JailPort
from tests.driver.ctyenc import nomad_bytes
from tests.driver.fakes import FakeImages, FakeRuntime

HTTP = NomadPort("http", 23456, 8080, "127.0.0.1")


def task(**cfg: Any) -> Any:
    return decode_task_config(nomad_bytes(TASK_SCHEMA, {"image": "x", **cfg}))


def plugin(**cfg: Any) -> PluginConfig:
    return decode_plugin_config(nomad_bytes(PLUGIN_SCHEMA, cfg))


def error_of(fn: Any, *args: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    return info.value


# ---- the request ----


def test_host_mode_asks_for_nothing() -> None:
    assert request_of(task(), False, (HTTP,)) is None
    assert request_of(task(), True, ()) is None  # a Nomad group network is joined as before


def test_bridge_publishes_the_groups_ports_by_label() -> None:
    req = request_of(task(network_mode="bridge", ports=["http"]), False,
                     (HTTP, NomadPort("admin", 9000)))
    assert req == NetRequest("bridge", (JailPort("http", 23456, 8080, "127.0.0.1"),))
    # `to` unset: the task listens on the host port's number (Nomad's NOMAD_PORT_<label>).
    req = request_of(task(network_mode="bridge", ports=["admin"]), False, (NomadPort("admin",
                                                                                     9000),))
    assert req is not None and req.ports[0].to == 9000 and req.ports[0].host_ip == ""


@pytest.mark.parametrize(("cfg", "group", "field", "words"), [
    ({"ports": ["http"]}, False, "config.ports", 'network_mode "host"'),
    ({"network_mode": "bridge"}, True, "config.network_mode", "inside a Nomad group network"),
    ({"network_mode": "bridge", "ports": ["grpc"]}, False, "config.ports[0]",
     "no port 'grpc' (its ports: http)"),
])
def test_bad_requests_name_the_field(cfg: dict[str, Any], group: bool, field: str,
                                     words: str) -> None:
    err = error_of(request_of, task(**cfg), group, (HTTP,))
    assert err.field == field and words in str(err)


@pytest.mark.parametrize(("cfg", "field", "words"), [
    ({"network_mode": "vlan"}, "config.network_mode", "unknown network mode 'vlan'"),
    ({"ports": ["http", "http"]}, "config.ports[1]", "listed twice"),
    ({"ports": ["my port"]}, "config.ports[0]", "not a port label"),
])
def test_bad_task_options_name_the_field(cfg: dict[str, Any], field: str, words: str) -> None:
    err = error_of(lambda: task(**cfg))
    assert err.field == field and words in str(err)


# ---- what Nomad gets back ----


def test_driver_network_is_the_allocs_address_and_the_tasks_ports() -> None:
    alloc = AllocNetwork("a1", "bridge", "10.9.0.2", 24, "10.9.0.1",
                         ports=(JailPort("http", 23456, 8080, "127.0.0.1"),))
    assert driver_network(alloc) == DriverNetwork("10.9.0.2", {"http": 8080}, True)
    assert driver_network(AllocNetwork("a1", "none")) is None


def test_driver_network_and_ports_round_trip_through_proto() -> None:
    dn = DriverNetwork("10.9.0.2", {"http": 8080, "admin": 9000}, True)
    back = convert.driver_network_from_proto(convert.driver_network_to_proto(dn))
    assert back == dn
    ports = (HTTP, NomadPort("admin", 9000, 0, ""))
    assert convert.ports_from_proto(convert.ports_to_proto(ports)) == ports
    t = NomadTask(id="a/t/1", name="t", alloc_id="a", alloc_dir="/x", stdout_path="/o",
                  stderr_path="/e", ports=ports)
    assert convert.nomad_task_from_proto(convert.nomad_task_to_proto(t)).ports == ports


# ---- errors at start ----


def test_plugin_option_problems_name_the_option_and_may_pass() -> None:
    err = _start_error(NetworkError("network.ipv4_pool", "no free address in 10.9.0.0/30"))
    assert isinstance(err, StartFailed) and err.recoverable
    assert "plugin option network.ipv4_pool: no free address" in str(err)
    task_err = _start_error(NetworkError("network_mode", "'alias' is not available"))
    assert isinstance(task_err, ConfigError) and task_err.field == "config.network_mode"


# ---- the plugin's network block ----


def test_network_block_decodes_to_the_libraries_config() -> None:
    cfg = plugin(network={"bridge": "br7", "ipv4_pool": "10.77.0.0/24", "nat": True,
                          "external_interface": "eth0"})
    assert cfg.network == NetworkConfig(bridge="br7", ipv4_pool="10.77.0.0/24",
                                        ipv4_gateway="10.77.0.1", nat=True,
                                        external_interface="eth0")
    assert PluginConfig().network == NetworkConfig()  # no block: the defaults, nothing made


@pytest.mark.parametrize(("block", "field", "words"), [
    ({"ipv4_pool": "10.77.0.0/33"}, "config.network.ipv4_pool", "CIDR"),
    ({"ipv4_pool": "10.77.0.0/24", "ipv4_gateway": "10.78.0.1"}, "config.network.ipv4_gateway",
     "not a host address"),
    ({"bridge": "a-bridge-name-too-long"}, "config.network.bridge", "interface name"),
    ({"pf_anchor": "x/y"}, "config.network.pf_anchor", "pf anchor"),
])
def test_bad_network_options_name_the_option(block: dict[str, Any], field: str,
                                             words: str) -> None:
    err = error_of(lambda: plugin(network=block))
    assert err.field == field, err
    assert words in str(err)


# ---- fingerprint ----


class FakeNets:
    def __init__(self, probe: NetworkProbe) -> None:
        self._probe = probe

    def probe(self) -> NetworkProbe:
        return self._probe


@pytest.mark.parametrize(("configured", "health"), [(False, "healthy"), (True, "unhealthy")])
def test_a_broken_network_host_is_unhealthy_only_when_configured(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, configured: bool, health: str) -> None:
    import jails
    import jails.net
    import zfsimage

    monkeypatch.setattr(jails, "probe_host", lambda backend: _healthy())
    monkeypatch.setattr(zfsimage, "probe_dataset", lambda ds: _healthy())
    broken = NetworkProbe(False, "iptables not found: install iptables", {"x": "1"})
    monkeypatch.setattr(jails.net, "open_networks", lambda *a, **k: FakeNets(broken))
    cfg = dataclasses.replace(PluginConfig(), backend="linux", state_dir=str(tmp_path))
    if configured:
        cfg = dataclasses.replace(cfg, network=NetworkConfig(bridge="br9"))
    fp = compute(cfg, platform="linux")
    assert fp.attributes["driver.xc.network.bridge_mode"] == "0"
    assert fp.health == health, fp
    if configured:
        assert fp.description == ("task networks (plugin option network): iptables not found: "
                                  "install iptables")


def _healthy() -> Any:
    @dataclasses.dataclass
    class Ok:
        healthy: bool = True
        reason: str = ""
        attributes: dict[str, str] = dataclasses.field(default_factory=dict)
    return Ok()


# ---- the sweep at plugin start ----


class RecordingNets:
    def __init__(self) -> None:
        self.swept: list[set[str]] = []

    def sweep(self, live: Any) -> list[str]:
        self.swept.append(set(live))
        return []


def _record(state_dir: Path, name: str, alloc: str, mode: str) -> None:
    state = DriverState(task_id=f"{alloc}/t/1", alloc_id=alloc, task_name="t", name=name,
                        rootfs_key=name, image="x", image_digest="sha256:0", started_at=1.0,
                        network_mode=mode)
    (state_dir / "driver").mkdir(parents=True, exist_ok=True)
    (state_dir / "driver" / f"{name}.json").write_bytes(state.encode())


def test_sweep_keeps_the_networks_of_recorded_tasks(tmp_path: Path) -> None:
    rec = RecordingNets()
    drv = XcDriver(dataclasses.replace(PluginConfig(), state_dir=str(tmp_path)),
                   runtime=lambda: None, images=lambda: None,  # type: ignore[arg-type,return-value]
                   tasks=TaskStore(tmp_path / "driver"), networks=rec)  # type: ignore[arg-type]
    rec.has_leases = lambda: False  # type: ignore[attr-defined]
    assert drv.sweep_networks() == [] and rec.swept == []  # no lease, no record: nothing to do
    _record(tmp_path, "j1", "alloc-with-net", "bridge")
    _record(tmp_path, "j2", "alloc-on-host", "")
    drv.sweep_networks()
    assert rec.swept == [{"alloc-with-net"}]


# ---- the lifecycle with an in-memory runtime, image store and networks ----


class FakeNetworks:
    """TaskNetworks in memory: one AllocNetwork per alloc, its holders, failures on demand."""

    def __init__(self) -> None:
        self.nets: dict[str, AllocNetwork] = {}
        self.holders: dict[str, set[str]] = {}
        self.fail_ensure: Exception | None = None

    def ensure(self, alloc_id: str, task: str, req: NetRequest) -> AllocNetwork:
        if self.fail_ensure is not None:
            raise self.fail_ensure
        net = self.nets.setdefault(alloc_id, AllocNetwork(
            alloc_id, req.mode, "10.9.0.2" if req.mode == "bridge" else "", 24, "10.9.0.1",
            ports=req.ports, netns_path=f"/var/run/netns/xc-{alloc_id[:8]}"))
        self.holders.setdefault(alloc_id, set()).add(task)
        return net

    def release(self, alloc_id: str, task: str) -> None:
        left = self.holders.get(alloc_id, set()) - {task}
        self.holders[alloc_id] = left
        if not left:
            self.nets.pop(alloc_id, None)
            self.holders.pop(alloc_id, None)

    def get(self, alloc_id: str) -> AllocNetwork | None:
        return self.nets.get(alloc_id)


ALLOC = "0b5c4d3e-1111-2222-3333-444455556666"


def lifecycle(tmp_path: Path) -> tuple[XcDriver, FakeRuntime, FakeImages, FakeNetworks]:
    rt, images, nets = FakeRuntime(), FakeImages(tmp_path / "images"), FakeNetworks()
    drv = XcDriver(dataclasses.replace(PluginConfig(), state_dir=str(tmp_path)),
                   runtime=lambda: rt, images=lambda: images,  # type: ignore[arg-type,return-value]
                   tasks=TaskStore(tmp_path / "driver"), networks=nets)  # type: ignore[arg-type]
    return drv, rt, images, nets


def nomad_task(tmp_path: Path, name: str = "web", group: bool = False) -> NomadTask:
    return NomadTask(id=f"{ALLOC}/{name}/1a2b3c4d", name=name, alloc_id=ALLOC,
                     alloc_dir=str(tmp_path / "alloc"), stdout_path="/dev/null",
                     stderr_path="/dev/null", ports=(HTTP,),
                     network=NomadNetwork("group", "/var/run/netns/x") if group else None)


BRIDGE_TASK = TaskConfig(image="registry.example/busybox:1.36", network_mode="bridge",
                         ports=("http",))


def test_bridge_tasks_share_the_allocs_network_until_the_last_is_destroyed(
        tmp_path: Path) -> None:
    drv, rt, _, nets = lifecycle(tmp_path)

    async def scenario() -> None:
        web = await drv.start_task(nomad_task(tmp_path, "web"), BRIDGE_TASK)
        side = await drv.start_task(nomad_task(tmp_path, "side"), BRIDGE_TASK)
        assert web.network_mode == "bridge"
        spec = rt.jails[web.name].spec
        assert (spec.network, spec.netns_path) == ("netns", f"/var/run/netns/xc-{ALLOC[:8]}")
        assert await drv.driver_network(web) == DriverNetwork("10.9.0.2", {"http": 8080})
        await drv.destroy_task(web.task_id, force=True)
        assert ALLOC in nets.nets  # the side task still holds it
        await drv.destroy_task(side.task_id, force=True)
        assert ALLOC not in nets.nets

    asyncio.run(scenario())


def test_a_failed_start_releases_the_network_it_took(tmp_path: Path) -> None:
    drv, rt, images, nets = lifecycle(tmp_path)
    rt.fail("start", JailError("runc failed"))
    with pytest.raises(StartFailed):
        asyncio.run(drv.start_task(nomad_task(tmp_path), BRIDGE_TASK))
    assert nets.nets == {} and images.clones == set()
    assert not list((tmp_path / "driver").glob("*.json"))


def test_a_bad_network_request_fails_before_the_image_is_pulled(tmp_path: Path) -> None:
    drv, _, images, nets = lifecycle(tmp_path)
    with pytest.raises(ConfigError) as info:
        asyncio.run(drv.start_task(nomad_task(tmp_path, group=True), BRIDGE_TASK))
    assert info.value.field == "config.network_mode"
    assert images.pulls == [] and nets.nets == {}


def test_an_exhausted_pool_is_one_error_naming_the_option_and_leaves_nothing(
        tmp_path: Path) -> None:
    drv, _, images, nets = lifecycle(tmp_path)
    nets.fail_ensure = _start_error(NetworkError("network.ipv4_pool",
                                                 "no free address in 10.9.0.0/30"))
    with pytest.raises(StartFailed) as info:
        asyncio.run(drv.start_task(nomad_task(tmp_path), BRIDGE_TASK))
    assert "network.ipv4_pool" in str(info.value) and info.value.recoverable
    assert images.clones == set() and not list((tmp_path / "driver").glob("*.json"))


def test_a_freebsd_parent_jail_carries_what_tasks_may_set() -> None:
    from driver.tasknet import parent_params_of

    assert parent_params_of([]) == {}
    assert parent_params_of(["allow.raw_sockets", "sysvipc", "allow.mount.tmpfs"]) == {
        "allow.mount.tmpfs": "1", "allow.raw_sockets": "1"}
    assert parent_params_of(["enforce_statfs"]) == {"enforce_statfs": "0"}


def test_the_freebsd_networks_get_the_parent_params(tmp_path: Path) -> None:
    from driver.tasknet import TaskNetworks

    cfg = plugin(dataset="tank/xc", backend="freebsd",
                 allowed_jail_params=["allow.raw_sockets", "sysvipc"])
    nets = TaskNetworks(cfg, tmp_path).nets
    assert getattr(nets, "parent_params", None) == {"allow.raw_sockets": "1"}
