"""The FreeBSD backend against the conformance suite's expectations, through exact command and
parameter tables (CI runs on Linux; jail(8), jls(8), mount(8) and rctl(8) cannot run here).

Tables are written from the man pages and FreeBSD's sources: rctl(8)'s rule syntax
``subject:subject-id:resource:action=amount``, ``rctl -u`` printing one ``resource=value`` per line
in raw units (sys/kern/kern_rctl.c), ``rctl -r`` answering ESRCH when nothing matched, ``jls -j
<name> jid`` exiting 1 for an absent jail, ``jail -c`` parameters as ``key=value`` or bare
booleans (jail(8)), ``mount -p`` printing fstab(5) lines (mount(8)).
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from collections.abc import Collection, Sequence
from pathlib import Path

import pytest

from jails import JailSpec, Limits, Mount, Tmpfs
from jails.errors import CommandFailed, HostUnsupported, JailExists, SpecError
from jails.freebsd import FreeBSDRuntime
from jails.jailparams import jail_create_argv, jail_params
from jails.rctl import parse_usage, rctl_rules, usage_from_racct
from jails.taskdir import TaskDir, TaskPids

MiB = 1024 * 1024

# `rctl -u jail:web` on FreeBSD 14: every resource, index order, one per line, raw integers.
RCTL_U_OUTPUT = """cputime=12
datasize=1048576
stacksize=0
coredumpsize=0
memoryuse=52428800
memorylocked=0
maxproc=3
openfiles=27
vmemoryuse=104857600
pseudoterminals=0
swapuse=0
nthr=4
msgqqueued=0
msgqsize=0
nmsgq=0
nsem=0
nsemop=0
nshm=0
shmsize=0
wallclock=60
pcpu=37
readbps=0
writebps=0
readiops=0
writeiops=0
"""
ESRCH = "rctl: failed to remove rule 'jail:{}:': No such process\n"
RACCT_OFF = "rctl: RACCT/RCTL present, but disabled; enable using kern.racct.enable=1 tunable\n"


class Recorder:
    """A command runner that records argv and answers from a script of (argv prefix -> reply)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.replies: list[tuple[list[str], int, str, str]] = []
        self.mounted: list[tuple[str, str]] = []  # what `mount -t` mounted: (source, target)

    def reply(self, prefix: list[str], rc: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.replies.insert(0, (prefix, rc, stdout, stderr))

    def __call__(
        self,
        argv: Sequence[str],
        *,
        ok_codes: Collection[int] = (0,),
        timeout_s: float | None = 60.0,
    ) -> object:
        from jails._cmd import Result

        args = list(argv)
        self.calls.append(args)
        rc, out, err = 0, "", ""
        for prefix, r, o, e in self.replies:
            if args[: len(prefix)] == prefix:
                rc, out, err = r, o, e
                break
        else:
            if args[:2] == ["/sbin/mount", "-t"]:
                self.mounted.append((args[5], args[6]))
            elif args[:2] == ["/sbin/mount", "-p"]:
                out = "".join(f"{src}\t{dst}\tnullfs\trw\t0 0\n" for src, dst in self.mounted)
        if rc not in ok_codes:
            raise CommandFailed(args, rc, err)
        return Result(tuple(args), rc, out, err)

    def inode_of(self, target: str) -> int:
        """A mountpoint shows the inode of what was mounted there last (nullfs passes the lower
        vnode's inode through, mount_nullfs(8)), else its own."""
        src = next((s for s, t in reversed(self.mounted) if t == target), target)
        return os.stat(src).st_ino


class FakeLauncher:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, str], Path, Path]] = []
        self.oom: list[str | None] = []
        self.fail: Exception | None = None

    def __call__(
        self,
        task: TaskDir,
        out: Path,
        err: Path,
        mode: list[str],
        env: dict[str, str],
        *,
        oom: str | None = None,
    ) -> TaskPids:
        self.calls.append((mode, env, out, err))
        self.oom.append(oom)
        if self.fail is not None:
            raise self.fail
        (task.path / "task.json").write_text(
            json.dumps({"supervisor_pid": 0, "supervisor_start": 0, "pid": 0, "pid_start": 0})
        )
        return TaskPids(0, 0, 0, 0)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "jailroot"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(
        "root:*:0:0:Charlie &:/root:/bin/sh\n"
        "www:*:80:80:World Wide Web Owner:/nonexistent:/sbin/nologin\n"
    )
    (root / "etc" / "group").write_text("wheel:*:0:root\nwww:*:80:\n")
    return root


@pytest.fixture
def recorder() -> Recorder:
    r = Recorder()
    r.reply(["/usr/sbin/jls"], 0, "7\n")
    return r


def mount_p(*, after: bool = True) -> list[list[str]]:
    """The check after each bind mount: what is mounted there now."""
    return [["/sbin/mount", "-p"]] if after else []


def devfs(root: Path, ruleset: str = "4") -> list[str]:
    return ["/sbin/mount", "-t", "devfs", "-o", f"ruleset={ruleset}", "devfs", f"{root}/dev"]


JLS = ["/usr/sbin/jls", "-j", "xc-3f2a9c1e-web", "jid"]


@pytest.fixture
def launcher() -> FakeLauncher:
    return FakeLauncher()


@pytest.fixture
def rt(tmp_path: Path, recorder: Recorder, launcher: FakeLauncher) -> FreeBSDRuntime:
    return FreeBSDRuntime(tmp_path / "state", runner=recorder, launcher=launcher,
                          racct_reader=lambda s: None, inode_of=recorder.inode_of)


def _spec(rootfs: Path, tmp_path: Path, **kw: object) -> JailSpec:
    base: dict[str, object] = {
        "name": "xc-3f2a9c1e-web",
        "rootfs": rootfs,
        "argv": ("/usr/local/bin/web", "--port", "8080"),
        "stdout_path": tmp_path / "stdout.fifo",
        "stderr_path": tmp_path / "stderr.fifo",
    }
    base.update(kw)
    return JailSpec(**base)  # type: ignore[arg-type]


# ---- pure mappings ---------------------------------------------------------------------------


def test_jail_params_defaults(rootfs: Path, tmp_path: Path) -> None:
    spec = _spec(rootfs, tmp_path, hostname="web.example")
    assert jail_params(spec) == [
        ("name", "xc-3f2a9c1e-web"),
        ("path", str(rootfs)),
        ("host.hostname", "web.example"),
        ("ip4", "inherit"),
        ("ip6", "inherit"),
        ("persist", None),
        ("devfs_ruleset", "4"),
        ("enforce_statfs", "2"),
        ("children.max", "0"),
    ]


def test_jail_params_allow_list_overrides(rootfs: Path, tmp_path: Path) -> None:
    spec = _spec(
        rootfs,
        tmp_path,
        jail_params={
            "allow.raw_sockets": "1",
            "devfs_ruleset": "5",
            "securelevel": "3",
            "sysvshm": "new",
        },
    )
    assert jail_create_argv(spec, "/usr/sbin/jail") == [
        "/usr/sbin/jail",
        "-c",
        "name=xc-3f2a9c1e-web",
        f"path={rootfs}",
        "host.hostname=xc-3f2a9c1e-web",
        "ip4=inherit",
        "ip6=inherit",
        "persist",
        "devfs_ruleset=5",
        "enforce_statfs=2",
        "children.max=0",
        "allow.raw_sockets=1",
        "securelevel=3",
        "sysvshm=new",
    ]


@pytest.mark.parametrize(
    ("limits", "rules"),
    [
        (Limits(), []),
        (
            Limits(memory_bytes=256 * MiB),
            ["jail:j:memoryuse:sigkill=268435456", "jail:j:memoryuse:devctl=268435456"],
        ),
        (  # memory is then only Nomad's reservation: racct has no pressure-only soft limit
            Limits(memory_bytes=256 * MiB, memory_max_bytes=512 * MiB),
            ["jail:j:memoryuse:sigkill=536870912", "jail:j:memoryuse:devctl=536870912"],
        ),
        (Limits(cpu_percent=150), ["jail:j:pcpu:deny=150"]),
        (Limits(cpu_shares=512), []),  # no FreeBSD equivalent of a relative weight
        (
            Limits(memory_bytes=64 * MiB, cpu_percent=50, max_processes=64, open_files=1024),
            [
                "jail:j:memoryuse:sigkill=67108864",
                "jail:j:memoryuse:devctl=67108864",
                "jail:j:pcpu:deny=50",
                "jail:j:maxproc:deny=64",
                "jail:j:openfiles:deny=1024",
            ],
        ),
    ],
)
def test_rctl_rules(limits: Limits, rules: list[str]) -> None:
    assert rctl_rules("j", limits) == rules


def test_parse_usage_lines_and_commas() -> None:
    lines = parse_usage(RCTL_U_OUTPUT)
    assert len(lines) == 25
    assert lines["memoryuse"] == 52428800 and lines["pcpu"] == 37 and lines["cputime"] == 12
    joined = parse_usage(RCTL_U_OUTPUT.replace("\n", ","))  # rctl_get_racct(2) form
    assert joined == lines
    assert parse_usage("memoryuse=45M\ngarbage\n") == {}  # -h output is never trusted


def test_usage_from_racct() -> None:
    u = usage_from_racct(parse_usage(RCTL_U_OUTPUT), now_ns=5)
    assert (u.timestamp_ns, u.cpu_total_ns, u.cpu_percent) == (5, 12_000_000_000, 37.0)
    assert (u.memory_rss_bytes, u.memory_usage_bytes, u.pids) == (52428800, 52428800, 3)
    assert "memory_max_usage_bytes" not in u.measured


# ---- the backend's command sequences -------------------------------------------------------


def test_start_runs_exact_commands(
    rt: FreeBSDRuntime, recorder: Recorder, launcher: FakeLauncher, rootfs: Path, tmp_path: Path
) -> None:
    alloc, local = tmp_path / "alloc", tmp_path / "local"
    alloc.mkdir()
    local.mkdir()
    spec = _spec(
        rootfs,
        tmp_path,
        user="www",
        env={"PORT": "8080"},
        mounts=[Mount(alloc, "/alloc"), Mount(local, "/local", readonly=True)],
        limits=Limits(memory_bytes=128 * MiB, cpu_percent=150, max_processes=64, open_files=1024),
    )
    rt.start(spec)
    assert recorder.calls == [
        ["/usr/bin/rctl", "-a", "jail:xc-3f2a9c1e-web:memoryuse:sigkill=134217728"],
        ["/usr/bin/rctl", "-a", "jail:xc-3f2a9c1e-web:memoryuse:devctl=134217728"],
        ["/usr/bin/rctl", "-a", "jail:xc-3f2a9c1e-web:pcpu:deny=150"],
        ["/usr/bin/rctl", "-a", "jail:xc-3f2a9c1e-web:maxproc:deny=64"],
        ["/usr/bin/rctl", "-a", "jail:xc-3f2a9c1e-web:openfiles:deny=1024"],
        devfs(rootfs),
        ["/sbin/mount", "-t", "nullfs", "-o", "rw", str(alloc), f"{rootfs}/alloc"],
        *mount_p(),
        ["/sbin/mount", "-t", "nullfs", "-o", "ro", str(local), f"{rootfs}/local"],
        *mount_p(),
        jail_create_argv(spec, "/usr/sbin/jail"),
        JLS,
    ]
    assert (rootfs / "alloc").is_dir() and (rootfs / "local").is_dir() and (rootfs / "dev").is_dir()
    [(mode, env, out, err)] = launcher.calls
    # The supervisor attaches to jid 7 as uid 80, gid 80, no supplementary groups, in "/".
    assert mode == ["jail", "7", "80", "80", "-", "/", "/usr/local/bin/web", "--port", "8080"]
    assert env == {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PORT": "8080",
        "HOME": "/nonexistent",
    }
    assert (out, err) == (spec.stdout_path, spec.stderr_path)
    # The supervisor learns of OOM kills from devd's notifications of the memory rule.
    assert launcher.oom == ["rctl:xc-3f2a9c1e-web:/var/run/devd.seqpacket.pipe"]
    assert rt.exists(spec.name)
    with pytest.raises(JailExists):
        rt.start(spec)


def test_cpuset_pins_the_jail(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    recorder.reply(["/usr/sbin/jls"], 0, "12\n")
    spec = _spec(rootfs, tmp_path, limits=Limits(cpuset=(2, 3)))
    rt.start(spec)
    assert recorder.calls[-3:] == [
        jail_create_argv(spec, "/usr/sbin/jail"),
        ["/usr/sbin/jls", "-j", "xc-3f2a9c1e-web", "jid"],
        ["/usr/bin/cpuset", "-l", "2,3", "-j", "12"],
    ]


def test_cwd_numeric_user_and_group_need_nothing_in_the_image(
    rt: FreeBSDRuntime, launcher: FakeLauncher, rootfs: Path, tmp_path: Path
) -> None:
    # No /bin/sh to cd, no passwd entry for uid 4242: the supervisor chdirs and sets ids itself.
    rt.start(_spec(rootfs, tmp_path, cwd="/srv", user="4242", group="www",
                   argv=("/bin/echo", "hi")))
    assert launcher.calls[0][0] == ["jail", "7", "4242", "80", "-", "/srv", "/bin/echo", "hi"]


def test_destroy_exact_commands_and_idempotent(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    alloc = tmp_path / "alloc"
    alloc.mkdir()
    spec = _spec(rootfs, tmp_path, mounts=[Mount(alloc, "/alloc")], limits=Limits(max_processes=8))
    rt.start(spec)
    recorder.calls.clear()
    rt.destroy(spec.name)
    assert recorder.calls == [
        ["/usr/sbin/jls", "-j", "xc-3f2a9c1e-web", "jid"],
        ["/bin/pkill", "-KILL", "-j", "7"],
        ["/usr/sbin/jail", "-r", "xc-3f2a9c1e-web"],
        ["/sbin/umount", "-f", f"{rootfs}/alloc"],
        ["/sbin/umount", "-f", f"{rootfs}/dev"],  # jail -r never unmounts a devfs
        ["/usr/bin/rctl", "-r", "jail:xc-3f2a9c1e-web:"],
    ]
    assert not rt.exists(spec.name)
    # Again, with everything already gone: jls exits 1, jail -r "not found", rctl -r ESRCH.
    recorder.calls.clear()
    recorder.reply(["/usr/sbin/jls"], 1, "", 'jls: jail "xc-3f2a9c1e-web" not found\n')
    recorder.reply(["/usr/sbin/jail", "-r"], 1, "", 'jail: "xc-3f2a9c1e-web" not found\n')
    recorder.reply(["/usr/bin/rctl", "-r"], 1, "", ESRCH.format("xc-3f2a9c1e-web"))
    rt.destroy(spec.name)
    assert recorder.calls == [
        ["/usr/sbin/jls", "-j", "xc-3f2a9c1e-web", "jid"],
        ["/usr/sbin/jail", "-r", "xc-3f2a9c1e-web"],
        ["/usr/bin/rctl", "-r", "jail:xc-3f2a9c1e-web:"],
    ]


def test_failed_jail_create_is_undone(
    rt: FreeBSDRuntime, recorder: Recorder, launcher: FakeLauncher, rootfs: Path, tmp_path: Path
) -> None:
    alloc = tmp_path / "alloc"
    alloc.mkdir()
    recorder.reply(["/usr/sbin/jail", "-c"], 1, "", "jail: xc-3f2a9c1e-web: path: No such file\n")
    recorder.reply(["/usr/sbin/jls"], 1, "", "jls: jail not found\n")
    recorder.reply(["/usr/sbin/jail", "-r"], 1, "", 'jail: "xc-3f2a9c1e-web" not found\n')
    spec = _spec(rootfs, tmp_path, mounts=[Mount(alloc, "/alloc")], limits=Limits(open_files=99))
    with pytest.raises(CommandFailed) as ei:
        rt.start(spec)
    assert "path: No such file" in str(ei.value)
    assert recorder.calls[-5:] == [
        ["/usr/sbin/jls", "-j", "xc-3f2a9c1e-web", "jid"],
        ["/usr/sbin/jail", "-r", "xc-3f2a9c1e-web"],
        ["/sbin/umount", "-f", f"{rootfs}/alloc"],
        ["/sbin/umount", "-f", f"{rootfs}/dev"],
        ["/usr/bin/rctl", "-r", "jail:xc-3f2a9c1e-web:"],
    ]
    assert launcher.calls == []
    assert not rt.exists(spec.name)
    assert list((rt.state_root / "tasks").iterdir()) == []


def test_racct_disabled_is_a_clear_error(
    rt: FreeBSDRuntime, recorder: Recorder, launcher: FakeLauncher, rootfs: Path, tmp_path: Path
) -> None:
    recorder.reply(["/usr/bin/rctl", "-a"], 1, "", RACCT_OFF)
    with pytest.raises(HostUnsupported) as ei:
        rt.start(_spec(rootfs, tmp_path, limits=Limits(max_processes=10)))
    assert "kern.racct.enable=1 to /boot/loader.conf" in str(ei.value)
    assert launcher.calls == []

    recorder.replies.clear()
    recorder.reply(["/usr/sbin/jls"], 0, "7\n")
    spec = _spec(rootfs, tmp_path, name="xc-3f2a9c1e-other")
    rt.start(spec)
    recorder.reply(["/usr/bin/rctl", "-u"], 1, "", RACCT_OFF)
    with pytest.raises(HostUnsupported) as ei:
        rt.stats(spec.name)
    assert "kern.racct.enable=0" in str(ei.value)


def test_stats_from_rctl_u(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    spec = _spec(rootfs, tmp_path)
    rt.start(spec)
    recorder.calls.clear()
    recorder.reply(["/usr/bin/rctl", "-u"], 0, RCTL_U_OUTPUT)
    u = rt.stats(spec.name)
    assert recorder.calls == [["/usr/bin/rctl", "-u", "jail:xc-3f2a9c1e-web"]]
    assert (u.memory_rss_bytes, u.cpu_percent, u.pids) == (52428800, 37.0, 3)
    assert rt.stats(spec.name).cpu_percent == 37.0  # the kernel's pcpu, not a derived delta


def test_stats_prefer_the_syscall(tmp_path: Path, rootfs: Path, launcher: FakeLauncher) -> None:
    recorder = Recorder()
    recorder.reply(["/usr/sbin/jls"], 0, "7\n")
    subjects: list[str] = []

    def reader(subject: str) -> str:
        subjects.append(subject)
        return RCTL_U_OUTPUT.replace("\n", ",")

    rt = FreeBSDRuntime(tmp_path / "s", runner=recorder, launcher=launcher, racct_reader=reader)
    spec = _spec(rootfs, tmp_path)
    rt.start(spec)
    recorder.calls.clear()
    assert rt.stats(spec.name).memory_usage_bytes == 52428800
    assert subjects == ["jail:xc-3f2a9c1e-web"] and recorder.calls == []  # no process per sample


def test_unknown_user_name_is_refused_before_side_effects(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    with pytest.raises(SpecError) as ei:
        rt.start(_spec(rootfs, tmp_path, user="nosuchuser"))
    assert ei.value.field == "user"
    assert not rt.exists("xc-3f2a9c1e-web") and recorder.calls == []


def test_mountpoint_never_follows_image_symlinks(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "alloc").symlink_to(outside)
    src = tmp_path / "src"
    src.mkdir()
    with pytest.raises(SpecError) as ei:
        rt.start(_spec(rootfs, tmp_path, mounts=[Mount(src, "/alloc")]))
    assert ei.value.field == "mounts.target"
    assert not any(c[:3] == ["/sbin/mount", "-t", "nullfs"] for c in recorder.calls)
    assert ["/sbin/umount", "-f", f"{rootfs}/dev"] in recorder.calls  # the devfs before it, undone
    assert not rt.exists("xc-3f2a9c1e-web") and list(outside.iterdir()) == []




def test_signal_not_running_after_exit(rt: FreeBSDRuntime, rootfs: Path, tmp_path: Path) -> None:
    from jails.errors import NotRunning

    spec = _spec(rootfs, tmp_path)
    rt.start(spec)
    (rt.state_root / "tasks" / spec.name / "exit.json").write_text(
        '{"exit_code": 0, "signal": 0, "oom_killed": false, "finished_at": 1.0}'
    )
    with pytest.raises(NotRunning):
        rt.signal(spec.name, signal.SIGTERM)
    assert rt.stop(spec.name, signal.SIGTERM, 1).exit_code == 0


# ---- tmpfs and readonly_root ----------------------------------------------------------------


def test_tmpfs_and_readonly_root_exact_commands(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    alloc = tmp_path / "alloc"
    alloc.mkdir()
    spec = _spec(
        rootfs,
        tmp_path,
        readonly_root=True,
        mounts=[Mount(alloc, "/alloc")],
        tmpfs=[Tmpfs("/tmp", 64 * MiB), Tmpfs("/var/empty", 0, 0o700, readonly=True)],
    )
    rt.start(spec)
    view = rt.state_root / "roots" / spec.name
    # The read-only view of the clone first, then devfs and every mount onto the view, parents
    # first.
    assert recorder.calls == [
        ["/sbin/mount", "-t", "nullfs", "-o", "ro", str(rootfs), str(view)],
        devfs(view),
        ["/sbin/mount", "-t", "nullfs", "-o", "rw", str(alloc), f"{view}/alloc"],
        *mount_p(),
        ["/sbin/mount", "-t", "tmpfs", "-o", f"nosuid,size={64 * MiB},mode=1777", "tmpfs",
         f"{view}/tmp"],
        ["/sbin/mount", "-t", "tmpfs", "-o", "nosuid,mode=700,ro", "tmpfs",
         f"{view}/var/empty"],
        jail_create_argv(dataclasses.replace(spec, rootfs=view), "/usr/sbin/jail"),
        JLS,
    ]
    assert f"path={view}" in recorder.calls[-2]
    # Mountpoints were made in the clone (the view is read-only), the view's own dir by us.
    assert (rootfs / "alloc").is_dir() and (rootfs / "var" / "empty").is_dir() and view.is_dir()

    recorder.calls.clear()
    recorder.reply(["/usr/sbin/jls"], 1, "", "jls: jail not found\n")
    rt.destroy(spec.name)
    assert recorder.calls == [
        ["/usr/sbin/jls", "-j", "xc-3f2a9c1e-web", "jid"],
        ["/usr/sbin/jail", "-r", "xc-3f2a9c1e-web"],
        ["/sbin/umount", "-f", f"{view}/var/empty"],
        ["/sbin/umount", "-f", f"{view}/tmp"],
        ["/sbin/umount", "-f", f"{view}/alloc"],
        ["/sbin/umount", "-f", f"{view}/dev"],
        ["/sbin/umount", "-f", str(view)],
        ["/usr/bin/rctl", "-r", "jail:xc-3f2a9c1e-web:"],
    ]
    assert not view.exists()


def test_tmpfs_without_readonly_root_mounts_in_the_clone(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    spec = _spec(rootfs, tmp_path, tmpfs=[Tmpfs("/var/run", 4096, 0o755)])
    rt.start(spec)
    assert recorder.calls == [
        devfs(rootfs),
        ["/sbin/mount", "-t", "tmpfs", "-o", "nosuid,size=4096,mode=755", "tmpfs",
         f"{rootfs}/var/run"],
        jail_create_argv(spec, "/usr/sbin/jail"),
        JLS,
    ]
    assert not (rt.state_root / "roots").exists()


def test_failed_tmpfs_mount_is_undone(
    rt: FreeBSDRuntime, recorder: Recorder, launcher: FakeLauncher, rootfs: Path, tmp_path: Path
) -> None:
    recorder.reply(["/sbin/mount", "-t", "tmpfs"], 1, "", "mount: tmpfs: Operation not permitted\n")
    recorder.reply(["/usr/sbin/jls"], 1, "", "jls: jail not found\n")
    recorder.reply(["/usr/sbin/jail", "-r"], 1, "", 'jail: "xc-3f2a9c1e-web" not found\n')
    recorder.reply(["/sbin/umount"], 1, "", "umount: /x: not a file system root directory\n")
    recorder.reply(["/usr/bin/rctl", "-r"], 1, "", ESRCH.format("xc-3f2a9c1e-web"))
    spec = _spec(rootfs, tmp_path, readonly_root=True, tmpfs=[Tmpfs("/tmp")])
    with pytest.raises(CommandFailed) as ei:
        rt.start(spec)
    assert "Operation not permitted" in str(ei.value)
    view = rt.state_root / "roots" / spec.name
    assert recorder.calls[-5:] == [
        ["/usr/sbin/jail", "-r", "xc-3f2a9c1e-web"],
        ["/sbin/umount", "-f", f"{view}/tmp"],
        ["/sbin/umount", "-f", f"{view}/dev"],
        ["/sbin/umount", "-f", str(view)],
        ["/usr/bin/rctl", "-r", "jail:xc-3f2a9c1e-web:"],
    ]
    assert launcher.calls == [] and not rt.exists(spec.name) and not view.exists()


def test_tmpfs_mountpoint_never_follows_image_symlinks(
    rt: FreeBSDRuntime, recorder: Recorder, rootfs: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (rootfs / "tmp").symlink_to(outside)
    with pytest.raises(SpecError) as ei:
        rt.start(_spec(rootfs, tmp_path, tmpfs=[Tmpfs("/tmp/x")]))
    assert ei.value.field == "mounts.target"
    assert not any(c[:3] == ["/sbin/mount", "-t", "tmpfs"] for c in recorder.calls)
    assert not (outside / "x").exists()
