"""``Networks``: per-alloc networks shared by the alloc's tasks, made on the first ``ensure`` and
removed with the last ``release``; what both backends share (leases, refcount, undo, sweep).

Every call holds the one network lock for its whole duration: allocs are set up one at a time
(each takes a few tens of ms), which also serialises our edits of the shared firewall chains.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from jails import _cmd
from jails.net.config import (
    BACKEND_MODES,
    MODES,
    AllocNetwork,
    Names,
    NetworkConfig,
    NetworkError,
    PortMapping,
    alloc_key,
    check_ports,
)
from jails.net.leases import Lease, LeaseStore, pick_address


@dataclass(frozen=True)
class NetworkProbe:
    """Whether this host can make task networks; ``reason`` says what to fix when not."""

    healthy: bool
    reason: str
    attributes: dict[str, str] = field(default_factory=dict)


class Networks(abc.ABC):
    backend = ""

    def __init__(self, state_root: Path, config: NetworkConfig,
                 runner: _cmd.InputRunner = _cmd.run) -> None:
        self.config = config
        self.run = runner
        self.leases = LeaseStore(Path(state_root))

    # ---- backend hooks -------------------------------------------------------------------------

    @abc.abstractmethod
    def _ensure_host(self, mode: str) -> None:
        """Make what every alloc network of ``mode`` hangs on (bridge, shared rules); idempotent."""

    @abc.abstractmethod
    def _create(self, lease: Lease, names: Names) -> None:
        """Make the alloc's own objects (its stack, link, address, route)."""

    @abc.abstractmethod
    def _publish(self, lease: Lease, names: Names, *, first: bool) -> None:
        """Make the alloc's published ports exactly ``lease.ports()``."""

    @abc.abstractmethod
    def _teardown(self, names: Names, lease: Lease | None) -> None:
        """Remove every object of the alloc that exists, in reverse order; idempotent."""

    @abc.abstractmethod
    def _leftover_keys(self) -> set[str]:
        """Alloc keys of objects named with our prefix found on the host (for the sweep)."""

    @abc.abstractmethod
    def _remove_host(self) -> None:
        """Remove the shared objects we made (bridge, shared rules)."""

    @abc.abstractmethod
    def _result(self, lease: Lease, names: Names) -> AllocNetwork:
        """The AllocNetwork of a ready lease."""

    @abc.abstractmethod
    def probe(self) -> NetworkProbe: ...

    # ---- API -------------------------------------------------------------------------------------

    def names(self, alloc_id: str) -> Names:
        """The names of every object the alloc's network has (or would have)."""
        return Names.of(self.config, alloc_id)

    def ensure(self, alloc_id: str, mode: str, ports: Iterable[PortMapping] = (), *,
               task: str = "") -> AllocNetwork:
        """The alloc's network in ``mode``, made if absent, with ``task`` recorded as a holder
        publishing ``ports``. Idempotent; a bad request raises NetworkError before any effect."""
        names = Names.of(self.config, alloc_id)
        want = check_ports(tuple(ports))
        self._check_request(mode, want)
        with self.leases.lock():
            lease = self.leases.get(names.key)
            if lease is not None and lease.alloc_id != alloc_id:
                raise NetworkError("alloc_id", f"{alloc_id} and {lease.alloc_id} share the first "
                                   f"{len(names.key)} characters; one of them must go first")
            if lease is not None and lease.ready:
                return self._join(lease, names, mode, task, want)
            if lease is not None:  # a crashed setup: start over from nothing
                self._teardown(names, lease)
            return self._make(alloc_id, names, mode, task, want)

    def release(self, alloc_id: str, *, task: str = "") -> bool:
        """Drop ``task`` as a holder; with the last one the whole network goes. True when the
        alloc has no network any more. Idempotent."""
        names = Names.of(self.config, alloc_id)
        with self.leases.lock():
            lease = self.leases.get(names.key)
            if lease is None or lease.alloc_id != alloc_id:
                return True
            left = lease.without_holder(task)
            if left.holders and lease.ready:
                if left.ports() != lease.ports():
                    self._publish(left, names, first=False)
                self.leases.put(left)
                return False
            self._teardown(names, lease)
            self.leases.delete(names.key)
            return True

    def get(self, alloc_id: str) -> AllocNetwork | None:
        """The alloc's network if it is ready (after a plugin restart: recovery)."""
        names = Names.of(self.config, alloc_id)
        lease = self.leases.get(names.key)
        if lease is None or not lease.ready or lease.alloc_id != alloc_id:
            return None
        return self._result(lease, names)

    def sweep(self, live_allocs: Iterable[str]) -> list[str]:
        """Remove the networks of allocs not in ``live_allocs`` (leases and objects found by
        name, from a crash); returns the keys removed. Objects without our prefix are never
        touched."""
        live = {alloc_key(a) for a in live_allocs}
        removed: list[str] = []
        with self.leases.lock():
            for key in self.leases.alloc_keys():
                if key in live:
                    continue
                lease = self.leases.get(key)
                self._teardown(Names.of(self.config, key), lease)
                self.leases.delete(key)
                removed.append(key)
            for key in sorted(self._leftover_keys() - live - set(removed)):
                if self.leases.get(key) is None:
                    self._teardown(Names.of(self.config, key), None)
                    removed.append(key)
        return removed

    def remove_host(self) -> None:
        """Remove the shared objects we made, once no alloc network is left (else refuse)."""
        with self.leases.lock():
            left = self.leases.alloc_keys()
            if left:
                raise NetworkError("network", f"{len(left)} alloc networks still exist; release "
                                   "or sweep them first")
            self._remove_host()

    # ---- internals -------------------------------------------------------------------------------

    def _check_request(self, mode: str, ports: tuple[PortMapping, ...]) -> None:
        modes = BACKEND_MODES.get(self.backend, ())
        if mode not in modes:
            hint = ("'alias' needs FreeBSD (a jail address on a host interface); use 'bridge'"
                    if mode == "alias" else f"use one of {modes}")
            known = "" if mode in MODES else f"unknown mode {mode!r}; "
            raise NetworkError("network_mode", f"{known}{mode!r} is not available on the "
                               f"{self.backend} backend: {hint}")
        if mode == "none" and ports:
            raise NetworkError("ports", "network_mode 'none' has no address to publish ports "
                               "to; use 'bridge' or drop ports")
        if mode == "alias" and not (self.config.alias_interface and self.config.alias_pool):
            raise NetworkError("network.alias_interface", "alias mode needs the plugin options "
                               "network.alias_interface and network.alias_pool")

    def _join(self, lease: Lease, names: Names, mode: str, task: str,
              ports: tuple[PortMapping, ...]) -> AllocNetwork:
        if lease.mode != mode:
            raise NetworkError("network_mode", f"{mode!r}: the alloc's network is already "
                               f"{lease.mode!r}; every task of a group uses one network_mode")
        new = lease.with_holder(task, ports)
        check_ports(tuple(p for t in sorted(new.holders) for p in new.holders[t]))
        if new.ports() != lease.ports():
            self._publish(new, names, first=False)
        if new != lease:
            self.leases.put(new)
        return self._result(new, names)

    def _make(self, alloc_id: str, names: Names, mode: str, task: str,
              ports: tuple[PortMapping, ...]) -> AllocNetwork:
        address = address6 = ""
        if mode in ("bridge", "alias"):
            used = self.leases.used()
            if mode == "bridge":
                address = pick_address(self.config.ipv4_pool, {self.config.ipv4_gateway}, used,
                                       "network.ipv4_pool")
                if self.config.ipv6_pool:
                    address6 = pick_address(self.config.ipv6_pool, {self.config.ipv6_gateway},
                                            used, "network.ipv6_pool")
            else:
                address = pick_address(self.config.alias_pool, set(), used, "network.alias_pool")
        lease = Lease(alloc_id, names.key, mode, address, address6, {task: ports})
        self.leases.put(lease)  # first: the record a sweep finds whatever happens next
        try:
            self._ensure_host(mode)
            self._create(lease, names)
            if ports:
                self._publish(lease, names, first=True)
        except BaseException:
            with contextlib.suppress(Exception):
                self._teardown(names, lease)
                self.leases.delete(names.key)  # kept when teardown failed: the sweep retries
            raise
        lease = replace(lease, ready=True)
        self.leases.put(lease)
        return self._result(lease, names)
