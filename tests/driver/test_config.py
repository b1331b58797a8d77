"""Plugin and task config: decoding what Nomad sends into typed configs, and every error."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgpack
import pytest

from driver.config import (
    PLUGIN_SCHEMA,
    TASK_SCHEMA,
    AuthFiles,
    ConfigError,
    GcConfig,
    Limits,
    MountSpec,
    PluginConfig,
    RegistryAuth,
    StorageOpt,
    VolumesConfig,
    check_task_allowed,
    decode_plugin_config,
    decode_task_config,
    parse_duration,
)
from tests.driver.ctyenc import encode, hcldec, nomad_bytes

REALISTIC_PLUGIN = {
    "dataset": "tank/xc",
    "backend": "linux",
    "state_dir": "/var/lib/xc",
    "allow_insecure_registries": ["127.0.0.1:5000", "registry.lan"],
    "auth": {"config": "/root/.docker/config.json"},
    "platform": "linux/amd64",
    "allowed_jail_params": ["allow.raw_sockets", "sysvipc"],
    "volumes": {"enabled": True, "allowed_host_paths": ["/srv"]},
    "gc": {"image": False, "image_delay": "10m"},
    "default_limits": {"maxproc": 256, "openfiles": 1024, "disk": "2G"},
    "max_limits": {"maxproc": 4096, "openfiles": 65536, "disk": "20g"},
    "pull_activity_timeout": "90s",
    "linux_images": True,
}

REALISTIC_TASK = {
    "image": "127.0.0.1:5000/busybox:1.36",
    "command": "/bin/sh",
    "args": ["-c", "echo hi; sleep 5"],
    "work_dir": "/srv",
    "hostname": "web-1",
    "mount": [
        {"source": "/srv/data", "target": "/data", "readonly": True},
        {"type": "tmpfs", "target": "/scratch", "tmpfs_options": {"size": 67108864, "mode": 1777}},
    ],
    "volumes": ["local/cache:/cache", "/srv/ro:/ro:ro"],
    "jail_params": {"allow.raw_sockets": "true"},
    "auth": {"username": "ci", "password": "s3cret", "server_address": "127.0.0.1:5000"},
    "force_pull": True,
    "image_pull_timeout": "2m30s",
    "platform": "linux/amd64",
    "maxproc": 100,
    "openfiles": 2048,
    "readonly_rootfs": True,
    "labels": {"team": "web"},
    "storage_opt": {"size": "1G"},
}


def plugin(**changes: Any) -> PluginConfig:
    return decode_plugin_config(nomad_bytes(PLUGIN_SCHEMA, {**REALISTIC_PLUGIN, **changes}))


def task(**changes: Any) -> Any:
    cfg = {k: v for k, v in {**REALISTIC_TASK, **changes}.items() if v is not None}
    return decode_task_config(nomad_bytes(TASK_SCHEMA, cfg))


def error_of(fn: Any, *args: Any, **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value


# ---- plugin config ----


def test_realistic_plugin_config_decodes_to_typed_values() -> None:
    assert plugin() == PluginConfig(
        dataset="tank/xc",
        backend="linux",
        state_dir="/var/lib/xc",
        allow_insecure_registries=("127.0.0.1:5000", "registry.lan"),
        auth=AuthFiles(config="/root/.docker/config.json", helper=""),
        platform="linux/amd64",
        allowed_jail_params=frozenset({"allow.raw_sockets", "sysvipc"}),
        volumes=VolumesConfig(enabled=True, allowed_host_paths=("/srv",)),
        gc=GcConfig(image=False, image_delay=timedelta(minutes=10)),
        default_limits=Limits(256, 1024, 2 << 30),
        max_limits=Limits(4096, 65536, 20 << 30),
        pull_activity_timeout=timedelta(seconds=90),
        linux_images=True,
    )


def test_empty_plugin_config_block_gives_the_dataclass_defaults() -> None:
    # What Nomad sends for `plugin "xc" {}`: every default literal applied by hcldec.
    assert decode_plugin_config(nomad_bytes(PLUGIN_SCHEMA, {}), "linux") == PluginConfig()
    # And with nothing at all (a whole block absent uses the same Python defaults).
    assert decode_plugin_config(b"", "linux") == PluginConfig()


def test_state_dir_default_depends_on_the_os() -> None:
    raw = nomad_bytes(PLUGIN_SCHEMA, {})
    assert decode_plugin_config(raw, "freebsd14").state_dir == "/var/db/nomad-driver-xc"
    assert decode_plugin_config(raw, "linux").state_dir == "/var/lib/nomad-driver-xc"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"backend": "docker"}, "config.backend", 'set backend = "auto", "freebsd" or "linux"'),
        ({"dataset": "/tank"}, "config.dataset", "not a ZFS dataset name"),
        ({"state_dir": "relative/dir"}, "config.state_dir", "not an absolute path"),
        ({"allow_insecure_registries": ["http://x"]}, "config.allow_insecure_registries[0]",
         "host[:port]"),
        ({"allowed_jail_params": ["Bad Name"]}, "config.allowed_jail_params[0]",
         "not a jail parameter"),
        ({"gc": {"image_delay": "soon"}}, "config.gc.image_delay", '"soon" is not a duration'),
        ({"pull_activity_timeout": "0s"}, "config.pull_activity_timeout", "longer than zero"),
        ({"platform": "amd64"}, "config.platform", "os/arch"),
        ({"default_limits": {"maxproc": 1.5}}, "config.default_limits.maxproc",
         "not a whole number"),
        ({"default_limits": {"maxproc": -1}}, "config.default_limits.maxproc", "below 0"),
        ({"default_limits": {"maxproc": 9999}}, "config.default_limits.maxproc",
         "above max_limits.maxproc"),
        ({"default_limits": {"disk": "30G"}}, "config.default_limits.disk",
         'above max_limits.disk = "20G"'),
        ({"max_limits": {"disk": "lots"}}, "config.max_limits.disk", '"lots" is not a size'),
        ({"default_limits": {"disk": "-1G"}}, "config.default_limits.disk",
         'set disk to a size such as "10G"'),
        ({"volumes": {"allowed_host_paths": ["srv"]}}, "config.volumes.allowed_host_paths[0]",
         "absolute"),
        ({"auth": {"config": "docker.json"}}, "config.auth.config", "absolute"),
    ],
)
def test_bad_plugin_values_name_the_field_and_the_fix(
    changes: dict[str, Any], field: str, words: str
) -> None:
    err = error_of(plugin, **changes)
    assert err.field == field
    assert words in str(err)
    assert str(err).startswith(f"{field}: ")


def test_misspelled_plugin_key_is_rejected_with_the_known_keys() -> None:
    value = hcldec(PLUGIN_SCHEMA, {})
    assert value is not None
    value["datset"] = "tank/xc"
    err = error_of(decode_plugin_config, encode(value))
    assert err.field == "config.datset"
    assert "unknown key" in str(err) and "dataset" in str(err)


def test_mistyped_plugin_value_is_rejected_with_its_type() -> None:
    value = hcldec(PLUGIN_SCHEMA, {})
    assert value is not None
    value["volumes"] = {"enabled": "yes", "allowed_host_paths": []}
    err = error_of(decode_plugin_config, encode(value))
    assert err.field == "config.volumes.enabled"
    assert 'expected bool, got string "yes"' in str(err)
    assert "set enabled = true or false" in str(err)


def test_unknown_value_is_rejected() -> None:
    value = hcldec(PLUGIN_SCHEMA, {})
    assert value is not None
    value["dataset"] = msgpack.ExtType(0, b"\x00")
    err = error_of(decode_plugin_config, encode(value))
    assert err.field == "config.dataset" and "not known" in str(err)


def test_big_numbers_as_decimal_text_are_accepted_when_whole() -> None:
    value = hcldec(PLUGIN_SCHEMA, {})
    assert value is not None
    value["max_limits"] = {"maxproc": "4096", "openfiles": 0}
    assert decode_plugin_config(encode(value)).max_limits.maxproc == 4096
    value["max_limits"] = {"maxproc": "0.5", "openfiles": 0}
    assert error_of(decode_plugin_config, encode(value)).field == "config.max_limits.maxproc"


# ---- task config ----


def test_realistic_task_config_decodes_to_typed_values() -> None:
    t = task()
    assert t.image == "127.0.0.1:5000/busybox:1.36"
    assert t.command == "/bin/sh"
    assert t.args == ("-c", "echo hi; sleep 5")
    assert t.entrypoint is None
    assert t.work_dir == "/srv"
    assert t.hostname == "web-1"
    assert t.mounts == (
        MountSpec("bind", "/srv/data", "/data", True, origin="config.mount[0]"),
        MountSpec("tmpfs", "", "/scratch", False, 67108864, 0o1777, origin="config.mount[1]"),
        MountSpec("bind", "local/cache", "/cache", False, origin="config.volumes[0]"),
        MountSpec("bind", "/srv/ro", "/ro", True, origin="config.volumes[1]"),
    )
    assert dict(t.jail_params) == {"allow.raw_sockets": "true"}
    assert t.auth == RegistryAuth("ci", "s3cret", "", "127.0.0.1:5000")
    assert t.force_pull is True
    assert t.image_pull_timeout == timedelta(minutes=2, seconds=30)
    assert (t.maxproc, t.openfiles) == (100, 2048)
    assert t.readonly_rootfs is True
    assert dict(t.labels) == {"team": "web"}
    assert t.storage_opt == StorageOpt(1 << 30)


def test_minimal_task_config_gets_defaults() -> None:
    t = decode_task_config(nomad_bytes(TASK_SCHEMA, {"image": "alpine:3.20"}))
    assert t.image == "alpine:3.20"
    assert (t.command, t.args, t.mounts, dict(t.jail_params), t.auth) == (None, (), (), {}, None)
    assert t.image_pull_timeout == timedelta(minutes=5)
    assert t.force_pull is False
    assert t.storage_opt == StorageOpt(0)


def test_password_never_shows_in_repr() -> None:
    assert "s3cret" not in repr(task())


def test_missing_image_says_how_to_write_it() -> None:
    err = error_of(decode_task_config, nomad_bytes(TASK_SCHEMA, {"command": "/bin/true"}))
    assert str(err) == 'config.image: required; set image = "registry/name:tag"'


def test_no_config_block_is_an_error() -> None:
    assert error_of(decode_task_config, b"").field == "config"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"image": "bad image"}, "config.image", "whitespace"),
        ({"work_dir": "srv"}, "config.work_dir", "absolute"),
        ({"hostname": "web_1!"}, "config.hostname", "not a host name"),
        ({"mount": [{"target": "/data"}]}, "config.mount[0].source", "required for a bind"),
        ({"mount": [{"source": "/a", "target": "data"}]}, "config.mount[0].target", "absolute"),
        ({"mount": [{"source": "/a", "target": "/"}]}, "config.mount[0].target", "root"),
        ({"mount": [{"type": "volume", "source": "v", "target": "/v"}]}, "config.mount[0].type",
         'set type = "bind" or "tmpfs"'),
        ({"mount": [{"type": "tmpfs", "target": "/t", "tmpfs_options": {"mode": 999}}]},
         "config.mount[0].tmpfs_options.mode", "not a file mode"),
        ({"mount": [{"type": "tmpfs", "source": "/x", "target": "/t"}]},
         "config.mount[0].source", "no source"),
        ({"volumes": ["/only-one-part"]}, "config.volumes[0]", "host_path:task_path[:ro]"),
        ({"volumes": ["/a:/b:rx"]}, "config.volumes[0]", "not ro or rw"),
        ({"volumes": ["/a:/data"]}, "config.volumes[0]", "second mount targets /data"),
        ({"volumes": ["/srv/x/../../etc:/e"]}, "config.volumes[0]", "contains '..'"),
        ({"mount": [{"source": "/srv/../etc", "target": "/e"}]}, "config.mount[0]",
         "contains '..'"),
        ({"jail_params": {"Not Valid": "1"}}, "config.jail_params.Not Valid", "jail(8)"),
        ({"auth": {"username": "u"}}, "config.auth", "username and password"),
        ({"image_pull_timeout": "5 minutes"}, "config.image_pull_timeout", "not a duration"),
        ({"maxproc": -5}, "config.maxproc", "below 0"),
        ({"platform": "Linux/AMD64"}, "config.platform", "os/arch"),
        ({"storage_opt": {"size": "1 gigabyte"}}, "config.storage_opt.size",
         '"1 gigabyte" is not a size; write storage_opt = { size = "1G" }'),
        ({"storage_opt": {"size": "1G", "dm.basesize": "2G"}}, "config.storage_opt.dm.basesize",
         "not a storage option here (only size is)"),
    ],
)
def test_bad_task_values_name_the_field_and_the_fix(
    changes: dict[str, Any], field: str, words: str
) -> None:
    err = error_of(task, **changes)
    assert err.field == field
    assert words in str(err)


def test_misspelled_task_key_is_rejected() -> None:
    value = hcldec(TASK_SCHEMA, {"image": "alpine"})
    assert value is not None
    value["comand"] = "/bin/sh"
    err = error_of(decode_task_config, encode(value))
    assert err.field == "config.comand" and "command" in str(err)


def test_mistyped_task_value_is_rejected() -> None:
    value = hcldec(TASK_SCHEMA, {"image": "alpine"})
    assert value is not None
    value["args"] = "-c echo"
    err = error_of(decode_task_config, encode(value))
    assert err.field == "config.args"
    assert 'expected list(string), got string "-c echo"' in str(err)


def test_list_element_of_wrong_type_names_its_index() -> None:
    value = hcldec(TASK_SCHEMA, {"image": "alpine"})
    assert value is not None
    value["args"] = ["ok", 5]
    assert error_of(decode_task_config, encode(value)).field == "config.args[1]"


# ---- what the operator allows ----


def test_allowed_task_passes_the_operator_checks() -> None:
    check_task_allowed(task(), plugin())


@pytest.mark.parametrize(
    ("plugin_changes", "task_changes", "field", "words"),
    [
        ({"allowed_jail_params": []}, {}, "config.jail_params.allow.raw_sockets",
         "allowed_jail_params"),
        ({"volumes": {"enabled": False}}, {}, "config.mount[0]", "volumes are disabled"),
        ({"volumes": {"enabled": True, "allowed_host_paths": ["/srv/data"]}}, {},
         "config.volumes[1]", "outside the allowed host paths"),
        ({"max_limits": {"maxproc": 50, "openfiles": 0},
          "default_limits": {"maxproc": 10, "openfiles": 0}}, {}, "config.maxproc", "maximum 50"),
        ({"max_limits": {"disk": "512M"}, "default_limits": {}}, {},
         "config.storage_opt.size", "1G is above this client's maximum disk 512M"),
        ({"max_limits": {"disk": "1073741823"}, "default_limits": {}}, {},
         "config.storage_opt.size", 'set storage_opt = { size = "1073741823" } or less'),
    ],
)
def test_operator_limits_name_the_task_field(
    plugin_changes: dict[str, Any], task_changes: dict[str, Any], field: str, words: str
) -> None:
    err = error_of(check_task_allowed, task(**task_changes), plugin(**plugin_changes))
    assert err.field == field
    assert words in str(err)


def test_relative_volume_sources_stay_in_the_task_dir_and_need_no_permission() -> None:
    t = task(mount=[], volumes=["local/x:/x"], jail_params=None)
    check_task_allowed(t, plugin(volumes={"enabled": False}, allowed_jail_params=[]))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0", 0), ("90s", 90), ("1h30m", 5400), ("250ms", 0.25), ("1.5h", 5400), ("2m30s", 150)],
)
def test_go_durations(text: str, seconds: float) -> None:
    d = parse_duration(text)
    assert d is not None and d.total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 m", "m", "1d", "-1s", "1h 30m"])
def test_not_go_durations(text: str) -> None:
    assert parse_duration(text) is None


# docker's size syntax (storage_opt size, default_limits/max_limits disk)
@pytest.mark.parametrize(("text", "size"), [
    ("1G", 1 << 30), ("1g", 1 << 30), ("1gb", 1 << 30), ("1GiB", 1 << 30), ("512m", 512 << 20),
    ("1.5G", 3 << 29), ("100", 100), ("100b", 100), ("64k", 64 << 10), ("2t", 2 << 40),
    ("0", 0), ("", 0),
])
def test_sizes(text: str, size: int) -> None:
    assert task(storage_opt={"size": text}).storage_opt.size == size


@pytest.mark.parametrize("text", ["G", "-1G", "1x", "1.G", "1e3", "1 GB of disk", "1p"])
def test_not_sizes(text: str) -> None:
    assert error_of(task, storage_opt={"size": text}).field == "config.storage_opt.size"


def test_storage_opt_as_a_block_and_disk_in_bytes() -> None:
    value = hcldec(TASK_SCHEMA, {"image": "alpine"})
    assert value is not None
    value["storage_opt"] = {"size": "10m"}
    assert decode_task_config(encode(value)).storage_opt == StorageOpt(10 << 20)
    assert plugin(max_limits={"disk": "1073741824"}, default_limits={}).max_limits.disk == 1 << 30
