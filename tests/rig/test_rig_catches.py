"""The rig rejects what a real Nomad client rejects, proven with deliberately broken plugins.

Each broken mode of tests/rig/misbehaving_plugin.py differs from its ``ok`` baseline in one way;
every test also runs the baseline, so a rig that rejected everything would fail here.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.nomadsim.client import Rig, RigError

Argv = Callable[[str], list[str]]


@pytest.fixture
def launch(rig: Rig, penv: dict[str, str]) -> Callable[..., dict[str, Any]]:
    def go(argv: list[str], **params: Any) -> dict[str, Any]:
        params.setdefault("start_timeout_s", 20)
        return rig.call("launch", argv=argv, env=penv, **params)

    return go


Launch = Callable[..., dict[str, Any]]


def test_baseline_plugin_passes_every_check(rig: Rig, launch: Launch, misbehaving: Argv) -> None:
    assert launch(misbehaving("ok"))["ok"]
    assert rig.check("plugin_info")["info"]["name"] == "broken"
    assert rig.check("config_schema")["present"] is True
    rig.check("set_config", hcl='retries = "3"\ntags = ["a"]\n')
    rig.check("task_config_schema")
    rig.check("fingerprint_start")
    rig.check("events_start")
    fp = rig.check("fingerprint_poll", min_count=1, wait_s=10)
    assert fp["messages"] and fp["ended"] is False
    assert rig.check("events_poll", min_count=1, wait_s=0.5)["ended"] is False
    assert rig.check("logs")["problems"] == []
    down = rig.check("shutdown")
    assert down["graceful"] is True and down["exited"] is True


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("app-version-1", "incompatible API version"),
        ("core-version-2", "incompatible core API version"),
        ("netrpc", "Unsupported plugin protocol"),
        ("banner", "Unrecognized remote plugin message"),
        ("exit-before-handshake", "failed to read any lines from plugin's stdout"),
    ],
)
def test_wrong_handshake_is_rejected(
    rig: Rig, launch: Launch, misbehaving: Argv, mode: str, expected: str
) -> None:
    reply = launch(misbehaving(mode))
    assert reply["ok"] is False
    assert reply["stage"] == "handshake"
    assert expected.lower() in str(reply["error"]).lower()


def test_silent_plugin_times_out(rig: Rig, launch: Launch, misbehaving: Argv) -> None:
    reply = launch(misbehaving("silent"), start_timeout_s=1.5)
    assert reply["ok"] is False
    assert "timeout while waiting for plugin to start" in str(reply["error"])


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("schema-unknown-node", "unknown spec type"),
        ("schema-default-attr-noname", "Missing name in attribute spec"),
        ("schema-unquoted-literal", 'literal "sh" is not a constant'),
        ("schema-quoted-type", "is not a type expression"),
        ("schema-mistyped", "is not a type expression"),
    ],
)
def test_broken_config_schema_is_rejected(
    rig: Rig, launch: Launch, misbehaving: Argv, mode: str, expected: str
) -> None:
    assert launch(misbehaving(mode))["ok"]
    with pytest.raises(RigError) as err:
        rig.check("config_schema")
    assert err.value.stage == "schema"
    assert expected in str(err.value)


def test_unset_task_config_schema_is_rejected(rig: Rig, launch: Launch, misbehaving: Argv) -> None:
    assert launch(misbehaving("task-schema-unset"))["ok"]
    with pytest.raises(RigError, match="nil spec given"):
        rig.check("task_config_schema")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("info-type", "a driver must report DRIVER"), ("info-api-version", "lacks v0.1.0")],
)
def test_bad_plugin_info_is_rejected(
    rig: Rig, launch: Launch, misbehaving: Argv, mode: str, expected: str
) -> None:
    assert launch(misbehaving(mode))["ok"]
    with pytest.raises(RigError, match=expected):
        rig.check("plugin_info")


@pytest.mark.parametrize("stream", ["fingerprint", "events"])
def test_stream_that_ends_is_reported(
    rig: Rig, launch: Launch, misbehaving: Argv, stream: str
) -> None:
    assert launch(misbehaving(f"{stream}-ends"))["ok"]
    rig.check(f"{stream}_start")
    polled = rig.check(f"{stream}_poll", min_count=100, wait_s=10)
    assert polled["ended"] is True


def test_log_lines_nomad_cannot_read_are_reported(
    rig: Rig, launch: Launch, misbehaving: Argv
) -> None:
    assert launch(misbehaving("bad-logs"))["ok"]
    logs = rig.check("logs")
    problems = " ".join(p["problem"] for p in logs["problems"])
    assert "@level" in problems
    # go-plugin falls back to logging the raw line at debug.
    raw = [e for e in logs["agent"] if '"warning"' in e["message"]]
    assert raw and raw[0]["level"] == "debug"


def test_misspelled_and_mistyped_keys_never_reach_the_plugin(
    rig: Rig, launch: Launch, misbehaving: Argv
) -> None:
    assert launch(misbehaving("ok"))["ok"]
    rig.check("config_schema")
    with pytest.raises(RigError) as err:
        rig.check("set_config", hcl="retires = 3\n")
    assert err.value.stage == "decode" and '"retires"' in str(err.value)
    with pytest.raises(RigError) as err:
        rig.check("set_config", hcl='retries = "three"\n')
    assert err.value.stage == "decode" and "retries" in str(err.value)
    with pytest.raises(RigError) as err:
        rig.check("set_config", hcl="shell = sh\n")  # unquoted: a variable reference
    assert err.value.stage == "parse"
    ok = rig.check("set_config", hcl="retries = 3\n")
    assert ok["value"] == {"retries": 3, "shell": "sh", "tags": None}


def test_kill_plugin_ends_its_streams_and_a_new_instance_can_start(
    rig: Rig, launch: Launch, misbehaving: Argv
) -> None:
    first = launch(misbehaving("ok"))
    assert first["ok"]
    rig.check("fingerprint_start")
    rig.check("fingerprint_poll", min_count=1, wait_s=10)
    killed = rig.check("kill_plugin")
    assert killed["pid"] == first["pid"]
    with pytest.raises(ProcessLookupError):
        os.kill(first["pid"], 0)
    second = launch(misbehaving("ok"))
    assert second["ok"] and second["pid"] != first["pid"]
    assert rig.check("plugin_info")["info"]["name"] == "broken"


def test_generic_rpc_reaches_the_driver_service(
    rig: Rig, launch: Launch, misbehaving: Argv
) -> None:
    assert launch(misbehaving("ok"))["ok"]
    reply = rig.call("rpc", method="StopTask", request={"task_id": "t1", "timeout": "1.5s"})
    assert reply["ok"] is False and reply["code"] == "Unimplemented"
    reply = rig.call("rpc", method="NoSuchCall")
    assert reply["ok"] is False and "NoSuchCallRequest" in reply["error"]


# A job's config block under reference_task_spec() and the bytes Nomad sends for it: hcldec fills
# absent attributes (null, or their Default) and go-cty's msgpack encoding (zclconf/go-cty
# cty/msgpack) writes the object as a map with sorted keys.
REFERENCE_JOB_CONFIG = """
image = "busybox:1.36"
args  = ["-c", "echo hi"]
mount {
  source = "/srv/data"
  target = "/data"
}
"""
REFERENCE_MSGPACK = (
    "85 a4 61 72 67 73 92 a2 2d 63 a7 65 63 68 6f 20 68 69 a5 69 6d 61 67 65 ac 62 75 73 79 62 "
    "6f 78 3a 31 2e 33 36 a7 6c 6f 67 67 69 6e 67 c0 a5 6d 6f 75 6e 74 91 83 a8 72 65 61 64 6f "
    "6e 6c 79 c2 a6 73 6f 75 72 63 65 a9 2f 73 72 76 2f 64 61 74 61 a6 74 61 72 67 65 74 a5 2f "
    "64 61 74 61 a8 77 6f 72 6b 5f 64 69 72 a1 2f"
)


def test_task_config_encodes_to_the_reference_bytes(
    rig: Rig, launch: Launch, misbehaving: Argv
) -> None:
    assert launch(misbehaving("ok"))["ok"]
    enc = rig.check("encode_task_config", hcl=REFERENCE_JOB_CONFIG)
    assert enc["msgpack_hex"] == REFERENCE_MSGPACK.replace(" ", "")
    assert enc["value"]["work_dir"] == "/" and enc["value"]["logging"] is None


def test_block_syntax_needs_block_attrs_as_in_nomad(
    rig: Rig, launch: Launch, misbehaving: Argv
) -> None:
    assert launch(misbehaving("ok"))["ok"]
    hcl = 'image = "x"\nlogging {\n  driver = "syslog"\n  options {\n    tag = "web"\n  }\n}\n'
    enc = rig.check("encode_task_config", hcl=hcl)
    assert enc["value"]["logging"] == {"driver": "syslog", "options": {"tag": "web"}}
    with pytest.raises(RigError) as err:
        rig.check("encode_task_config", hcl='image = 5\nargs = "a"')
    assert err.value.stage == "decode" and "args" in str(err.value)


@pytest.mark.parametrize(
    ("literal", "decoded"),
    [
        ("3", 3),
        ("-7", -7),
        ("0.5", 0.5),  # exactly a float64: msgpack float64
        ("0.1", "0.1"),  # not exactly a float64: cty sends the decimal text (section 3.3)
        ("123456789012345678901234", "123456789012345678901234"),
    ],
)
def test_numbers_are_encoded_as_go_cty_does(
    rig: Rig, launch: Launch, misbehaving: Argv, literal: str, decoded: object
) -> None:
    assert launch(misbehaving("ok"))["ok"]
    enc = rig.check("set_config", hcl=f"retries = {literal}")
    assert msgpack.unpackb(bytes.fromhex(enc["msgpack_hex"]), raw=False)["retries"] == decoded


def test_plugin_that_ignores_shutdown_is_reported(
    rig: Rig, launch: Launch, misbehaving: Argv
) -> None:
    assert launch(misbehaving("ignore-shutdown"))["ok"]
    down = rig.check("shutdown")
    assert down["graceful"] is False  # go-plugin waited 2 s, then SIGKILLed it
    assert down["exited"] is True


def test_exec_streaming_round_trip(rig: Rig, launch: Launch, misbehaving: Argv) -> None:
    assert launch(misbehaving("ok"))["ok"]
    setup = {"setup": {"task_id": "t1", "command": ["/bin/cat"], "tty": False}}
    rig.check("exec_stream_start", request=setup)
    for chunk in (b"hello ", b"world"):
        rig.check("exec_stream_send", request={"stdin": {"data": base64.b64encode(chunk).decode()}})
    rig.check("exec_stream_send", request={})  # the API's heartbeat: ignored
    rig.check("exec_stream_send", request={"stdin": {"close": True}})
    polled = rig.check("stream_poll", stream="exec", min_count=5, wait_s=10)
    msgs = polled["messages"]
    out = b"".join(base64.b64decode(m["stdout"]["data"]) for m in msgs if m.get("stdout"))
    assert out == b"hello world"
    assert msgs[-1]["exited"] is True and msgs[-1]["result"]["exit_code"] == 2
    assert polled["ended"] is True and polled["end_error"] == ""


def test_reattach_after_the_agent_crashed(
    rig_binary: Path, rig: Rig, launch: Launch, misbehaving: Argv, tmp_path: Path
) -> None:
    first = launch(misbehaving("ok"))
    rig.crash()  # the plugin keeps running; its stdout/stderr pipes are now broken
    os.kill(first["pid"], 0)
    second = Rig.start(rig_binary, stderr_path=tmp_path / "second.log")
    try:
        again = second.check("reattach", pid=first["pid"], addr=first["addr"])
        assert again["pid"] == first["pid"]
        assert second.check("plugin_info")["info"]["name"] == "broken"
        second.check("fingerprint_start")
        assert second.check("fingerprint_poll", min_count=1, wait_s=10)["messages"]
        assert second.check("shutdown")["graceful"] is True
    finally:
        second.stop()
