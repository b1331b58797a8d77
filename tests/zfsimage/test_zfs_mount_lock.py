"""On zfs-fuse, commands that can mount a dataset run one at a time across the host: two mounts
at once corrupt zfs-fuse's new-filesystem pipe and hang every FUSE request for good (see
zfsimage/zfs.py). Against the session's real zfs-fuse pool."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator

import pytest

from tests.fixtures.zpool import Pool
from zfsimage import zfs

pytestmark = [pytest.mark.root]


class HeldLock:
    """The mount lock, held the way another process would hold it."""

    def __init__(self) -> None:
        self.fd = os.open(zfs.MOUNT_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@pytest.fixture
def held_lock(zpool: Pool) -> Iterator[HeldLock]:
    lock = HeldLock()
    try:
        yield lock
    finally:
        lock.release()


def test_the_lock_covers_the_zfs_fuse_commands_that_mount(zpool: Pool) -> None:
    assert zfs.ZFS_FUSE_SOCKET.exists(), "the session pool is served by zfs-fuse"
    for argv in (["zfs", "clone", "a@s", "b"], ["zfs", "create", "a"], ["zfs", "mount", "a"],
                 ["zfs", "rename", "a", "b"], ["zfs", "set", "mountpoint=/x", "a"],
                 ["zpool", "import", "p"]):
        assert zfs.mounts_serialized(argv), argv
    for argv in (["zfs", "get", "name", "a"], ["zfs", "destroy", "a"], ["zfs", "snapshot", "a@s"],
                 ["zfs", "list"], ["zpool", "list"]):
        assert not zfs.mounts_serialized(argv), argv


def test_a_mount_waits_for_the_lock_and_a_read_does_not(zpool: Pool, held_lock: HeldLock
                                                        ) -> None:
    ds = f"{zpool.name}/mountlock"
    done = threading.Event()
    errors: list[BaseException] = []

    def create() -> None:
        try:
            zfs.create(ds, {"mountpoint": str(zpool.mount_root / "mountlock")})
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    creator = threading.Thread(target=create)
    creator.start()
    try:
        assert not done.wait(1.0), "zfs create ran while another process held the mount lock"
        assert zfs.exists(zpool.name), "a read waited for the mount lock"
        assert not zfs.exists(ds)
        held_lock.release()
        assert done.wait(60), "zfs create did not run once the lock was free"
        assert errors == []
        assert zfs.exists(ds)
    finally:
        held_lock.release()
        creator.join(60)
        zfs.destroy(ds, recursive=True)
