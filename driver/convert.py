"""Pure conversions between protobuf messages and the plugin's own types."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from google.protobuf import timestamp_pb2

from driver import hclschema as hs
from driver.events import TaskEvent
from driver.fingerprint import Fingerprint, Health
from driver.network import NomadDNS, NomadHosts, NomadNetwork
from driver.state import HANDLE_VERSION, DriverState, Resources
from driver.tasknet import DriverNetwork, NomadPort
from driver.taskspec import NomadMount, NomadTask
from jails import ExitStatus
from jails.spec import backend_network_modes
from plugin_proto import base_pb2, driver_pb2, hclspec_pb2, structs_pb2

# ---- hclspec ----


def spec_to_proto(node: hs.Node) -> hclspec_pb2.Spec:
    if isinstance(node, hs.Object):
        return hclspec_pb2.Spec(object=hclspec_pb2.Object(
            attributes={k: spec_to_proto(v) for k, v in node.attributes}))
    if isinstance(node, hs.Attr):
        return hclspec_pb2.Spec(Attr=hclspec_pb2.Attr(
            name=node.name, type=node.type, required=node.required))
    if isinstance(node, hs.Default):
        return hclspec_pb2.Spec(default=hclspec_pb2.Default(
            primary=spec_to_proto(node.primary), default=spec_to_proto(node.default)))
    if isinstance(node, hs.Literal):
        return hclspec_pb2.Spec(literal=hclspec_pb2.Literal(value=node.value))
    if isinstance(node, hs.Block):
        return hclspec_pb2.Spec(block_value=hclspec_pb2.Block(
            name=node.name, required=node.required, nested=spec_to_proto(node.nested)))
    if isinstance(node, hs.BlockList):
        return hclspec_pb2.Spec(block_list=hclspec_pb2.BlockList(
            name=node.name, min_items=node.min_items, max_items=node.max_items,
            nested=spec_to_proto(node.nested)))
    if isinstance(node, hs.BlockAttrs):
        return hclspec_pb2.Spec(block_attrs=hclspec_pb2.BlockAttrs(
            name=node.name, type=node.type, required=node.required))
    raise TypeError(f"no hclspec for {node!r}")


def spec_from_proto(msg: hclspec_pb2.Spec) -> hs.Node:
    """The inverse of spec_to_proto, for round-trip tests and for reading specs back."""
    kind = msg.WhichOneof("block")
    if kind == "object":
        return hs.Object(tuple(sorted(
            (k, spec_from_proto(v)) for k, v in msg.object.attributes.items())))
    if kind == "Attr":
        return hs.Attr(msg.Attr.name, msg.Attr.type, msg.Attr.required)
    if kind == "default":
        d = msg.default
        return hs.Default(spec_from_proto(d.primary), spec_from_proto(d.default))
    if kind == "literal":
        return hs.Literal(msg.literal.value)
    if kind == "block_value":
        b = msg.block_value
        return hs.Block(b.name, spec_from_proto(b.nested), b.required)
    if kind == "block_list":
        bl = msg.block_list
        return hs.BlockList(bl.name, spec_from_proto(bl.nested), bl.min_items, bl.max_items)
    if kind == "block_attrs":
        ba = msg.block_attrs
        return hs.BlockAttrs(ba.name, ba.type, ba.required)
    raise ValueError(f"unsupported hclspec variant {kind!r}")


def schema_to_proto(schema: hs.Schema) -> hclspec_pb2.Spec:
    return spec_to_proto(hs.spec(schema))


# ---- fingerprint, events, capabilities ----

_HEALTH: dict[Health, driver_pb2.FingerprintResponse.HealthState.ValueType] = {
    "undetected": driver_pb2.FingerprintResponse.UNDETECTED,
    "unhealthy": driver_pb2.FingerprintResponse.UNHEALTHY,
    "healthy": driver_pb2.FingerprintResponse.HEALTHY,
}


def attribute_to_proto(value: str | int | float | bool) -> structs_pb2.Attribute:
    if isinstance(value, bool):
        return structs_pb2.Attribute(bool_val=value)
    if isinstance(value, int):
        return structs_pb2.Attribute(int_val=value)
    if isinstance(value, float):
        return structs_pb2.Attribute(float_val=value)
    return structs_pb2.Attribute(string_val=str(value))


def attribute_from_proto(msg: structs_pb2.Attribute) -> str | int | float | bool:
    kind = msg.WhichOneof("value")
    if kind is None:
        return ""
    value: str | int | float | bool = getattr(msg, kind)
    return value


def fingerprint_to_proto(fp: Fingerprint) -> driver_pb2.FingerprintResponse:
    # "" would delete the node attribute in Nomad; a probe's empty value means "not known".
    attrs = {k: attribute_to_proto(v) for k, v in fp.attributes.items() if v != ""}
    return driver_pb2.FingerprintResponse(
        attributes=attrs, health=_HEALTH[fp.health], health_description=fp.description)


def fingerprint_from_proto(msg: driver_pb2.FingerprintResponse) -> Fingerprint:
    health: Health = next(k for k, v in _HEALTH.items() if v == msg.health)
    return Fingerprint(health, msg.health_description,
                       {k: str(attribute_from_proto(v)) for k, v in msg.attributes.items()})


def timestamp_to_proto(when: object) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(when)  # type: ignore[arg-type]
    return ts


def event_to_proto(ev: TaskEvent) -> driver_pb2.DriverTaskEvent:
    return driver_pb2.DriverTaskEvent(
        task_id=ev.task_id, alloc_id=ev.alloc_id, task_name=ev.task_name,
        timestamp=timestamp_to_proto(ev.timestamp), message=ev.message,
        annotations=dict(ev.annotations))


@dataclass(frozen=True)
class Capabilities:
    send_signals: bool = True
    exec: bool = True
    fs_isolation: str = "image"  # the task root is the image's ZFS clone
    network_isolation_modes: tuple[str, ...] = ("host",)
    must_create_network: bool = False
    mount_configs: str = "any"
    disable_log_collection: bool = False
    dynamic_workload_users: bool = False


_Caps = driver_pb2.DriverCapabilities
_Net = driver_pb2.NetworkIsolationSpec
_FS: dict[str, _Caps.FSIsolation.ValueType] = {
    "none": _Caps.NONE, "chroot": _Caps.CHROOT, "image": _Caps.IMAGE, "unveil": _Caps.UNVEIL}
_NET: dict[str, _Net.NetworkIsolationMode.ValueType] = {
    "host": _Net.HOST, "group": _Net.GROUP, "task": _Net.TASK, "none": _Net.NONE}
_MOUNTS: dict[str, _Caps.MountConfigs.ValueType] = {
    "any": _Caps.ANY_MOUNTS, "none": _Caps.NO_MOUNTS}


def capabilities_for(backend: str) -> Capabilities:
    """What the driver offers on ``backend``: Nomad's group networks (bridge/none/cni, the
    client makes the netns) only where the jails backend can join a namespace."""
    group = "netns" in backend_network_modes(backend)
    return Capabilities(network_isolation_modes=("host", "group") if group else ("host",))


def capabilities_to_proto(c: Capabilities) -> driver_pb2.DriverCapabilities:
    return driver_pb2.DriverCapabilities(
        send_signals=c.send_signals, exec=c.exec, fs_isolation=_FS[c.fs_isolation],
        network_isolation_modes=[_NET[m] for m in c.network_isolation_modes],
        must_create_network=c.must_create_network, mount_configs=_MOUNTS[c.mount_configs],
        disable_log_collection=c.disable_log_collection,
        dynamic_workload_users=c.dynamic_workload_users)


def _key_of(table: Mapping[str, int], value: int) -> str:
    return next(k for k, v in table.items() if v == value)


def capabilities_from_proto(msg: driver_pb2.DriverCapabilities) -> Capabilities:
    inv = _key_of
    return Capabilities(
        send_signals=msg.send_signals, exec=msg.exec, fs_isolation=inv(_FS, msg.fs_isolation),
        network_isolation_modes=tuple(inv(_NET, m) for m in msg.network_isolation_modes),
        must_create_network=msg.must_create_network,
        mount_configs=inv(_MOUNTS, msg.mount_configs),
        disable_log_collection=msg.disable_log_collection,
        dynamic_workload_users=msg.dynamic_workload_users)


# ---- Nomad's own settings (SetConfig.nomad_config) ----


@dataclass(frozen=True)
class NomadInfo:
    client_min_port: int
    client_max_port: int
    total_compute_mhz: int
    cores: int


def nomad_info_from_proto(msg: base_pb2.NomadConfig) -> NomadInfo:
    d = msg.driver
    topo = d.Topology
    cores = [c for c in topo.cores if not c.disable]
    total = topo.override_total_compute or sum(
        (c.guess_speed or c.base_speed or c.max_speed) for c in cores)
    return NomadInfo(d.ClientMinPort, d.ClientMaxPort, int(total), len(cores))


def nomad_info_to_proto(info: NomadInfo) -> base_pb2.NomadConfig:
    """For tests: a NomadConfig whose cores add up to ``info`` (an even split per core)."""
    per = info.total_compute_mhz // info.cores if info.cores else 0
    cores = [base_pb2.ClientTopologyCore(core_id=i, base_speed=per) for i in range(info.cores)]
    return base_pb2.NomadConfig(driver=base_pb2.NomadDriverConfig(
        ClientMinPort=info.client_min_port, ClientMaxPort=info.client_max_port,
        Topology=base_pb2.ClientTopology(
            cores=cores,
            override_total_compute=0 if per * info.cores == info.total_compute_mhz
            else info.total_compute_mhz)))


# ---- the task lifecycle ----


def nomad_task_from_proto(msg: driver_pb2.TaskConfig) -> NomadTask:
    res = msg.resources
    alloc = res.allocated_resources
    return NomadTask(
        id=msg.id, name=msg.name, alloc_id=msg.alloc_id, alloc_dir=msg.alloc_dir,
        stdout_path=msg.stdout_path, stderr_path=msg.stderr_path,
        env=MappingProxyType(dict(msg.env)), user=msg.user,
        resources=Resources(cpu_mhz=int(alloc.cpu.cpu_shares or res.linux_resources.cpu_shares),
                            memory_mb=int(alloc.memory.memory_mb),
                            memory_max_mb=int(alloc.memory.memory_max_mb),
                            cpuset=parse_cpuset(res.linux_resources.cpuset_cpus)),
        percent_ticks=float(res.linux_resources.PercentTicks),
        mounts=tuple(NomadMount(m.host_path, m.task_path, m.readonly) for m in msg.mounts),
        job_name=msg.job_name, task_group_name=msg.task_group_name, namespace=msg.namespace,
        network=network_from_proto(msg.network_isolation_spec)
        if msg.HasField("network_isolation_spec") else None,
        dns=NomadDNS(tuple(msg.dns.servers), tuple(msg.dns.searches), tuple(msg.dns.options))
        if msg.HasField("dns") else None,
        ports=ports_from_proto(res.ports))


def ports_from_proto(msgs: Iterable[driver_pb2.PortMapping]) -> tuple[NomadPort, ...]:
    return tuple(NomadPort(p.label, p.value, p.to, p.host_ip) for p in msgs)


def ports_to_proto(ports: tuple[NomadPort, ...]) -> list[driver_pb2.PortMapping]:
    return [driver_pb2.PortMapping(label=p.label, value=p.value, to=p.to, host_ip=p.host_ip)
            for p in ports]


def driver_network_to_proto(n: DriverNetwork) -> driver_pb2.NetworkOverride:
    return driver_pb2.NetworkOverride(port_map=dict(n.port_map), addr=n.address,
                                      auto_advertise=n.auto_advertise)


def driver_network_from_proto(msg: driver_pb2.NetworkOverride) -> DriverNetwork:
    return DriverNetwork(msg.addr, MappingProxyType(dict(msg.port_map)), msg.auto_advertise)


def network_from_proto(msg: driver_pb2.NetworkIsolationSpec) -> NomadNetwork:
    hosts = (NomadHosts(msg.hostsConfig.hostname, msg.hostsConfig.address)
             if msg.HasField("hostsConfig") else None)
    return NomadNetwork(_key_of(_NET, msg.mode), msg.path, MappingProxyType(dict(msg.labels)),
                        hosts)


def network_to_proto(n: NomadNetwork) -> driver_pb2.NetworkIsolationSpec:
    msg = driver_pb2.NetworkIsolationSpec(mode=_NET[n.mode], path=n.path, labels=dict(n.labels))
    if n.hosts is not None:
        msg.hostsConfig.CopyFrom(driver_pb2.HostsConfig(hostname=n.hosts.hostname,
                                                        address=n.hosts.address))
    return msg


def parse_cpuset(text: str) -> tuple[int, ...]:
    """Nomad's cpuset list ("0-2,5") -> (0, 1, 2, 5)."""
    cpus: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return tuple(sorted(cpus))


def format_cpuset(cpus: tuple[int, ...]) -> str:
    return ",".join(str(c) for c in cpus)


def nomad_task_to_proto(t: NomadTask) -> driver_pb2.TaskConfig:
    """The inverse of nomad_task_from_proto (for tests and tools)."""
    r = t.resources
    return driver_pb2.TaskConfig(
        id=t.id, name=t.name, alloc_id=t.alloc_id, alloc_dir=t.alloc_dir,
        stdout_path=t.stdout_path, stderr_path=t.stderr_path, env=dict(t.env), user=t.user,
        resources=driver_pb2.Resources(
            allocated_resources=driver_pb2.AllocatedTaskResources(
                cpu=driver_pb2.AllocatedCpuResources(cpu_shares=r.cpu_mhz),
                memory=driver_pb2.AllocatedMemoryResources(memory_mb=r.memory_mb,
                                                           memory_max_mb=r.memory_max_mb)),
            linux_resources=driver_pb2.LinuxResources(
                cpu_shares=r.cpu_mhz, PercentTicks=t.percent_ticks,
                memory_limit_bytes=max(r.memory_mb, r.memory_max_mb) * 1024 * 1024,
                cpuset_cpus=format_cpuset(r.cpuset)),
            ports=ports_to_proto(t.ports)),
        mounts=[driver_pb2.Mount(host_path=m.host_path, task_path=m.task_path,
                                 readonly=m.readonly) for m in t.mounts],
        job_name=t.job_name, task_group_name=t.task_group_name, namespace=t.namespace,
        network_isolation_spec=network_to_proto(t.network) if t.network is not None else None,
        dns=driver_pb2.DNSConfig(servers=t.dns.servers, searches=t.dns.searches,
                                 options=t.dns.options) if t.dns is not None else None)


def exit_result_to_proto(status: ExitStatus | None) -> driver_pb2.ExitResult:
    if status is None:
        return driver_pb2.ExitResult(exit_code=-1)
    return driver_pb2.ExitResult(exit_code=status.exit_code, signal=status.signal,
                                 oom_killed=status.oom_killed)


def exit_result_from_proto(msg: driver_pb2.ExitResult) -> ExitStatus:
    return ExitStatus(exit_code=msg.exit_code, signal=msg.signal, oom_killed=msg.oom_killed)


def _unix_ts(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if seconds > 0:
        ts.FromNanoseconds(int(seconds * 1e9))
    else:
        # Go's zero time.Time; Nomad's Go tooling converts without nil checks.
        ts.seconds = GO_ZERO_TIME_S
    return ts


GO_ZERO_TIME_S = -62135596800  # 0001-01-01T00:00:00Z


def task_handle_to_proto(config: driver_pb2.TaskConfig, state: DriverState,
                         running: bool = True) -> driver_pb2.TaskHandle:
    handle = driver_pb2.TaskHandle(
        version=HANDLE_VERSION, driver_state=state.encode(),
        state=driver_pb2.RUNNING if running else driver_pb2.EXITED)
    handle.config.CopyFrom(config)
    return handle


def task_status_to_proto(state: DriverState, exited: bool, status: ExitStatus | None,
                         ) -> driver_pb2.TaskStatus:
    msg = driver_pb2.TaskStatus(
        id=state.task_id, name=state.task_name,
        state=driver_pb2.EXITED if exited else driver_pb2.RUNNING)
    msg.started_at.CopyFrom(_unix_ts(state.started_at))
    msg.completed_at.CopyFrom(_unix_ts(status.finished_at if exited and status else 0.0))
    if exited:
        msg.result.CopyFrom(exit_result_to_proto(status))
    return msg
