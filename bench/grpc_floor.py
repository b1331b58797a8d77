"""The floor under TaskStats: what a bare grpc-aio server costs to stream one message per second
on each of N server streams, with nothing else to do (no sampling, no conversion).

  python bench/grpc_floor.py [--streams 100] [--window 10]

The server runs in its own process (``--serve``) so that only its CPU is counted; the client
streams are drained by threads of this process. driver_bench.py prints the same figure next to
the plugin's, with a real TaskStatsResponse as the message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

_METHOD = "/xcbench.Floor/Stream"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


async def _serve(sock: str, payload: bytes) -> None:
    async def stream(_request: bytes, _context: object) -> object:
        loop = asyncio.get_running_loop()
        while True:  # on the whole-second grid, as the plugin's streams tick together
            now = loop.time()
            await asyncio.sleep(math.ceil(now) - now + 0.001)
            yield payload

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler("xcbench.Floor", {
        "Stream": grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=bytes, response_serializer=bytes)})
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    await server.wait_for_termination()


@contextlib.contextmanager
def floor_server(streams: int, payload: bytes) -> Iterator[tuple[int, list[int]]]:
    """The bare server in its own process with ``streams`` streams open and settled: its pid
    (to read its CPU time) and the per-stream message counts, live."""
    work = Path(tempfile.mkdtemp(prefix="xc-bench-floor-"))
    sock = str(work / "floor.sock")
    server = subprocess.Popen([sys.executable, __file__, "--serve", sock, "--payload-hex",
                               payload.hex()])
    channel: grpc.Channel | None = None
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the floor server did not start")
            time.sleep(0.05)
        channel = grpc.insecure_channel(f"unix:{sock}")
        method = channel.unary_stream(_METHOD, request_serializer=bytes,
                                      response_deserializer=bytes)
        received = [0] * streams

        def drain(i: int) -> None:
            try:
                for _ in method(b""):
                    received[i] += 1
            except grpc.RpcError:
                pass  # the channel closing at the end

        for i in range(streams):
            threading.Thread(target=drain, args=(i,), daemon=True).start()
        time.sleep(2)  # streams settle into their interval, as in driver_bench
        yield server.pid, received
    finally:
        if channel is not None:
            channel.close()
        server.kill()
        server.wait()
        for p in work.iterdir():
            p.unlink()
        work.rmdir()


def floor_cpu(streams: int, window_s: float, payload: bytes) -> tuple[float, int]:
    """(percent of one core the bare server spent over the window, messages received)."""
    with floor_server(streams, payload) as (pid, received):
        c0, t0, n0 = _cpu_seconds(pid), time.monotonic(), sum(received)
        time.sleep(window_s)
        pct = (_cpu_seconds(pid) - c0) / (time.monotonic() - t0) * 100.0
        return pct, sum(received) - n0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=100)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--payload-hex", default="00" * 120, help=argparse.SUPPRESS)
    a = ap.parse_args()
    payload = bytes.fromhex(a.payload_hex)
    if a.serve:
        asyncio.run(_serve(a.serve, payload))
        return 0
    pct, got = floor_cpu(a.streams, a.window, payload)
    print(f"bare grpc-aio, {a.streams} streams at 1 s, {len(payload)}-byte messages: "
          f"{pct:.2f}% of a core ({got} messages in {a.window:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
