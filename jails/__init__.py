"""Isolation runtime: run one task per FreeBSD jail (production) or runc container (Linux).

No gRPC, no Nomad types: frozen dataclasses in, typed errors out (see docs/architecture.md).
"""

from pathlib import Path
from typing import Any

from jails.errors import CommandFailed, JailError, JailNotFound, SpecError
from jails.interactive import InteractiveExec
from jails.model import ExecResult, ExitStatus, Usage
from jails.names import jail_name
from jails.probe import HostProbe, probe_host, resolve_backend
from jails.runtime import Runtime, TaskHandle
from jails.spec import JailSpec, Limits, Mount, Tmpfs


def open_runtime(backend: str, state_root: Path, **options: Any) -> Runtime:
    """The runtime for ``backend`` ("linux", "freebsd" or "auto") keeping its state in state_root.

    Options go to the backend (linux: runc_bin, runc_root, cgroup_parent; freebsd: see
    jails.freebsd.FreeBSDRuntime). Half-created or half-removed task dirs are cleaned up here.
    """
    resolved = resolve_backend(backend)
    rt: Runtime
    if resolved == "linux":
        from jails.linux import LinuxRuntime

        rt = LinuxRuntime(Path(state_root), **options)
    elif resolved == "freebsd":
        from jails.freebsd import FreeBSDRuntime

        rt = FreeBSDRuntime(Path(state_root), **options)
    else:
        raise JailError(f"unknown backend {backend!r}: use auto, linux or freebsd")
    rt.sweep_garbage()
    return rt


__all__ = [
    "CommandFailed",
    "ExecResult",
    "ExitStatus",
    "HostProbe",
    "InteractiveExec",
    "JailError",
    "JailNotFound",
    "JailSpec",
    "Limits",
    "Mount",
    "Runtime",
    "SpecError",
    "TaskHandle",
    "Tmpfs",
    "Usage",
    "jail_name",
    "open_runtime",
    "probe_host",
]
