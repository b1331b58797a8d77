"""Python side of the Nomad-client rig: build ``nomadsim`` once, run ``nomadsim serve``, talk to it.

The rig speaks one JSON object per line in both directions. Every command gets an ``id``; the
reply with the same id is the answer, so slow calls (WaitTask, stream polls) can overlap.

    rig = Rig.start(build_rig())
    rig.check("launch", argv=[sys.executable, "-m", "driver"], env={...})
    info = rig.check("plugin_info")["info"]
    rig.stop()                       # kills every plugin the rig launched, then the rig

Everything the rig starts is ended by pid: plugins through the rig (go-plugin's Kill), and, if the
rig itself is gone or stuck, the remembered plugin pids directly (checked against their start time
so a recycled pid is never hit).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RIG_DIR = Path(__file__).resolve().parent
BIN_DIR = RIG_DIR / "bin"
GO_FALLBACK = Path("/usr/local/go/bin/go")


class RigError(Exception):
    """A command the rig answered with ``ok: false``; ``response`` holds the whole answer."""

    def __init__(self, cmd: str, response: Mapping[str, Any]) -> None:
        self.cmd = cmd
        self.response = dict(response)
        super().__init__(f"{cmd}: {response.get('error')}")

    @property
    def stage(self) -> str | None:
        return self.response.get("stage")

    @property
    def code(self) -> str | None:
        return self.response.get("code")


def go_binary() -> str:
    found = shutil.which("go")
    if found:
        return found
    if GO_FALLBACK.exists():
        return str(GO_FALLBACK)
    raise FileNotFoundError(
        "the Go toolchain is not installed (no `go` on PATH or in /usr/local/go)"
    )


def build_rig(out_dir: Path = BIN_DIR) -> Path:
    """``go build`` the rig (Go caches repeated builds) and return the binary's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "nomadsim"
    env = dict(os.environ)
    # Offline after `go mod download`; no VCS stamping (the checkout may belong to another user).
    env["GOFLAGS"] = (env.get("GOFLAGS", "") + " -mod=readonly -buildvcs=false").strip()
    proc = subprocess.run(
        [go_binary(), "build", "-o", str(out), "."],
        cwd=RIG_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"go build of the rig failed:\n{proc.stdout}{proc.stderr}")
    return out


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: identifies this process incarnation."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Rig:
    """A running ``nomadsim serve`` process."""

    def __init__(self, proc: subprocess.Popen[bytes], stderr_path: Path) -> None:
        self._proc = proc
        self.stderr_path = stderr_path
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: dict[int, dict[str, Any]] = {}
        self._closed = False
        self._plugins: dict[int, str | None] = {}  # pid -> start time, for the last-resort kill
        self.launches: dict[str, dict[str, Any]] = {}  # instance -> its launch answer (pid, addr)
        self._reader = threading.Thread(target=self._read, name="nomadsim-reader", daemon=True)
        self._reader.start()

    @classmethod
    def start(
        cls, binary: Path, stderr_path: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Rig:
        if stderr_path is None:
            stderr_path = Path(f"/tmp/nomadsim-{os.getpid()}-{time.monotonic_ns()}.log")
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen(
                [str(binary), "serve"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                env={**os.environ, **(env or {})},
            )
        return cls(proc, stderr_path)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                if isinstance(msg.get("id"), int):
                    self._replies[msg["id"]] = msg
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def call(self, cmd: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """Send one command and return the rig's answer, ``ok`` true or false."""
        ident = next(self._ids)
        line = json.dumps({"id": ident, "cmd": cmd, **params}) + "\n"
        assert self._proc.stdin is not None
        with self._write_lock:
            self._proc.stdin.write(line.encode())
            self._proc.stdin.flush()
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._replies:
                left = deadline - time.monotonic()
                if self._closed:
                    raise RuntimeError(f"{cmd}: the rig exited; its log: {self.stderr_tail()}")
                if left <= 0:
                    raise TimeoutError(f"{cmd}: no answer from the rig within {timeout} s")
                self._cond.wait(left)
            reply = self._replies.pop(ident)
        if cmd in ("launch", "reattach") and reply.get("ok") and reply.get("pid"):
            self._plugins[int(reply["pid"])] = _start_time(int(reply["pid"]))
            self.launches[str(params.get("instance", "main"))] = reply
        return reply

    def check(self, cmd: str, timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """Like :meth:`call`, but raise :class:`RigError` when the answer is not ok."""
        reply = self.call(cmd, timeout=timeout, **params)
        if not reply.get("ok"):
            raise RigError(cmd, reply)
        return reply

    def stderr_tail(self, limit: int = 4000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def crash(self) -> None:
        """SIGKILL the rig, like a Nomad agent crash: its plugins live on with broken pipes.

        Their pids stay remembered, so :meth:`stop` still ends them if no other rig does.
        """
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(timeout=10)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop every plugin the rig launched, then the rig; by pid, never by name."""
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, RuntimeError, TimeoutError):
                self.call("quit", timeout=timeout)
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)
        for pid, started in self._plugins.items():
            if started is not None and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            self.stderr_path.unlink()


def run_agent_start(
    binary: Path,
    plugin_dir: Path,
    config: Path,
    *,
    watch_s: float = 0.0,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    extra: Sequence[str] = (),
) -> subprocess.CompletedProcess[str]:
    """Run ``nomadsim agent-start`` to completion."""
    argv = [str(binary), "agent-start", "--plugin-dir", str(plugin_dir), "--config", str(config)]
    if watch_s:
        argv += ["--watch-s", str(watch_s)]
    return subprocess.run(
        [*argv, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
