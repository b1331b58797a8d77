"""Task networks: what ``network_mode = "bridge"`` costs, each figure next to a baseline of the
same run.

  python bench/net_start_bench.py [--starts 15]
  python bench/net_start_bench.py --quick        # 5 starts

1. StartTask with ``network_mode = "bridge"`` and one published port vs StartTask with host
   networking, same image (cached) and command, through the Nomad-client rig and the real plugin
   (the StartTask call as the rig times it). Goal: bridge <= host + 40 ms.
2. The driver's network setup alone (``jails.net`` ``ensure`` of one alloc network with one
   published port: namespace, veth on the bridge, address, route, DNAT chain) vs the bare
   sequence a person would type for the same objects, run from this process: ``ip netns add``,
   ``ip link add ... type veth peer ... netns``, ``ip link set ... master <bridge> up``, the
   addresses/links/route inside, one ``iptables -t nat -A ... -j DNAT``. Goal: <= 1.5x.
   Teardown is not timed on either side.

Every object is named after this process (``xctest-<pid>``) on a test-only pool and bridge, and
removed at the end; traffic is never sent.
"""

from __future__ import annotations

import argparse
import ipaddress
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.driver_bench import SLEEPER, environment  # noqa: E402
from tests.fixtures.network import (  # noqa: E402
    net_bridge,
    net_prefix,
    remove_by_name,
    test_pool,
)
from tests.fixtures.nomad import Nomad  # noqa: E402

HTTP = [{"label": "http", "to": 8080}]
BRIDGE = 'network_mode = "bridge"\nports = ["http"]'


def bench_start(nomad: Nomad, starts: int) -> dict[str, float]:
    """Median StartTask ms, host and bridge alternating (after one warm start of each)."""
    times: dict[str, list[float]] = {"host": [], "bridge": []}
    configs = {"host": (SLEEPER, None), "bridge": (f"{SLEEPER}\n{BRIDGE}", {"ports": HTTP})}
    for i in range(starts + 1):
        for kind, (config, network) in configs.items():
            run = nomad.start(config, timeout=300, network=network)
            if i > 0:  # the first of each pulls the image / makes the bridge
                times[kind].append(float(run.reply["start_task_ms"]))
            nomad.destroy(run)
    return {k: statistics.median(v) for k, v in times.items()}


def sh(argv: list[str], stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, capture_output=True, check=True)


def bare_setup(i: int, address: str, gateway: str, prefix_len: int, chain: str) -> float:
    ns, host_if = f"{net_prefix()}-bare{i}", f"xcb{i}{net_bridge()[-6:]}"[:15]
    t0 = time.perf_counter()
    sh(["ip", "netns", "add", ns])
    sh(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
    sh(["ip", "link", "set", host_if, "master", net_bridge(), "up"])
    sh(["ip", "-n", ns, "link", "set", "lo", "up"])
    sh(["ip", "-n", ns, "addr", "add", f"{address}/{prefix_len}", "dev", "eth0"])
    sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
    sh(["ip", "-n", ns, "route", "add", "default", "via", gateway])
    sh(["iptables", "-w", "-t", "nat", "-A", chain, "-d", "127.0.0.1/32", "-p", "tcp",
        "--dport", str(40000 + i), "-j", "DNAT", "--to-destination", f"{address}:8080"])
    elapsed = time.perf_counter() - t0
    subprocess.run(["iptables", "-w", "-t", "nat", "-F", chain], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    return elapsed


def bench_setup(state_dir: Path, starts: int) -> dict[str, float]:
    """Median ms of jails.net's ensure vs the bare sequence, alternating, same bridge."""
    from jails.net import NetworkConfig, PortMapping
    from jails.net.linuxnet import LinuxNetworks

    cfg = NetworkConfig(bridge=net_bridge(), ipv4_pool=test_pool(), name_prefix=net_prefix())
    nets = LinuxNetworks(state_dir / "netbench", cfg)
    pool = ipaddress.ip_network(test_pool())
    bare_addr = str(pool.network_address + pool.num_addresses - 2)  # the pool's last host
    chain = f"{net_prefix()}-BARE"
    port = PortMapping("http", 40100, 8080, "127.0.0.1")
    xc: list[float] = []
    bare: list[float] = []
    try:
        nets.ensure("0" * 8 + "-warm", "bridge", (port,), task="t")  # makes bridge + rules
        nets.release("0" * 8 + "-warm", task="t")
        subprocess.run(["iptables", "-w", "-t", "nat", "-N", chain], capture_output=True,
                       check=False)
        for i in range(starts):
            alloc = f"{i:08x}-bench"
            t0 = time.perf_counter()
            nets.ensure(alloc, "bridge", (port,), task="t")
            xc.append(time.perf_counter() - t0)
            nets.release(alloc, task="t")
            bare.append(bare_setup(i, bare_addr, cfg.ipv4_gateway, cfg.prefix_len, chain))
    finally:
        subprocess.run(["iptables", "-w", "-t", "nat", "-F", chain], capture_output=True,
                       check=False)
        subprocess.run(["iptables", "-w", "-t", "nat", "-X", chain], capture_output=True,
                       check=False)
        nets.sweep([])
    return {"xc_ms": statistics.median(xc) * 1000, "bare_ms": statistics.median(bare) * 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--starts", type=int, default=15)
    ap.add_argument("--quick", action="store_true", help="5 starts")
    a = ap.parse_args()
    if a.quick:
        a.starts = 5
    command = "python bench/net_start_bench.py " + shlex.join(sys.argv[1:])
    try:
        with environment() as (nomad, _pid):
            print("StartTask host / bridge...", file=sys.stderr, flush=True)
            start = bench_start(nomad, a.starts)
            print("network setup vs the bare sequence...", file=sys.stderr, flush=True)
            setup = bench_setup(nomad.state_dir, a.starts)
    finally:
        remove_by_name(net_prefix(), net_bridge())
    rows = [
        ("StartTask, network_mode = \"bridge\" + 1 port (median)", f"{start['bridge']:.0f} ms",
         f"host networking: {start['host']:.0f} ms",
         f"+{start['bridge'] - start['host']:.0f} ms", "<= +40 ms"),
        ("alloc network setup (jails.net ensure, 1 port)", f"{setup['xc_ms']:.1f} ms",
         f"ip netns/veth/bridge + DNAT: {setup['bare_ms']:.1f} ms",
         f"{setup['xc_ms'] / setup['bare_ms']:.2f}x", "<= 1.5x"),
    ]
    print(f"\n$ {command}\nstarts={a.starts}\n")
    head = ("measure", "xc", "baseline (same run)", "ratio", "goal")
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(5)]
    for r in (head, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
