"""The conformance suite run on the FreeBSD backend against the fake FreeBSD host
(tests/fixtures/fakefreebsd.py) on Linux."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jails import JailSpec, Limits, Mount, Runtime
from jails.errors import HostUnsupported, JailError, SpecError
from tests.fixtures.fakefreebsd import FakeFreeBSDHost
from tests.fixtures.rootfs import rootfs_copy
from tests.fixtures.runc import runc_usable
from tests.fixtures.sweep import test_name as resource_name
from tests.jails.conformance import RuntimeConformance, SpecFactory

pytestmark = pytest.mark.root

LIMITS = "rctl/racct enforcement needs a FreeBSD kernel; the rules are asserted in test_freebsd.py"
# (memoryuse is enforced by the fake as the kernel's VM daemon does: tests/fixtures/fakeracct.py)


@pytest.fixture(scope="module")
def fbsd_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Own copy: the backend makes mountpoints (/dev among them) in the image it is given.
    return rootfs_copy(busybox_rootfs, tmp_path_factory.mktemp("fbsd") / "jailroot")


class TestFreeBSDRuntimeOnFakeHost(RuntimeConformance):
    unsupported = {
        "test_exec_timeout_kills_the_command": "ps(1) in a FreeBSD jail reads the kernel's "
        "jail-filtered process list; the fake has none",
        "test_readonly_root_keeps_dev_shm_writable": "FreeBSD has no /dev/shm (shm_open(2) "
        "objects live in the kernel)",
        "test_stats_move": "racct's cputime is whole seconds (jails/README.md): 0.4 s of CPU "
        "need not move it; the parsing is table-tested in test_freebsd.py",
        "test_pids_and_open_files_limits": LIMITS,
        "test_cpu_limit_enforced": LIMITS,
    }

    @pytest.fixture
    def host(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeFreeBSDHost]:
        if runc_usable() is not None or os.geteuid() != 0:
            pytest.skip("needs root (bind mounts, chroot) and cc")
        h = FakeFreeBSDHost()
        yield h
        h.cleanup()

    @pytest.fixture
    def rootfs(self, fbsd_rootfs: Path) -> Path:
        return fbsd_rootfs

    @pytest.fixture
    def state_root(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        return tmp_path_factory.mktemp(resource_name("fbsd-state"))

    @pytest.fixture
    def rt(self, host: FakeFreeBSDHost, state_root: Path) -> Runtime:
        return host.runtime(state_root)

    @pytest.fixture
    def fresh_rt(self, host: FakeFreeBSDHost, state_root: Path) -> Callable[[], Runtime]:
        return lambda: host.runtime(state_root)

    # ---- FreeBSD only: what the fake host's FreeBSD behaviours make checkable ------------------

    @pytest.fixture
    def own_root(self, busybox_rootfs: Path, tmp_path: Path) -> Path:
        return rootfs_copy(busybox_rootfs, tmp_path / "ownroot")

    def test_env_cwd_user_exactly(self, rt: Runtime, make_spec: SpecFactory) -> None:
        # no login.conf, no jexec: the task gets exactly its environment and ids
        spec = make_spec(["/bin/env"], env={"FOO": "bar baz"}, cwd="/tmp", user="xcuser")
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert sorted(spec.stdout_path.read_text().splitlines()) == [
            "FOO=bar baz", "HOME=/home/xcuser",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        spec = make_spec(["/bin/id"], user="xcuser", group="xcextra")
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text().startswith("uid=1000(xcuser) gid=2000(xcextra)")

    def test_cwd_needs_no_shell(
        self, rt: Runtime, make_spec: SpecFactory, own_root: Path
    ) -> None:
        (own_root / "bin" / "sh").unlink()
        spec = make_spec(["/bin/pwd"], cwd="/tmp", rootfs=own_root)
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text() == "/tmp\n"

    def test_image_without_dev_gets_a_devfs_that_goes_with_the_task(
        self, rt: Runtime, make_spec: SpecFactory, own_root: Path
    ) -> None:
        (own_root / "dev").rmdir()
        spec = make_spec(["/bin/sh", "-c", "echo gone > /dev/null && ls /dev"], rootfs=own_root)
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert "null" in spec.stdout_path.read_text().split()
        rt.destroy(spec.name)
        assert (own_root / "dev").is_dir() and not _mounted_below(own_root)

    def test_symlinked_dev_is_refused_before_the_jail_exists(
        self, rt: Runtime, make_spec: SpecFactory, own_root: Path, host: FakeFreeBSDHost
    ) -> None:
        (own_root / "dev").rmdir()
        (own_root / "dev").symlink_to("/dev")
        spec = make_spec(["/bin/true"], rootfs=own_root)
        with pytest.raises(SpecError) as ei:
            rt.start(spec)
        assert ei.value.field == "mounts.target"
        assert not rt.exists(spec.name) and not _mounted_below(own_root)
        assert not any(c[:2] == ["/usr/sbin/jail", "-c"] for c in host.calls)

    @pytest.mark.parametrize(("release", "bound"), [("13.1-RELEASE", False),
                                                    ("14.2-RELEASE", True)])
    def test_file_volume_bound_or_copied_by_release(
        self, host: FakeFreeBSDHost, state_root: Path, make_spec: SpecFactory, tmp_path: Path,
        release: str, bound: bool,
    ) -> None:
        host.release = release
        rt = host.runtime(state_root)
        conf = tmp_path / "app.conf"
        conf.write_text("setting=1\n")
        spec = make_spec(["/bin/cat", "/etc/app.conf"], mounts=(Mount(conf, "/etc/app.conf"),))
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text() == "setting=1\n"
        nullfs = [c for c in host.calls if c[:3] == ["/sbin/mount", "-t", "nullfs"]]
        assert [c[5] for c in nullfs] == ([str(conf)] if bound else [])
        rt.destroy(spec.name)

    @pytest.mark.parametrize("swap", ["directory", "symlink"])
    def test_bind_source_swapped_before_the_mount_fails_cleanly(
        self, rt: Runtime, host: FakeFreeBSDHost, make_spec: SpecFactory, tmp_path: Path,
        own_root: Path, swap: str,
    ) -> None:
        secret = tmp_path / "host-secret"
        secret.mkdir()
        (secret / "key").write_text("secret")
        shared = tmp_path / "shared"
        (shared / "app").mkdir(parents=True)

        def swap_it(args: list[str]) -> None:
            # between the backend's resolve (it holds app open) and mount_nullfs's own lookup
            if args[5] == str(shared / "app"):
                os.rename(shared / "app", shared / "app.old")
                if swap == "symlink":
                    (shared / "app").symlink_to(secret)
                else:
                    (shared / "app").mkdir()

        host.before_mount = swap_it
        spec = make_spec(["/bin/cat", "/data/key"], rootfs=own_root,
                         mounts=(Mount(shared / "app", "/data"),))
        with pytest.raises(JailError, match="changed while the task started"):
            rt.start(spec)
        assert not rt.exists(spec.name) and not _mounted_below(own_root)
        assert host.jid(spec.name) is None


    def test_linux_image_refused_without_linux64(
        self, host: FakeFreeBSDHost, rt: Runtime, make_spec: Callable[..., JailSpec]
    ) -> None:
        host.linux_abi = False
        spec = make_spec(["/bin/true"], abi="linux", limits=Limits(memory_bytes=64 << 20))
        calls = len(host.calls)
        with pytest.raises(HostUnsupported) as ei:
            rt.start(spec)
        assert "linux64" in str(ei.value)
        assert host.calls[calls:] == [["/sbin/kldstat", "-q", "-m", "linux64"]]
        assert not rt.exists(spec.name) and host.rctl.rules == []


def _mounted_below(root: Path) -> list[str]:
    real = os.path.realpath(root)
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == real or p.startswith(real + "/")]
