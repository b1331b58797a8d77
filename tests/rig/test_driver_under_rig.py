"""The real xc plugin (``python -m driver``) driven the way a Nomad client drives it.

Every call goes through tests/nomadsim: go-plugin's client with Nomad's handshake, the plugin's
schemas turned into hcldec specs, HCL configs decoded with them and encoded with go-cty msgpack.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.nomadsim.client import Rig, RigError, run_agent_start
from tests.rig.conftest import ROOT

DATASET = f"xctest{os.getpid()}/xc"  # never created: fingerprint only probes it


def plugin_config_hcl(state_dir: Path) -> str:
    """A plugin block an operator would write, touching every section of the schema."""
    return f"""
dataset   = "{DATASET}"
backend   = "linux"
state_dir = "{state_dir}"
allow_insecure_registries = ["127.0.0.1:5000"]
allowed_jail_params       = ["allow.raw_sockets", "sysvipc"]
platform  = "linux/amd64"
auth {{
  helper = "ecr-login"
}}
volumes {{
  enabled            = true
  allowed_host_paths = ["/srv/data"]
}}
gc {{
  image       = true
  image_delay = "10m"
}}
default_limits {{
  maxproc   = 256
  openfiles = 1024
}}
max_limits {{
  maxproc   = 4096
  openfiles = 65536
}}
pull_activity_timeout = "90s"
"""


TASK_CONFIG_HCL = """
image       = "127.0.0.1:5000/xctest/busybox:1.36"
command     = "/bin/sh"
args        = ["-c", "echo hello from ${NOMAD_TASK_DIR}; sleep ${upper("5")}"]
work_dir    = "/srv"
hostname    = "web-1"
mount {
  type     = "bind"
  source   = "local/data"
  target   = "/data"
  readonly = true
}
mount {
  type   = "tmpfs"
  target = "/scratch"
  tmpfs_options {
    size = 67108864
    mode = 1777
  }
}
jail_params = { "allow.raw_sockets" = "true" }
labels {
  team = "web"
}
auth {
  username = "ci"
  password = "secret"
}
force_pull         = true
image_pull_timeout = "2m"
maxproc            = 128
openfiles          = 2048
readonly_rootfs    = false
"""

TASK = {
    "id": "2f3c9a1e-0000-4000-8000-000000000001/web/abcd1234",
    "name": "web",
    "alloc_id": "2f3c9a1e-0000-4000-8000-000000000001",
    "env": {"NOMAD_TASK_DIR": "/local"},
}


@pytest.fixture
def plugin(rig: Rig, driver_argv: list[str], penv: dict[str, str]) -> Iterator[Rig]:
    """The real plugin, launched by the rig."""
    rig.check("launch", argv=driver_argv, env=penv, dir=str(ROOT))
    yield rig


@pytest.fixture
def configured(plugin: Rig, tmp_path: Path) -> Rig:
    plugin.check("set_config", hcl=plugin_config_hcl(tmp_path / "state"))
    return plugin


def test_run_by_hand_says_so_and_exits_1() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NOMAD_PLUGIN_MAGIC_COOKIE"}
    env["PYTHONPATH"] = str(ROOT)
    res = subprocess.run(
        [sys.executable, "-m", "driver"], capture_output=True, text=True, env=env, timeout=30
    )
    assert res.returncode == 1
    assert res.stdout == ""  # nothing that could pass for a handshake line
    assert "Nomad" in res.stderr and "plugin" in res.stderr


def test_plugin_info(plugin: Rig) -> None:
    info = plugin.check("plugin_info")["info"]
    assert info["type"] == "DRIVER"
    assert info["name"] == "xc"
    assert info["plugin_api_versions"] == ["v0.1.0"]
    from driver.version import version

    assert info["plugin_version"] == version()


def test_both_schemas_become_hcldec_specs(plugin: Rig) -> None:
    cfg = plugin.check("config_schema")
    assert cfg["present"] is True
    assert "dataset" in cfg["spec"]["object"]["attributes"]
    task = plugin.check("task_config_schema")["spec"]["object"]["attributes"]
    assert task["image"]["Attr"]["required"] is True


def test_set_config_twice_without_nomad_config_then_with_it(plugin: Rig, tmp_path: Path) -> None:
    hcl = plugin_config_hcl(tmp_path / "state")
    for _ in range(2):  # launch #2 of the agent start: Dispense and validation
        plugin.check("set_config", hcl=hcl, nomad_config=False)
    value = plugin.check("set_config", hcl=hcl)["value"]
    # hcldec filled what the operator left out, and kept what they wrote.
    assert value["default_limits"] == {"maxproc": 256, "openfiles": 1024, "disk": ""}
    assert value["gc"] == {"image": True, "image_delay": "10m"}
    assert value["auth"] == {"config": "", "helper": "ecr-login"}


def test_empty_plugin_config_uses_defaults(plugin: Rig) -> None:
    value = plugin.check("set_config", hcl="")["value"]
    assert value["dataset"] == "zroot/xc" and value["backend"] == "auto"


def test_set_config_values_reach_the_driver(configured: Rig) -> None:
    configured.check("fingerprint_start")
    fp = configured.check("fingerprint_poll", min_count=1, wait_s=20)["messages"][0]
    attrs = {k: next(iter(v.values())) for k, v in fp["attributes"].items()}
    assert attrs["driver.xc.zfs.dataset"] == DATASET
    assert attrs["driver.xc.backend"] == "linux"


@pytest.mark.parametrize(
    ("hcl", "named"),
    [
        ('datset = "tank/xc"', '"datset"'),  # misspelled: hcldec refuses, as Nomad does
        ('volumes {\n  enabled = "maybe"\n}', "enabled"),  # mistyped
        ("gc {\n  imagee = true\n}", '"imagee"'),
    ],
)
def test_bad_plugin_config_is_stopped_before_the_plugin(plugin: Rig, hcl: str, named: str) -> None:
    with pytest.raises(RigError) as err:
        plugin.check("set_config", hcl=hcl)
    assert err.value.stage == "decode"
    assert named in str(err.value)


@pytest.mark.parametrize(
    ("hcl", "field"),
    [
        ('backend = "kvm"', "backend"),
        ('state_dir = "relative/dir"', "state_dir"),
        ('pull_activity_timeout = "soon"', "pull_activity_timeout"),
        ("default_limits {\n  maxproc = -1\n}", "maxproc"),
    ],
)
def test_bad_plugin_config_value_is_refused_by_the_plugin(
    plugin: Rig, hcl: str, field: str
) -> None:
    with pytest.raises(RigError) as err:
        plugin.check("set_config", hcl=hcl)
    assert err.value.stage == "rpc"
    assert err.value.code == "InvalidArgument"
    assert field in str(err.value.response["message"])


def test_mistyped_msgpack_plugin_config_names_the_field(plugin: Rig) -> None:
    good = plugin.check("set_config", hcl="")["msgpack_hex"]
    value = msgpack.unpackb(bytes.fromhex(good), raw=False)
    value["dataset"] = 5  # what hcldec would never send, checked anyway
    with pytest.raises(RigError) as err:
        plugin.check("set_config", msgpack_hex=msgpack.packb(value).hex())
    assert err.value.code == "InvalidArgument"
    assert "dataset" in str(err.value.response["message"])


def test_capabilities_are_truthful(plugin: Rig) -> None:
    caps = plugin.check("capabilities")["capabilities"]
    assert caps["send_signals"] is True
    assert caps["exec"] is True
    assert caps["fs_isolation"] == "IMAGE"
    assert caps["mount_configs"] in ("UNKNOWN_MOUNTS", "ANY_MOUNTS")


def test_fingerprint_answers_and_stays_open(configured: Rig) -> None:
    configured.check("fingerprint_start")
    configured.check("events_start")
    first = configured.check("fingerprint_poll", min_count=1, wait_s=20)
    assert first["messages"], "no fingerprint"
    fp = first["messages"][0]
    assert fp["health"] in ("HEALTHY", "UNHEALTHY")
    assert fp["health_description"]
    for key in ("driver.xc.version", "driver.xc.backend", "driver.xc.zfs.dataset"):
        assert key in fp["attributes"], key
    assert any(k.startswith("driver.xc.os") for k in fp["attributes"])
    # Both streams must outlive the first answer: Nomad re-dispenses at once when one ends.
    later = configured.check("fingerprint_poll", min_count=len(first["messages"]) + 1, wait_s=1.5)
    assert later["ended"] is False, later["end_error"]
    assert configured.check("events_poll", min_count=1, wait_s=0.2)["ended"] is False


def test_shutdown_exits_promptly_without_sigkill(configured: Rig) -> None:
    configured.check("fingerprint_start")
    configured.check("events_start")
    configured.check("fingerprint_poll", min_count=1, wait_s=20)
    down = configured.check("shutdown")
    assert down["driver_shutdown_code"] in ("OK", "Unimplemented")
    assert down["graceful"] is True  # exited on GRPCController.Shutdown, no SIGKILL needed
    assert down["exited"] is True


def test_every_log_line_is_hclog_json(configured: Rig) -> None:
    configured.check("plugin_info")
    configured.check("capabilities")
    logs = configured.check("logs")
    assert logs["stderr"], "the plugin logged nothing at all"
    assert logs["problems"] == []
    plugin_entries = [e for e in logs["agent"] if not e["module"].startswith("agent")]
    assert plugin_entries
    assert {e["level"] for e in plugin_entries} <= {"trace", "debug", "info", "warn", "error"}


def test_realistic_task_config_round_trips(configured: Rig) -> None:
    with pytest.raises(RigError) as err:
        configured.check("start_task", hcl=TASK_CONFIG_HCL, task=TASK)
    reply = err.value.response
    # The config was accepted; the start then fails on the image store (no pool here).
    assert reply["code"] == "FailedPrecondition", reply
    assert not reply["message"].startswith("xc task config"), reply["message"]
    value: dict[str, Any] = reply["value"]
    assert value["args"] == ["-c", "echo hello from /local; sleep 5"]  # interpolated by the rig
    assert value["mount"][1]["tmpfs_options"] == {"size": 67108864, "mode": 1777}
    assert value["jail_params"] == {"allow.raw_sockets": "true"}
    assert value["labels"] == {"team": "web"}


def test_minimal_task_config_gets_defaults(configured: Rig) -> None:
    with pytest.raises(RigError) as err:
        configured.check("start_task", hcl='image = "busybox:1.36"', task=TASK)
    assert err.value.code == "FailedPrecondition"  # accepted; no image store on this host
    value = err.value.response["value"]
    assert value["args"] == [] and value["mount"] == [] and value["image_pull_timeout"] == "5m"


@pytest.mark.parametrize(
    ("hcl", "named"),
    [
        ('image = "busybox"\ncomand = "/bin/sh"', '"comand"'),
        ('image = "busybox"\nmaxproc = "lots"', "maxproc"),
        ('command = "/bin/sh"', '"image"'),  # required
        ('image = "busybox"\nmount {\n  source = "/x"\n}', '"target"'),
    ],
)
def test_bad_task_config_never_reaches_start_task(configured: Rig, hcl: str, named: str) -> None:
    with pytest.raises(RigError) as err:
        configured.check("start_task", hcl=hcl, task=TASK)
    assert err.value.stage == "decode"
    assert named in str(err.value)


@pytest.mark.parametrize(
    ("hcl", "field"),
    [
        ('image = "busybox"\nwork_dir = "srv"', "work_dir"),
        ('image = "busybox"\nimage_pull_timeout = "later"', "image_pull_timeout"),
        ('image = "busybox"\nmount {\n  type = "nfs"\n  target = "/d"\n}', "type"),
    ],
)
def test_bad_task_config_value_is_invalid_argument(configured: Rig, hcl: str, field: str) -> None:
    with pytest.raises(RigError) as err:
        configured.check("start_task", hcl=hcl, task=TASK)
    assert err.value.code == "InvalidArgument"
    assert field in err.value.response["message"]


def test_mistyped_msgpack_task_config_names_the_field(configured: Rig) -> None:
    good = configured.check("encode_task_config", hcl='image = "busybox"', env=TASK["env"])
    value = msgpack.unpackb(bytes.fromhex(good["msgpack_hex"]), raw=False)
    value["args"] = "not-a-list"
    with pytest.raises(RigError) as err:
        configured.check("start_task", msgpack_hex=msgpack.packb(value).hex(), task=TASK)
    assert err.value.code == "InvalidArgument"
    assert "args" in err.value.response["message"]


def test_agent_start_replays_the_three_launches(rig_binary: Path, tmp_path: Path) -> None:
    plugin_dir = tmp_path / "plugins"
    env = {k: v for k, v in os.environ.items() if k != "NOMAD_PLUGIN_MAGIC_COOKIE"}
    env["PYTHONPATH"] = str(ROOT)
    installed = subprocess.run(
        [sys.executable, "-m", "driver", "install", "--plugin-dir", str(plugin_dir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    agent_hcl = tmp_path / "agent.hcl"
    body = plugin_config_hcl(tmp_path / "state").replace("\n", "\n    ")
    agent_hcl.write_text(
        f'data_dir = "{tmp_path}/data"\n\nplugin "xc" {{\n  config {{{body}}}\n}}\n'
    )
    res = run_agent_start(
        rig_binary, plugin_dir, agent_hcl, watch_s=1.0, env={"TMPDIR": str(tmp_path)}
    )
    assert res.returncode == 0, res.stderr + res.stdout
    [report] = json.loads(res.stdout)
    steps = [(s["launch"], s["call"]) for s in report["steps"]]
    assert steps[:4] == [
        ("launch1", "handshake"),
        ("launch1", "PluginInfo"),
        ("launch1", "ConfigSchema"),
        ("launch1", "kill"),
    ]
    assert ("launch2", "SetConfig#2") in steps and ("launch3", "first Fingerprint") in steps
    assert all(s["ok"] for s in report["steps"]), report["steps"]
    assert report["fingerprint"]["attributes"]["driver.xc.zfs.dataset"]["string_val"] == DATASET
    assert report.get("log_problems", []) == []


def test_agent_start_refuses_a_dangling_entry_in_plugin_dir(
    rig_binary: Path, tmp_path: Path
) -> None:
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "xc").symlink_to(tmp_path / "gone")
    agent_hcl = tmp_path / "agent.hcl"
    agent_hcl.write_text('plugin "xc" {}\n')
    res = run_agent_start(rig_binary, plugin_dir, agent_hcl)
    assert res.returncode == 1
    assert "would not start" in res.stderr


def test_plugin_survives_an_agent_crash_and_is_reattached(
    rig_binary: Path, configured: Rig, tmp_path: Path
) -> None:
    """After an agent crash Nomad re-attaches: PluginInfo, Init, Fingerprint, TaskEvents, no
    SetConfig. The plugin's stderr pipe is broken by then; logging must not kill it."""
    pid, addr = configured.launches["main"]["pid"], configured.launches["main"]["addr"]
    configured.crash()
    second = Rig.start(rig_binary, stderr_path=tmp_path / "second.log")
    try:
        second.check("reattach", pid=pid, addr=addr)
        assert second.check("plugin_info")["info"]["name"] == "xc"
        second.check("init")
        second.check("fingerprint_start")
        second.check("events_start")
        fp = second.check("fingerprint_poll", min_count=1, wait_s=20)["messages"][0]
        # No SetConfig on reattach: the config from before the crash is still in force.
        assert fp["attributes"]["driver.xc.zfs.dataset"]["string_val"] == DATASET
        second.check("capabilities")
        assert second.check("shutdown")["graceful"] is True
    finally:
        second.stop()
