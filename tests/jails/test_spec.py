from __future__ import annotations

from pathlib import Path

import pytest

from jails import JailSpec, Limits, Mount, SpecError, Tmpfs, jail_name
from jails.names import is_valid_name
from jails.probe import probe_host, racct_reason_for
from jails.spec import check_host

MiB = 1024 * 1024


def _spec(**kw: object) -> JailSpec:
    base: dict[str, object] = {
        "name": "xc-12345678-web",
        "rootfs": Path("/tmp/rootfs"),
        "argv": ("/bin/sh", "-c", "true"),
        "stdout_path": Path("/tmp/out"),
        "stderr_path": Path("/tmp/err"),
    }
    base.update(kw)
    return JailSpec(**base)  # type: ignore[arg-type]


def test_defaults_and_normalisation() -> None:
    s = _spec(env={"A": "1", "B": "x=y"}, cwd="/srv//app/", mounts=[Mount(Path("/a"), "/alloc/")])
    assert s.hostname == "xc-12345678-web"
    assert s.env == (("A", "1"), ("B", "x=y"))
    assert s.env_list() == ["A=1", "B=x=y"]
    assert s.cwd == "/srv/app"
    assert s.mounts == (Mount(Path("/a"), "/alloc"),)
    assert isinstance(s.argv, tuple)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"name": "a.b"}, "name"),
        ({"name": ""}, "name"),
        ({"name": "-x"}, "name"),
        ({"name": "x" * 64}, "name"),
        ({"rootfs": Path("rel/root")}, "rootfs"),
        ({"rootfs": Path("/")}, "rootfs"),
        ({"argv": ()}, "argv"),
        ({"argv": ("",)}, "argv"),
        ({"argv": "/bin/sh"}, "argv"),
        ({"argv": ("/bin/sh", "a\0b")}, "argv"),
        ({"env": ["NOEQUALS"]}, "env"),
        ({"env": {"": "x"}}, "env"),
        ({"cwd": "relative"}, "cwd"),
        ({"cwd": "/a/../b"}, "cwd"),
        ({"user": ""}, "user"),
        ({"user": "a:b"}, "user"),
        ({"hostname": "bad host"}, "hostname"),
        ({"network": "bridge"}, "network"),
        ({"mounts": [Mount(Path("/a"), "/x"), Mount(Path("/b"), "/x")]}, "mounts.target"),
        ({"mounts": [Mount(Path("/a"), "/x")], "tmpfs": [Tmpfs("/x/")]}, "mounts.target"),
        ({"tmpfs": [Tmpfs("/x"), Tmpfs("/x")]}, "mounts.target"),
        ({"mounts": [Tmpfs("/x")]}, "mounts"),
        ({"tmpfs": [Mount(Path("/a"), "/x")]}, "tmpfs"),
        ({"readonly_root": "yes"}, "readonly_root"),
        ({"jail_params": {"path": "/etc"}}, "jail_params"),
        ({"jail_params": {"exec.start": "sh"}}, "jail_params"),
        ({"stdout_path": Path("out")}, "stdout_path"),
    ],
)
def test_bad_spec_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as ei:
        _spec(**kw)
    assert ei.value.field == field
    assert field in str(ei.value)


def test_allowed_jail_params() -> None:
    s = _spec(jail_params={"allow.raw_sockets": "1", "securelevel": "3", "children.max": "0"})
    assert ("allow.raw_sockets", "1") in s.jail_params


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"memory_bytes": 0}, "limits.memory_bytes"),
        ({"memory_bytes": 1024}, "limits.memory_bytes"),
        ({"memory_bytes": 64 * MiB, "memory_max_bytes": 32 * MiB}, "limits.memory_max_bytes"),
        ({"cpu_percent": -5}, "limits.cpu_percent"),
        ({"max_processes": True}, "limits.max_processes"),
        ({"open_files": 1.5}, "limits.open_files"),
    ],
)
def test_bad_limits(kw: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as ei:
        Limits(**kw)  # type: ignore[arg-type]
    assert ei.value.field == field


def test_memory_hard_limit() -> None:
    assert Limits(memory_bytes=64 * MiB).memory_hard_bytes == 64 * MiB
    assert Limits(memory_bytes=64 * MiB, memory_max_bytes=128 * MiB).memory_hard_bytes == 128 * MiB
    assert Limits().memory_hard_bytes is None


def test_mount_validation() -> None:
    with pytest.raises(SpecError) as ei:
        Mount(Path("/a"), "/")
    assert ei.value.field == "mounts.target"
    with pytest.raises(SpecError) as ei:
        Mount(Path("a"), "/x")
    assert ei.value.field == "mounts.source"


def test_check_host(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with pytest.raises(SpecError) as ei:
        check_host(_spec(rootfs=root))
    assert ei.value.field == "rootfs"
    root.mkdir()
    s = _spec(
        rootfs=root,
        stdout_path=tmp_path / "o",
        stderr_path=tmp_path / "e",
        mounts=[Mount(tmp_path / "missing", "/alloc")],
    )
    with pytest.raises(SpecError) as ei:
        check_host(s)
    assert ei.value.field == "mounts.source"


@pytest.mark.parametrize(
    ("alloc", "task", "expected"),
    [
        ("3f2a9c1e-1111-2222-3333-444455556666", "web", "xc-3f2a9c1e-web"),
        ("3F2A9C1E-1111", "Web_1-a", "xc-3f2a9c1e-Web_1-a"),
    ],
)
def test_jail_name_plain(alloc: str, task: str, expected: str) -> None:
    assert jail_name(alloc, task) == expected


def test_jail_name_sanitised_and_bounded() -> None:
    a = jail_name("3f2a9c1e-1111", "we.b")
    b = jail_name("3f2a9c1e-1111", "we/b")
    assert a != b and "." not in a and "/" not in b
    long = jail_name("3f2a9c1e-1111", "t" * 200)
    assert len(long) <= 63 and is_valid_name(long)
    assert long != jail_name("3f2a9c1e-1111", "t" * 199)
    assert jail_name("3f2a9c1e-1111", "we.b") == a  # deterministic
    with pytest.raises(ValueError):
        jail_name("", "x")


def test_probe_linux_here() -> None:
    p = probe_host("auto")
    assert p.backend == "linux"
    assert p.healthy, p.reason
    assert p.attributes["driver.xc.backend"] == "linux"
    assert p.attributes["driver.xc.cgroup"] in ("v1", "v2")
    assert p.attributes["driver.xc.runc.version"]


def test_probe_never_raises() -> None:
    p = probe_host("freebsd")
    assert not p.healthy and "FreeBSD" in p.reason
    p = probe_host("plan9")
    assert not p.healthy and "plan9" in p.reason
    p = probe_host("linux", runc_bin="no-such-runc-xc")
    assert not p.healthy and "no-such-runc-xc" in p.reason


def test_racct_reasons() -> None:
    assert racct_reason_for(0, "1") == ""
    assert "kern.racct.enable=1 to /boot/loader.conf" in racct_reason_for(0, "0")
    assert "not present in kernel" in racct_reason_for(1, "")


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"target": "tmp"}, "mounts.target"),
        ({"target": "/"}, "mounts.target"),
        ({"target": "//"}, "mounts.target"),
        ({"target": "/a/../b"}, "mounts.target"),
        ({"target": "/a\0"}, "mounts.target"),
        ({"size_bytes": -1}, "mounts.size_bytes"),
        ({"size_bytes": 1.5}, "mounts.size_bytes"),
        ({"size_bytes": True}, "mounts.size_bytes"),
        ({"mode": -1}, "mounts.mode"),
        ({"mode": 0o10000}, "mounts.mode"),
        ({"mode": "1777"}, "mounts.mode"),
    ],
)
def test_bad_tmpfs_names_the_field(kw: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"target": "/tmp", **kw}
    with pytest.raises(SpecError) as ei:
        Tmpfs(**args)  # type: ignore[arg-type]
    assert ei.value.field == field


def test_tmpfs_defaults_and_normalisation() -> None:
    t = Tmpfs("/run//cache/")
    assert (t.target, t.size_bytes, t.mode, t.readonly) == ("/run/cache", 0, 0o1777, False)
    assert Tmpfs("/x", 4096, 0o7777, True).mode == 0o7777
    s = _spec(mounts=[Mount(Path("/h/c"), "/a/b/c"), Mount(Path("/h"), "/a")],
              tmpfs=[Tmpfs("/a/b"), Tmpfs("/z")])
    assert [m.target for m in s.mounts] == ["/a/b/c", "/a"]  # as given
    assert [m.target for m in s.all_mounts()] == ["/a", "/z", "/a/b", "/a/b/c"]  # parents first
    assert _spec().readonly_root is False


def test_check_host_needs_no_source_for_tmpfs(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    spec = _spec(rootfs=tmp_path / "root", tmpfs=[Tmpfs("/tmp")],
                 stdout_path=tmp_path / "o", stderr_path=tmp_path / "e")
    check_host(spec)
