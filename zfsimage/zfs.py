"""The one place that runs ``zfs`` and ``zpool``.

argv lists only, machine-readable output only (``zfs get -H -p``, which both OpenZFS and
zfs-fuse support; zfs-fuse has no ``zfs list -p``), typed errors carrying stderr. zfs-fuse
intermittently answers "dataset is busy" on destroy/umount/rename of a dataset it just used, and
now and then "I/O error" when it drops a command's connection under load; those verbs are retried
here with a short sleep so no caller has to know.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from zfsimage.errors import (
    ZfsBusy,
    ZfsError,
    ZfsExists,
    ZfsHasDependents,
    ZfsIOError,
    ZfsNoSpace,
    ZfsNotFound,
)

ZFS = "zfs"
ZPOOL = "zpool"
BUSY_RETRIES = 100
BUSY_SLEEP_S = 0.05
_TIMEOUT_S = 120.0

# zfs-fuse hands each new mount to its FUSE listener through a pipe in two writes (the fs info,
# then the mountpoint). Two mounts at once interleave them; the listener then reads a length made
# of mountpoint bytes and blocks in read() holding the lock every FUSE request needs, so all I/O
# on every dataset hangs for good (zfs-fuse src/zfs-fuse/fuse_listener.c, zfsfuse_newfs). On
# zfs-fuse the commands that can mount therefore take one host-wide lock; kernel ZFS needs none.
ZFS_FUSE_SOCKET = Path("/var/run/zfs/zfs_socket")
MOUNT_LOCK = Path("/run/lock" if os.path.isdir("/run/lock") else "/tmp") / "xc-zfs-fuse-mount.lock"
_MOUNTING = {ZFS: frozenset({"create", "clone", "mount", "rename", "receive", "recv", "set",
                             "inherit"}),
             ZPOOL: frozenset({"create", "import"})}

_NOT_FOUND = ("does not exist", "could not find any snapshots", "no such pool")
_BUSY = ("dataset is busy", "pool or dataset is busy", "device busy", "is busy")
_IO = ("i/o error",)
_EXISTS = ("already exists",)
_DEPENDENTS = ("dependent clones", "has children")
# a clone or refquota smaller than what the dataset already refers to
_NO_SPACE = ("out of space", "less than current used or reserved space")


def available() -> str | None:
    """Path of the zfs binary, or None when it is not installed."""
    return shutil.which(ZFS)


def _classify(argv: list[str], rc: int, stderr: str) -> ZfsError:
    low = stderr.lower()
    if any(s in low for s in _NOT_FOUND):
        return ZfsNotFound(argv, rc, stderr)
    if any(s in low for s in _BUSY):
        return ZfsBusy(argv, rc, stderr)
    if any(s in low for s in _IO):
        return ZfsIOError(argv, rc, stderr)
    if any(s in low for s in _EXISTS):
        return ZfsExists(argv, rc, stderr)
    if any(s in low for s in _DEPENDENTS):
        return ZfsHasDependents(argv, rc, stderr)
    if any(s in low for s in _NO_SPACE):
        return ZfsNoSpace(argv, rc, stderr)
    return ZfsError(argv, rc, stderr)


def mounts_serialized(argv: list[str]) -> bool:
    """True when this command may mount and the pool is served by zfs-fuse."""
    verbs = _MOUNTING.get(os.path.basename(argv[0]), frozenset())
    return len(argv) > 1 and argv[1] in verbs and ZFS_FUSE_SOCKET.exists()


@contextlib.contextmanager
def mount_lock(argv: list[str]) -> Iterator[None]:
    """Hold the host-wide zfs-fuse mount lock around argv when it may mount (no-op elsewhere).
    Anything on the host that runs a mounting zfs/zpool command outside ``run`` must hold it."""
    if not mounts_serialized(argv):
        yield
        return
    fd = os.open(MOUNT_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: threads exclude each other too
        yield
    finally:
        os.close(fd)


def run(args: Iterable[str], *, tool: str = ZFS, busy_retry: bool = False,
        input_: bytes | None = None) -> str:
    """Run one zfs/zpool command; return stdout or raise a typed ZfsError. ``busy_retry``
    (only for verbs that are safe to repeat) retries transient busy and I/O errors."""
    argv = [tool, *args]
    attempts = BUSY_RETRIES if busy_retry else 1
    for attempt in range(attempts):
        try:
            with mount_lock(argv):
                cp = subprocess.run(argv, input=input_, capture_output=True,
                                    timeout=_TIMEOUT_S, check=False)
        except FileNotFoundError as exc:
            raise ZfsError(argv, 127, str(exc),
                           f"`{tool}` is not installed; install ZFS (zfs-fuse on Linux)") from exc
        except subprocess.TimeoutExpired as exc:
            raise ZfsError(argv, -1, "timeout",
                           f"`{' '.join(argv)}` did not finish in {_TIMEOUT_S:.0f} s") from exc
        if cp.returncode == 0:
            return cp.stdout.decode("utf-8", "replace")
        err = _classify(argv, cp.returncode, cp.stderr.decode("utf-8", "replace"))
        if isinstance(err, ZfsBusy | ZfsIOError) and attempt + 1 < attempts:
            time.sleep(BUSY_SLEEP_S)
            continue
        raise err
    raise AssertionError("unreachable")


def get(names: Iterable[str], props: Iterable[str], *, recursive: bool = False
        ) -> dict[str, dict[str, str]]:
    """``zfs get -H -p``: {dataset: {property: value}}; unset user properties read "-"."""
    args = ["get", "-H", "-p", "-o", "name,property,value"]
    if recursive:
        args.append("-r")
    args += [",".join(props), *names]
    out: dict[str, dict[str, str]] = {}
    for line in run(args).splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        out.setdefault(parts[0], {})[parts[1]] = parts[2]
    return out


def exists(name: str) -> bool:
    try:
        run(["get", "-H", "-o", "value", "name", name])
    except ZfsNotFound:
        return False
    except ZfsError as exc:
        if "does not exist" in exc.stderr or "invalid" in exc.stderr.lower():
            return False
        raise
    return True


def _opts(props: Mapping[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in props.items():
        out += ["-o", f"{k}={v}"]
    return out


def create(name: str, props: Mapping[str, str] | None = None, *, parents: bool = False) -> None:
    run(["create", *(["-p"] if parents else []), *_opts(props or {}), name])


def clone(snapshot: str, name: str, props: Mapping[str, str] | None = None) -> None:
    run(["clone", *_opts(props or {}), snapshot, name])


def snapshot(name: str) -> None:
    run(["snapshot", name])


def set_props(name: str, props: Mapping[str, str]) -> None:
    for k, v in props.items():
        run(["set", f"{k}={v}", name])


def mount(name: str) -> None:
    try:
        run(["mount", name])
    except ZfsError as exc:
        if "already mounted" not in exc.stderr:
            raise


def umount(name: str) -> None:
    try:
        run(["umount", name], busy_retry=True)
    except ZfsNotFound:
        raise
    except ZfsError as exc:
        low = exc.stderr.lower()
        if "not currently mounted" not in low and "not mounted" not in low:
            raise


def destroy(name: str, *, recursive: bool = False, missing_ok: bool = True) -> None:
    """Destroy a dataset or snapshot, retrying zfs-fuse's transient busy errors."""
    try:
        run(["destroy", *(["-r"] if recursive else []), name], busy_retry=True)
    except ZfsNotFound:
        if not missing_ok:
            raise


def pool_of(dataset: str) -> str:
    return dataset.split("/", 1)[0]
