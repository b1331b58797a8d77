"""What a backend decided when it started a task, kept in the task's ``spec.json``.

A task outlives the plugin that started it: the next plugin process (an upgraded one too) reads
the plan back to signal, exec into and tear the task down. So each backend's plan is a frozen,
versioned dataclass with ``to_json``/``from_json``, and ``from_json`` keeps reading every format an
earlier release wrote (tests/jails/data holds a real spec.json of each). Renaming a field means a
new version and a branch here, never a silent KeyError in ``destroy``.

spec.json is one flat object: the runtime's own header (``v``, ``backend``, ``name``, ``boot_id``,
``created_at``, ``rootfs``, ``stdout_path``, ``stderr_path``) plus the plan's fields.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from jails.errors import JailError

PLAN_VERSION = 2  # 1: until the plans were typed (FreeBSD tasks then ran under jexec -U <name>)


class BackendPlan(Protocol):
    def to_json(self) -> dict[str, Any]: ...


def _version(data: Mapping[str, Any]) -> int:
    v = data.get("v", 1)
    if not isinstance(v, int) or v < 1:
        raise JailError(f"spec.json of task {data.get('name')!r}: bad format version {v!r}")
    if v > PLAN_VERSION:
        raise JailError(
            f"spec.json of task {data.get('name')!r} has format v{v}, newer than this plugin "
            f"(v{PLAN_VERSION}): run the plugin version that started the task, or a newer one"
        )
    return v


def _field(data: Mapping[str, Any], key: str, kind: type, task: str | None = None) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise JailError(
            f"spec.json of task {task or data.get('name')!r}: {key!r} is {value!r}, "
            f"expected {kind.__name__}; the state dir is damaged"
        )
    return value


@contextlib.contextmanager
def _damaged(data: Mapping[str, Any]) -> Iterator[None]:
    """Any other shape error of a plan field is one JailError naming the task."""
    try:
        yield
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise JailError(
            f"spec.json of task {data.get('name')!r} is damaged ({exc!r}); "
            "destroy the task to clean up what its name identifies"
        ) from exc


def _ints(data: Mapping[str, Any], key: str) -> tuple[int, ...]:
    return tuple(int(x) for x in _field(data, key, list))


def _strs(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    return tuple(str(x) for x in _field(data, key, list))


@dataclass(frozen=True)
class LinuxPlan:
    """The runc backend's plan: the numeric identity and environment ``runc exec`` needs."""

    uid: int
    gid: int
    additional_gids: tuple[int, ...]
    env: tuple[str, ...]
    cwd: str
    cgroups_path: str
    runc_root: str

    def to_json(self) -> dict[str, Any]:
        return {
            "v": PLAN_VERSION,
            "uid": self.uid,
            "gid": self.gid,
            "additional_gids": list(self.additional_gids),
            "env": list(self.env),
            "cwd": self.cwd,
            "cgroups_path": self.cgroups_path,
            "runc_root": self.runc_root,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LinuxPlan:
        _version(data)  # v1 and v2 share these fields
        with _damaged(data):
            return cls._read(data)

    @classmethod
    def _read(cls, data: Mapping[str, Any]) -> LinuxPlan:
        return cls(
            uid=_field(data, "uid", int),
            gid=_field(data, "gid", int),
            additional_gids=_ints(data, "additional_gids"),
            env=_strs(data, "env"),
            cwd=_field(data, "cwd", str),
            cgroups_path=_field(data, "cgroups_path", str),
            runc_root=_field(data, "runc_root", str),
        )


@dataclass(frozen=True)
class MountStep:
    """One step of a FreeBSD task's file system, in order; teardown unmounts in reverse.

    ``fs``: nullfs, tmpfs, devfs, or copy (a file copied where nullfs cannot bind files; nothing
    to unmount). ``inner``: the mountpoint inside the image (None: the read-only root view's own
    directory). ``dir``: whether the mountpoint is a directory (a bound file needs a file)."""

    fs: str
    opts: str
    source: str
    target: str
    inner: str | None
    dir: bool

    @property
    def mounted(self) -> bool:
        return self.fs != "copy"

    def to_json(self) -> dict[str, Any]:
        return {"fs": self.fs, "opts": self.opts, "source": self.source, "target": self.target,
                "inner": self.inner, "dir": self.dir}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], task: str) -> MountStep:
        inner = data.get("inner")
        return cls(
            fs=_field(data, "fs", str, task),
            opts=_field(data, "opts", str, task),
            source=_field(data, "source", str, task),
            target=_field(data, "target", str, task),
            inner=None if inner is None else str(inner),
            dir=bool(data.get("dir", True)),
        )


@dataclass(frozen=True)
class FreeBSDPlan:
    """The jail backend's plan. ``uid``/``gid``/``groups`` are None only in a v1 plan (started by
    ``jexec -U user``): exec sessions into such a task resolve ``user`` in the image again."""

    user: str | None
    uid: int | None
    gid: int | None
    groups: tuple[int, ...]
    env: tuple[str, ...]
    cwd: str
    mounts: tuple[MountStep, ...]
    jail_root: str
    rctl: tuple[str, ...]
    # The kernel's name of the jail: "<parent>.<name>" for a child of an alloc network's parent
    # jail (jails.net); "" = the task's name, as in every plan written before children existed.
    jail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "v": PLAN_VERSION,
            "jail": self.jail,
            "user": self.user,
            "uid": self.uid,
            "gid": self.gid,
            "groups": list(self.groups),
            "env": list(self.env),
            "cwd": self.cwd,
            "mounts": [m.to_json() for m in self.mounts],
            "jail_root": self.jail_root,
            "rctl": list(self.rctl),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FreeBSDPlan:
        version = _version(data)
        with _damaged(data):
            return cls._read(data, version)

    @classmethod
    def _read(cls, data: Mapping[str, Any], version: int) -> FreeBSDPlan:
        task = repr(data.get("name"))
        mounts = tuple(MountStep.from_json(m, task) for m in _field(data, "mounts", list))
        jail_root = str(data.get("jail_root") or _field(data, "rootfs", str))
        common = {
            "env": _strs(data, "env"),
            "cwd": _field(data, "cwd", str),
            "jail_root": jail_root,
            "rctl": _strs(data, "rctl"),
            "jail": str(data.get("jail") or ""),
        }
        if version == 1:
            # jail(8) mounted devfs for v1 tasks (mount.devfs) and `jail -r` of a jail that is
            # not in jail.conf never unmounts it: teardown unmounts it like the other mounts.
            devfs = MountStep("devfs", "ruleset=4", "devfs", jail_root + "/dev", "/dev", True)
            return cls(user=_field(data, "user", str), uid=None, gid=None, groups=(),
                       mounts=(*mounts, devfs), **common)
        user = data.get("user")
        return cls(
            user=None if user is None else str(user),
            uid=_field(data, "uid", int),
            gid=_field(data, "gid", int),
            groups=_ints(data, "groups"),
            mounts=mounts,
            **common,
        )
