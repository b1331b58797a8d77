"""jails.net's pure parts: NetworkConfig and PortMapping validation, derived names, leases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jails.net import AllocNetwork, Names, NetworkConfig, NetworkError, PortMapping
from jails.net.config import CHAIN_MAX, IFNAMSIZ, alloc_key, check_ports
from jails.net.leases import Lease, LeaseStore, pick_address


def test_defaults_work_on_a_fresh_host() -> None:
    c = NetworkConfig()
    assert (c.bridge, c.ipv4_pool, c.ipv4_gateway, c.prefix_len) == (
        "xcbr0", "10.213.0.0/16", "10.213.0.1", 16)
    assert (c.nat, c.pf_anchor, c.ipv6_gateway) == (False, "xc", "")
    assert NetworkConfig(ipv6_pool="fd00:213::/64").ipv6_gateway == "fd00:213::1"


@pytest.mark.parametrize(("kw", "field"), [
    ({"bridge": "a-name-far-too-long0"}, "network.bridge"),
    ({"bridge": "x y"}, "network.bridge"),
    ({"ipv4_pool": "10.0.0.1/24"}, "network.ipv4_pool"),
    ({"ipv4_pool": "fd00::/64"}, "network.ipv4_pool"),
    ({"ipv4_pool": "10.0.0.0/31"}, "network.ipv4_pool"),
    ({"ipv4_pool": "nonsense"}, "network.ipv4_pool"),
    ({"ipv4_gateway": "10.9.0.1"}, "network.ipv4_gateway"),
    ({"ipv4_gateway": "10.213.0.0"}, "network.ipv4_gateway"),
    ({"ipv6_gateway": "fd00::1"}, "network.ipv6_gateway"),
    ({"nat": "yes"}, "network.nat"),
    ({"alias_pool": "192.0.2.0/33"}, "network.alias_pool"),
    ({"pf_anchor": "xc/sub"}, "network.pf_anchor"),
    ({"name_prefix": "-x"}, "network.name_prefix"),
    ({"name_prefix": "p" * 16}, "network.name_prefix"),
])
def test_bad_options_name_themselves(kw: dict[str, Any], field: str) -> None:
    with pytest.raises(NetworkError) as err:
        NetworkConfig(**kw)
    assert err.value.field == field
    assert str(err.value).startswith(field + ":")


def test_from_dict_names_an_unknown_option() -> None:
    assert NetworkConfig.from_dict({"bridge": "br9"}).bridge == "br9"
    with pytest.raises(NetworkError) as err:
        NetworkConfig.from_dict({"ipv4_poool": "10.0.0.0/8"})
    assert err.value.field == "network.ipv4_poool"


def test_port_mapping() -> None:
    assert PortMapping("http", 8080).to == 8080
    assert PortMapping("http", 8080, 80, "0.0.0.0").host_ip == ""
    p = PortMapping("http", 28080, 80, "127.0.0.1")
    assert PortMapping.from_json(p.to_json()) == p
    for kw in ({"value": 0}, {"value": 70000}, {"to": -1}, {"host_ip": "::1"},
               {"host_ip": "host"}, {"label": "a b"}, {"value": True}):
        args: dict[str, Any] = {"label": "http", "value": 8080, **kw}
        with pytest.raises(NetworkError) as err:
            PortMapping(**args)
        assert err.value.field == "ports"


def test_port_conflicts() -> None:
    ok = (PortMapping("a", 80, 1, "127.0.0.1"), PortMapping("b", 80, 2, "192.0.2.1"))
    assert check_ports(ok) == ok
    for bad in ((PortMapping("a", 80), PortMapping("b", 80, 2, "192.0.2.1")),
                (PortMapping("a", 80, 1, "127.0.0.1"), PortMapping("b", 80, 2, "127.0.0.1"))):
        with pytest.raises(NetworkError, match="both publish host port 80"):
            check_ports(bad)


def test_names_fit_every_limit() -> None:
    cfg = NetworkConfig(name_prefix="p" * 15)
    n = Names.of(cfg, "0123abcd-5678-4000-8000-00000000aaaa")
    assert n.key == "0123abcd5678"
    assert len(n.netns) <= CHAIN_MAX and len(n.host_if) + 1 <= IFNAMSIZ
    assert "." not in n.parent_jail and n.anchor == "xc/0123abcd5678"
    other = Names.of(cfg, "0123abcd-5679-4000-8000-00000000aaaa")
    assert other.host_if != n.host_if
    with pytest.raises(NetworkError) as err:
        alloc_key("a-b")
    assert err.value.field == "alloc_id"


def test_lease_round_trip_and_union_of_ports(tmp_path: Path) -> None:
    store = LeaseStore(tmp_path)
    lease = Lease("id", "k" * 12, "bridge", "10.0.0.2", holders={
        "web": (PortMapping("http", 80, 8080),),
        "adm": (PortMapping("admin", 81), PortMapping("http", 80, 8080))})
    store.put(lease)
    assert store.get("k" * 12) == lease
    assert [p.label for p in lease.ports()] == ["admin", "http"]
    assert store.used() == {"10.0.0.2"}
    (store.dir / "torn.json").write_text("{")
    assert store.get("torn") is None
    store.delete("k" * 12)
    assert store.alloc_keys() == ["torn"]


def test_pick_address_lowest_free_and_exhaustion() -> None:
    assert pick_address("10.0.0.0/29", {"10.0.0.1"}, {"10.0.0.2"}, "o") == "10.0.0.3"
    with pytest.raises(NetworkError) as err:
        pick_address("10.0.0.0/30", {"10.0.0.1"}, {"10.0.0.2"}, "network.ipv4_pool")
    assert err.value.field == "network.ipv4_pool"
    assert pick_address("fd00::/64", {"fd00::1"}, set(), "o") == "fd00::2"


def test_alloc_network_fields() -> None:
    a = AllocNetwork("id", "bridge", "10.0.0.2", 24, "10.0.0.1",
                     ports=(PortMapping("http", 80, 8080),), netns_path="/var/run/netns/x")
    assert a.port_map() == {"http": 8080}
    assert a.jail_spec_fields() == {"network": "netns", "netns_path": "/var/run/netns/x"}
