"""A Linux image on FreeBSD through the Linux ABI: the jail parameters and file systems as exact
tables (jail(8) linux.*, FreeBSD's /etc/rc.d/linux mounts), refused before any side effect on a
host without linux64."""
# ruff: noqa: F811  (test_freebsd's fixtures are imported, then used as parameters)

from __future__ import annotations

from pathlib import Path

import pytest

from jails import Limits, Mount, Tmpfs
from jails.errors import HostUnsupported, SpecError
from jails.freebsd import FreeBSDRuntime
from jails.jailparams import jail_create_argv, jail_params
from jails.linuxabi import linux_abi_loaded
from tests.jails.test_freebsd import (  # noqa: F401 (fixtures)
    JLS,
    FakeLauncher,
    Recorder,
    _spec,
    devfs,
    launcher,
    mount_p,
    recorder,
    rootfs,
    rt,
)

NAME = "xc-3f2a9c1e-web"
KLDSTAT = ["/sbin/kldstat", "-q", "-m", "linux64"]


def test_linux_abi_jail_params(rootfs: Path, tmp_path: Path) -> None:
    spec = _spec(rootfs, tmp_path, abi="linux")
    assert jail_params(spec) == [
        ("name", NAME),
        ("path", str(rootfs)),
        ("host.hostname", NAME),
        ("ip4", "inherit"),
        ("ip6", "inherit"),
        ("persist", None),  # no mount.devfs: the backend mounts devfs before /dev/fd, /dev/shm
        ("devfs_ruleset", "4"),
        ("enforce_statfs", "2"),
        ("children.max", "0"),
        ("linux", "new"),
        ("linux.osname", "Linux"),
        ("linux.osrelease", "5.15.0"),
    ]


def test_linux_release_is_the_operators_to_set(rootfs: Path, tmp_path: Path) -> None:
    spec = _spec(rootfs, tmp_path, abi="linux",
                 jail_params={"linux.osrelease": "6.1.0", "allow.raw_sockets": "1"})
    assert jail_create_argv(spec)[-4:] == [
        "linux=new", "linux.osname=Linux", "linux.osrelease=6.1.0", "allow.raw_sockets=1",
    ]


def test_abi_is_validated(rootfs: Path, tmp_path: Path) -> None:
    with pytest.raises(SpecError) as ei:
        _spec(rootfs, tmp_path, abi="linux32")
    assert ei.value.field == "abi" and "'native', 'linux'" in str(ei.value)


def test_start_and_destroy_exact_commands(
    rt: FreeBSDRuntime, recorder: Recorder, launcher: FakeLauncher, rootfs: Path, tmp_path: Path
) -> None:
    alloc = tmp_path / "alloc"
    alloc.mkdir()
    spec = _spec(rootfs, tmp_path, abi="linux", mounts=[Mount(alloc, "/alloc")],
                 tmpfs=[Tmpfs("/tmp", 1 << 20)], limits=Limits(max_processes=32))
    rt.start(spec)
    view = rootfs
    assert recorder.calls == [
        KLDSTAT,
        ["/usr/bin/rctl", "-a", f"jail:{NAME}:maxproc:deny=32"],
        devfs(view),
        ["/sbin/mount", "-t", "linprocfs", "-o", "rw", "linprocfs", f"{view}/proc"],
        ["/sbin/mount", "-t", "linsysfs", "-o", "rw", "linsysfs", f"{view}/sys"],
        ["/sbin/mount", "-t", "fdescfs", "-o", "linrdlnk", "fdescfs", f"{view}/dev/fd"],
        ["/sbin/mount", "-t", "tmpfs", "-o", "nosuid,mode=1777", "tmpfs", f"{view}/dev/shm"],
        ["/sbin/mount", "-t", "nullfs", "-o", "rw", str(alloc), f"{view}/alloc"],
        *mount_p(),
        ["/sbin/mount", "-t", "tmpfs", "-o", "nosuid,size=1048576,mode=1777", "tmpfs",
         f"{view}/tmp"],
        jail_create_argv(spec, "/usr/sbin/jail"),
        JLS,
    ]
    # Mountpoints the image lacks were made (the recorder mounts nothing: all land in the clone;
    # on FreeBSD /dev/fd and /dev/shm are made in the devfs just mounted, as /etc/rc.d/linux does).
    assert all((rootfs / d).is_dir() for d in ("dev", "proc", "sys", "dev/fd", "dev/shm"))
    assert len(launcher.calls) == 1

    recorder.calls.clear()
    recorder.reply(["/usr/sbin/jls"], 1, "", "jls: jail not found\n")
    rt.destroy(NAME)
    assert recorder.calls[2:-1] == [
        ["/sbin/umount", "-f", f"{view}/tmp"],
        ["/sbin/umount", "-f", f"{view}/alloc"],
        ["/sbin/umount", "-f", f"{view}/dev/shm"],
        ["/sbin/umount", "-f", f"{view}/dev/fd"],
        ["/sbin/umount", "-f", f"{view}/sys"],
        ["/sbin/umount", "-f", f"{view}/proc"],
        ["/sbin/umount", "-f", f"{view}/dev"],
    ]


def test_refused_without_linux64_before_any_side_effect(
    rt: FreeBSDRuntime, recorder: Recorder, launcher: FakeLauncher, rootfs: Path, tmp_path: Path
) -> None:
    recorder.reply(KLDSTAT, 1)
    with pytest.raises(HostUnsupported) as ei:
        rt.start(_spec(rootfs, tmp_path, abi="linux", limits=Limits(max_processes=8)))
    assert "linux_enable" in str(ei.value) and "kldload linux64" in str(ei.value)
    assert recorder.calls == [KLDSTAT] and launcher.calls == []
    assert not rt.exists(NAME)
    # A native image never asks.
    recorder.calls.clear()
    rt.start(_spec(rootfs, tmp_path))
    assert KLDSTAT not in recorder.calls


def test_own_mounts_over_the_abi_file_systems_are_refused(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    with pytest.raises(SpecError) as ei:
        rt.start(_spec(rootfs, tmp_path, abi="linux", tmpfs=[Tmpfs("/dev/shm")]))
    assert ei.value.field == "mounts.target" and "/dev/shm" in str(ei.value)
    assert recorder.calls == [KLDSTAT] and not rt.exists(NAME)
    rt.start(_spec(rootfs, tmp_path, tmpfs=[Tmpfs("/dev/shm")]))  # native: /dev/shm is theirs


@pytest.mark.parametrize(("rc", "loaded"), [(0, True), (1, False), (127, False)])
def test_linux_abi_loaded(rc: int, loaded: bool) -> None:
    runner = Recorder()
    runner.reply(KLDSTAT[:1], rc, "", "kldstat: can't find module linux64\n" if rc else "")
    assert linux_abi_loaded(runner) is loaded
    assert runner.calls == [KLDSTAT]


@pytest.mark.parametrize("loaded", [True, False])
def test_fingerprint_says_linux_abi_and_devd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, loaded: bool
) -> None:
    """probe_host("freebsd") as on a FreeBSD host (its commands answered as there)."""
    import shutil
    import sys

    from jails import _cmd, probe
    from jails._cmd import Result

    def fake_run(argv: list[str], **kw: object) -> Result:
        rc = 0 if argv[0] == "sysctl" or loaded else 1
        return Result(tuple(argv), rc, "1\n" if argv[0] == "sysctl" else "", "")

    devd_socket = tmp_path / "devd.seqpacket.pipe"
    devd_socket.touch()
    monkeypatch.setattr(sys, "platform", "freebsd14")
    monkeypatch.setattr(_cmd, "run", fake_run)
    monkeypatch.setattr(shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(probe, "DEVD_SEQPACKET_SOCKET",
                        str(devd_socket if loaded else tmp_path / "no-devd"))
    p = probe.probe_host("freebsd")
    assert p.healthy, p.reason
    want = "true" if loaded else "false"
    assert p.attributes["driver.xc.linux_abi"] == want
    assert p.attributes["driver.xc.devd"] == want  # (devd's socket there or not, with it)
