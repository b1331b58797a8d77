"""Isolation runtime: run one task per FreeBSD jail (production) or runc container (Linux).

No gRPC, no Nomad types: frozen dataclasses in, typed errors out (see docs/architecture.md).
"""

from jails.errors import CommandFailed, JailError, JailNotFound, SpecError
from jails.names import jail_name
from jails.probe import HostProbe, probe_host
from jails.spec import JailSpec, Limits, Mount

__all__ = [
    "CommandFailed",
    "HostProbe",
    "JailError",
    "JailNotFound",
    "JailSpec",
    "Limits",
    "Mount",
    "SpecError",
    "jail_name",
    "probe_host",
]
