"""Host fingerprint for the plugin: which backend, is it usable, and what it has. Never raises."""

from __future__ import annotations

import os
import platform
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from jails import _cmd
from jails.devd import DEVD_SEQPACKET_SOCKET
from jails.fbsdmounts import nullfs_file_binds
from jails.linuxabi import linux_abi_loaded

BACKENDS = ("auto", "linux", "freebsd")


@dataclass(frozen=True)
class HostProbe:
    backend: str
    healthy: bool
    reason: str
    attributes: dict[str, str] = field(default_factory=dict)


def resolve_backend(backend: str) -> str:
    if backend == "auto":
        return "freebsd" if sys.platform.startswith("freebsd") else "linux"
    return backend


def cgroup_mode(root: Path = Path("/sys/fs/cgroup")) -> str:
    """ "v2" (pure unified), "v1" (legacy or hybrid: controllers in v1 hierarchies) or "none"."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "memory").is_dir() or (root / "cpuacct").is_dir():
        return "v1"
    return "none"


def probe_host(backend: str = "auto", *, runc_bin: str = "runc") -> HostProbe:
    resolved = resolve_backend(backend) if backend in BACKENDS else backend
    attrs = {"driver.xc.backend": resolved, "driver.xc.os.release": platform.release()}
    try:
        if resolved == "linux":
            return _probe_linux(attrs, runc_bin)
        if resolved == "freebsd":
            return _probe_freebsd(attrs)
        return _unhealthy(resolved, f"unknown backend {backend!r}: use auto|linux|freebsd", attrs)
    except Exception as exc:  # the fingerprint must report, never crash the plugin
        return HostProbe(resolved, False, f"host probe failed: {exc}", attrs)


def _unhealthy(backend: str, reason: str, attrs: dict[str, str]) -> HostProbe:
    return HostProbe(backend, False, reason, attrs)


def _probe_linux(attrs: dict[str, str], runc_bin: str) -> HostProbe:
    if not sys.platform.startswith("linux"):
        return _unhealthy("linux", f"the linux backend needs Linux, not {sys.platform}", attrs)
    runc = shutil.which(runc_bin)
    if runc is None:
        return _unhealthy("linux", f"{runc_bin} not found: install runc", attrs)
    try:
        out = _cmd.run([runc, "--version"], timeout_s=10).stdout
        attrs["driver.xc.runc.version"] = out.split()[2] if len(out.split()) > 2 else out.strip()
    except Exception as exc:
        return _unhealthy("linux", f"{runc} --version failed: {exc}", attrs)
    mode = cgroup_mode()
    attrs["driver.xc.cgroup"] = mode
    if mode == "none":
        return _unhealthy("linux", "no cgroup filesystem at /sys/fs/cgroup: mount cgroups", attrs)
    if os.geteuid() != 0:
        return _unhealthy("linux", "the linux backend must run as root (runc, mounts)", attrs)
    if shutil.which("cc") is None:
        return _unhealthy("linux", "no C compiler 'cc' for the task supervisor: install gcc", attrs)
    return HostProbe("linux", True, "", attrs)


def _probe_freebsd(attrs: dict[str, str]) -> HostProbe:
    if not sys.platform.startswith("freebsd"):
        return _unhealthy("freebsd", f"freebsd backend needs FreeBSD, not {sys.platform}", attrs)
    res = _cmd.run(["sysctl", "-n", "kern.racct.enable"], ok_codes=(0, 1), timeout_s=10)
    value = res.stdout.strip()
    attrs["driver.xc.racct"] = value if res.returncode == 0 else "absent"
    racct_reason = racct_reason_for(res.returncode, value)
    attrs["driver.xc.nullfs.file_binds"] = str(nullfs_file_binds(platform.release())).lower()
    # Not health: without them only Linux images (linux_abi) and OOM reports (devd) are missing.
    attrs["driver.xc.linux_abi"] = "true" if linux_abi_loaded() else "false"
    attrs["driver.xc.devd"] = "true" if os.path.exists(DEVD_SEQPACKET_SOCKET) else "false"
    for tool in ("jail", "jls", "rctl", "mount", "umount", "cc"):
        if shutil.which(tool) is None:
            return _unhealthy("freebsd", f"{tool} not found in PATH", attrs)
    if os.geteuid() != 0:
        return _unhealthy("freebsd", "the freebsd backend must run as root (jail, rctl)", attrs)
    if racct_reason:
        return _unhealthy("freebsd", racct_reason, attrs)
    return HostProbe("freebsd", True, "", attrs)


def racct_reason_for(sysctl_rc: int, value: str) -> str:
    """The unhealthy reason for a ``sysctl -n kern.racct.enable`` outcome ("" when usable)."""
    if sysctl_rc != 0:
        return "RACCT/RCTL support not present in kernel: use a kernel with options RACCT and RCTL"
    if value != "1":
        return "kern.racct.enable=0: add kern.racct.enable=1 to /boot/loader.conf and reboot"
    return ""
