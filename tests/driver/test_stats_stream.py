"""driver.stats streams against real runc containers through ``jails`` (no plugin, no gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from driver import stats as st
from jails import JailError, JailSpec, Runtime
from tests.fixtures.sweep import test_name

pytestmark = pytest.mark.root
T = TypeVar("T")
_N = itertools.count()
TOPO = st.Topology(total_compute_mhz=4000, cores=2, source="nomad")


@pytest.fixture(scope="module")
def rt(linux_runtime_factory: Callable[[], object]) -> Runtime:
    return cast(Runtime, linux_runtime_factory())


@pytest.fixture
def start(rt: Runtime, busybox_rootfs: Path, tmp_path: Path) -> Iterator[Callable[[str], str]]:
    made: list[str] = []

    def go(script: str) -> str:
        n = next(_N)
        spec = JailSpec(name=test_name(f"stats{n}"), rootfs=busybox_rootfs,
                        argv=("/bin/sh", "-c", script),
                        stdout_path=tmp_path / f"o{n}", stderr_path=tmp_path / f"e{n}")
        rt.start(spec)
        made.append(spec.name)
        return spec.name

    yield go
    for name in made:
        rt.destroy(name)


def _run(coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout))


def exit_watch(rt: Runtime, name: str) -> Callable[[], Awaitable[None]]:
    """An exit future fed by one plain thread (as a driver would share one per task)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def watch() -> None:
        with contextlib.suppress(JailError):
            rt.wait(name)

        def settle() -> None:
            if not fut.done():
                fut.set_result(None)

        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(settle)

    threading.Thread(target=watch, daemon=True).start()
    return lambda: asyncio.shield(fut)


async def take(stream: Any, n: int) -> list[st.TaskStatsSample]:
    out: list[st.TaskStatsSample] = []
    async for s in stream:
        out.append(s)
        if len(out) == n:
            await stream.aclose()
            break
    return out


def test_stream_shows_cpu_moving_under_load_and_memory(rt: Runtime, start: Any) -> None:
    name = start("sleep 1.2; while :; do :; done")

    async def main() -> list[st.TaskStatsSample]:
        sampler = st.Sampler(rt)
        return await take(st.stream(sampler, name, 0.25, TOPO, exit_watch(rt, name)), 10)

    samples = _run(main())
    stamps = [s.timestamp_ns for s in samples]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    idle, busy = samples[1], samples[-1]  # [0] averages since start: includes runc's set-up
    assert idle.cpu.percent < 5.0
    assert busy.cpu.percent > 10.0, busy
    assert busy.cpu.total_ticks == pytest.approx(TOPO.ticks(busy.cpu.percent))
    assert set(busy.cpu.measured) >= {st.PERCENT, st.TOTAL_TICKS, st.USER_MODE, st.SYSTEM_MODE}
    assert busy.cpu.user_percent + busy.cpu.system_percent > 0
    assert busy.memory.usage > 0 and st.USAGE in busy.memory.measured
    assert st.RSS in busy.memory.measured
    assert st.CACHE not in busy.memory.measured  # never claimed: the runtime does not read it
    # the very first sample already carries a percent (measured since the task started)
    assert st.PERCENT in samples[0].cpu.measured


def test_stream_ends_when_the_task_exits(rt: Runtime, start: Any) -> None:
    name = start("sleep 1")

    async def main() -> list[st.TaskStatsSample]:
        sampler = st.Sampler(rt)
        return [s async for s in st.stream(sampler, name, 0.2, TOPO, exit_watch(rt, name))]

    samples = _run(main(), 20)
    assert 2 <= len(samples) <= 15


def test_stream_ends_when_the_task_is_destroyed(rt: Runtime, start: Any) -> None:
    name = start("sleep 60")

    async def main() -> int:
        sampler = st.Sampler(rt)
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        n = 0
        async for _ in st.stream(sampler, name, 0.1, TOPO, lambda: asyncio.shield(never)):
            n += 1
            if n == 2:
                await asyncio.to_thread(rt.destroy, name)
        return n

    assert _run(main()) >= 2


def test_concurrent_streams_are_read_in_batches(rt: Runtime, start: Any) -> None:
    names = [start("sleep 60") for _ in range(4)]
    batches: list[list[str]] = []

    class CountingSampler(st.Sampler):
        def _read_all(self, names: list[str]) -> dict[str, Any]:
            batches.append(names)
            return super()._read_all(names)

    async def main() -> list[list[st.TaskStatsSample]]:
        sampler = CountingSampler(rt)
        streams = [st.stream(sampler, n, 0.2, TOPO, exit_watch(rt, n)) for n in names]
        streams.append(st.stream(sampler, names[0], 0.2, TOPO, exit_watch(rt, names[0])))
        return list(await asyncio.gather(*(take(s, 5) for s in streams)))

    results = _run(main())
    assert all(len(r) == 5 for r in results)
    samples = sum(len(r) for r in results)
    reads = sum(len(b) for b in batches)
    # The grid lines streams up: far fewer thread hops than samples, and the two streams of
    # names[0] share their reads.
    assert len(batches) <= samples // 2, batches
    assert reads < samples


def test_unknown_task_ends_at_once(rt: Runtime) -> None:
    async def main() -> list[st.TaskStatsSample]:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        return [s async for s in st.stream(st.Sampler(rt), test_name("nosuch"), 0.1, None,
                                           lambda: never)]

    assert _run(main()) == []
