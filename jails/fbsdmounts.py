"""A FreeBSD task's file system: the mount plan (pure), mountpoints made without following the
image's symlinks, and the check that a nullfs mount shows what was resolved.

Order (teardown goes in reverse): the read-only root view, devfs on /dev, a Linux ABI jail's
file systems (jails/linuxabi.py), then binds (nullfs) and tmpfs, parents before children.
jail(8)'s ``mount.devfs`` is not used: ``jail -r`` of a jail that is not in jail.conf knows only
its name and jid and so never unmounts it (usr.sbin/jail/command.c, state.c), and it refuses an
image without /dev.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from jails.errors import JailError, SpecError
from jails.linuxabi import abi_mounts
from jails.plans import MountStep
from jails.sourcefd import open_source
from jails.spec import JailSpec, Mount, Tmpfs

DEFAULT_DEVFS_RULESET = "4"  # devfsrules_jail, as jail(8) uses when none is given
# nullfs mounts of a single file: kernel support since FreeBSD 13.2 (review D37478); before it
# the mount fails with ENOTDIR, so such a file is copied into the jail instead.
FILE_BINDS_SINCE = (13, 2)


def nullfs_file_binds(release: str) -> bool:
    """Whether nullfs can mount a single file on this FreeBSD release (``uname -r``:
    ``14.1-RELEASE-p5``, ``15.0-CURRENT``). An unparseable release is taken as too old."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= FILE_BINDS_SINCE


def tmpfs_opts(m: Tmpfs) -> str:
    """mount -o for tmpfs(5): size in bytes (absent: all of RAM+swap), octal root mode."""
    opts = ["nosuid"]
    if m.size_bytes:
        opts.append(f"size={m.size_bytes}")
    opts.append(f"mode={m.mode:o}")
    if m.readonly:
        opts.append("ro")
    return ",".join(opts)


def devfs_ruleset(spec: JailSpec) -> str:
    return dict(spec.jail_params).get("devfs_ruleset", DEFAULT_DEVFS_RULESET)


def mount_plan(spec: JailSpec, jail_root: Path, *, file_binds: bool) -> tuple[MountStep, ...]:
    """The mounts in mounting order. ``jail_root`` differs from the clone when the root is a
    read-only view; a file source becomes a ``copy`` step where nullfs cannot bind files."""
    root = str(jail_root)
    plan: list[MountStep] = []
    if jail_root != spec.rootfs:
        plan.append(MountStep("nullfs", "ro", str(spec.rootfs), root, None, True))
    plan.append(MountStep("devfs", f"ruleset={devfs_ruleset(spec)}", "devfs", root + "/dev",
                          "/dev", True))
    if spec.abi == "linux":
        plan.extend(abi_mounts(root))  # inside devfs: /dev/fd, /dev/shm (jails/linuxabi.py)
    for m in spec.all_mounts():
        target = root + m.target
        if isinstance(m, Mount):
            is_dir = m.source.is_dir()
            fs = "nullfs" if is_dir or file_binds else "copy"
            plan.append(MountStep(fs, "ro" if m.readonly else "rw", str(m.source), target,
                                  m.target, is_dir))
        else:
            plan.append(MountStep("tmpfs", tmpfs_opts(m), "tmpfs", target, m.target, True))
    return tuple(plan)


def mountpoint_base(
    rootfs: Path, done: Sequence[MountStep], inner: str
) -> tuple[Path, str]:
    """Where to make the mountpoint of ``inner``: in the innermost mount already made above it
    (a tmpfs at /alloc/x goes into what is mounted at /alloc), else in the clone itself, which
    the read-only root view shows as it is."""
    parents = [d for d in done if d.inner is not None and d.mounted
               and inner.startswith(d.inner.rstrip("/") + "/")]
    if not parents:
        return rootfs, inner
    parent = max(parents, key=lambda d: len(d.inner or ""))
    return Path(parent.target), inner[len(parent.inner or "") :]


def ensure_mountpoint(rootfs: Path, target: str, *, want_dir: bool) -> None:
    """Create target below rootfs without following any symlink of the image."""
    fd = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = [p for p in target.split("/") if p]
        for i, part in enumerate(parts):
            if i == len(parts) - 1 and not want_dir:
                with contextlib.suppress(FileExistsError):
                    os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=fd))
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISREG(st.st_mode):
                    raise SpecError("mounts.target", f"{target} is not a regular file in the image")
                return
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o755, dir_fd=fd)
            try:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                raise SpecError(
                    "mounts.target", f"{target}: {part!r} in the image is not a directory"
                ) from exc
            os.close(fd)
            fd = nfd
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Held:
    """A bind source held open from before its mount until the mount is checked."""

    fd: int
    ino: int
    dev: int

    @classmethod
    def open(cls, path: str) -> Held:
        fd = open_source(path)
        st = os.fstat(fd)
        return cls(fd, st.st_ino, st.st_dev)

    def close(self) -> None:
        os.close(self.fd)


def inode_of(path: str) -> int:
    return os.stat(path, follow_symlinks=False).st_ino


def check_bind(step: MountStep, held: Held, mounted_from: str | None, mounted_ino: int) -> None:
    """After ``mount -t nullfs``: the mountpoint must show the object held open before the mount
    (nullfs reports the lower vnode's inode under its own st_dev, mount_nullfs(8)), and the
    mount's source (statfs f_mntfromname, which mount_nullfs fills with realpath(3) of what it
    was given) must be the path that was resolved. Either differing means the source was
    swapped between our resolve and the mount: JailError, and the caller undoes the start."""
    if mounted_from != step.source or mounted_ino != held.ino:
        raise JailError(
            f"bind source {step.source} changed while the task started (mounted "
            f"{mounted_from or 'nothing'} at {step.target}): refusing to run with it; "
            "do not change bind sources while a task starts"
        )


def copy_file(step: MountStep, base: Path, rel: str) -> None:
    """Where nullfs cannot bind a file: copy it into the jail, read through an fd opened without
    following symlinks and written below ``base`` without following the image's."""
    ensure_mountpoint(base, rel, want_dir=False)
    parent, _, leaf = rel.strip("/").rpartition("/")
    with os.fdopen(open_source(step.source, read=True), "rb") as src:
        dfd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for part in [p for p in parent.split("/") if p]:
                nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                os.close(dfd)
                dfd = nfd
            flags = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
            with os.fdopen(os.open(leaf, flags, dir_fd=dfd), "wb") as dst:
                shutil.copyfileobj(src, dst)
        finally:
            os.close(dfd)


def parse_mount_p(text: str) -> dict[str, str]:
    """``mount -p`` (fstab(5) lines: source, mountpoint, type, options, dump, pass) as
    mountpoint -> source; the last mount on a mountpoint wins (it is the one visible)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2:
            out[_unvis(fields[1])] = _unvis(fields[0])
    return out


def _unvis(s: str) -> str:
    """fstab(5) writes a space in a path as \\040 (strvis)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)
