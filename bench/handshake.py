"""Time from exec to the go-plugin handshake line, against a bare interpreter start.

    python bench/handshake.py [--runs 20]

Nomad launches the plugin up to three times at agent start and waits for the handshake each
time. Each run execs the plugin as go-plugin does (magic cookie, protocol 2, own socket dir),
stops the clock at the handshake line, then asks it to exit with GRPCController.Shutdown. The
baselines, run interleaved in the same session, are ``python -c pass`` and ``python -I -c
"import grpc"`` (the floor for any plugin built on grpcio), each from exec to exit. Also
timed: the launcher `nomad-driver-xc install` writes. Prints medians and ratios to baseline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import grpc  # noqa: E402

from plugin_proto import goplugin_controller_pb2, goplugin_controller_pb2_grpc  # noqa: E402

COOKIE = ("NOMAD_PLUGIN_MAGIC_COOKIE",
          "e4327c2e01eabfd75a8a67adb114fb34a757d57eee7728d857a8cec6e91a7255")


def time_python(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True)
    return time.perf_counter() - t0


def time_handshake(cmd: list[str], sock_dir: str) -> float:
    env = {**os.environ, COOKIE[0]: COOKIE[1], "PLUGIN_PROTOCOL_VERSIONS": "2",
           "PLUGIN_UNIX_SOCKET_DIR": sock_dir, "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    elapsed = time.perf_counter() - t0
    try:
        parts = line.strip().split("|")
        if len(parts) < 5 or parts[:2] != ["1", "2"]:
            raise SystemExit(f"bad handshake line {line!r} from {cmd}")
        with grpc.insecure_channel(f"unix:{parts[3]}") as ch:
            goplugin_controller_pb2_grpc.GRPCControllerStub(ch).Shutdown(
                goplugin_controller_pb2.Empty(), timeout=5)
        proc.wait(5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="xcbench-") as tmp:
        from driver.install import install

        launcher = install(Path(tmp) / "plugins")
        variants: dict[str, Callable[[], float]] = {
            "baseline: python -c pass (exec to exit)": lambda: time_python("-c", "pass"),
            # The floor of any grpcio plugin: grpc's import brings asyncio, ssl and its C core.
            "floor: python -I -c 'import grpc' (exec to exit)": lambda: time_python(
                "-I", "-c", "import grpc"),
            "python -m driver (exec to handshake)": lambda: time_handshake(
                [sys.executable, "-m", "driver"], tmp),
            "installed launcher plugin_dir/xc (exec to handshake)": lambda: time_handshake(
                [str(launcher)], tmp),
        }
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for warm in variants.values():
            warm()  # fill the page cache once, untimed
        for _ in range(opts.runs):
            for k, fn in variants.items():  # interleaved, so drift hits all alike
                samples[k].append(fn())
    base, floor = (statistics.median(xs) for xs in list(samples.values())[:2])
    print(f"{opts.runs} runs each, interleaved; interpreter {sys.executable}")
    print(f"  {'':55s} {'median':>14s}  {'min':>9s} {'max':>9s}    x pass  x grpc")
    for k, xs in samples.items():
        med = statistics.median(xs)
        print(f"  {k:55s} {med * 1000:11.1f} ms  {min(xs) * 1000:6.1f} ms {max(xs) * 1000:6.1f} ms"
              f"    {med / base:5.2f}   {med / floor:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
