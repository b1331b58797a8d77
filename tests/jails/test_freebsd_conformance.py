"""The conformance suite run on the FreeBSD backend against a fake FreeBSD host on Linux.

The backend code runs unchanged, with the real C supervisor. Only the FreeBSD tools are stand-ins:
``jexec -U <user> <jail> argv`` becomes ``chroot --userspec`` into the jail's path (exec'd in place,
as jexec execvp's, so the task's pid is the supervisor's child), ``mount -t nullfs`` a bind mount,
``jls``/``jail -c``/``jail -r`` a table of created jails, ``pkill -j <jid>`` kills the processes
rooted at the jail's path that carry its mark (jails may share a path), and racct usage is summed
from /proc. What a fake cannot show (rctl enforcement, hostname, procfs in the jail) is listed in
``unsupported`` and pinned by the exact command tables in test_freebsd.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path

import pytest

from jails import Runtime, open_runtime
from jails._cmd import Result
from jails.errors import CommandFailed
from tests.fixtures.rootfs import rootfs_copy
from tests.fixtures.runc import runc_usable
from tests.fixtures.sweep import test_name as resource_name
from tests.jails.conformance import RuntimeConformance

pytestmark = pytest.mark.root

LIMITS = "rctl/racct enforcement needs a FreeBSD kernel; the rules are asserted in test_freebsd.py"

FAKE_JEXEC = """#!/bin/sh
# fake jexec(8): jexec -U <user> <jail> command...
[ "$1" = "-U" ] || { echo "fake jexec: expected -U" >&2; exit 64; }
user=$2; jail=$3; shift 3
root=$(cat "{jails}/$jail") || exit 1
ids=$(awk -F: -v u="$user" '$1==u {{print $3":"$4}}' "$root/etc/passwd")
[ -n "$ids" ] || {{ echo "jexec: getpwnam: $user: no such user" >&2; exit 1; }}
cd "$root" || exit 1
# Jails may share a path; the fake tells their processes apart by this mark.
export XC_FAKE_JAIL="$jail"
exec chroot --userspec="$ids" "$root" "$@"
"""


def _root_of(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return None


class FakeFreeBSDHost:
    def __init__(self, work: Path) -> None:
        self.jails_dir = work / "jails"
        self.jails_dir.mkdir()
        self.jexec = work / "jexec"
        self.jexec.write_text(
            FAKE_JEXEC.replace("{jails}", str(self.jails_dir)).replace("{{", "{").replace("}}", "}")
        )
        self.jexec.chmod(0o755)
        self.calls: list[list[str]] = []

    def _path(self, name: str) -> str | None:
        f = self.jails_dir / name
        return f.read_text() if f.exists() else None

    def procs(self, name: str) -> list[int]:
        root = self._path(name)
        if root is None:
            return []
        real = os.path.realpath(root)
        mark = f"XC_FAKE_JAIL={name}".encode()
        out = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or _root_of(p) != real:
                continue
            with contextlib.suppress(OSError):
                if mark in Path(f"/proc/{p}/environ").read_bytes().split(b"\0"):
                    out.append(int(p))
        return out

    def _kill(self, name: str) -> int:
        pids = self.procs(name)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def run(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Collection[int] = (0,),
        timeout_s: float | None = 60.0,
    ) -> Result:
        args = list(argv)
        self.calls.append(args)
        tool = Path(args[0]).name
        rc, out, err = 0, "", ""
        if tool == "jail" and args[1] == "-c":
            params = dict(a.split("=", 1) for a in args[2:] if "=" in a)
            (self.jails_dir / params["name"]).write_text(params["path"])
        elif tool == "jail" and args[1] == "-r":
            if self._path(args[2]) is None:
                rc, err = 1, f'jail: "{args[2]}" not found\n'
            else:
                self._kill(args[2])
                (self.jails_dir / args[2]).unlink()
        elif tool == "jls":
            if self._path(args[2]) is None:
                rc, err = 1, f'jls: jail "{args[2]}" not found\n'
            else:
                out = args[2] + "\n"  # the fake's jid is the name
        elif tool == "pkill":
            rc = 0 if self._kill(args[3]) else 1
        elif tool == "mount" and args[2] == "tmpfs":
            # tmpfs(5)'s size (bytes) and mode (octal) mean the same to Linux's tmpfs.
            subprocess.run(["mount", "-t", "tmpfs", "-o", args[4], args[5], args[6]], check=True)
        elif tool == "mount":
            opts, src, dst = args[4], args[5], args[6]
            subprocess.run(["mount", "--bind", src, dst], check=True)
            if opts == "ro":
                subprocess.run(["mount", "-o", "remount,bind,ro", dst], check=True)
        elif tool == "umount":
            p = subprocess.run(["umount", args[-1]], capture_output=True, text=True)
            rc, err = p.returncode, p.stderr
        elif tool == "rctl":
            if args[1] == "-r":
                rc, err = 1, f"rctl: failed to remove rule '{args[2]}': No such process\n"
        else:
            raise AssertionError(f"unexpected command {args}")
        if rc not in ok_codes:
            raise CommandFailed(args, rc, err)
        return Result(tuple(args), rc, out, err)

    def racct(self, subject: str) -> str:
        name = subject.split(":", 1)[1]
        pids = self.procs(name)
        rss = 0
        for pid in pids:
            with contextlib.suppress(OSError):
                rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf(
                    "SC_PAGE_SIZE"
                )
        return f"cputime=0,memoryuse={rss},maxproc={len(pids)},pcpu=0"

    def runtime(self, state_root: Path) -> Runtime:
        return open_runtime(
            "freebsd",
            state_root,
            runner=self.run,
            racct_reader=self.racct,
            jexec_bin=str(self.jexec),
        )

    def cleanup(self) -> None:
        for f in self.jails_dir.iterdir():
            self._kill(f.name)


@pytest.fixture(scope="module")
def fbsd_rootfs(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Own copy: the fake finds a jail's processes by their root directory.
    return rootfs_copy(busybox_rootfs, tmp_path_factory.mktemp("fbsd") / "jailroot")


class TestFreeBSDRuntimeOnFakeHost(RuntimeConformance):
    unsupported = {
        "test_env_cwd_hostname_user": "host.hostname needs a real jail (jail_params table tests)",
        "test_numeric_user_and_group": "jexec -U needs a user name (see test_freebsd.py)",
        "test_missing_command_fails_start_cleanly": "jexec reports a missing command as an exit",
        "test_exec_timeout_kills_the_command": "the fake jail has no procfs to list processes",
        "test_readonly_root_keeps_dev_shm_writable": "FreeBSD has no /dev/shm (shm_open(2) "
        "objects live in the kernel)",
        "test_stats_move": LIMITS,
        "test_memory_limit_oom_kill_reported": LIMITS,
        "test_under_memory_limit_no_oom": LIMITS,
        "test_pids_and_open_files_limits": LIMITS,
        "test_cpu_limit_enforced": LIMITS,
    }

    @pytest.fixture
    def host(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeFreeBSDHost]:
        if runc_usable() is not None or os.geteuid() != 0:
            pytest.skip("needs root (bind mounts, chroot) and cc")
        h = FakeFreeBSDHost(tmp_path_factory.mktemp(resource_name("fbsd")))
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
