"""Task networks the driver makes itself: one network per alloc, shared by its tasks.

``open_networks(backend, state_root, NetworkConfig(...))`` returns a ``Networks``:
``ensure(alloc_id, mode, ports, task=...)`` -> ``AllocNetwork``, ``release(alloc_id, task=...)``,
``get(alloc_id)``, ``sweep(live_allocs)``, ``remove_host()``, ``probe()``. See jails/README.md.
No gRPC, no Nomad types.
"""

from pathlib import Path
from typing import Any

from jails.net.config import (
    MODES,
    AllocNetwork,
    Names,
    NetworkConfig,
    NetworkError,
    PortMapping,
)
from jails.net.manager import NetworkProbe, Networks
from jails.probe import resolve_backend


def open_networks(backend: str, state_root: Path, config: NetworkConfig,
                  **options: Any) -> Networks:
    """The alloc-network manager for ``backend`` ("linux", "freebsd" or "auto"); nothing is
    made on the host until ``ensure`` is called. Options go to the backend class."""
    resolved = resolve_backend(backend)
    if resolved == "linux":
        from jails.net.linuxnet import LinuxNetworks

        return LinuxNetworks(Path(state_root), config, **options)
    if resolved == "freebsd":
        from jails.net.freebsdnet import FreeBSDNetworks

        return FreeBSDNetworks(Path(state_root), config, **options)
    raise NetworkError("backend", f"unknown backend {backend!r}: use auto, linux or freebsd")


__all__ = [
    "MODES",
    "AllocNetwork",
    "Names",
    "NetworkConfig",
    "NetworkError",
    "NetworkProbe",
    "Networks",
    "PortMapping",
    "open_networks",
]
