"""Where a task's bind-mount sources really are on the host, checked when the task starts.

The decode-time checks (``driver.config.check_task_allowed``) see only the text of a path. Between
that and the mount, a symlink inside an allowed directory (one a task planted through a writable
volume, say ``/srv/data/evil -> /etc``) or inside the task dir (``local/x -> /``) would redirect
the mount. So each source is resolved on the host and the *resolved* path is checked again and is
what gets mounted.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from driver.config import ConfigError, MountSpec, TaskConfig, under
from driver.taskspec import NomadTask


def resolve_mount_sources(task: TaskConfig, task_dir: str,
                          allowed_host_paths: Sequence[str]) -> TaskConfig:
    """``task`` with every bind source replaced by its resolved host path; ConfigError naming the
    mount when a source resolves outside what it may reach."""
    real_task_dir = os.path.realpath(task_dir)
    real_allowed = [os.path.realpath(a) for a in allowed_host_paths]
    mounts: list[MountSpec] = []
    for m in task.mounts:
        if m.type != "bind":
            mounts.append(m)
            continue
        if m.source.startswith("/"):
            real = os.path.realpath(m.source)
            if real_allowed and not under(real, real_allowed):
                raise ConfigError(m.origin, f"host path {m.source} resolves to {real}, outside "
                                  "the allowed host paths",
                                  "use a path under one of: " + ", ".join(allowed_host_paths))
        else:
            real = os.path.realpath(os.path.join(real_task_dir, m.source))
            if not under(real, [real_task_dir]):
                raise ConfigError(m.origin, f"{m.source!r} resolves to {real}, outside the "
                                  "task directory", "use a path inside the task dir that is "
                                  "not a symbolic link to elsewhere")
        mounts.append(dataclasses.replace(m, source=real))
    return dataclasses.replace(task, mounts=tuple(mounts))


def resolve_nomad_paths(nomad: NomadTask) -> NomadTask:
    """``nomad`` with the alloc dir and the volume_mount host paths resolved.

    The backend binds only resolved paths (it opens them without following symlinks, which is how
    it notices a component swapped after the checks above), and an operator's data_dir may well
    sit behind a symlink."""
    return dataclasses.replace(
        nomad,
        alloc_dir=os.path.realpath(nomad.alloc_dir),
        mounts=tuple(dataclasses.replace(m, host_path=os.path.realpath(m.host_path))
                     for m in nomad.mounts),
    )
