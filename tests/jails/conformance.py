"""One behavioural suite over the ``jails.Runtime`` interface.

A backend's test module subclasses ``RuntimeConformance`` and provides the ``rt`` (a Runtime) and
``rootfs`` (a busybox rootfs directory) fixtures. The Linux backend runs it for real on runc; the
FreeBSD backend runs it against the fake FreeBSD host (tests/fixtures/fakefreebsd.py), and what a
fake cannot show is pinned by exact command tables (test_freebsd.py).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import resource
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jails import ExitStatus, JailSpec, Limits, Mount, Runtime, Tmpfs
from jails.errors import JailExists, JailNotFound, NotRunning, SpecError
from tests.fixtures.execs import run_in
from tests.fixtures.sweep import test_name

MiB = 1024 * 1024
SpecFactory = Callable[..., JailSpec]
_COUNTER = itertools.count()


class RuntimeConformance:
    # test name -> why this backend's run of the suite cannot check it (asserted elsewhere)
    unsupported: dict[str, str] = {}

    @pytest.fixture(autouse=True)
    def _skip_unsupported(self, request: pytest.FixtureRequest) -> None:
        reason = self.unsupported.get(request.node.originalname)
        if reason:
            pytest.skip(reason)

    @pytest.fixture
    def make_spec(self, rt: Runtime, rootfs: Path, tmp_path: Path) -> Iterator[SpecFactory]:
        made: list[str] = []

        def make(argv: tuple[str, ...] | list[str], **kw: object) -> JailSpec:
            n = next(_COUNTER)
            base: dict[str, object] = {
                "name": test_name(f"t{n}"),
                "rootfs": rootfs,
                "argv": tuple(argv),
                "stdout_path": tmp_path / f"stdout{n}",
                "stderr_path": tmp_path / f"stderr{n}",
            }
            base.update(kw)
            spec = JailSpec(**base)  # type: ignore[arg-type]
            made.append(spec.name)
            return spec

        yield make
        for name in made:
            rt.destroy(name)

    # ---- run and exit ----------------------------------------------------------------------

    def test_exit_code_and_logs_to_files(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
        h = rt.start(spec)
        assert h.pid > 0 and h.supervisor_pid > 0
        st = rt.wait(spec.name, 20)
        assert (st.exit_code, st.signal, st.oom_killed) == (3, 0, False)
        assert rt.status(spec.name) == "exited"
        assert rt.exit_status(spec.name) == st
        assert spec.stdout_path.read_text() == "out\n"
        assert spec.stderr_path.read_text() == "err\n"

    def test_logs_to_fifos_with_late_reader(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sh", "-c", "echo to-out; echo to-err >&2"])
        os.mkfifo(spec.stdout_path)
        os.mkfifo(spec.stderr_path)
        rt.start(spec)  # no reader yet: must not block
        # The reader arrives only after the task has ended: nothing it wrote may be lost.
        assert rt.wait(spec.name, 20).exit_code == 0
        got: dict[str, bytes] = {}

        def reader(key: str, path: Path) -> None:
            with open(path, "rb") as f:
                got[key] = f.read()

        threads = [
            threading.Thread(target=reader, args=(k, p), daemon=True)
            for k, p in (("out", spec.stdout_path), ("err", spec.stderr_path))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert got == {"out": b"to-out\n", "err": b"to-err\n"}

    def test_logs_to_fifos_with_reader_first(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sh", "-c", "for i in 1 2 3; do echo line$i; done"])
        os.mkfifo(spec.stdout_path)
        spec.stderr_path.write_text("")
        got: list[bytes] = []

        def reader() -> None:
            with open(spec.stdout_path, "rb") as f:
                got.append(f.read())

        t = threading.Thread(target=reader, daemon=True)
        t.start()
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        t.join(10)
        assert got == [b"line1\nline2\nline3\n"]

    def test_env_cwd_hostname_user(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(
            ["/bin/sh", "-c", 'echo "$FOO|$(pwd)|$(hostname)|$(id -u):$(id -g):$(id -G)"'],
            env={"FOO": "bar baz"},
            cwd="/tmp",
            hostname="xchost",
            user="xcuser",
        )
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text() == "bar baz|/tmp|xchost|1000:1000:1000 2000\n"

    def test_numeric_user_and_group(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sh", "-c", "echo $(id -u):$(id -g)"], user="4321", group="65534")
        rt.start(spec)
        rt.wait(spec.name, 20)
        assert spec.stdout_path.read_text() == "4321:65534\n"

    def test_unknown_user_rejected_before_side_effects(
        self, rt: Runtime, make_spec: SpecFactory
    ) -> None:
        spec = make_spec(["/bin/true"], user="nosuchuser")
        with pytest.raises(SpecError) as ei:
            rt.start(spec)
        assert ei.value.field == "user"
        assert not rt.exists(spec.name)

    def test_missing_rootfs_rejected(
        self, rt: Runtime, make_spec: SpecFactory, tmp_path: Path
    ) -> None:
        spec = make_spec(["/bin/true"], rootfs=tmp_path / "nope")
        with pytest.raises(SpecError) as ei:
            rt.start(spec)
        assert ei.value.field == "rootfs"
        assert not rt.exists(spec.name)

    def test_root_made_during_the_start_is_waited_for(
        self, rt: Runtime, make_spec: SpecFactory, rootfs: Path, tmp_path: Path
    ) -> None:
        # The driver clones the root beside the start: the runtime gets the path it will have
        # and a callable that waits for it, and runs in the root that callable returns.
        later = tmp_path / "clone-under-way"
        spec = make_spec(["/bin/true"], rootfs=later)
        calls: list[bool] = []

        def ready() -> Path:
            calls.append(rt.exists(spec.name))
            return rootfs

        rt.start(spec, rootfs_ready=ready)
        assert calls == [False]  # asked once, before the task was published
        assert rt.wait(spec.name, 20).exit_code == 0
        rt.destroy(spec.name)

    def test_a_root_whose_users_are_known_is_prepared_before_it_is_there(
        self, rt: Runtime, make_spec: SpecFactory, rootfs: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Users are looked up once per root_id (the image's layer chain): a backend whose
        # _prepare reads nothing else of the root writes the task's config while the clone is
        # still being made; one that reads more waits for the root every time.
        order: list[str] = []
        real_prepare = rt._prepare

        def prepare(spec: JailSpec, staging: Path) -> Any:
            order.append(f"prepare {spec.rootfs.name}")
            return real_prepare(spec, staging)

        monkeypatch.setattr(rt, "_prepare", prepare)

        def start(under: Path) -> None:
            spec = make_spec(["/bin/sh", "-c", "id -u"], rootfs=under, user="nobody",
                             root_id="chain-1")

            def ready() -> Path:
                order.append("root")
                return rootfs

            rt.start(spec, rootfs_ready=ready)
            assert rt.wait(spec.name, 20).exit_code == 0
            assert spec.stdout_path.read_text().strip() == "65534"  # the image's nobody

        start(rootfs)  # the first start of chain-1 looks into the root
        assert order == ["root", f"prepare {rootfs.name}"]
        order.clear()
        start(rootfs)
        early = not rt.prepare_needs_root
        assert order == ([f"prepare {rootfs.name}", "root"] if early else
                         ["root", f"prepare {rootfs.name}"])
        order.clear()
        start(tmp_path / "moved")  # the root came elsewhere: made again for where it is
        assert order == (["prepare moved", "root", f"prepare {rootfs.name}"] if early else
                         ["root", f"prepare {rootfs.name}"])

    def test_root_that_never_came_fails_start_cleanly(
        self, rt: Runtime, make_spec: SpecFactory, tmp_path: Path
    ) -> None:
        spec = make_spec(["/bin/true"], rootfs=tmp_path / "clone-under-way")

        def failed() -> Path:
            raise OSError(28, "No space left on device")

        with pytest.raises(OSError, match="No space left"):
            rt.start(spec, rootfs_ready=failed)
        assert not rt.exists(spec.name)
        with pytest.raises(SpecError) as ei:  # a root that is not there after all
            rt.start(spec, rootfs_ready=lambda: tmp_path / "still-nothing")
        assert ei.value.field == "rootfs"
        assert not rt.exists(spec.name)
        assert rt.names() == []

    def test_missing_command_fails_start_cleanly(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/no/such/binary"])
        with pytest.raises(Exception) as ei:
            rt.start(spec)
        assert "/no/such/binary" in str(ei.value)
        assert not rt.exists(spec.name)
        rt.start(make_spec(["/bin/true"], name=spec.name))  # the name is free again
        assert rt.wait(spec.name, 20).exit_code == 0

    def test_start_twice_is_refused(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "30"])
        rt.start(spec)
        with pytest.raises(JailExists):
            rt.start(spec)
        rt.destroy(spec.name)

    # ---- signals and stop ------------------------------------------------------------------

    def test_signal_delivered_to_task(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(
            [
                "/bin/sh",
                "-c",
                "trap 'echo got-usr1; exit 42' USR1; echo ready; while :; do sleep 0.05; done",
            ]
        )
        rt.start(spec)
        _wait_for_text(spec.stdout_path, "ready")
        rt.signal(spec.name, signal.SIGUSR1)
        st = rt.wait(spec.name, 20)
        assert (st.exit_code, st.signal) == (42, 0)
        assert "got-usr1" in spec.stdout_path.read_text()
        with pytest.raises(NotRunning):
            rt.signal(spec.name, signal.SIGUSR1)

    def test_kill_signal_reported(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "30"])
        rt.start(spec)
        rt.signal(spec.name, signal.SIGKILL)
        st = rt.wait(spec.name, 20)
        assert (st.exit_code, st.signal, st.oom_killed) == (128 + 9, 9, False)

    def test_stop_graceful(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(
            ["/bin/sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done"]
        )
        rt.start(spec)
        _wait_for_text(spec.stdout_path, "ready")
        st = rt.stop(spec.name, signal.SIGTERM, 10)
        assert (st.exit_code, st.signal) == (0, 0)

    def test_stop_escalates_to_kill(self, rt: Runtime, make_spec: SpecFactory) -> None:
        # The task ignores SIGTERM: only the escalation can end it.
        spec = make_spec(
            ["/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done"]
        )
        rt.start(spec)
        _wait_for_text(spec.stdout_path, "ready")
        t0 = time.monotonic()
        st = rt.stop(spec.name, signal.SIGTERM, 0.3)
        assert time.monotonic() - t0 >= 0.3
        assert st.signal == signal.SIGKILL
        assert rt.status(spec.name) == "exited"
        assert rt.stop(spec.name, signal.SIGTERM, 0.3) == st  # stopping an exited task is a no-op

    def test_wait_timeout(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "30"])
        rt.start(spec)
        with pytest.raises(TimeoutError):
            rt.wait(spec.name, 0.2)
        assert rt.status(spec.name) == "running"
        rt.destroy(spec.name)

    def test_a_waiters_backstop_looks_keep_one_watch(
        self, rt: Runtime, make_spec: SpecFactory, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Hundreds of waiters each look now and then on their own: a look must not reopen the
        # process handles (or re-read task.json), and must still notice the exit at once.
        import jails.runtime

        opened = []
        real_open = jails.runtime.ProcWatch.open

        def counting_open(procs: Any) -> Any:
            opened.append(procs)
            return real_open(procs)

        monkeypatch.setattr(jails.runtime, "WAIT_SLICE_S", 0.02)
        monkeypatch.setattr(jails.runtime.ProcWatch, "open", staticmethod(counting_open))
        spec = make_spec(["/bin/sleep", "30"])
        rt.start(spec)
        with pytest.raises(TimeoutError):
            rt.wait(spec.name, 0.5)  # about 25 looks
        assert len(opened) == 1 and len(opened[0]) == 2  # the supervisor and the task
        done: list[ExitStatus] = []
        waiter = threading.Thread(target=lambda: done.append(rt.wait(spec.name)))
        waiter.start()
        rt.signal(spec.name, signal.SIGKILL)
        waiter.join(30)
        assert done and done[0].signal == signal.SIGKILL
        rt.destroy(spec.name)

    def test_wait_with_descriptors_above_fd_setsize(
        self, rt: Runtime, make_spec: SpecFactory
    ) -> None:
        # A plugin serving ~100 tasks holds over 1024 descriptors (open cgroup files, waiters'
        # pidfds, streams); a waiter must keep waiting on a running task all the same.
        spec = make_spec(["/bin/sleep", "30"])
        rt.start(spec)
        with _descriptors_in_use_up_to(1100):
            with pytest.raises(TimeoutError):
                rt.wait(spec.name, 0.2)
            assert rt.status(spec.name) == "running"
            res = run_in(rt, spec.name, ["/bin/sh", "-c", "echo still-here"], 10, tty=True)
            assert res.exit_code == 0 and b"still-here" in res.stdout
            st = rt.stop(spec.name, signal.SIGKILL, 10)
        assert st.signal == signal.SIGKILL

    # ---- exec ------------------------------------------------------------------------------

    def test_exec_captures_output_and_code(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "60"], user="xcuser", env={"FROM_SPEC": "1"})
        rt.start(spec)
        res = run_in(
            rt,
            spec.name,
            ["/bin/sh", "-c", 'echo "$FROM_SPEC$EXTRA $(id -u) $(pwd)"; echo e >&2; exit 5'],
            10,
            env={"EXTRA": "x"},
        )
        assert (res.exit_code, res.stdout, res.stderr) == (5, b"1x 1000 /\n", b"e\n")
        rt.destroy(spec.name)

    def test_exec_timeout_kills_the_command(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "60"])
        rt.start(spec)
        res = run_in(rt, spec.name, ["/bin/sh", "-c", "echo partial; exec sleep 77"], 0.5)
        assert res.timed_out and res.stdout == b"partial\n"
        ps = run_in(rt, spec.name, ["/bin/ps", "-o", "args"], 10).stdout.decode()
        assert "sleep 77" not in ps
        rt.destroy(spec.name)

    def test_exec_with_tty(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "60"])
        rt.start(spec)
        res = run_in(
            rt,
            spec.name, ["/bin/sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo is-a-tty"], 10, tty=True
        )
        assert res.exit_code == 0
        assert b"is-a-tty" in res.stdout
        res = run_in(rt, spec.name, ["/bin/sh", "-c", "[ -t 1 ] || echo no-tty"], 10)
        assert res.stdout == b"no-tty\n"
        rt.destroy(spec.name)

    def test_exec_interactive_tty_resize(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "60"])
        rt.start(spec)
        ie = rt.exec_interactive(spec.name, ["/bin/sh"], tty=True)
        try:
            assert ie.master_fd is not None
            os.write(ie.master_fd, b"echo READY$((1+1))\n")
            out = _read_until(ie.master_fd, b"READY2", 10)
            ie.resize(101, 37)
            time.sleep(0.2)  # runc applies the size on SIGWINCH
            os.write(ie.master_fd, b"stty size; exit 3\n")
            out += _read_until(ie.master_fd, None, 10)
            assert ie.wait(10) == 3
        finally:
            ie.close()
        assert b"37 101" in out
        rt.destroy(spec.name)

    def test_exec_interactive_initial_size(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "60"])
        rt.start(spec)
        # runc copies the size into the container's pty just after the command starts (and the
        # kernel then sends SIGWINCH), so the command looks a moment later.
        argv = ["/bin/sh", "-c", "sleep 0.5; stty size"]
        ie = rt.exec_interactive(spec.name, argv, tty=True, size=(90, 31))
        try:
            assert ie.master_fd is not None
            out = _read_until(ie.master_fd, None, 10)
            assert ie.wait(10) == 0
        finally:
            ie.close()
        assert b"31 90" in out

    def test_exec_interactive_pipes(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "60"])
        rt.start(spec)
        ie = rt.exec_interactive(spec.name, ["/bin/sh", "-c", "tr a-z A-Z; exit 4"], tty=False)
        assert ie.stdin is not None and ie.stdout is not None
        ie.stdin.write(b"hello\n")
        ie.stdin.close()
        assert ie.stdout.read() == b"HELLO\n"
        assert ie.wait(10) == 4
        ie.close()
        rt.destroy(spec.name)

    def test_exec_on_exited_task(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/true"])
        rt.start(spec)
        rt.wait(spec.name, 20)
        with pytest.raises(NotRunning):
            run_in(rt, spec.name, ["/bin/true"], 5)

    # ---- stats and limits ------------------------------------------------------------------

    @pytest.mark.racct
    def test_stats_move(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sh", "-c", "while :; do :; done"])
        rt.start(spec)
        first = rt.stats(spec.name)
        time.sleep(0.4)
        second = rt.stats(spec.name)
        assert second.cpu_total_ns > first.cpu_total_ns
        assert second.cpu_percent > 10.0
        assert second.memory_usage_bytes > 0
        assert second.pids >= 1
        assert "cpu_total_ns" in second.measured
        # what a TaskStats stream reads: the same times and memory, cumulative, no percent
        lean = rt.sample(spec.name)
        assert lean.cpu_total_ns >= second.cpu_total_ns
        assert lean.memory_usage_bytes > 0 and lean.memory_rss_bytes > 0
        assert "memory_usage_bytes" in lean.measured
        rt.destroy(spec.name)

    @pytest.mark.racct
    def test_memory_limit_oom_kill_reported(self, rt: Runtime, make_spec: SpecFactory) -> None:
        # 128 MiB touched at once, then held: the memory cgroup kills during the fill; FreeBSD's
        # racct samples RSS about once a second, so the task must stay over the limit until then.
        spec = make_spec(
            ["/bin/awk", 'BEGIN { s = sprintf("%134217728s", ""); while (1) {} }'],
            limits=Limits(memory_bytes=16 * MiB),
        )
        rt.start(spec)
        st = rt.wait(spec.name, 30)
        assert st.oom_killed
        assert st.signal == signal.SIGKILL

    @pytest.mark.racct
    def test_under_memory_limit_no_oom(self, rt: Runtime, make_spec: SpecFactory) -> None:
        # 16 MiB held for longer than FreeBSD's once-a-second RSS sampling, under the hard limit.
        spec = make_spec(
            ["/bin/awk", 'BEGIN { s = sprintf("%16777216s", ""); system("sleep 2") }'],
            limits=Limits(memory_bytes=32 * MiB, memory_max_bytes=64 * MiB),
        )
        rt.start(spec)
        st = rt.wait(spec.name, 30)
        assert (st.exit_code, st.oom_killed) == (0, False)

    @pytest.mark.racct
    def test_pids_and_open_files_limits(self, rt: Runtime, make_spec: SpecFactory) -> None:
        # The limit counts threads too, and runc's own (Go) exec helper needs a few of them.
        spec = make_spec(["/bin/sleep", "60"], limits=Limits(max_processes=16, open_files=64))
        rt.start(spec)
        res = run_in(rt, spec.name, ["/bin/sh", "-c", "ulimit -n"], 10)
        assert res.stdout == b"64\n", res
        res = run_in(
            rt,
            spec.name,
            ["/bin/sh", "-c", "for i in $(seq 30); do sleep 5 >/dev/null 2>&1 & done; echo done"],
            20,
        )
        assert b"fork" in res.stderr.lower() or res.exit_code != 0
        assert rt.stats(spec.name).pids <= 16
        rt.destroy(spec.name)

    @pytest.mark.racct
    def test_cpu_limit_enforced(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sh", "-c", "while :; do :; done"], limits=Limits(cpu_percent=20))
        rt.start(spec)
        rt.stats(spec.name)
        time.sleep(1.0)
        pct = rt.stats(spec.name).cpu_percent
        assert 0 < pct < 45, pct
        rt.destroy(spec.name)

    # ---- mounts ----------------------------------------------------------------------------

    def test_mounts_visible_and_read_only(
        self, rt: Runtime, make_spec: SpecFactory, tmp_path: Path
    ) -> None:
        alloc, local = tmp_path / "alloc", tmp_path / "local"
        alloc.mkdir()
        local.mkdir()
        (local / "conf").write_text("from-host\n")
        hostfile = tmp_path / "resolv.conf"
        hostfile.write_text("nameserver 127.0.0.53\n")
        spec = make_spec(
            [
                "/bin/sh",
                "-c",
                "cat /local/conf; echo w > /alloc/out && echo alloc-rw; "
                "echo w > /local/x 2>/dev/null || echo local-ro; "
                "cat /etc/xc.conf; echo x >> /etc/xc.conf 2>/dev/null || echo file-ro",
            ],
            mounts=[
                Mount(alloc, "/alloc"),
                Mount(local, "/local", readonly=True),
                Mount(hostfile, "/etc/xc.conf", readonly=True),
            ],
        )
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text() == (
            "from-host\nalloc-rw\nlocal-ro\nnameserver 127.0.0.53\nfile-ro\n"
        )
        assert (alloc / "out").read_text() == "w\n"
        assert not (local / "x").exists()

    def test_tmpfs_mounts_writable_sized_and_moded(
        self, rt: Runtime, make_spec: SpecFactory
    ) -> None:
        spec = make_spec(
            [
                "/bin/sh",
                "-c",
                "echo hi > /scratch/f && cat /scratch/f; "
                "stat -c '%a %u' /scratch /priv; "
                "(cat /bin/busybox > /scratch/big) 2>&1 | grep -o 'No space left'; "  # ~2 MB
                "echo x > /priv/f 2>/dev/null || echo priv-denied; "
                "(echo x > /ro/f) 2>&1 | grep -o 'Read-only file system'; "
                "echo done; exec sleep 30",
            ],
            user="xcuser",
            tmpfs=[
                Tmpfs("/scratch", size_bytes=MiB, mode=0o1777),
                Tmpfs("/priv", mode=0o700),
                Tmpfs("/ro", mode=0o1777, readonly=True),
            ],
        )
        h = rt.start(spec)
        _wait_for_text(spec.stdout_path, "done")
        out = spec.stdout_path.read_text()
        assert out == (
            "hi\n1777 0\n700 0\nNo space left\npriv-denied\nRead-only file system\ndone\n"
        ), out
        # What the task sees mounted (its own view of the mount table, relative to its root).
        mounts = {line.split()[1]: line.split() for line in _task_mounts(h.pid)}
        assert [mounts[t][2] for t in ("/scratch", "/priv", "/ro")] == ["tmpfs"] * 3
        assert "ro" in mounts["/ro"][3].split(",") and "rw" in mounts["/scratch"][3].split(",")
        rt.destroy(spec.name)
        assert not (spec.rootfs / "scratch" / "f").exists()  # it was memory, not the image

    def test_readonly_root_keeps_mounts_writable(
        self, rt: Runtime, make_spec: SpecFactory, tmp_path: Path
    ) -> None:
        dirs = {name: tmp_path / f"ro-{name}" for name in ("alloc", "local", "secrets")}
        for d in dirs.values():
            d.mkdir()
        rofile = test_name("rootfile")
        spec = make_spec(
            [
                "/bin/sh",
                "-c",
                f"(echo x > /{rofile}) 2>&1 | grep -o 'Read-only file system'; "
                "(echo x >> /etc/passwd) 2>&1 | grep -o 'Read-only file system'; "
                "for d in /alloc /local /secrets /tmp /alloc/mem; do echo w > $d/f && echo $d-rw; "
                "done",
            ],
            readonly_root=True,
            mounts=[Mount(d, f"/{name}") for name, d in dirs.items()],
            tmpfs=[Tmpfs("/alloc/mem"), Tmpfs("/tmp")],  # one inside a bind mount
        )
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text() == (
            "Read-only file system\nRead-only file system\n"
            "/alloc-rw\n/local-rw\n/secrets-rw\n/tmp-rw\n/alloc/mem-rw\n"
        )
        assert not (dirs["alloc"] / "mem" / "f").exists()  # in memory, not the host's alloc dir
        assert all((d / "f").read_text() == "w\n" for d in dirs.values())
        assert not (spec.rootfs / rofile).exists()
        rt.destroy(spec.name)
        # The root is read-only for that task only: the next one writes to the same rootfs.
        again = make_spec(["/bin/sh", "-c", f"echo x > /{rofile} && rm /{rofile} && echo rw"])
        rt.start(again)
        assert rt.wait(again.name, 20).exit_code == 0
        assert again.stdout_path.read_text() == "rw\n"

    def test_readonly_root_keeps_dev_shm_writable(
        self, rt: Runtime, make_spec: SpecFactory
    ) -> None:
        spec = make_spec(["/bin/sh", "-c", "echo x > /dev/shm/f && echo shm-rw"],
                         readonly_root=True)
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0
        assert spec.stdout_path.read_text() == "shm-rw\n"  # as docker run --read-only keeps it

    def test_linux_abi_file_systems(self, rt: Runtime, make_spec: SpecFactory) -> None:
        """A Linux image finds what Linux programs expect: a proc with /proc/self, a sysfs, the
        descriptors under /dev/fd, a world-writable sticky /dev/shm, also with a read-only root
        (FreeBSD: the Linux ABI's file systems; Linux: the container's own)."""
        script = ("test -r /proc/self/status && ls /sys | grep -q . && test -e /dev/fd/0 && "
                  "echo x > /dev/shm/f && stat -c %a /dev/shm")
        spec = make_spec(["/bin/sh", "-c", script], abi="linux", readonly_root=True)
        rt.start(spec)
        assert rt.wait(spec.name, 20).exit_code == 0, spec.stderr_path.read_text()
        assert spec.stdout_path.read_text() == "1777\n"

    # ---- lifecycle, state and recovery -----------------------------------------------------

    def test_concurrent_lifecycles(self, rt: Runtime, make_spec: SpecFactory) -> None:
        specs = [make_spec(["/bin/sh", "-c", f"echo {i}; exit {i}"]) for i in range(8)]
        errors: list[BaseException] = []
        codes: dict[str, int] = {}

        def life(spec: JailSpec) -> None:
            try:
                rt.start(spec)
                codes[spec.name] = rt.wait(spec.name, 30).exit_code
                rt.destroy(spec.name)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=life, args=(s,)) for s in specs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert codes == {s.name: i for i, s in enumerate(specs)}, codes
        assert all(s.stdout_path.read_text() == f"{i}\n" for i, s in enumerate(specs))
        assert not any(rt.exists(s.name) for s in specs)

    def test_destroy_is_idempotent(self, rt: Runtime, make_spec: SpecFactory) -> None:
        spec = make_spec(["/bin/sleep", "60"])
        rt.start(spec)
        assert rt.exists(spec.name) and rt.status(spec.name) == "running"
        rt.destroy(spec.name)
        assert not rt.exists(spec.name)
        assert rt.status(spec.name) == "unknown"
        rt.destroy(spec.name)
        rt.destroy(test_name("never-existed"))
        with pytest.raises(JailNotFound):
            rt.wait(spec.name, 1)
        with pytest.raises(JailNotFound):
            rt.stats(spec.name)

    def test_fresh_runtime_reattaches(
        self, rt: Runtime, fresh_rt: Callable[[], Runtime], make_spec: SpecFactory
    ) -> None:
        spec = make_spec(
            ["/bin/sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"]
        )
        rt.start(spec)
        _wait_for_text(spec.stdout_path, "ready")
        other = fresh_rt()
        assert other.exists(spec.name)
        assert other.status(spec.name) == "running"
        assert other.stats(spec.name).pids >= 1
        assert other.stop(spec.name, signal.SIGTERM, 10).exit_code == 7
        assert rt.exit_status(spec.name) == other.exit_status(spec.name)
        other.destroy(spec.name)
        assert not rt.exists(spec.name)

    def test_half_created_and_half_deleted_dirs_are_swept(
        self, rt: Runtime, fresh_rt: Callable[[], Runtime]
    ) -> None:
        tasks = rt.state_root / "tasks"
        half = tasks / test_name("half")
        half.mkdir()
        (half / "spec.json").write_text('{"v": 1, "name": "x"}')
        staged = tasks / f".new-{test_name('staged')}-abcd"
        staged.mkdir()
        old = time.time() - 3600  # a staging dir is only garbage once it is old
        os.utime(staged, (old, old))
        young = tasks / f".new-{test_name('young')}-abcd"
        young.mkdir()
        retired = tasks / f".del-{test_name('gone')}-abcd"
        retired.mkdir()
        (retired / "spec.json").write_text("{}")
        assert rt.exists(half.name)  # before the sweep it looks like a task ...
        fresh_rt()  # ... opening a runtime sweeps crashed starts and removals
        assert not half.exists() and not staged.exists() and not retired.exists()
        assert not rt.exists(half.name)
        assert young.exists()  # may be a start in progress between mkdir and flock
        young.rmdir()


@contextlib.contextmanager
def _descriptors_in_use_up_to(n: int) -> Iterator[None]:
    """Hold open descriptors until the next one the process gets is numbered ``n`` or above."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < n + 64:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below {n + 64}")
    if soft != resource.RLIM_INFINITY and soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, hard))
    held: list[int] = []
    try:
        while not held or held[-1] < n:
            held.append(os.open(os.devnull, os.O_RDONLY))
        os.close(held.pop())  # the next descriptor opened gets this number
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _task_mounts(pid: int) -> list[str]:
    """The mount table as the task sees it (Linux hosts only: the suite runs on Linux)."""
    return Path(f"/proc/{pid}/mounts").read_text().splitlines()


def _wait_for_text(path: Path, text: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def _read_until(fd: int, marker: bytes | None, timeout_s: float) -> bytes:
    """Read a pty master until marker appears (or until EOF/EIO when marker is None)."""
    buf = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.1)
        if not r:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        buf += data
        if marker is not None and marker in buf:
            return buf
    if marker is not None:
        raise AssertionError(f"{marker!r} not seen; got {buf!r}")
    return buf
