"""driver.taskspec: image config + task config + Nomad's TaskConfig -> JailSpec (tables)."""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from driver.config import ConfigError, Limits, MountSpec, PluginConfig, TaskConfig
from driver.state import Resources
from driver.taskspec import ImageDefaults, Node, NomadMount, NomadTask, argv_of, compose
from jails import Tmpfs

IMG = ImageDefaults(entrypoint=("/entry",), cmd=("default", "cmd"),
                    env=("PATH=/bin", "GREETING=hi", "X=img"), working_dir="/srv", user="www")
NODE = Node(2000, 2)
NO_ENTRY = ImageDefaults(cmd=("/bin/sh", "-c", "cat /etc/hello"))


def nomad(**kw: Any) -> NomadTask:
    base: dict[str, Any] = dict(
        id="a1b2c3d4-0000-0000-0000-000000000000/web/12345678", name="web",
        alloc_id="a1b2c3d4-0000-0000-0000-000000000000", alloc_dir="/nomad/alloc/a1",
        stdout_path="/nomad/alloc/a1/alloc/logs/.web.stdout.fifo",
        stderr_path="/nomad/alloc/a1/alloc/logs/.web.stderr.fifo",
        env=MappingProxyType({"NOMAD_TASK_NAME": "web", "X": "nomad",
                              "NOMAD_ALLOC_DIR": "/host/alloc"}),
        resources=Resources(cpu_mhz=500, memory_mb=128))
    base.update(kw)
    return NomadTask(**base)


def spec(task: TaskConfig | None = None, image: ImageDefaults = IMG, n: NomadTask | None = None,
         plugin: PluginConfig | None = None, node: Node = NODE) -> Any:
    return compose(name="xc-a1b2c3d4-web", rootfs=Path("/tank/tasks/xc-a1b2c3d4-web"),
                   image=image, task=task or TaskConfig(image="i"), nomad=n or nomad(),
                   plugin=plugin or PluginConfig(), node=node)


@pytest.mark.parametrize(
    ("image", "task", "argv"),
    [
        (IMG, TaskConfig(image="i"), ("/entry", "default", "cmd")),
        (IMG, TaskConfig(image="i", command="/bin/run"), ("/entry", "/bin/run")),
        (IMG, TaskConfig(image="i", command="/bin/run", args=("-v",)),
         ("/entry", "/bin/run", "-v")),
        (IMG, TaskConfig(image="i", args=("a", "b")), ("/entry", "a", "b")),
        (IMG, TaskConfig(image="i", entrypoint=("/e2",)), ("/e2",)),
        (IMG, TaskConfig(image="i", entrypoint=(), command="/x"), ("/x",)),
        (IMG, TaskConfig(image="i", entrypoint=("/e2", "-c"), args=("z",)), ("/e2", "-c", "z")),
        (NO_ENTRY, TaskConfig(image="i"), ("/bin/sh", "-c", "cat /etc/hello")),
        (NO_ENTRY, TaskConfig(image="i", command="/bin/echo", args=("hi",)), ("/bin/echo", "hi")),
    ],
)
def test_argv_precedence_like_docker(image: ImageDefaults, task: TaskConfig,
                                     argv: tuple[str, ...]) -> None:
    assert argv_of(image, task) == argv


def test_no_command_anywhere_names_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        argv_of(ImageDefaults(), TaskConfig(image="i"))
    assert str(err.value).startswith("config.command: the image has no Entrypoint or Cmd")


def test_env_image_then_nomad_and_in_jail_dirs() -> None:
    env = dict(spec().env)
    assert env["PATH"] == "/bin" and env["GREETING"] == "hi"
    assert env["X"] == "nomad"                      # Nomad's env overrides the image's
    assert env["NOMAD_TASK_NAME"] == "web"
    assert (env["NOMAD_ALLOC_DIR"], env["NOMAD_TASK_DIR"], env["NOMAD_SECRETS_DIR"]) == (
        "/alloc", "/local", "/secrets")


@pytest.mark.parametrize(
    ("image_user", "task_user", "want"),
    [("www", "", ("www", None)), ("www", "nobody", ("nobody", None)), ("", "", ("root", None)),
     ("1000:1000", "", ("1000", "1000")), ("", "app:staff", ("app", "staff"))],
)
def test_user(image_user: str, task_user: str, want: tuple[str, str | None]) -> None:
    img = ImageDefaults(cmd=("/x",), user=image_user)
    s = spec(image=img, n=nomad(user=task_user))
    assert (s.user, s.group) == want


def test_cwd_hostname_and_logs() -> None:
    s = spec()
    assert s.cwd == "/srv" and s.hostname == "xc-a1b2c3d4-web"
    s = spec(TaskConfig(image="i", work_dir="/tmp", hostname="web-1"))
    assert s.cwd == "/tmp" and s.hostname == "web-1"
    assert str(s.stdout_path).endswith(".web.stdout.fifo")
    assert str(s.stderr_path).endswith(".web.stderr.fifo")


MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("res", "task", "plugin", "want"),
    [
        (Resources(500, 128), TaskConfig(image="i"), PluginConfig(),
         dict(memory_bytes=128 * MIB, memory_max_bytes=None, cpu_shares=500, cpu_percent=None,
              max_processes=None, open_files=None)),
        (Resources(500, 128, 256), TaskConfig(image="i"), PluginConfig(),
         dict(memory_bytes=128 * MIB, memory_max_bytes=256 * MIB)),
        (Resources(1000, 64), TaskConfig(image="i", cpu_hard_limit=True), PluginConfig(),
         dict(cpu_percent=100)),   # 1000 of 2000 MHz on 2 cores = one core
        (Resources(100, 64), TaskConfig(image="i"),
         PluginConfig(default_limits=Limits(maxproc=50), max_limits=Limits(openfiles=4096)),
         dict(max_processes=50, open_files=4096)),
        (Resources(100, 64), TaskConfig(image="i", maxproc=20, openfiles=100),
         PluginConfig(default_limits=Limits(maxproc=50, openfiles=1024)),
         dict(max_processes=20, open_files=100)),
        (Resources(1, 64), TaskConfig(image="i"), PluginConfig(), dict(cpu_shares=2)),
        (Resources(2000, 64, cores=2, cpuset=(2, 3)), TaskConfig(image="i"), PluginConfig(),
         dict(cpuset=(2, 3))),   # Nomad's reserved cores pin the task
    ],
)
def test_limits(res: Resources, task: TaskConfig, plugin: PluginConfig,
                want: dict[str, Any]) -> None:
    limits = spec(task, n=nomad(resources=res), plugin=plugin).limits
    for key, value in want.items():
        assert getattr(limits, key) == value, key


def test_limit_above_the_cap_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        spec(TaskConfig(image="i", maxproc=500), plugin=PluginConfig(max_limits=Limits(100)))
    assert str(err.value).startswith("config.maxproc: 500 is above this client's maximum 100")


def test_tiny_memory_names_resources() -> None:
    with pytest.raises(ConfigError) as err:
        spec(n=nomad(resources=Resources(100, 1)))
    assert err.value.field == "resources"


def test_mounts_alloc_dirs_task_mounts_and_volume_mounts() -> None:
    task = TaskConfig(image="i", mounts=(
        MountSpec("bind", "local/data", "/data", origin="config.mount[0]"),
        MountSpec("bind", "/srv/ro", "/ro", readonly=True, origin="config.volumes[0]")))
    n = nomad(mounts=(NomadMount("/vol/shared", "/shared", True),))
    got = [(str(m.source), m.target, m.readonly) for m in spec(task, n=n).mounts]
    assert got == [
        ("/nomad/alloc/a1/alloc", "/alloc", False),
        ("/nomad/alloc/a1/web/local", "/local", False),
        ("/nomad/alloc/a1/web/secrets", "/secrets", False),
        ("/nomad/alloc/a1/web/local/data", "/data", False),
        ("/srv/ro", "/ro", True),
        ("/vol/shared", "/shared", True),
    ]


@pytest.mark.parametrize(
    ("mount", "field", "problem"),
    [
        (MountSpec("bind", "../../etc", "/x", origin="config.mount[0]"), "config.mount[0]",
         "leaves the task directory"),
        (MountSpec("bind", "local", "/alloc", origin="config.mount[0]"), "config.mount[0]",
         "is where Nomad's directory is mounted"),
        (MountSpec("tmpfs", "", "/local", origin="config.mount[1]"), "config.mount[1]",
         "is where Nomad's directory is mounted"),
        (MountSpec("tmpfs", "", "/x", tmpfs_size=-1, origin="config.mount[2]"),
         "config.mount[2].tmpfs_options.size", "must be a byte count"),
        (MountSpec("tmpfs", "", "/x", tmpfs_mode=0o17777, origin="config.mount[0]"),
         "config.mount[0].tmpfs_options.mode", "must be a permission mode"),
    ],
)
def test_bad_mounts(mount: MountSpec, field: str, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        spec(TaskConfig(image="i", mounts=(mount,)))
    assert err.value.field == field and problem in err.value.problem


def test_jail_params_pass_through() -> None:
    s = spec(TaskConfig(image="i", jail_params=MappingProxyType({"allow.raw_sockets": "1"})))
    assert s.jail_params == (("allow.raw_sockets", "1"),)


@pytest.mark.parametrize("readonly", [False, True])
def test_readonly_rootfs(readonly: bool) -> None:
    assert spec(TaskConfig(image="i", readonly_rootfs=readonly)).readonly_root is readonly


def test_tmpfs_mounts() -> None:
    task = TaskConfig(image="i", mounts=(
        MountSpec("bind", "local/data", "/data", origin="config.mount[0]"),
        MountSpec("tmpfs", "", "/tmp", origin="config.mount[1]"),
        MountSpec("tmpfs", "", "/data/cache", True, 64 * 1024 * 1024, 0o700,
                  origin="config.mount[2]")))
    s = spec(task)
    assert s.tmpfs == (Tmpfs("/tmp", 0, 0o1777, False),  # docker's default mode
                       Tmpfs("/data/cache", 64 * 1024 * 1024, 0o700, True))
    assert [m.target for m in s.mounts] == ["/alloc", "/local", "/secrets", "/data"]
    assert [m.target for m in s.all_mounts()][-3:] == ["/data", "/tmp", "/data/cache"]


def test_tmpfs_target_taken_by_a_volume_mount() -> None:
    task = TaskConfig(image="i", mounts=(MountSpec("tmpfs", "", "/shared",
                                                   origin="config.mount[0]"),))
    with pytest.raises(ConfigError) as err:
        spec(task, n=nomad(mounts=(NomadMount("/vol/shared", "/shared", True),)))
    assert err.value.field == "volume_mount[0]"
