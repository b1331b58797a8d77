"""The FreeBSD mount plan and bind check as tables (jails/fbsdmounts.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from jails import JailSpec, Mount, Tmpfs
from jails.errors import JailError, SpecError
from jails.fbsdmounts import (
    Held,
    check_bind,
    mount_plan,
    nullfs_file_binds,
    parse_mount_p,
)
from jails.plans import MountStep
from jails.sourcefd import open_source


@pytest.mark.parametrize(
    ("release", "ok"),
    [
        ("12.4-RELEASE-p9", False),
        ("13.1-RELEASE", False),
        ("13.2-RELEASE", True),  # nullfs file mounts landed for 13.2 (review D37478)
        ("13.5-STABLE", True),
        ("14.0-RELEASE-p11", True),
        ("15.0-CURRENT", True),
        ("weird", False),
    ],
)
def test_nullfs_file_binds_by_release(release: str, ok: bool) -> None:
    assert nullfs_file_binds(release) is ok


def _spec(tmp_path: Path, **kw: object) -> JailSpec:
    base: dict[str, object] = {
        "name": "xc-3f2a9c1e-web", "rootfs": tmp_path / "root", "argv": ("/bin/true",),
        "stdout_path": tmp_path / "o", "stderr_path": tmp_path / "e",
    }
    base.update(kw)
    return JailSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("file_binds", [True, False])
def test_mount_plan_order_devfs_and_file_sources(tmp_path: Path, file_binds: bool) -> None:
    vol, conf = tmp_path / "vol", tmp_path / "resolv.conf"
    vol.mkdir()
    conf.write_text("")
    spec = _spec(tmp_path, readonly_root=True, jail_params={"devfs_ruleset": "5"},
                 mounts=[Mount(vol, "/data"), Mount(conf, "/etc/resolv.conf", readonly=True)],
                 tmpfs=[Tmpfs("/tmp", 4096)])
    view = tmp_path / "state" / "roots" / spec.name
    assert mount_plan(spec, view, file_binds=file_binds) == (
        MountStep("nullfs", "ro", str(spec.rootfs), str(view), None, True),
        MountStep("devfs", "ruleset=5", "devfs", f"{view}/dev", "/dev", True),
        MountStep("nullfs", "rw", str(vol), f"{view}/data", "/data", True),
        MountStep("tmpfs", "nosuid,size=4096,mode=1777", "tmpfs", f"{view}/tmp", "/tmp", True),
        MountStep("nullfs" if file_binds else "copy", "ro", str(conf), f"{view}/etc/resolv.conf",
                  "/etc/resolv.conf", False),
    )  # spec.all_mounts() order: parents first, then by depth


def test_parse_mount_p() -> None:
    text = (
        "zroot/ROOT/default\t/\tzfs\trw\t0 0\n"
        "/data/with\\040space\t/j/data\tnullfs\trw\t0 0\n"
        "/a\t/j/x\tnullfs\tro\t0 0\n"
        "/b\t/j/x\tnullfs\tro\t0 0\n"  # stacked: the last one is visible
    )
    assert parse_mount_p(text) == {"/": "zroot/ROOT/default", "/j/data": "/data/with space",
                                   "/j/x": "/b"}


def _step(source: Path) -> MountStep:
    return MountStep("nullfs", "rw", str(source), "/j/data", "/data", True)


def test_check_bind_accepts_what_was_held(tmp_path: Path) -> None:
    held = Held.open(str(tmp_path))
    try:
        check_bind(_step(tmp_path), held, str(tmp_path), os.stat(tmp_path).st_ino)
    finally:
        held.close()


@pytest.mark.parametrize("what", ["other source", "other inode", "nothing mounted"])
def test_check_bind_refuses_a_swap(tmp_path: Path, what: str) -> None:
    held = Held.open(str(tmp_path))
    try:
        source = None if what == "nothing mounted" else (
            "/elsewhere" if what == "other source" else str(tmp_path))
        ino = held.ino + (1 if what == "other inode" else 0)
        with pytest.raises(JailError, match="changed while the task started"):
            check_bind(_step(tmp_path), held, source, ino)
    finally:
        held.close()


def test_open_source_refuses_a_symlink_anywhere(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(SpecError, match="is a symbolic link") as ei:
        open_source(str(tmp_path / "link" / "x"))
    assert ei.value.field == "mounts.source"
    with pytest.raises(SpecError, match="does not exist"):
        open_source(str(tmp_path / "missing"))
    os.close(open_source(str(tmp_path / "real")))
