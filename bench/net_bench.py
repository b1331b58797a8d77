"""Alloc network setup of jails.net (bridge mode + one published port) vs the bare command
sequence doing the same, side by side in one process (Linux, root).

  python bench/net_bench.py [--n 20]

xc:   LinuxNetworks.ensure(alloc, "bridge", [http]) and .release(alloc).
bare: ip netns add; ip link add veth peer in the netns; ip link set master bridge up; in the
      netns: lo up, addr add, eth0 up, route add default; iptables -N chain, DNAT tcp + udp, jump
      from the ports chain; and the reverse (iptables -D, -F, -X; ip link del; ip netns del),
      one process per step as a script would run them.
Both run on the same (already made) test bridge and shared chains; every name carries
``xctest-<pid>`` (the test session sweep removes them after a crash) and everything is removed
at the end. Prints medians and the ratio xc/bare.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jails.net import NetworkConfig, PortMapping
from jails.net.linuxnet import LinuxNetworks

PREFIX = f"xctest-{os.getpid()}"
BRIDGE = f"xctest{os.getpid()}"


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, capture_output=True)


def bare_names(i: int) -> tuple[str, str, str]:
    return f"{PREFIX}-bare{i}", f"xb{os.getpid() % 100000}x{i}", f"{PREFIX}-bare{i}"


def bare_setup(i: int, cfg: NetworkConfig, ports_chain: str) -> None:
    ns, veth, chain = bare_names(i)
    addr = f"{cfg.pool.network_address + 200 + i}"
    sh("ip", "netns", "add", ns)
    sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    sh("ip", "link", "set", veth, "master", cfg.bridge, "up")
    sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", ns, "addr", "add", f"{addr}/{cfg.prefix_len}", "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")
    sh("ip", "-n", ns, "route", "add", "default", "via", cfg.ipv4_gateway)
    sh("iptables", "-w", "-t", "nat", "-N", chain)
    for proto in ("tcp", "udp"):
        sh("iptables", "-w", "-t", "nat", "-A", chain, "-p", proto, "--dport", str(30000 + i),
           "-j", "DNAT", "--to-destination", f"{addr}:8080")
    sh("iptables", "-w", "-t", "nat", "-A", ports_chain, "-j", chain)


def bare_teardown(i: int, ports_chain: str) -> None:
    ns, veth, chain = bare_names(i)
    sh("iptables", "-w", "-t", "nat", "-D", ports_chain, "-j", chain)
    sh("iptables", "-w", "-t", "nat", "-F", chain)
    sh("iptables", "-w", "-t", "nat", "-X", chain)
    sh("ip", "link", "del", veth)
    sh("ip", "netns", "del", ns)


def ms(xs: list[float]) -> float:
    return statistics.median(xs) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    n = ap.parse_args().n
    state = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-netbench-"))
    cfg = NetworkConfig(bridge=BRIDGE, ipv4_pool="10.238.0.0/24", name_prefix=PREFIX)
    nets = LinuxNetworks(state, cfg)
    try:
        warm = "00000000-0000-4000-8000-0000000000ff"
        nets.ensure(warm, "bridge", task="t")  # the shared objects, made once for both
        nets.release(warm, task="t")
        xs: list[float] = []
        xt: list[float] = []
        bs: list[float] = []
        bt: list[float] = []
        for i in range(n):
            alloc = f"{i + 1:08x}-0000-4000-8000-000000000000"
            t0 = time.perf_counter()
            nets.ensure(alloc, "bridge", [PortMapping("http", 31000 + i, 8080)], task="t")
            xs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bare_setup(i, cfg, nets.ports_chain)
            bs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            nets.release(alloc, task="t")
            xt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            bare_teardown(i, nets.ports_chain)
            bt.append(time.perf_counter() - t0)
        print(f"alloc network setup   : xc {ms(xs):6.1f} ms  bare {ms(bs):6.1f} ms  "
              f"ratio {ms(xs) / ms(bs):.2f}x  (median of {n})")
        print(f"alloc network teardown: xc {ms(xt):6.1f} ms  bare {ms(bt):6.1f} ms  "
              f"ratio {ms(xt) / ms(bt):.2f}x")
    finally:
        nets.sweep([])
        (state / "net" / f"bridge-{BRIDGE}.made").write_text(BRIDGE)
        nets.remove_host()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
