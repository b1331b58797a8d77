"""Fingerprint: is this client able to run xc tasks, and what does it offer.

Health comes from the two libraries' probes (``jails.probe_host`` for the isolation runtime,
``zfsimage.probe_dataset`` for the ZFS dataset); this module only combines them. The stream
answers at once, then on every change and at least every ``resend_s`` seconds, and never ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from driver.config import PluginConfig
from driver.version import version

log = logging.getLogger("fingerprint")

Health = Literal["undetected", "unhealthy", "healthy"]
SUPPORTED_PLATFORMS = ("linux", "freebsd")


@dataclass(frozen=True)
class Fingerprint:
    health: Health
    description: str
    attributes: Mapping[str, str] = field(default_factory=dict)


def _os_family(platform: str) -> str:
    for fam in SUPPORTED_PLATFORMS:
        if platform.startswith(fam):
            return fam
    return platform


def compute(cfg: PluginConfig, platform: str = sys.platform) -> Fingerprint:
    """Probe the host (blocking: runs the probes' commands)."""
    import jails
    import zfsimage

    family = _os_family(platform)
    backend = cfg.resolved_backend(platform)
    attrs = {"driver.xc.version": version(), "driver.xc.backend": backend, "driver.xc.os": family}
    if family not in SUPPORTED_PLATFORMS:
        return Fingerprint("undetected", f"xc runs on FreeBSD (or Linux for development), "
                           f"not {platform}", attrs)
    if backend != family:
        return Fingerprint(
            "undetected",
            f'backend "{backend}" needs a {backend} host but this is {family}; '
            'set backend = "auto" in the plugin config',
            attrs,
        )
    host = jails.probe_host(backend)
    ds = zfsimage.probe_dataset(cfg.dataset)
    net_ok, net_reason, net_attrs = _network(cfg, backend)
    merged = {**host.attributes, **ds.attributes, **net_attrs, **attrs}
    problems = [r for ok, r in ((host.healthy, host.reason), (ds.healthy, ds.reason),
                                (net_ok, net_reason)) if not ok]
    if problems:
        return Fingerprint("unhealthy", "; ".join(problems), merged)
    return Fingerprint("healthy", "Healthy", merged)


def _network(cfg: PluginConfig, backend: str) -> tuple[bool, str, Mapping[str, str]]:
    """Whether the driver's own task networks can work here (``driver.xc.network.*``). A host
    that cannot only makes the driver unhealthy when the operator configured a network block:
    with the defaults, tasks without network_mode run all the same."""
    from driver.tasknet import configured
    from jails.net import open_networks

    probe = open_networks(backend, Path(cfg.state_dir), cfg.network).probe()
    attrs = dict(probe.attributes)
    attrs.setdefault("driver.xc.network.bridge_mode", "1" if probe.healthy else "0")
    if probe.healthy or not configured(cfg.network):
        return True, "", attrs
    return False, f"task networks (plugin option network): {probe.reason}", attrs


class Fingerprinter:
    """The never-ending stream; ``poke()`` (e.g. after SetConfig) re-probes at once."""

    def __init__(
        self,
        config: Callable[[], PluginConfig],
        *,
        probe: Callable[[PluginConfig], Fingerprint] = compute,
        poll_s: float = 10.0,
        resend_s: float = 30.0,
    ) -> None:
        self._config = config
        self._probe = probe
        self.poll_s = poll_s
        self.resend_s = resend_s
        self._pokes: set[asyncio.Event] = set()

    def poke(self) -> None:
        for ev in list(self._pokes):
            ev.set()

    async def _probe_safely(self) -> Fingerprint:
        try:
            return await asyncio.to_thread(self._probe, self._config())
        except Exception as exc:  # a failing probe is an unhealthy client, not a broken stream
            log.exception("fingerprint probe failed")
            return Fingerprint("unhealthy", f"fingerprint probe failed: {exc}",
                               {"driver.xc.version": version()})

    async def stream(self) -> AsyncGenerator[Fingerprint, None]:
        poked = asyncio.Event()
        self._pokes.add(poked)
        try:
            last: Fingerprint | None = None
            last_sent = 0.0
            while True:
                poked.clear()
                fp = await self._probe_safely()
                now = time.monotonic()
                if fp != last or now - last_sent >= self.resend_s:
                    if fp != last and last is not None:
                        log.info("fingerprint changed",
                                 extra={"health": fp.health, "description": fp.description})
                    last, last_sent = fp, now
                    yield fp
                wait = min(self.poll_s, max(0.0, last_sent + self.resend_s - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(poked.wait(), timeout=wait)
        finally:
            self._pokes.discard(poked)
