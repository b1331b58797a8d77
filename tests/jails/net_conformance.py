"""Network conformance cases every backend runs: real tasks of a ``Runtime`` joined to alloc
networks of ``jails.net`` (``AllocNetwork.jail_spec_fields()``), serving busybox httpd on 8080.

A backend's test class provides the fixtures ``nets`` (a ``Networks``), ``rt`` (a ``Runtime``),
``rootfs`` and the hooks below. Traffic goes only to addresses inside namespaces the test made
(the test pool on the test bridge) or to loopback.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jails import JailSpec, Runtime
from jails.net import AllocNetwork, Networks, PortMapping
from tests.fixtures.execs import run_in
from tests.fixtures.sweep import test_name

A = "a1a1a1a1-0000-4000-8000-00000000000a"
B = "b2b2b2b2-0000-4000-8000-00000000000b"
_N = itertools.count()


class NetworkConformance:
    # ---- hooks -----------------------------------------------------------------------------

    def published(self, nets: Networks, net: AllocNetwork, port: int) -> str:
        """What a request to the host's published ``port`` gets (or the rules that would do it,
        where the fake cannot forward)."""
        raise NotImplementedError

    def stack_interfaces(self, rt: Runtime, name: str, net: AllocNetwork) -> set[str]:
        """The interfaces the task's network stack has."""
        raise NotImplementedError

    def assert_nothing_left(self, nets: Networks) -> None:
        raise NotImplementedError

    # ---- helpers ---------------------------------------------------------------------------

    @pytest.fixture
    def tasks(self, rt: Runtime, rootfs: Path, tmp_path: Path) -> Iterator[Any]:
        made: list[str] = []

        def start(net: AllocNetwork, argv: tuple[str, ...]) -> JailSpec:
            n = next(_N)
            spec = JailSpec(name=test_name(f"n{n}"), rootfs=rootfs, argv=argv,
                            stdout_path=tmp_path / f"o{n}", stderr_path=tmp_path / f"e{n}",
                            **net.jail_spec_fields())  # type: ignore[arg-type]
            rt.start(spec)
            made.append(spec.name)
            return spec

        yield start
        for name in made:
            with contextlib.suppress(Exception):
                rt.stop(name, signal.SIGKILL, 5)
            with contextlib.suppress(Exception):
                rt.destroy(name)

    @staticmethod
    def httpd(page_dir: str) -> tuple[str, ...]:
        return ("/bin/busybox", "httpd", "-f", "-p", "8080", "-h", page_dir)

    @staticmethod
    def fetch(rt: Runtime, name: str, url: str) -> str:
        deadline = time.monotonic() + 10
        while True:
            res = run_in(rt, name, ["/bin/busybox", "wget", "-q", "-O", "-", url], 10)
            if res.exit_code == 0 or time.monotonic() > deadline:
                return res.stdout.decode()
            time.sleep(0.1)

    # ---- cases -----------------------------------------------------------------------------

    def test_two_allocs_serve_their_own_pages_and_reach_each_other(
            self, nets: Networks, rt: Runtime, rootfs: Path, tasks: Any) -> None:
        a = nets.ensure(A, "bridge", [PortMapping("http", 39000 + next(_N) % 500, 8080)],
                        task="web")
        b = nets.ensure(B, "bridge", task="web")
        assert a.address != b.address
        # Each serves its own /etc (the page: its passwd line count differs by a marker file).
        sa = tasks(a, ("/bin/sh", "-c", "mkdir -p /tmp/w && echo page-A > /tmp/w/index.html && "
                       "exec /bin/busybox httpd -f -p 8080 -h /tmp/w"))
        sb = tasks(b, ("/bin/sh", "-c", "mkdir -p /tmp/v && echo page-B > /tmp/v/index.html && "
                       "exec /bin/busybox httpd -f -p 8080 -h /tmp/v"))
        assert self.fetch(rt, sa.name, f"http://{b.address}:8080/") == "page-B\n"
        assert self.fetch(rt, sb.name, f"http://{a.address}:8080/") == "page-A\n"
        # Over loopback inside its own stack, a task reaches only itself.
        assert self.fetch(rt, sa.name, "http://127.0.0.1:8080/") == "page-A\n"
        assert "page-A" in self.published(nets, a, a.ports[0].value)
        for s in (sa, sb):
            rt.stop(s.name, signal.SIGKILL, 5)
            rt.destroy(s.name)
        assert nets.release(A, task="web") and nets.release(B, task="web")
        self.assert_nothing_left(nets)

    def test_none_has_only_loopback(self, nets: Networks, rt: Runtime, tasks: Any) -> None:
        n = nets.ensure(A, "none", task="t")
        s = tasks(n, ("/bin/sleep", "60"))
        assert self.stack_interfaces(rt, s.name, n) == {"lo"}
        rt.stop(s.name, signal.SIGKILL, 5)
        rt.destroy(s.name)
        nets.release(A, task="t")
        self.assert_nothing_left(nets)

    def test_two_tasks_of_one_alloc_talk_over_loopback(
            self, nets: Networks, rt: Runtime, tasks: Any) -> None:
        n = nets.ensure(A, "bridge", task="server")
        nets.ensure(A, "bridge", task="client")
        server = tasks(n, ("/bin/sh", "-c", "mkdir -p /tmp/s && echo shared > /tmp/s/index.html"
                           " && exec /bin/busybox httpd -f -p 8080 -h /tmp/s"))
        client = tasks(n, ("/bin/sleep", "60"))
        assert self.fetch(rt, client.name, "http://127.0.0.1:8080/") == "shared\n"
        for s in (server, client):
            rt.stop(s.name, signal.SIGKILL, 5)
            rt.destroy(s.name)
        assert not nets.release(A, task="server")
        assert nets.release(A, task="client")
        self.assert_nothing_left(nets)
