"""``nomad alloc exec`` (ExecTaskStreaming) and script checks (ExecTask) through the rig, in tasks
started from the registry image by the rig's task runner, against the real plugin."""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.nomad import Nomad, TaskRun

pytestmark = [pytest.mark.root, pytest.mark.slow]

_N = itertools.count()
SLEEPER = 'command = "/bin/sleep"\nargs = ["600"]'


@pytest.fixture
def sleeper(nomad: Nomad) -> Iterator[TaskRun]:
    run = nomad.start(SLEEPER)
    yield run
    nomad.destroy(run)


class ExecStream:
    """One ExecTaskStreaming call as Nomad's client makes it, driven through the rig."""

    def __init__(self, nomad: Nomad, task_id: str, command: list[str], tty: bool,
                 **first: Any) -> None:
        self.nomad = nomad
        self.name = f"exec{next(_N)}"
        self.task_id = task_id
        self.nomad.rig.check("exec_stream_start", instance=nomad.instance, stream=self.name,
                             request={"setup": {"task_id": task_id, "command": command,
                                                "tty": tty}, **first})

    def send(self, request: dict[str, Any]) -> None:
        self.nomad.rig.check("exec_stream_send", instance=self.nomad.instance, stream=self.name,
                             request=request)

    def stdin(self, data: bytes) -> None:
        self.send({"stdin": {"data": base64.b64encode(data).decode()}})

    def close_stdin(self) -> None:
        self.send({"stdin": {"close": True}})

    def poll(self, min_count: int = 1, wait_s: float = 5) -> dict[str, Any]:
        return self.nomad.rig.check("stream_poll", instance=self.nomad.instance,
                                    stream=self.name, min_count=min_count, wait_s=wait_s,
                                    timeout=wait_s + 30)

    def until_ended(self, wait_s: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + wait_s
        reply = self.poll(10**6, 0.1)
        while not reply["ended"] and time.monotonic() < deadline:
            reply = self.poll(10**6, 1)
        assert reply["ended"], f"exec stream still open after {wait_s}s: {reply['messages']}"
        return reply

    def until_output(self, needle: bytes, wait_s: float = 20) -> None:
        deadline = time.monotonic() + wait_s
        while needle not in output(self.poll(10**6, 0.2)["messages"], "stdout"):
            assert time.monotonic() < deadline, f"no {needle!r} in the exec output"

    def disconnect(self) -> None:
        """The user goes away: the rig cancels the call's context."""
        self.nomad.rig.check("stream_cancel", instance=self.nomad.instance, stream=self.name)


def output(messages: list[dict[str, Any]], stream: str) -> bytes:
    return b"".join(base64.b64decode(m[stream]["data"] or b"") for m in messages
                    if m.get(stream) and m[stream].get("data"))


def closes(messages: list[dict[str, Any]], stream: str) -> int:
    return sum(1 for m in messages if m.get(stream) and m[stream].get("close"))


def exec_task(nomad: Nomad, run: TaskRun, command: list[str], timeout: str = "10s"
              ) -> dict[str, Any]:
    return nomad.rpc("ExecTask", {"task_id": run.task_id, "command": command,
                                  "timeout": timeout}, timeout=60)


def processes(nomad: Nomad, run: TaskRun) -> str:
    reply = exec_task(nomad, run, ["/bin/ps", "-o", "args"])
    assert reply["ok"], reply
    return base64.b64decode(reply["response"]["stdout"]).decode()


def test_tty_session_runs_a_shell_and_reports_its_exit_code(nomad: Nomad,
                                                            sleeper: TaskRun) -> None:
    ex = ExecStream(nomad, sleeper.task_id, ["/bin/sh"], tty=True)
    ex.send({"tty_size": {"height": 40, "width": 120}})
    ex.send({})  # the API's heartbeat
    ex.until_output(b"# ")  # the prompt: a user types once it is there
    ex.stdin(b"echo hello-$((6*7)) $NOMAD_TASK_NAME\n")
    ex.until_output(b"hello-42 " + sleeper.name.encode())
    ex.send({})
    ex.stdin(b"exit 3\n")
    reply = ex.until_ended()
    msgs = reply["messages"]
    assert reply["end_error"] == ""  # the stream ends OK
    assert msgs[-1]["exited"] is True and msgs[-1]["result"]["exit_code"] == 3
    assert not any(m["exited"] for m in msgs[:-1])
    assert output(msgs, "stderr") == b"" and closes(msgs, "stderr") == 0  # a tty merges them
    assert closes(msgs, "stdout") == 1
    assert b"hello-42" in output(msgs, "stdout")


def test_tty_size_with_the_setup_and_resized_later(nomad: Nomad, sleeper: TaskRun) -> None:
    ex = ExecStream(nomad, sleeper.task_id, ["/bin/sh"], tty=True,
                    tty_size={"height": 50, "width": 132})
    ex.until_output(b"# ")
    ex.stdin(b"/bin/busybox stty size\n")
    ex.until_output(b"50 132")
    ex.send({"tty_size": {"height": 24, "width": 80}})
    ex.stdin(b"sleep 0.3; /bin/busybox stty size; exit\n")
    reply = ex.until_ended()
    assert b"24 80" in output(reply["messages"], "stdout")
    assert reply["messages"][-1]["result"]["exit_code"] == 0


def test_without_tty_stdout_and_stderr_are_separate_and_stdin_closes(
    nomad: Nomad, sleeper: TaskRun
) -> None:
    script = "echo to-out; echo to-err >&2; while read l; do echo got-$l; done; exit 4"
    ex = ExecStream(nomad, sleeper.task_id, ["/bin/sh", "-c", script], tty=False)
    ex.stdin(b"abc\n")
    ex.stdin(b"def\n")
    ex.close_stdin()  # ends the read loop
    reply = ex.until_ended()
    msgs = reply["messages"]
    assert reply["end_error"] == ""
    assert output(msgs, "stdout") == b"to-out\ngot-abc\ngot-def\n"
    assert output(msgs, "stderr") == b"to-err\n"
    assert (closes(msgs, "stdout"), closes(msgs, "stderr")) == (1, 1)
    assert msgs[-1]["exited"] is True and msgs[-1]["result"]["exit_code"] == 4


@pytest.mark.parametrize("tty", [True, False])
def test_client_going_away_kills_the_exec(nomad: Nomad, sleeper: TaskRun, tty: bool) -> None:
    marker = f"{4200 + next(_N)}.5"
    ex = ExecStream(nomad, sleeper.task_id, ["/bin/sleep", marker], tty=tty)
    nomad.wait_for(lambda: f"sleep {marker}" in processes(nomad, sleeper), what="the exec")
    ex.disconnect()
    nomad.wait_for(lambda: f"sleep {marker}" not in processes(nomad, sleeper), timeout=15,
                   what="the exec'd process to be killed")
    assert "sleep 600" in processes(nomad, sleeper)  # the task itself is untouched


def test_exec_task_captures_output_and_exit_code(nomad: Nomad, sleeper: TaskRun) -> None:
    reply = exec_task(nomad, sleeper, ["/bin/sh", "-c", "echo ok $NOMAD_TASK_NAME; echo warn >&2;"
                                                        " exit 2"])
    assert reply["ok"], reply
    r = reply["response"]
    assert base64.b64decode(r["stdout"]) == f"ok {sleeper.name}\n".encode()
    assert base64.b64decode(r["stderr"]) == b"warn\n"
    assert r["result"]["exit_code"] == 2


def test_exec_task_timeout_kills_the_command(nomad: Nomad, sleeper: TaskRun) -> None:
    marker = f"{4300 + next(_N)}.5"
    reply = exec_task(nomad, sleeper, ["/bin/sh", "-c", f"echo partial; exec sleep {marker}"],
                      timeout="1s")
    assert reply["ok"], reply
    r = reply["response"]
    assert r["result"]["exit_code"] == 137 and r["result"]["signal"] == 9
    assert base64.b64decode(r["stdout"]) == b"partial\n"
    assert b"did not finish within 1s" in base64.b64decode(r["stderr"])
    assert f"sleep {marker}" not in processes(nomad, sleeper)


def test_exec_in_an_exited_task_is_refused(nomad: Nomad) -> None:
    run = nomad.start('command = "/bin/true"')
    try:
        nomad.wait(run)
        reply = exec_task(nomad, run, ["/bin/true"])
        assert not reply["ok"] and reply["code"] == "FailedPrecondition", reply
        assert "not running" in reply["message"]
        ex = ExecStream(nomad, run.task_id, ["/bin/sh"], tty=True)
        end = ex.until_ended()
        assert "not running" in end["end_error"] and not end["messages"]
    finally:
        nomad.destroy(run)
