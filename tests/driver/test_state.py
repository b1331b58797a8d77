"""driver.state and the lifecycle conversions: round trips and refusals."""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

from driver import convert
from driver.state import DriverState, Resources, StateError
from driver.taskspec import NomadMount, NomadTask
from jails import ExitStatus

STATE = DriverState(task_id="a/web/1", alloc_id="a", task_name="web", name="xc-a-web",
                    rootfs_key="xc-a-web", image="r/i:1", image_digest="sha256:" + "0" * 64,
                    started_at=1700000000.5, resources=Resources(500, 128, 256, 2, (2, 3)),
                    alloc_dir="/al", stdout_path="/al/o", stderr_path="/al/e")


def test_driver_state_round_trip_and_is_versioned_json() -> None:
    raw = STATE.encode()
    assert json.loads(raw)["v"] == 1
    assert DriverState.decode(raw) == STATE


def test_unknown_keys_are_ignored() -> None:
    data = json.loads(STATE.encode())
    data["later"] = {"x": 1}
    assert DriverState.decode(json.dumps(data).encode()) == STATE


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "carries no driver_state"),
        (b"\x81\xa1v\x01", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"v": 2}', "version 2 is not supported"),
        (b'{"v": 1, "task_id": "x"}', "missing a field"),
    ],
)
def test_bad_driver_state(raw: bytes, problem: str) -> None:
    with pytest.raises(StateError) as err:
        DriverState.decode(raw)
    assert problem in str(err.value)


def test_wrong_type_is_refused() -> None:
    data = json.loads(STATE.encode())
    data["started_at"] = "yesterday"
    with pytest.raises(StateError, match="started_at has the wrong type"):
        DriverState.decode(json.dumps(data).encode())


def test_nomad_task_round_trip() -> None:
    t = NomadTask(id="a/web/1", name="web", alloc_id="a", alloc_dir="/al", stdout_path="/o",
                  stderr_path="/e", env=MappingProxyType({"K": "V"}), user="nobody",
                  resources=Resources(500, 128, 256, cpuset=(0, 1, 2, 5)), percent_ticks=0.25,
                  mounts=(NomadMount("/h", "/t", True),), job_name="j", task_group_name="g",
                  namespace="default")
    back = convert.nomad_task_from_proto(convert.nomad_task_to_proto(t))
    assert back == t


@pytest.mark.parametrize("status", [ExitStatus(0), ExitStatus(137, 9), ExitStatus(137, 9, True)])
def test_exit_result_round_trip(status: ExitStatus) -> None:
    assert convert.exit_result_from_proto(convert.exit_result_to_proto(status)) == status


def test_handle_echoes_config_with_version_and_state() -> None:
    cfg = convert.nomad_task_to_proto(NomadTask("a/web/1", "web", "a", "/al", "/o", "/e"))
    h = convert.task_handle_to_proto(cfg, STATE)
    assert h.version >= 1 and h.config == cfg
    assert DriverState.decode(h.driver_state) == STATE


def test_task_status_times_are_always_set() -> None:
    running = convert.task_status_to_proto(STATE, False, None)
    assert running.started_at.seconds == 1700000000
    assert running.completed_at.seconds == convert.GO_ZERO_TIME_S
    done = convert.task_status_to_proto(STATE, True, ExitStatus(3, finished_at=1700000010.0))
    assert done.completed_at.seconds == 1700000010 and done.result.exit_code == 3


@pytest.mark.parametrize(("text", "cpus"), [
    ("", ()), ("3", (3,)), ("0-2,5", (0, 1, 2, 5)), ("5, 1-2", (1, 2, 5)), ("1,1", (1,)),
])
def test_cpuset_lists(text: str, cpus: tuple[int, ...]) -> None:
    assert convert.parse_cpuset(text) == cpus
    assert convert.parse_cpuset(convert.format_cpuset(cpus)) == cpus
