"""JailSpec network modes: validation, the runc namespaces table, the FreeBSD refusal (pure, or
against the FreeBSD backend's recorded command runner: no command may run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from jails import JailSpec, SpecError
from jails.freebsd import FreeBSDRuntime
from jails.jailparams import jail_params
from jails.ociconfig import _BASE_MOUNTS, namespaces, oci_config
from jails.spec import backend_network_modes, check_host
from jails.users import ResolvedUser
from tests.jails.test_freebsd import FakeLauncher, Recorder

USER = ResolvedUser(uid=0, gid=0, additional_gids=(), name="root", home="/root")


def _spec(**kw: Any) -> JailSpec:
    base: dict[str, Any] = {
        "name": "xc-12345678-web",
        "rootfs": Path("/r"),
        "argv": ("/bin/web",),
        "stdout_path": Path("/l/o"),
        "stderr_path": Path("/l/e"),
    }
    base.update(kw)
    return JailSpec(**base)


def test_host_is_the_default_and_has_no_netns() -> None:
    s = _spec()
    assert (s.network, s.netns_path) == ("host", "")


def test_netns_keeps_its_path() -> None:
    s = _spec(network="netns", netns_path="/var/run/netns/a1b2")
    assert (s.network, s.netns_path) == ("netns", "/var/run/netns/a1b2")


@pytest.mark.parametrize(
    ("kw", "field", "words"),
    [
        ({"network": "bridge"}, "network", "not supported"),
        ({"network": "netns"}, "netns_path", "needs the namespace's path"),
        ({"network": "netns", "netns_path": "run/netns/x"}, "netns_path", "absolute"),
        ({"network": "netns", "netns_path": "/var/run/../netns/x"}, "netns_path", ".."),
        ({"network": "netns", "netns_path": "/var/run//netns/x"}, "netns_path", "clean"),
        ({"network": "netns", "netns_path": "/var/run/netns/x/"}, "netns_path", "clean"),
        ({"network": "netns", "netns_path": "/"}, "netns_path", "clean"),
        ({"network": "netns", "netns_path": "/var/run/netns/\0"}, "netns_path", "NUL"),
        ({"netns_path": "/var/run/netns/x"}, "netns_path", "only valid with network 'netns'"),
    ],
)
def test_bad_network_names_the_field(kw: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(SpecError) as err:
        _spec(**kw)
    assert err.value.field == field
    assert words in str(err.value)


def test_check_host_wants_the_namespace_to_exist(tmp_path: Path) -> None:
    rootfs = tmp_path / "root"
    rootfs.mkdir()
    spec = _spec(rootfs=rootfs, stdout_path=tmp_path / "o", stderr_path=tmp_path / "e",
                 network="netns", netns_path=str(tmp_path / "netns-gone"))
    with pytest.raises(SpecError) as err:
        check_host(spec)
    assert err.value.field == "netns_path" and "does not exist" in str(err.value)
    (tmp_path / "netns-gone").touch()
    check_host(spec)


def test_backend_modes() -> None:
    assert backend_network_modes("linux") == ("host", "netns")
    assert backend_network_modes("freebsd") == ("host", "parent")
    assert backend_network_modes("unknown") == ("host",)


# ---- runc config --------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({}, [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]),
        (
            {"network": "netns", "netns_path": "/var/run/netns/a1"},
            [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
             {"type": "network", "path": "/var/run/netns/a1"}],
        ),
    ],
)
def test_namespaces_table(kw: dict[str, Any], expected: list[dict[str, str]]) -> None:
    spec = _spec(**kw)
    assert namespaces(spec) == expected
    assert oci_config(spec, USER, cgroups_path="c", rootfs="/r")["linux"]["namespaces"] == expected


def test_sys_is_the_hosts_read_only_bind_without_a_netns_and_sysfs_with_one() -> None:
    def sys_mount(spec: JailSpec) -> dict[str, Any]:
        cfg = oci_config(spec, USER, cgroups_path="c", rootfs="/r")
        [m] = [m for m in cfg["mounts"] if m["destination"] == "/sys"]
        return dict(m)

    assert sys_mount(_spec())["type"] == "bind"
    assert sys_mount(_spec())["source"] == "/sys"
    assert sys_mount(_spec(network="netns", netns_path="/var/run/netns/a1")) == {
        "destination": "/sys", "type": "sysfs", "source": "sysfs",
        "options": ["nosuid", "noexec", "nodev", "ro"]}
    # the module's table itself is left alone
    assert next(m for m in _BASE_MOUNTS if m["destination"] == "/sys")["type"] == "bind"


# ---- FreeBSD ------------------------------------------------------------------------------

def test_freebsd_jail_params_stay_host_inherit() -> None:
    assert ("ip4", "inherit") in jail_params(_spec())


def test_freebsd_refuses_a_netns_before_any_side_effect(tmp_path: Path) -> None:
    recorder, launcher = Recorder(), FakeLauncher()
    rt = FreeBSDRuntime(tmp_path / "state", runner=recorder, launcher=launcher,
                        racct_reader=lambda s: None)
    rootfs = tmp_path / "root"
    rootfs.mkdir()
    before = sorted(os.listdir(tmp_path / "state")) if (tmp_path / "state").exists() else []
    spec = _spec(rootfs=rootfs, stdout_path=tmp_path / "o", stderr_path=tmp_path / "e",
                 network="netns", netns_path="/var/run/netns/a1")
    with pytest.raises(SpecError) as err:
        rt.start(spec)
    assert err.value.field == "network"
    text = str(err.value)
    assert "FreeBSD" in text and "group networking" in text and "host" in text
    assert recorder.calls == [] and launcher.calls == []
    after = sorted(os.listdir(tmp_path / "state")) if (tmp_path / "state").exists() else []
    assert after == before
    assert not rt.exists(spec.name)
