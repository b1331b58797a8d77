"""A task's whole life through the rig's task runner: start from the registry image, logs through
the FIFOs, exit codes, signals, OOM, stop with kill_signal/kill_timeout, inspect, destroy."""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.fixtures.nomad import Nomad, TaskRun

pytestmark = [pytest.mark.root, pytest.mark.slow]


def sh(script: str) -> str:
    """A config body running ``script`` with the image's /bin/sh."""
    return f'command = "/bin/sh"\nargs = ["-c", {json.dumps(script)}]'


def finish(nomad: Nomad, run: TaskRun) -> None:
    nomad.destroy(run)
    left = nomad.leftovers()
    assert not any(run.jail in str(v) for v in left.values()), left


def test_hello_world_runs_from_the_image_and_cleans_up(nomad: Nomad) -> None:
    run = nomad.start()  # the image's own Cmd: cat /etc/hello
    res = nomad.wait(run)
    assert res["result"] == {"exit_code": 0, "signal": 0, "oom_killed": False}
    assert res["err"] == ""
    nomad.wait_for(lambda: run.stdout() == "hello from xc\n", what="the log file")
    assert run.handle["version"] >= 1
    assert run.handle["config"]["id"] == run.task_id
    assert run.driver_state["v"] == 1 and run.driver_state["task_id"] == run.task_id
    inspect = nomad.inspect(run)
    assert inspect["task"]["state"] == "EXITED"
    assert inspect["task"]["result"]["exit_code"] == 0
    assert inspect["driver"]["attributes"]["jail"] == run.jail
    finish(nomad, run)
    # idempotent: a second destroy of the same task succeeds
    assert nomad.rpc("DestroyTask", {"task_id": run.task_id, "force": True})["ok"]


def test_image_download_is_reported_as_task_events(nomad: Nomad) -> None:
    from tests.fixtures.images import busybox_built, push_image

    image = push_image(nomad.registry, "ci/xc-events", "v1", busybox_built())
    run = nomad.start(image=image)
    assert nomad.wait(run)["result"]["exit_code"] == 0

    def mine() -> list[dict[str, object]]:
        seen.extend(nomad.events())
        return [e for e in seen if e["task_id"] == run.task_id]

    seen: list[dict[str, object]] = []
    nomad.wait_for(lambda: any(str(e["message"]).startswith("Downloaded image")
                               for e in mine()), what="the download events")
    events = mine()
    assert events[0]["message"] == "Downloading image"
    assert events[0]["annotations"] == {"image": image}
    assert (events[0]["alloc_id"], events[0]["task_name"]) == (run.alloc_id, run.name)
    assert events[-1]["annotations"]["phase"] == "done"  # type: ignore[index]
    # A second task of a cached, unchanged image starts without download events.
    again = nomad.start(image=image)
    assert nomad.wait(again)["result"]["exit_code"] == 0
    time.sleep(0.5)  # let the rig's stream goroutine catch up with anything published
    later = nomad.events()
    assert not [e for e in later if e["task_id"] == again.task_id]
    finish(nomad, run)
    finish(nomad, again)


def test_logs_arrive_in_order_on_both_streams_with_nomad_env(nomad: Nomad) -> None:
    script = ("i=0; while test $i -lt 400; do echo line $i; i=$((i+1)); done; "
              "echo oops >&2; echo \"$NOMAD_TASK_NAME $NOMAD_ALLOC_DIR $NOMAD_TASK_DIR "
              "$GREETING $FROM_JOB $(id -un)\"; test -d /alloc/logs && test -d /local "
              "&& test -d /secrets && echo dirs-ok")
    run = nomad.start(sh(script), env={"FROM_JOB": "job-env"}, user="nobody")
    assert nomad.wait(run)["result"]["exit_code"] == 0
    want = [f"line {i}" for i in range(400)] + [
        f"{run.name} /alloc /local hi job-env nobody", "dirs-ok"]
    nomad.wait_for(lambda: run.stdout().splitlines() == want, what="all stdout lines")
    nomad.wait_for(lambda: run.stderr() == "oops\n", what="stderr")
    finish(nomad, run)


def test_work_dir_and_entrypoint_override(nomad: Nomad) -> None:
    run = nomad.start('entrypoint = ["/bin/sh", "-c"]\nargs = ["pwd; hostname"]\n'
                      'work_dir = "/opt"\nhostname = "web-1"')
    assert nomad.wait(run)["result"]["exit_code"] == 0
    nomad.wait_for(lambda: run.stdout() == "/opt\nweb-1\n", what="pwd and hostname")
    finish(nomad, run)


def test_volumes_volume_mounts_task_dir_mounts_and_limits(nomad: Nomad) -> None:
    shared = nomad.volume_root / "shared"
    ro = nomad.volume_root / "ro"
    for d in (shared, ro):
        d.mkdir(exist_ok=True)
    (ro / "seed").write_text("seed\n")
    script = ("echo from-task > /data/out; cat /ro/seed; "
              "touch /ro/nope 2>/dev/null && echo ro-writable || echo ro-readonly; "
              "echo local > /scratch/f; ulimit -n")
    run = nomad.start(
        sh(script) + f'\nvolumes = ["{shared}:/data"]\n'
        'mount {\n source = "local/scratch"\n target = "/scratch"\n}\nopenfiles = 256',
        volume_mounts=[{"host_path": str(ro), "task_path": "/ro", "read_only": True}])
    res = nomad.wait(run)
    assert res["result"]["exit_code"] == 0, run.stderr()
    nomad.wait_for(lambda: run.stdout() == "seed\nro-readonly\n256\n", what="the output")
    assert (shared / "out").read_text() == "from-task\n"
    assert (run.task_dir / "local" / "scratch" / "f").read_text() == "local\n"
    finish(nomad, run)


def test_exit_code_is_reported_and_wait_is_repeatable(nomad: Nomad) -> None:
    run = nomad.start(sh("exit 3"))
    results: list[dict[str, object]] = []
    waiters = [threading.Thread(target=lambda: results.append(nomad.wait(run)))
               for _ in range(3)]
    for t in waiters:
        t.start()
    for t in waiters:
        t.join(60)
    assert [r["result"] for r in results] == [{"exit_code": 3, "signal": 0,
                                               "oom_killed": False}] * 3
    assert nomad.wait(run)["result"]["exit_code"] == 3  # stored result, at once
    # StopTask on an exited task succeeds; non-force destroy of an exited task too.
    assert nomad.rpc("StopTask", {"task_id": run.task_id, "timeout": "1s"})["ok"]
    finish(nomad, run)


def test_wait_task_is_cancellable_and_others_keep_waiting(nomad: Nomad) -> None:
    run = nomad.start(sh("echo ready; while :; do sleep 0.1; done"), kill_signal="SIGKILL")
    nomad.wait_for(lambda: "ready" in run.stdout(), what="the task to start")
    results: list[dict[str, object]] = []
    long = threading.Thread(target=lambda: results.append(nomad.wait(run, timeout=60)))
    long.start()
    # A caller that gives up (Nomad cancelling its context) gets its own error ...
    short = nomad.rpc("WaitTask", {"task_id": run.task_id}, timeout=0.5)
    assert short["code"] == "DeadlineExceeded"
    assert long.is_alive()  # ... and the other waiter is still waiting
    assert nomad.stop(run)["wait"]["result"]["signal"] == 9
    long.join(30)
    assert results and results[0]["result"]["signal"] == 9  # type: ignore[index]
    finish(nomad, run)


def test_signal_task_delivers_and_kill_is_reported_as_a_signal(nomad: Nomad) -> None:
    trap = nomad.start(sh("trap 'echo got usr1; exit 7' USR1; echo ready; "
                          "while :; do sleep 0.1; done"))
    killed = nomad.start(sh("echo ready; while :; do sleep 0.1; done"))
    for run in (trap, killed):
        nomad.wait_for(lambda run=run: "ready" in run.stdout(), what="the task to start")
    assert nomad.check_rpc("InspectTask", {"task_id": trap.task_id})["task"]["state"] == \
        "RUNNING"
    nomad.check_rpc("SignalTask", {"task_id": trap.task_id, "signal": "SIGUSR1"})
    nomad.check_rpc("SignalTask", {"task_id": killed.task_id, "signal": "SIGKILL"})
    assert nomad.wait(trap)["result"] == {"exit_code": 7, "signal": 0, "oom_killed": False}
    assert nomad.wait(killed)["result"] == {"exit_code": 137, "signal": 9, "oom_killed": False}
    nomad.wait_for(lambda: "got usr1" in trap.stdout(), what="the trap's output")
    bad = nomad.rpc("SignalTask", {"task_id": trap.task_id, "signal": "SIGNOPE"})
    assert bad["code"] == "InvalidArgument" and "SIGNOPE" in bad["message"]
    exited = nomad.rpc("SignalTask", {"task_id": trap.task_id, "signal": "SIGHUP"})
    assert exited["code"] == "FailedPrecondition" and "has exited" in exited["message"]
    finish(nomad, trap)
    finish(nomad, killed)


def test_oom_kill_is_reported_as_such(nomad: Nomad) -> None:
    run = nomad.start(sh("exec dd if=/dev/zero of=/dev/null bs=64M count=1"), memory=16)
    res = nomad.wait(run, timeout=120)
    assert res["result"]["oom_killed"] is True
    assert res["result"]["signal"] == 9
    finish(nomad, run)


def test_destroy_without_force_refuses_a_running_task(nomad: Nomad) -> None:
    run = nomad.start(sh("while :; do sleep 0.1; done"))
    reply = nomad.rpc("DestroyTask", {"task_id": run.task_id, "force": False})
    assert reply["code"] == "FailedPrecondition" and "is running" in reply["message"]
    assert nomad.inspect(run)["task"]["state"] == "RUNNING"
    finish(nomad, run)  # force
    assert nomad.rpc("WaitTask", {"task_id": run.task_id})["code"] == "NotFound"


def test_stop_sends_kill_signal_and_the_task_exits_by_itself(nomad: Nomad) -> None:
    script = "trap 'echo got-usr2; exit 0' USR2; echo ready; while :; do sleep 0.1; done"
    run = nomad.start(sh(script), kill_signal="SIGUSR2", kill_timeout_s=30)
    nomad.wait_for(lambda: "ready" in run.stdout(), what="the task to start")
    reply = nomad.stop(run)
    assert reply["wait"]["result"] == {"exit_code": 0, "signal": 0, "oom_killed": False}
    nomad.wait_for(lambda: "got-usr2" in run.stdout(), what="the trap's output")
    finish(nomad, run)


def test_stop_without_kill_signal_sends_sigint(nomad: Nomad) -> None:
    script = "trap 'echo got-int; exit 5' INT; echo ready; while :; do sleep 0.1; done"
    run = nomad.start(sh(script), kill_timeout_s=30)
    nomad.wait_for(lambda: "ready" in run.stdout(), what="the task to start")
    assert nomad.stop(run)["wait"]["result"]["exit_code"] == 5
    nomad.wait_for(lambda: "got-int" in run.stdout(), what="the trap's output")
    finish(nomad, run)


def test_a_task_ignoring_sigterm_is_killed_after_the_timeout_not_before(nomad: Nomad) -> None:
    script = ("trap 'echo ignored-term' TERM; echo ready; i=0; "
              "while :; do echo tick $i; i=$((i+1)); sleep 0.1; done")
    run = nomad.start(sh(script), kill_signal="SIGTERM", kill_timeout_s=2)
    nomad.wait_for(lambda: "tick 3" in run.stdout(), what="the task to tick")
    reply = nomad.stop(run)
    assert reply["wait"]["result"]["signal"] == 9  # killed, not exited by itself
    assert reply["stop_ms"] >= 2000  # StopTask returned no earlier than kill_timeout
    lines = run.stdout().splitlines()
    after = lines[lines.index("ignored-term") + 1:]
    # The task saw SIGTERM and went on ticking until the kill: it was not killed at once.
    assert sum(1 for line in after if line.startswith("tick")) >= 3, lines[-10:]
    finish(nomad, run)


def test_a_moved_tag_is_pulled_only_with_force_pull(nomad: Nomad) -> None:
    """Nomad's docker semantics: a tag present locally is used as is unless force_pull."""
    from tests.fixtures.images import (
        build_image,
        busybox_base,
        f,
        opt_layer,
        push_image,
        tar_bytes,
    )

    base = tar_bytes(opt_layer() + busybox_base())

    def version(v: str) -> object:
        return build_image([base, tar_bytes([f("etc/version", v)])])

    image = push_image(nomad.registry, "ci/xc-moving", "v", version("one"))
    cat = sh("cat /etc/version")
    first = nomad.start(cat, image=image)
    assert nomad.wait(first)["result"]["exit_code"] == 0
    push_image(nomad.registry, "ci/xc-moving", "v", version("two"))
    cached = nomad.start(cat, image=image)
    assert nomad.wait(cached)["result"]["exit_code"] == 0
    forced = nomad.start(cat + "\nforce_pull = true", image=image)
    assert nomad.wait(forced)["result"]["exit_code"] == 0
    nomad.wait_for(lambda: forced.stdout() == "two", what="the forced pull's log")
    nomad.wait_for(lambda: first.stdout() == "one" and cached.stdout() == "one",
                   what="the cached tag's logs")
    for run in (first, cached, forced):
        finish(nomad, run)


def test_reserved_cores_pin_the_task(nomad: Nomad) -> None:
    """resources { cores = 1 }: Nomad reserves a host core; the task may run only there."""
    run = nomad.start(sh("grep Cpus_allowed_list /proc/self/status"), cores=1, cpu=1000)
    assert nomad.wait(run)["result"]["exit_code"] == 0
    nomad.wait_for(lambda: run.stdout().split() == ["Cpus_allowed_list:", "0"],
                   what="the task's allowed CPUs")
    finish(nomad, run)
