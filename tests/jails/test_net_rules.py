"""LinuxNetworks' command table for what a real test must not do on a shared host: outbound NAT
(a host-wide ip_forward and masquerade). Recorded, with /proc/sys in a temporary directory."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from jails._cmd import Result
from jails.net import NetworkConfig
from jails.net.linuxnet import LinuxNetworks


class Rec:
    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, argv: Sequence[str], *, ok_codes: Collection[int] = (0,),
                 timeout_s: float | None = 60.0, input: str | None = None) -> Result:
        self.calls.append((list(argv), input))
        return Result(tuple(argv), 0, "", "")


def test_nat_masquerades_the_pool_and_enables_forwarding(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "net/ipv4/conf/xctestbr9").mkdir(parents=True)
    rec = Rec()
    cfg = NetworkConfig(bridge="xctestbr9", ipv4_pool="10.77.0.0/24", nat=True,
                        external_interface="eth7")
    nets = LinuxNetworks(tmp_path / "s", cfg, runner=rec, proc_sys=proc,
                         netns_dir=tmp_path / "netns")
    nets._ensure_host("bridge")
    assert (proc / "net/ipv4/ip_forward").read_text() == "1"
    assert (proc / "net/ipv4/conf/xctestbr9/route_localnet").read_text() == "1"
    assert rec.calls[0] == (["ip", "-batch", "-"], "link add xctestbr9 type bridge\n"
                            "addr add 10.77.0.1/24 dev xctestbr9\nlink set xctestbr9 up\n")
    restore = next(inp for argv, inp in rec.calls if argv[0] == "iptables-restore")
    assert restore == (
        "*nat\n:xc-POST - [0:0]\n"
        "-A xc-POST -s 127.0.0.0/8 -o xctestbr9 -j MASQUERADE\n"
        "-A xc-POST -s 10.77.0.0/24 -o eth7 -j MASQUERADE\nCOMMIT\n"
        "*filter\n:xc-FWD - [0:0]\n"
        "-A xc-FWD -i xctestbr9 -o xctestbr9 -j ACCEPT\n"
        "-A xc-FWD -o xctestbr9 -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -j ACCEPT\n"
        "-A xc-FWD -i xctestbr9 -o eth7 -j ACCEPT\nCOMMIT\n")
    checks = [argv[3:] for argv, _ in rec.calls if argv[:2] == ["iptables", "-w"]
              and argv[4] == "-C"]
    assert checks == [
        ["nat", "-C", "PREROUTING", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "xc-PORTS"],
        ["nat", "-C", "OUTPUT", "-m", "addrtype", "--dst-type", "LOCAL", "-j", "xc-PORTS"],
        ["nat", "-C", "POSTROUTING", "-j", "xc-POST"],
        ["filter", "-C", "FORWARD", "-j", "xc-FWD"],
    ]
