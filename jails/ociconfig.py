"""JailSpec -> OCI runtime bundle config.json for runc (pure; table-tested).

Shape follows ``runc spec`` with: no network namespace of its own (the task shares the host's
addresses, as a jail with ip4=inherit does, or joins the group's namespace Nomad made), bind
mounts for the task dirs and volumes, the task's user, and linux.resources from Limits.
Capabilities are Docker's default set so root tasks behave as users expect from containers.
"""

from __future__ import annotations

from typing import Any

from jails.spec import JailSpec, Mount, Tmpfs
from jails.users import ResolvedUser

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
_BASE_MOUNTS: tuple[dict[str, Any], ...] = (
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
    },
    {
        "destination": "/dev/pts",
        "type": "devpts",
        "source": "devpts",
        "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
    },
    {
        "destination": "/dev/shm",
        "type": "tmpfs",
        "source": "shm",
        "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
    },
    {
        "destination": "/dev/mqueue",
        "type": "mqueue",
        "source": "mqueue",
        "options": ["nosuid", "noexec", "nodev"],
    },
    # sysfs cannot be mounted without a network namespace; bind the host's read-only instead.
    {
        "destination": "/sys",
        "type": "bind",
        "source": "/sys",
        "options": ["rbind", "nosuid", "noexec", "nodev", "ro"],
    },
)
_SYSFS: dict[str, Any] = {
    "destination": "/sys",
    "type": "sysfs",
    "source": "sysfs",
    "options": ["nosuid", "noexec", "nodev", "ro"],
}
MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


def task_env(spec: JailSpec, user: ResolvedUser) -> list[str]:
    env = spec.env_list()
    keys = {k for k, _ in spec.env}
    if "PATH" not in keys:
        env.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOME" not in keys:
        env.append(f"HOME={user.home}")
    return env


def resources(spec: JailSpec) -> dict[str, Any]:
    lim = spec.limits
    res: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    memory: dict[str, Any] = {}
    if lim.memory_hard_bytes is not None:
        memory["limit"] = lim.memory_hard_bytes
        # No swap beyond the limit: memory+swap == memory (v1 memsw, v2 swap.max = 0).
        memory["swap"] = lim.memory_hard_bytes
    if lim.memory_max_bytes is not None and lim.memory_bytes is not None:
        memory["reservation"] = lim.memory_bytes
    if memory:
        res["memory"] = memory
    cpu: dict[str, Any] = {}
    if lim.cpu_shares is not None:
        cpu["shares"] = lim.cpu_shares
    if lim.cpu_percent is not None:
        cpu["quota"] = lim.cpu_percent * CPU_PERIOD_US // 100
        cpu["period"] = CPU_PERIOD_US
    if lim.cpuset:
        cpu["cpus"] = lim.cpuset_list
    if cpu:
        res["cpu"] = cpu
    if lim.max_processes is not None:
        res["pids"] = {"limit": lim.max_processes}
    return res


def tmpfs_options(m: Tmpfs) -> list[str]:
    """tmpfs(5) options (Linux spells them as FreeBSD does: size in bytes, octal mode)."""
    opts = ["nosuid", "nodev"]
    if m.size_bytes:
        opts.append(f"size={m.size_bytes}")
    opts.append(f"mode={m.mode:o}")
    if m.readonly:
        opts.append("ro")
    return opts


def task_mount(m: Mount | Tmpfs) -> dict[str, Any]:
    if isinstance(m, Tmpfs):
        return {"destination": m.target, "type": "tmpfs", "source": "tmpfs",
                "options": tmpfs_options(m)}
    opts = ["rbind", "nosuid", "nodev"]
    if m.readonly:
        opts.append("ro")
    return {"destination": m.target, "type": "bind", "source": str(m.source), "options": opts}


def namespaces(spec: JailSpec) -> list[dict[str, str]]:
    """The task's own pid/ipc/uts/mount namespaces; with network "netns" it also joins the
    existing network namespace (Nomad's group network), else it keeps the host's network."""
    out = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.network == "netns":
        out.append({"type": "network", "path": spec.netns_path})
    return out


def oci_config(
    spec: JailSpec,
    user: ResolvedUser,
    *,
    cgroups_path: str,
    rootfs: str,
    swap_accounting: bool = True,
) -> dict[str, Any]:
    mounts = [dict(m) for m in _BASE_MOUNTS]
    if spec.network == "netns":
        # In a network namespace of its own the task can have a real sysfs (showing that
        # namespace's interfaces) instead of the host's /sys.
        mounts = [dict(_SYSFS) if m["destination"] == "/sys" else m for m in mounts]
    mounts.extend(task_mount(m) for m in spec.all_mounts())
    process: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": user.uid, "gid": user.gid},
        "args": list(spec.argv),
        "env": task_env(spec, user),
        "cwd": spec.cwd,
        "capabilities": {k: list(CAPABILITIES) for k in ("bounding", "effective", "permitted")},
        "noNewPrivileges": False,
    }
    if user.additional_gids:
        process["user"]["additionalGids"] = list(user.additional_gids)
    if spec.limits.open_files is not None:
        n = spec.limits.open_files
        process["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": n, "soft": n}]
    res = resources(spec)
    if not swap_accounting and "memory" in res:
        res["memory"].pop("swap", None)
    return {
        "ociVersion": "1.0.2",
        "process": process,
        # runc makes every mountpoint first and remounts the root read-only last, so mounts
        # (task dirs, volumes, tmpfs, /dev, /dev/shm) keep their own writability.
        "root": {"path": rootfs, "readonly": spec.readonly_root},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces(spec),
            "cgroupsPath": cgroups_path,
            "resources": res,
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }
