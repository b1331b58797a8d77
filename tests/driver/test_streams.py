"""The never-ending streams' logic: fingerprint resend/change, and the task-event fan-out."""

from __future__ import annotations

import asyncio

from driver.config import PluginConfig
from driver.events import EventBus, TaskEvent
from driver.fingerprint import Fingerprint, Fingerprinter, compute


def test_fingerprint_resends_unchanged_answers_and_sends_changes_at_once() -> None:
    answers = [Fingerprint("healthy", "Healthy", {"driver.xc.version": "1"})]

    def probe(cfg: PluginConfig) -> Fingerprint:
        return answers[-1]

    async def scenario() -> list[Fingerprint]:
        # Poll rarely, resend often: repeats can only come from the resend rule.
        fper = Fingerprinter(lambda: PluginConfig(), probe=probe, poll_s=60, resend_s=0.05)
        got: list[Fingerprint] = []
        stream = fper.stream()
        got.append(await anext(stream))
        got.append(await asyncio.wait_for(anext(stream), 5))  # resent, unchanged
        answers.append(Fingerprint("unhealthy", "pool gone", {}))
        slow = Fingerprinter(lambda: PluginConfig(), probe=probe, poll_s=60, resend_s=3600)
        s2 = slow.stream()
        got.append(await anext(s2))
        answers.append(Fingerprint("healthy", "Healthy", {}))
        slow.poke()  # e.g. SetConfig: re-probe now, not at the next poll
        got.append(await asyncio.wait_for(anext(s2), 5))
        await stream.aclose()
        await s2.aclose()
        return got

    got = asyncio.run(scenario())
    assert got[0] == got[1] == answers[0]
    assert got[2].health == "unhealthy"
    assert got[3] == answers[-1]


def test_a_failing_probe_is_an_unhealthy_answer_not_a_broken_stream() -> None:
    def probe(cfg: PluginConfig) -> Fingerprint:
        raise OSError("zfs hung")

    async def first() -> Fingerprint:
        fper = Fingerprinter(lambda: PluginConfig(), probe=probe, poll_s=60, resend_s=60)
        stream = fper.stream()
        fp = await anext(stream)
        await stream.aclose()
        return fp

    fp = asyncio.run(first())
    assert fp.health == "unhealthy" and "zfs hung" in fp.description


def test_compute_on_an_unsupported_os_is_undetected() -> None:
    fp = compute(PluginConfig(), platform="win32")
    assert fp.health == "undetected" and "win32" in fp.description


def test_event_bus_fans_out_and_drops_the_oldest_when_a_reader_lags() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        bus = EventBus(maxsize=2)
        a, b = bus.subscribe(), bus.subscribe()
        # Subscriptions register on first iteration.
        ta = asyncio.ensure_future(anext(a))
        tb = asyncio.ensure_future(anext(b))
        await asyncio.sleep(0)
        assert bus.subscribers == 2
        bus.publish(TaskEvent("i", "a", "t", "one"))
        first_a, first_b = await ta, await tb
        for msg in ("two", "three", "four"):
            bus.publish(TaskEvent("i", "a", "t", msg))
        rest_a = [(await anext(a)).message for _ in range(2)]
        await a.aclose()
        await b.aclose()
        assert bus.subscribers == 0
        return [first_a.message, *rest_a], [first_b.message]

    got_a, got_b = asyncio.run(scenario())
    assert got_a == ["one", "three", "four"]  # "two" dropped: the queue holds two
    assert got_b == ["one"]
