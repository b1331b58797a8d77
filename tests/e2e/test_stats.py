"""TaskStats through the rig (as Nomad's stats hook calls it) for tasks started from the registry
image by the rig's task runner, against the real plugin."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from tests.fixtures.nomad import Nomad, TaskRun

pytestmark = [pytest.mark.root, pytest.mark.slow]
_N = itertools.count()


def stats_stream(nomad: Nomad, run: TaskRun, interval_s: float) -> str:
    name = f"stats{next(_N)}"
    nomad.rig.check("stats_start", instance=nomad.instance, task_id=run.task_id,
                    interval_s=interval_s, stream=name)
    return name


def poll(nomad: Nomad, stream: str, min_count: int, wait_s: float = 20) -> dict[str, Any]:
    return nomad.rig.check("stream_poll", instance=nomad.instance, stream=stream,
                           min_count=min_count, wait_s=wait_s, timeout=wait_s + 30)


def until_ended(nomad: Nomad, stream: str, wait_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + wait_s
    reply = poll(nomad, stream, 10**6, 0.1)
    while not reply["ended"] and time.monotonic() < deadline:
        reply = poll(nomad, stream, 10**6, 1)
    assert reply["ended"], "the TaskStats stream did not end"
    return reply


def stamp_ns(ts: str) -> int:
    """protojson Timestamp (RFC 3339, Z) to unix ns, without trusting float precision."""
    from google.protobuf import timestamp_pb2

    t = timestamp_pb2.Timestamp()
    t.FromJsonString(ts)
    return t.ToNanoseconds()


def test_stats_of_a_busy_task(nomad: Nomad) -> None:
    # idle first, then a busy loop: CPU must be seen moving
    run = nomad.start('command = "/bin/sh"\nargs = ["-c", "sleep 1.5; while :; do :; done"]',
                      memory=64)
    try:
        stream = stats_stream(nomad, run, 0.25)
        msgs = poll(nomad, stream, 14)["messages"]
        assert len(msgs) >= 14
        stats = [m["stats"] for m in msgs]
        stamps = [stamp_ns(s["timestamp"]) for s in stats]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        cpu = [s["agg_resource_usage"]["cpu"] for s in stats]
        mem = [s["agg_resource_usage"]["memory"] for s in stats]
        assert cpu[1]["percent"] < 5.0  # still sleeping
        assert cpu[-1]["percent"] > 10.0  # spinning
        assert {"PERCENT", "TOTAL_TICKS", "USER_MODE", "SYSTEM_MODE"} <= set(
            cpu[-1]["measured_fields"])
        # total_ticks = percent/100 * total compute / cores, from SetConfig's topology (the
        # rig's node: 2 cores x 1000 MHz)
        for c in cpu:
            assert c["total_ticks"] == pytest.approx(c["percent"] / 100 * 2000 / 2)
        last = mem[-1]
        assert int(last["usage"]) > 0 and int(last["rss"]) > 0  # uint64: strings in protojson
        assert {"RSS", "USAGE", "MAX_USAGE"} <= set(last["measured_fields"])
        assert "CACHE" not in last["measured_fields"] and int(last["cache"]) == 0
        assert poll(nomad, stream, 0, 0)["ended"] is False
        nomad.stop(run)
        reply = until_ended(nomad, stream)
        assert reply["end_error"] == ""
    finally:
        nomad.destroy(run)


def test_stats_stream_ends_when_the_task_exits(nomad: Nomad) -> None:
    run = nomad.start('command = "/bin/sleep"\nargs = ["1.5"]')
    try:
        stream = stats_stream(nomad, run, 0.2)
        reply = until_ended(nomad, stream)
        assert reply["end_error"] == ""
        assert reply["messages"]  # it sampled while the task ran
        assert nomad.wait(run)["result"]["exit_code"] == 0
        # a stream opened for an exited task ends at once, without samples
        late = until_ended(nomad, stats_stream(nomad, run, 0.2), 10)
        assert late["end_error"] == "" and not late["messages"]
    finally:
        nomad.destroy(run)


def test_stats_for_an_unknown_task_fail(nomad: Nomad) -> None:
    name = f"stats{next(_N)}"
    nomad.rig.call("stats_start", instance=nomad.instance, task_id="no/such/task", stream=name)
    reply = until_ended(nomad, name, 10)
    assert "NotFound" in reply["end_error"] and "no/such/task" in reply["end_error"]


def test_many_streams_leave_other_calls_served(nomad: Nomad) -> None:
    runs = [nomad.start('command = "/bin/sleep"\nargs = ["600"]') for _ in range(3)]
    try:
        streams = [stats_stream(nomad, runs[i % 3], 0.05) for i in range(24)]
        for s in streams:
            assert poll(nomad, s, 2)["messages"]
        for run in runs:  # lifecycle and exec calls go through while the streams run
            assert nomad.inspect(run)["task"]["state"] == "RUNNING"
            reply = nomad.rpc("ExecTask", {"task_id": run.task_id, "command": ["/bin/true"],
                                           "timeout": "10s"}, timeout=30)
            assert reply["ok"] and reply["response"]["result"]["exit_code"] == 0, reply
        counts = [len(poll(nomad, s, 0, 0)["messages"]) for s in streams]
        time.sleep(0.5)
        later = [len(poll(nomad, s, 0, 0)["messages"]) for s in streams]
        assert all(b > a for a, b in zip(counts, later, strict=True))  # every stream still flows
        for s in streams:
            nomad.rig.check("stream_cancel", instance=nomad.instance, stream=s)
    finally:
        for run in runs:
            nomad.destroy(run)
