"""JailSpec -> OCI runtime config (pure): tables for resources, process and mounts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jails import JailSpec, Limits, Mount, SpecError, Tmpfs
from jails.ociconfig import CAPABILITIES, DEFAULT_PATH, oci_config, resources, task_env
from jails.users import ResolvedUser, resolve_user

MiB = 1024 * 1024
USER = ResolvedUser(uid=1000, gid=1000, additional_gids=(2000,), name="app", home="/home/app")


def _spec(**kw: object) -> JailSpec:
    base: dict[str, object] = {
        "name": "xc-12345678-web",
        "rootfs": Path("/r"),
        "argv": ("/bin/web", "-p", "80"),
        "stdout_path": Path("/l/o"),
        "stderr_path": Path("/l/e"),
    }
    base.update(kw)
    return JailSpec(**base)  # type: ignore[arg-type]


NO_DEVICES = {"devices": [{"allow": False, "access": "rwm"}]}


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        (Limits(), {}),
        (Limits(memory_bytes=64 * MiB), {"memory": {"limit": 64 * MiB, "swap": 64 * MiB}}),
        (
            Limits(memory_bytes=64 * MiB, memory_max_bytes=128 * MiB),
            {"memory": {"limit": 128 * MiB, "swap": 128 * MiB, "reservation": 64 * MiB}},
        ),
        (Limits(cpu_shares=512), {"cpu": {"shares": 512}}),
        (Limits(cpu_percent=150), {"cpu": {"quota": 150_000, "period": 100_000}}),
        (Limits(cpuset=(3, 1)), {"cpu": {"cpus": "1,3"}}),
        (Limits(max_processes=64), {"pids": {"limit": 64}}),
        (Limits(open_files=99), {}),  # an rlimit of the process, not a cgroup resource
    ],
)
def test_resources(limits: Limits, expected: dict[str, Any]) -> None:
    assert resources(_spec(limits=limits)) == {**NO_DEVICES, **expected}


def test_config_process_and_namespaces() -> None:
    spec = _spec(env={"A": "1"}, cwd="/srv", hostname="web", limits=Limits(open_files=99))
    cfg = oci_config(spec, USER, cgroups_path="/xc/xc-12345678-web", rootfs="/real/r")
    assert cfg["root"] == {"path": "/real/r", "readonly": False}
    assert cfg["hostname"] == "web"
    p = cfg["process"]
    assert p["args"] == ["/bin/web", "-p", "80"]
    assert p["env"] == [f"PATH={DEFAULT_PATH}", "A=1", "HOME=/home/app"]
    assert p["cwd"] == "/srv"
    assert p["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [2000]}
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 99, "soft": 99}]
    assert p["terminal"] is False
    assert p["capabilities"]["bounding"] == list(CAPABILITIES)
    linux = cfg["linux"]
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "ipc", "uts", "mount"]  # host net
    assert linux["cgroupsPath"] == "/xc/xc-12345678-web"


def test_config_mounts() -> None:
    spec = _spec(mounts=[Mount(Path("/h/alloc"), "/alloc"), Mount(Path("/h/s"), "/secrets", True)])
    mounts = oci_config(spec, USER, cgroups_path="/x/y", rootfs="/r")["mounts"]
    assert [m["destination"] for m in mounts][:6] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
    ]
    assert mounts[-2:] == [
        {
            "destination": "/alloc",
            "type": "bind",
            "source": "/h/alloc",
            "options": ["rbind", "nosuid", "nodev"],
        },
        {
            "destination": "/secrets",
            "type": "bind",
            "source": "/h/s",
            "options": ["rbind", "nosuid", "nodev", "ro"],
        },
    ]


def test_no_swap_key_without_swap_accounting() -> None:
    cfg = oci_config(
        _spec(limits=Limits(memory_bytes=64 * MiB)),
        USER,
        cgroups_path="/x/y",
        rootfs="/r",
        swap_accounting=False,
    )
    assert cfg["linux"]["resources"]["memory"] == {"limit": 64 * MiB}


def test_env_keeps_explicit_path_and_home() -> None:
    spec = _spec(env={"PATH": "/only", "HOME": "/h"})
    assert task_env(spec, USER) == ["PATH=/only", "HOME=/h"]


def test_cpuset_validation() -> None:
    assert Limits(cpuset=(2, 0)).cpuset_list == "0,2"
    for bad in ((1, 1), (-1,), (True,)):
        with pytest.raises(SpecError) as ei:
            Limits(cpuset=bad)  # type: ignore[arg-type]
        assert ei.value.field == "limits.cpuset"


def test_resolve_user_from_image(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
    )
    (tmp_path / "etc" / "group").write_text(
        "app:x:1000:\nextra:x:2000:app,other\nwheel:x:10:root\n"
    )
    assert resolve_user(tmp_path, "app", None) == USER
    assert resolve_user(tmp_path, "1000", "wheel").gid == 10
    assert resolve_user(tmp_path, "4242", None) == ResolvedUser(4242, 0, (), None, "/")
    with pytest.raises(SpecError) as ei:
        resolve_user(tmp_path, "ghost", None)
    assert ei.value.field == "user"
    with pytest.raises(SpecError) as ei:
        resolve_user(tmp_path, "app", "ghosts")
    assert ei.value.field == "group"


def test_resolve_user_never_follows_image_symlinks(tmp_path: Path) -> None:
    host = tmp_path / "hostpasswd"
    host.write_text("evil:x:0:0::/:/bin/sh\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to(host)
    with pytest.raises(SpecError):
        resolve_user(root, "evil", None)


@pytest.mark.parametrize(
    ("tmpfs", "options"),
    [
        (Tmpfs("/tmp"), ["nosuid", "nodev", "mode=1777"]),  # size 0: the kernel's default
        (Tmpfs("/tmp", 64 * MiB), ["nosuid", "nodev", f"size={64 * MiB}", "mode=1777"]),
        (Tmpfs("/run", 4096, 0o700), ["nosuid", "nodev", "size=4096", "mode=700"]),
        (Tmpfs("/ro", 1, 0o755, True), ["nosuid", "nodev", "size=1", "mode=755", "ro"]),
        (Tmpfs("/z", 0, 0), ["nosuid", "nodev", "mode=0"]),
    ],
)
def test_tmpfs_mount(tmpfs: Tmpfs, options: list[str]) -> None:
    mounts = oci_config(_spec(tmpfs=[tmpfs]), USER, cgroups_path="/x/y", rootfs="/r")["mounts"]
    assert mounts[-1] == {
        "destination": tmpfs.target, "type": "tmpfs", "source": "tmpfs", "options": options,
    }


def test_mounts_parent_before_child_whatever_the_order() -> None:
    spec = _spec(mounts=[Mount(Path("/h/x"), "/data/x"), Mount(Path("/a"), "/b")],
                 tmpfs=[Tmpfs("/data")])
    mounts = oci_config(spec, USER, cgroups_path="/x/y", rootfs="/r")["mounts"]
    assert [(m["destination"], m["type"]) for m in mounts[-3:]] == [
        ("/b", "bind"), ("/data", "tmpfs"), ("/data/x", "bind"),
    ]


@pytest.mark.parametrize("readonly", [False, True])
def test_readonly_root(readonly: bool) -> None:
    spec = _spec(readonly_root=readonly, mounts=[Mount(Path("/h/alloc"), "/alloc")])
    cfg = oci_config(spec, USER, cgroups_path="/x/y", rootfs="/real/r")
    assert cfg["root"] == {"path": "/real/r", "readonly": readonly}
    # What stays writable is the mounts' own business, not the root's.
    by_dest = {m["destination"]: m for m in cfg["mounts"]}
    assert "ro" not in by_dest["/alloc"]["options"]
    assert "ro" not in by_dest["/dev/shm"]["options"]
