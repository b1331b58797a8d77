"""The zfs commands a task clone with a quota runs (the same argv on FreeBSD's zfs(8) and on
zfs-fuse; tests/zfsimage/test_task_quota.py runs them for real), with zfs's answers as it gives
them."""

from __future__ import annotations

from pathlib import Path

import pytest

from zfsimage import zfs
from zfsimage.clones import TaskClones
from zfsimage.errors import QuotaTooSmall, ZfsError
from zfsimage.images import Image
from zfsimage.manifest import ImageConfig

DS = "zroot/xc"
CHAIN = "sha256:" + "c" * 64
SNAP = f"{DS}/layers/{'c' * 64}@layer"
TASK = f"{DS}/tasks/xc-1-web"
MP = "/var/db/nomad-driver-xc/images/tasks/xc-1-web"
IMAGE = Image(reference="r/app:1", manifest_digest="sha256:" + "a" * 64, chain_id=CHAIN,
              config=ImageConfig(), platform="freebsd/amd64")


class Layers:
    def snapshot(self, chain_id: str) -> str:
        return SNAP

    def forget(self, chain_id: str) -> None:
        pass


class Zfs:
    """zfs(8) answering from a table: {argv prefix: (rc, stdout, stderr)}."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.answers = answers
        self.argvs: list[list[str]] = []

    def __call__(self, args: list[str], **kw: object) -> str:
        self.argvs.append(list(args))
        for prefix, (rc, out, err) in self.answers.items():
            if tuple(args[:len(prefix)]) == prefix:
                if rc:
                    raise zfs._classify(["zfs", *args], rc, err)
                return out
        return ""


def clones() -> TaskClones:
    return TaskClones(DS, Path("/var/db/nomad-driver-xc/images"), Layers(),  # type: ignore[arg-type]
                      {"setuid": "off"})


CLONE_WITH_QUOTA = ["clone", "-o", f"mountpoint={MP}", "-o", f"xc:image={IMAGE.manifest_digest}",
                    "-o", "refquota=1073741824", "-o", "setuid=off", SNAP, TASK]


def test_the_quota_is_set_in_the_clone_command(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Zfs({})
    monkeypatch.setattr(zfs, "run", fake)
    assert clones().clone(IMAGE, "xc-1-web", 1 << 30) == Path(MP)
    assert fake.argvs == [CLONE_WITH_QUOTA]
    fake.argvs.clear()
    clones().clone(IMAGE, "xc-1-web")
    assert fake.argvs == [["clone", "-o", f"mountpoint={MP}", "-o",
                           f"xc:image={IMAGE.manifest_digest}", "-o", "setuid=off", SNAP, TASK]]


EXISTS = (1, "", f"cannot create '{TASK}': dataset already exists\n")


@pytest.mark.parametrize(("current", "asked", "then"), [
    ("1073741824", 1 << 30, []),                                        # same: nothing to do
    ("0", 1 << 30, [["set", "refquota=1073741824", TASK]]),             # none yet: set it
    ("1073741824", 2 << 30, [["set", "refquota=2147483648", TASK]]),    # another size
    ("1073741824", None, [["set", "refquota=none", TASK]]),             # no quota asked now
])
def test_a_retried_clone_keeps_or_sets_the_quota_asked(monkeypatch: pytest.MonkeyPatch,
                                                       current: str, asked: int | None,
                                                       then: list[list[str]]) -> None:
    props = (f"{TASK}\torigin\t{SNAP}\n{TASK}\tmounted\tyes\n{TASK}\tmountpoint\t{MP}\n"
             f"{TASK}\trefquota\t{current}\n")
    fake = Zfs({("clone",): EXISTS, ("get",): (0, props, "")})
    monkeypatch.setattr(zfs, "run", fake)
    assert clones().clone(IMAGE, "xc-1-web", asked) == Path(MP)
    assert [a for a in fake.argvs if a[0] not in ("clone", "get")] == then


def test_a_quota_below_the_image_says_both_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    # what zfs clone -o refquota says when the origin already refers to more (zfs-fuse, FreeBSD)
    fake = Zfs({("clone",): (1, "", f"cannot create '{TASK}': out of space\n"),
                ("get",): (0, f"{SNAP}\treferenced\t5000000\n", "")})
    monkeypatch.setattr(zfs, "run", fake)
    with pytest.raises(QuotaTooSmall) as ei:
        clones().clone(IMAGE, "xc-1-web", 1 << 20)
    assert (ei.value.quota, ei.value.needed) == (1 << 20, 5_000_000)
    assert "1048576 bytes" in str(ei.value) and "ask for more than 5M" in str(ei.value)
    assert fake.argvs[1] == ["get", "-H", "-p", "-o", "name,property,value", "referenced", SNAP]


def test_a_full_pool_without_a_quota_stays_a_zfs_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zfs, "run", Zfs({("clone",): (1, "", "cannot create: out of space\n")}))
    with pytest.raises(ZfsError) as ei:
        clones().clone(IMAGE, "xc-1-web")
    assert not isinstance(ei.value, QuotaTooSmall)


def test_a_retried_clone_cannot_shrink_below_what_the_task_wrote(
        monkeypatch: pytest.MonkeyPatch) -> None:
    props = (f"{TASK}\torigin\t{SNAP}\n{TASK}\tmounted\tyes\n{TASK}\tmountpoint\t{MP}\n"
             f"{TASK}\trefquota\t0\n")
    fake = Zfs({("clone",): EXISTS,
                ("set",): (1, "", f"cannot set property for '{TASK}': size is less than current "
                                  "used or reserved space\n"),
                ("get", "-H", "-p", "-o", "name,property,value",
                 "origin,mounted,mountpoint,refquota"): (0, props, ""),
                ("get",): (0, f"{TASK}\treferenced\t9000000\n", "")})
    monkeypatch.setattr(zfs, "run", fake)
    with pytest.raises(QuotaTooSmall) as ei:
        clones().clone(IMAGE, "xc-1-web", 1 << 20)
    assert ei.value.needed == 9_000_000 and f"task rootfs {TASK}" in str(ei.value)
