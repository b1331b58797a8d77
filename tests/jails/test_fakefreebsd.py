"""The fake FreeBSD host behaves as FreeBSD's own sources say, one test per behaviour (so the
conformance run on it cannot pass on an assumption the backend and the fake share)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from jails.errors import CommandFailed
from tests.fixtures.fakefreebsd import FakeFreeBSDHost, _is_mountpoint
from tests.fixtures.rootfs import rootfs_copy
from tests.fixtures.runc import runc_usable

pytestmark = pytest.mark.root


@pytest.fixture
def host() -> Iterator[FakeFreeBSDHost]:
    if runc_usable() is not None or os.geteuid() != 0:
        pytest.skip("needs root (bind mounts, chroot) and cc")
    h = FakeFreeBSDHost()
    yield h
    h.cleanup()


@pytest.fixture
def root(busybox_rootfs: Path, tmp_path: Path) -> Path:
    return rootfs_copy(busybox_rootfs, tmp_path / "jailroot")


def _create(host: FakeFreeBSDHost, name: str, path: Path, *extra: str) -> None:
    host.run(["/usr/sbin/jail", "-c", f"name={name}", f"path={path}", "host.hostname=xcjail",
              "persist", *extra])


def test_mount_devfs_needs_dev_in_the_image(host: FakeFreeBSDHost, root: Path) -> None:
    # usr.sbin/jail/command.c check_path: lstat of <path>/dev fails -> the creation fails
    (root / "dev").rmdir()
    with pytest.raises(CommandFailed) as ei:
        _create(host, "xctest-nodev", root, "mount.devfs")
    assert ei.value.stderr == f"jail: xctest-nodev: mount.devfs: {root}/dev: No such file or " \
        "directory\n"
    assert host.jid("xctest-nodev") is None


def test_mount_devfs_refuses_a_symlinked_dev(host: FakeFreeBSDHost, root: Path) -> None:
    (root / "dev").rmdir()
    (root / "dev").symlink_to("/dev")
    with pytest.raises(CommandFailed) as ei:
        _create(host, "xctest-linkdev", root, "mount.devfs")
    assert ei.value.stderr == f"jail: xctest-linkdev: mount.devfs: {root}/dev is a symbolic link\n"


def test_jail_r_of_a_jail_not_in_jail_conf_leaves_its_devfs(
    host: FakeFreeBSDHost, root: Path
) -> None:
    # usr.sbin/jail/state.c: a running jail named only on the command line has no parameters,
    # so `jail -r` runs none of the mount.* steps
    _create(host, "xctest-devfs", root, "mount.devfs")
    assert (root / "dev" / "null").exists()
    host.run(["/usr/sbin/jail", "-r", "xctest-devfs"])
    assert host.jid("xctest-devfs") is None
    assert _is_mountpoint(str(root / "dev"))
    host.run(["/sbin/umount", "-f", str(root / "dev")])
    assert not _is_mountpoint(str(root / "dev"))


def test_umount_of_what_is_not_mounted_says_so(host: FakeFreeBSDHost, root: Path) -> None:
    with pytest.raises(CommandFailed) as ei:
        host.run(["/sbin/umount", "-f", str(root / "tmp")])
    assert ei.value.stderr == f"umount: {root}/tmp: not a file system root directory\n"
    with pytest.raises(CommandFailed) as ei:
        host.run(["/sbin/umount", "-f", str(root / "nope")])
    assert "No such file or directory" in ei.value.stderr


@pytest.mark.parametrize(("release", "ok"), [("13.1-RELEASE", False), ("14.2-RELEASE", True)])
def test_nullfs_binds_a_file_from_13_2_on(
    host: FakeFreeBSDHost, root: Path, tmp_path: Path, release: str, ok: bool
) -> None:
    host.release = release
    src = tmp_path / "resolv.conf"
    src.write_text("nameserver 192.0.2.1\n")
    (root / "etc" / "resolv.conf").write_text("")
    argv = ["/sbin/mount", "-t", "nullfs", "-o", "ro", str(src), f"{root}/etc/resolv.conf"]
    if ok:
        host.run(argv)
        assert (root / "etc" / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
        host.run(["/sbin/umount", "-f", f"{root}/etc/resolv.conf"])
    else:
        with pytest.raises(CommandFailed) as ei:
            host.run(argv)
        assert ei.value.stderr.endswith("Not a directory\n")


def test_mount_p_reports_the_source_as_realpath(
    host: FakeFreeBSDHost, root: Path, tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (root / "mnt").mkdir(exist_ok=True)
    host.run(["/sbin/mount", "-t", "nullfs", "-o", "rw", str(tmp_path / "link"), f"{root}/mnt"])
    try:
        table = host.run(["/sbin/mount", "-p"]).stdout
        assert f"{tmp_path}/real\t{root}/mnt\tnullfs\trw\t0 0\n" in table
    finally:
        host.run(["/sbin/umount", "-f", f"{root}/mnt"])
    assert f"{root}/mnt" not in host.run(["/sbin/mount", "-p"]).stdout


def test_attach_enters_the_jail_with_numeric_ids_and_the_given_env(
    host: FakeFreeBSDHost, root: Path
) -> None:
    _create(host, "xctest-attach", root)
    jid = str(host.jid("xctest-attach"))
    out = subprocess.run(
        [str(host.supervisor), "--attach", jid, "4321", "65534", "2000,2001", "/tmp",
         "/bin/sh", "-c",
         'echo "$(id -u):$(id -g):$(id -G)|$(pwd)|$(hostname)|"$(ls /); env | sort'],
        env={"PATH": "/bin", "ONLY": "this"}, capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    ids, listing = out.stdout.splitlines()[0], out.stdout.splitlines()[1:]
    assert ids.split("|") == ["4321:65534:65534 2000 2001", "/tmp", "xcjail",
                              " ".join(sorted(os.listdir(root)))]  # the image's root, not ours
    # exactly the environment given, plus what the shell itself sets (PWD, SHLVL)
    assert [v for v in listing if not v.startswith(("PWD=", "SHLVL=", "OLDPWD="))] == [
        "ONLY=this", "PATH=/bin"]


def test_attach_reports_what_failed(host: FakeFreeBSDHost, root: Path) -> None:
    _create(host, "xctest-attach2", root)
    jid = str(host.jid("xctest-attach2"))
    out = subprocess.run([str(host.supervisor), "--attach", jid, "0", "0", "-", "/nope",
                          "/bin/true"], capture_output=True, text=True, check=False)
    assert (out.returncode, out.stderr) == (
        126, "xc-supervisor: chdir /nope: No such file or directory\n")
    out = subprocess.run([str(host.supervisor), "--attach", jid, "0", "0", "-", "/", "/no/cmd"],
                         capture_output=True, text=True, check=False)
    assert (out.returncode, out.stderr) == (
        127, "xc-supervisor: exec /no/cmd: No such file or directory\n")


def test_pkill_kills_only_the_jails_processes(host: FakeFreeBSDHost, root: Path) -> None:
    _create(host, "xctest-pk", root)
    jid = str(host.jid("xctest-pk"))
    inside = subprocess.Popen([str(host.supervisor), "--attach", jid, "0", "0", "-", "/",
                               "/bin/sleep", "30"])
    outside = subprocess.Popen(["sleep", "30"])
    try:
        for _ in range(100):
            if host.procs("xctest-pk"):
                break
            subprocess.run(["sleep", "0.02"], check=True)
        assert host.procs("xctest-pk") == [inside.pid]
        host.run(["/bin/pkill", "-KILL", "-j", jid])
        assert inside.wait(5) == -9 and outside.poll() is None
    finally:
        outside.kill()
        inside.kill()
        outside.wait()
        inside.wait()
