"""``TaskHandle.driver_state``: the small versioned JSON a new plugin recovers a task from.

Nomad persists it and hands it back in RecoverTask; after an agent restart the handle's task
config bytes may be empty, so everything recovery, stats and destroy need is here. Decoding is
strict about the version and lenient about unknown keys (a newer minor writer may add some).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

STATE_VERSION = 1
HANDLE_VERSION = 1  # TaskHandle.version; 0 is reserved by Nomad


class StateError(ValueError):
    """driver_state that cannot be read; str() says what is wrong."""


@dataclass(frozen=True)
class Resources:
    """What Nomad allocated: cpu in MHz (its ``cpu_shares``), memory in MiB."""

    cpu_mhz: int = 0
    memory_mb: int = 0
    memory_max_mb: int = 0
    cores: int = 0  # reserved cores (``cores = N``), 0 when the task asked for MHz
    cpuset: tuple[int, ...] = ()  # the host CPUs Nomad reserved for the task (``cores``)


@dataclass(frozen=True)
class DriverState:
    task_id: str
    alloc_id: str
    task_name: str
    name: str            # jail / container name (jails.jail_name)
    rootfs_key: str      # zfsimage task key of the rootfs clone
    image: str           # the reference as asked
    image_digest: str    # the manifest digest that was run
    started_at: float    # unix seconds
    resources: Resources = field(default_factory=Resources)
    alloc_dir: str = ""
    stdout_path: str = ""
    stderr_path: str = ""
    disk_bytes: int = 0  # the root clone's refquota (0: none); the dataset itself keeps it
    network_mode: str = ""  # the driver's own alloc network ("": none, the host's or Nomad's)

    def encode(self) -> bytes:
        data = {"v": STATE_VERSION, **asdict(self)}
        return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> DriverState:
        if not raw:
            raise StateError("the task handle carries no driver_state (not started by xc?)")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError(f"driver_state is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise StateError("driver_state is not a JSON object")
        version = data.get("v")
        if version != STATE_VERSION:
            raise StateError(f"driver_state version {version!r} is not supported by this "
                             f"plugin (it reads version {STATE_VERSION}); upgrade the plugin")
        try:
            raw_res = _known(Resources, data.get("resources") or {})
            raw_res["cpuset"] = tuple(int(c) for c in raw_res.get("cpuset") or ())
            res = Resources(**raw_res)
            body = _known(cls, data)
            body["resources"] = res
            state = cls(**body)
        except TypeError as exc:
            raise StateError(f"driver_state is missing a field: {exc}") from exc
        for f in fields(cls):
            want = _TYPES[str(f.type)]
            if not isinstance(getattr(state, f.name), want):
                raise StateError(f"driver_state field {f.name} has the wrong type")
        if not state.task_id or not state.name:
            raise StateError("driver_state has an empty task_id or name")
        return state


_TYPES: dict[str, type | tuple[type, ...]] = {
    "str": str, "float": (int, float), "int": int, "Resources": Resources}


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
