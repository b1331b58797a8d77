"""The plugin's state between RPCs: its config, Nomad's settings, the event bus, fingerprints,
and the task lifecycle (``XcPlugin.driver``).

No protobuf here; ``driver.servicer`` converts at the edge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from driver.config import PluginConfig, TaskConfig, check_task_allowed, decode_plugin_config
from driver.config import decode_task_config as _decode_task_config
from driver.convert import Capabilities, NomadInfo, capabilities_for
from driver.events import EventBus
from driver.fingerprint import Fingerprinter
from driver.taskspec import Node
from driver.wiring import build_driver

log = logging.getLogger("plugin")


@dataclass(frozen=True)
class PluginInfo:
    name: str
    version: str
    api_versions: tuple[str, ...]


class XcPlugin:
    def __init__(self, fingerprinter: Fingerprinter | None = None) -> None:
        # Defaults until SetConfig: after an agent crash Nomad re-attaches without SetConfig.
        self.config = PluginConfig()
        self.configured = False
        self.nomad: NomadInfo | None = None
        self.events = EventBus()
        self.fingerprinter = fingerprinter or Fingerprinter(lambda: self.config)
        self.driver = build_driver(self.config, self.events, self.node)

    @property
    def capabilities(self) -> Capabilities:
        return capabilities_for(self.config.resolved_backend())

    def node(self) -> Node:
        if self.nomad is None:
            return Node()
        return Node(self.nomad.total_compute_mhz, self.nomad.cores)

    def set_config(self, raw: bytes, nomad: NomadInfo | None) -> PluginConfig:
        """Decode and adopt a plugin config; idempotent, and atomic: a bad one changes nothing."""
        cfg = decode_plugin_config(raw)
        changed = cfg != self.config
        self.config = cfg
        self.configured = True
        if nomad is not None:  # the validation call at agent start carries no nomad_config
            self.nomad = nomad
        log.debug("plugin config set", extra={"config": repr(cfg), "nomad": repr(nomad)})
        if changed:
            if self.driver.tasks.entries():
                # Nomad sends SetConfig once per plugin process, before any task; a later
                # change must not orphan the running tasks' runtime and store.
                log.warning("plugin config changed while tasks run; it applies after a restart")
            else:
                self.driver.close()
                self.driver = build_driver(cfg, self.events, self.node)
            self.fingerprinter.poke()
        if nomad is not None and not self.driver.tasks.entries():
            self.driver.resume_destroys()
            self.driver.housekeep_spares()
            self._sweep_networks()
        return cfg

    def _sweep_networks(self) -> None:
        """Leftover alloc networks go when the driver manager's plugin starts (the validation
        launches, which carry no nomad_config, leave the host alone)."""
        try:
            self.driver.sweep_networks()
        except Exception as exc:  # a host without the tools: the fingerprint says what to fix
            log.warning("sweeping leftover task networks failed", extra={"error": str(exc)})

    def decode_task_config(self, raw: bytes) -> TaskConfig:
        task = _decode_task_config(raw)
        check_task_allowed(task, self.config)
        return task
