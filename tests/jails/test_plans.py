"""Backend plans: round trips, and tasks started by an earlier plugin version (their spec.json as
that version wrote it, captured from real starts on both backends in tests/jails/data) still
load, exec and tear down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jails.errors import JailError
from jails.freebsd import FreeBSDRuntime
from jails.linux import LinuxRuntime
from jails.plans import PLAN_VERSION, FreeBSDPlan, LinuxPlan, MountStep
from tests.fixtures.rootfs import GROUP, PASSWD
from tests.jails.test_freebsd import FakeLauncher, Recorder

DATA = Path(__file__).parent / "data"
CAPTURED_ROOT = "/var/db/xc-test"  # the paths in the captured files, replaced by a tmp dir


def _install(name: str, data_file: str, root: Path) -> dict[str, object]:
    """Put a captured spec.json where a state root under ``root`` keeps the task ``name``."""
    text = (DATA / data_file).read_text().replace(CAPTURED_ROOT, str(root))
    meta: dict[str, object] = json.loads(text)
    task = root / "state" / "tasks" / name
    task.mkdir(parents=True)
    (task / "spec.json").write_text(text)
    return meta


def test_linux_plan_round_trip() -> None:
    plan = LinuxPlan(1000, 2000, (3, 4), ("A=1", "PATH=/bin"), "/tmp", "/xc/t", "/run/xc")
    data = plan.to_json()
    assert data["v"] == PLAN_VERSION
    assert LinuxPlan.from_json(json.loads(json.dumps(data))) == plan


def test_freebsd_plan_round_trip() -> None:
    plan = FreeBSDPlan(
        user=None, uid=4242, gid=0, groups=(5,), env=("A=1",), cwd="/srv",
        mounts=(MountStep("devfs", "ruleset=4", "devfs", "/j/dev", "/dev", True),
                MountStep("copy", "ro", "/etc/resolv.conf", "/j/etc/resolv.conf",
                          "/etc/resolv.conf", False)),
        jail_root="/j", rctl=("jail:t:maxproc:deny=5",),
    )
    assert FreeBSDPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    assert [m.mounted for m in plan.mounts] == [True, False]


def test_v1_linux_task_loads_execs_and_tears_down(tmp_path: Path) -> None:
    meta = _install("xctest-plan-linux", "spec-v1-linux.json", tmp_path)
    assert meta["v"] == 1
    recorder = Recorder()
    rt = LinuxRuntime(tmp_path / "state", runc_bin="runc", runner=recorder,
                      cgroup_parent="xctest-capture")
    plan = rt._load_plan(meta)
    assert plan == LinuxPlan(
        uid=1000, gid=2000, additional_gids=(), env=(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1",
            "HOME=/home/xcuser"),
        cwd="/tmp", cgroups_path="/xctest-capture/xctest-plan-linux",
        runc_root=f"{tmp_path}/lstate/runc",
    )
    task = rt._task("xctest-plan-linux")
    argv = rt._exec_argv(task, ["/bin/id"], {"B": "2"}, tmp_path / "p.pid", tty=False)
    assert argv[argv.index("--user") + 1] == "1000:2000"
    assert argv[argv.index("--cwd") + 1] == "/tmp" and "B=2" in argv and "A=1" in argv
    rt.destroy("xctest-plan-linux")
    assert [c[3:] for c in recorder.calls] == [
        ["kill", "--all", "xctest-plan-linux", "KILL"],
        ["delete", "--force", "xctest-plan-linux"],
    ]
    assert not rt.exists("xctest-plan-linux")


def test_v1_freebsd_task_tears_down_with_the_devfs_jail8_left(tmp_path: Path) -> None:
    _install("xctest-plan-fbsd", "spec-v1-freebsd.json", tmp_path)
    recorder = Recorder()
    recorder.reply(["/usr/sbin/jls"], 0, "3\n")
    rt = FreeBSDRuntime(tmp_path / "state", runner=recorder, launcher=FakeLauncher(),
                        racct_reader=lambda s: None)
    rt.destroy("xctest-plan-fbsd")
    view = f"{tmp_path}/fstate/roots/xctest-plan-fbsd"
    assert recorder.calls == [
        ["/usr/sbin/jls", "-j", "xctest-plan-fbsd", "jid"],
        ["/bin/pkill", "-KILL", "-j", "3"],
        ["/usr/sbin/jail", "-r", "xctest-plan-fbsd"],
        ["/sbin/umount", "-f", f"{view}/dev"],  # mounted by jail(8)'s mount.devfs for v1 tasks
        ["/sbin/umount", "-f", f"{view}/scratch"],
        ["/sbin/umount", "-f", f"{view}/vol"],
        ["/sbin/umount", "-f", view],
        ["/usr/bin/rctl", "-r", "jail:xctest-plan-fbsd:"],
    ]
    assert not rt.exists("xctest-plan-fbsd")


def test_v1_freebsd_exec_resolves_the_named_user_again(tmp_path: Path) -> None:
    meta = _install("xctest-plan-fbsd", "spec-v1-freebsd.json", tmp_path)
    plan = FreeBSDPlan.from_json(meta)
    assert (plan.user, plan.uid, plan.gid) == ("xcuser", None, None)
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text(PASSWD)
    (rootfs / "etc" / "group").write_text(GROUP)
    from jails.freebsd import _ids

    assert _ids(plan, rootfs) == (1000, 1000, (2000,))


def test_a_newer_format_is_refused_with_what_to_do(tmp_path: Path) -> None:
    meta = _install("xctest-plan-linux", "spec-v1-linux.json", tmp_path)
    meta["v"] = PLAN_VERSION + 1
    with pytest.raises(JailError, match="newer than this plugin"):
        LinuxPlan.from_json(meta)


def test_a_damaged_field_names_the_field(tmp_path: Path) -> None:
    meta = _install("xctest-plan-fbsd", "spec-v1-freebsd.json", tmp_path)
    meta["rctl"] = "jail:x:maxproc:deny=1"
    with pytest.raises(JailError, match="'rctl' is 'jail:x:maxproc:deny=1', expected list"):
        FreeBSDPlan.from_json(meta)


@pytest.mark.parametrize("mounts", [[7], [{"fs": "nullfs"}]])
def test_a_damaged_mount_step_is_one_jail_error(tmp_path: Path, mounts: list[object]) -> None:
    meta = _install("xctest-plan-fbsd", "spec-v1-freebsd.json", tmp_path)
    meta["mounts"] = mounts
    with pytest.raises(JailError, match="xctest-plan-fbsd"):
        FreeBSDPlan.from_json(meta)


def test_destroy_with_a_damaged_spec_json_still_tears_down_by_name(tmp_path: Path) -> None:
    task = tmp_path / "state" / "tasks" / "xctest-broken"
    task.mkdir(parents=True)
    (task / "spec.json").write_text('{"v": 2, "backend": "freebsd", "mounts": 7}')
    recorder = Recorder()
    recorder.reply(["/usr/sbin/jls"], 1, "", 'jls: jail "xctest-broken" not found\n')
    rt = FreeBSDRuntime(tmp_path / "state", runner=recorder, racct_reader=lambda s: None)
    rt.destroy("xctest-broken")
    assert recorder.calls[1:] == [
        ["/usr/sbin/jail", "-r", "xctest-broken"],
        ["/usr/bin/rctl", "-r", "jail:xctest-broken:"],
    ]
    assert not rt.exists("xctest-broken")
