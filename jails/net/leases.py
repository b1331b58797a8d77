"""Address leases: one JSON file per alloc under ``<state_root>/net/leases/``, changed only under
the one network lock (``<state_root>/net/.lock``, flock: across threads and processes).

A lease is written *before* the first object of its network is made (``ready`` false) and marked
ready last, so a crash at any point leaves a record the sweep tears down by the derived names; it
is deleted only after every object is gone. It lists its holders (the alloc's tasks) with the
ports each publishes: the network goes away with the last holder, also across plugin restarts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jails.errors import JailError
from jails.net.config import NetworkError, PortMapping
from jails.taskdir import locked, read_json, write_atomic


@dataclass(frozen=True)
class Lease:
    alloc_id: str
    key: str
    mode: str
    address: str = ""
    address6: str = ""
    holders: dict[str, tuple[PortMapping, ...]] = field(default_factory=dict)
    ready: bool = False

    def ports(self) -> tuple[PortMapping, ...]:
        """The union of the holders' ports, first publisher first (a label once)."""
        out: dict[str, PortMapping] = {}
        for task in sorted(self.holders):
            for p in self.holders[task]:
                out.setdefault(p.label, p)
        return tuple(out.values())

    def with_holder(self, task: str, ports: tuple[PortMapping, ...]) -> Lease:
        return replace(self, holders={**self.holders, task: ports})

    def without_holder(self, task: str) -> Lease:
        return replace(self, holders={k: v for k, v in self.holders.items() if k != task})

    def to_json(self) -> dict[str, Any]:
        return {"alloc_id": self.alloc_id, "key": self.key, "mode": self.mode,
                "address": self.address, "address6": self.address6, "ready": self.ready,
                "holders": {k: [p.to_json() for p in v] for k, v in self.holders.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Lease:
        return cls(str(d["alloc_id"]), str(d["key"]), str(d["mode"]), str(d.get("address", "")),
                   str(d.get("address6", "")),
                   {str(k): tuple(PortMapping.from_json(p) for p in v)
                    for k, v in dict(d.get("holders", {})).items()},
                   bool(d.get("ready", False)))


class LeaseStore:
    def __init__(self, state_root: Path) -> None:
        self.root = Path(state_root) / "net"
        self.dir = self.root / "leases"
        self.dir.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with locked(self.root):
            yield

    def _path(self, key: str) -> Path:
        return self.dir / f"{key}.json"

    def get(self, key: str) -> Lease | None:
        try:
            data = read_json(self._path(key))
        except JailError:
            return None  # torn or foreign file: treated as absent, removed by the sweep
        if data is None:
            return None
        try:
            return Lease.from_json(data)
        except (KeyError, TypeError, ValueError, NetworkError):
            return None

    def put(self, lease: Lease) -> None:
        write_atomic(self._path(lease.key), json.dumps(lease.to_json()).encode())

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def alloc_keys(self) -> list[str]:
        return sorted(p.name[:-5] for p in self.dir.glob("*.json") if not p.name.startswith("."))

    def all(self) -> list[Lease]:
        return [lease for k in self.alloc_keys() if (lease := self.get(k)) is not None]

    def used(self) -> set[str]:
        return {a for lease in self.all() for a in (lease.address, lease.address6) if a}


def pick_address(pool: str, reserved: set[str], used: set[str], option: str) -> str:
    """The lowest host address of ``pool`` not reserved (gateway) nor leased."""
    net = ipaddress.ip_network(pool)
    taken = reserved | used
    hosts: Iterator[Any] = net.hosts() if net.version == 4 else (
        net.network_address + i for i in range(2, min(net.num_addresses, 1 << 20)))
    for addr in hosts:
        if str(addr) not in taken:
            return str(addr)
    raise NetworkError(option, f"all {len(used)} addresses of {pool} are leased: widen {option} "
                       "(or stop allocations) and retry")
