package main

// The Nomad client's part of a group network (Nomad's client/allocrunner network hooks): for a group
// `network { mode = "bridge" | "none" }` the client itself creates the alloc's network namespace
// at /var/run/netns/<name> before any task starts, and hands every task of the group
// network_isolation_spec{mode GROUP, path, hostsConfig} (+ dns from a `dns {}` block). The rig
// does the same with iproute2: `ip netns add`, loopback up, and for bridge a veth pair host <->
// namespace with addresses from a private /30 (host .1, alloc .2, no NAT: the host reaches the
// alloc directly). The namespace (and veth) is deleted when the alloc's last task is destroyed.
// Nomad names the namespace after the alloc id; tests pass their own prefixed name to be swept.

import (
	"fmt"
	"math/rand"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"nomadsim/pb/drivers"
)

const netnsDir = "/var/run/netns"

// NetworkSpec is a group's network block as tests and run-job give it.
type NetworkSpec struct {
	Mode     string     `json:"mode"`     // "host" (or empty), "bridge", "none"
	Netns    string     `json:"netns"`    // namespace name under /var/run/netns (default: alloc id)
	Hostname string     `json:"hostname"` // default: the first 8 characters of the alloc id
	DNS      *DNSSpec   `json:"dns"`
	Ports    []PortSpec `json:"ports"` // port "<label>" { static, to } (ports.go)
}

type DNSSpec struct {
	Servers  []string `json:"servers"`
	Searches []string `json:"searches"`
	Options  []string `json:"options"`
}

// allocNet is one alloc's namespace, shared by the tasks of the alloc.
type allocNet struct {
	Name     string
	Mode     string
	HostVeth string // bridge only
	HostAddr string
	Addr     string // the alloc's address (bridge)
	refs     int
}

func (n *allocNet) path() string { return filepath.Join(netnsDir, n.Name) }

func (n *allocNet) describe() response {
	return response{"mode": n.Mode, "netns": n.Name, "path": n.path(), "address": n.Addr,
		"host_address": n.HostAddr, "host_veth": n.HostVeth}
}

var allocNets = struct {
	mu sync.Mutex
	m  map[string]*allocNet
}{m: map[string]*allocNet{}}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// acquireNetwork makes (or joins) the alloc's namespace; nil for host networking.
func acquireNetwork(s TaskSpec) (*allocNet, error) {
	ns := s.Network
	if ns == nil || ns.Mode == "" || ns.Mode == "host" {
		return nil, nil
	}
	if ns.Mode != "bridge" && ns.Mode != "none" {
		return nil, fmt.Errorf("network mode %q: the rig emulates host, bridge and none", ns.Mode)
	}
	name := ns.Netns
	if name == "" {
		name = s.AllocID
	}
	if strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return nil, fmt.Errorf("network.netns %q must be a plain name", name)
	}
	allocNets.mu.Lock()
	defer allocNets.mu.Unlock()
	if n := allocNets.m[name]; n != nil {
		n.refs++
		return n, nil
	}
	n := &allocNet{Name: name, Mode: ns.Mode, refs: 1}
	if err := n.create(); err != nil {
		n.remove()
		return nil, err
	}
	allocNets.m[name] = n
	return n, nil
}

func (n *allocNet) create() error {
	if err := ipCmd("netns", "add", n.Name); err != nil {
		return err
	}
	if err := ipCmd("-n", n.Name, "link", "set", "lo", "up"); err != nil {
		return err
	}
	if n.Mode != "bridge" {
		return nil
	}
	hostAddr, addr, err := freeSubnet()
	if err != nil {
		return err
	}
	suffix := randomHex(5)
	n.HostVeth = "xcv" + suffix // <= 15 characters (IFNAMSIZ)
	peer := "xcp" + suffix
	n.HostAddr, n.Addr = hostAddr, addr
	for _, args := range [][]string{
		{"link", "add", n.HostVeth, "type", "veth", "peer", "name", peer, "netns", n.Name},
		{"addr", "add", n.HostAddr + "/30", "dev", n.HostVeth},
		{"link", "set", n.HostVeth, "up"},
		{"-n", n.Name, "link", "set", peer, "name", "eth0"},
		{"-n", n.Name, "addr", "add", n.Addr + "/30", "dev", "eth0"},
		{"-n", n.Name, "link", "set", "eth0", "up"},
		{"-n", n.Name, "route", "add", "default", "via", n.HostAddr},
	} {
		if err := ipCmd(args...); err != nil {
			return err
		}
	}
	return nil
}

// freeSubnet picks a /30 in 10.199.0.0/16 that no host interface uses: (host .1, alloc .2).
func freeSubnet() (string, string, error) {
	out, err := exec.Command("ip", "-o", "-4", "addr", "show").Output()
	if err != nil {
		return "", "", fmt.Errorf("ip addr show: %v", err)
	}
	used := string(out)
	for i := 0; i < 64; i++ {
		block := rand.Intn(1 << 14) // 16384 /30s
		third, base := block/64, (block%64)*4
		host := fmt.Sprintf("10.199.%d.%d", third, base+1)
		alloc := fmt.Sprintf("10.199.%d.%d", third, base+2)
		if !strings.Contains(used, " "+host+"/") && !strings.Contains(used, " "+alloc+"/") {
			return host, alloc, nil
		}
	}
	return "", "", fmt.Errorf("no free /30 in 10.199.0.0/16")
}

// remove deletes the namespace and the host end of the veth (which takes its peer with it).
func (n *allocNet) remove() {
	if n.HostVeth != "" {
		_ = ipCmd("link", "del", n.HostVeth)
	}
	_ = ipCmd("netns", "delete", n.Name)
}

func releaseNetwork(n *allocNet) {
	if n == nil {
		return
	}
	allocNets.mu.Lock()
	defer allocNets.mu.Unlock()
	n.refs--
	if n.refs > 0 {
		return
	}
	delete(allocNets.m, n.Name)
	n.remove()
}

// releaseAllNetworks is the rig's exit: no alloc outlives it.
func releaseAllNetworks() {
	allocNets.mu.Lock()
	defer allocNets.mu.Unlock()
	for name, n := range allocNets.m {
		n.remove()
		delete(allocNets.m, name)
	}
}

// isolationSpec is what the client puts in TaskConfig for the alloc's network.
func isolationSpec(n *allocNet, s TaskSpec) *drivers.NetworkIsolationSpec {
	spec := &drivers.NetworkIsolationSpec{Mode: drivers.NetworkIsolationSpec_GROUP, Path: n.path(),
		Labels: map[string]string{}}
	if n.Mode == "bridge" {
		hostname := s.Network.Hostname
		if hostname == "" {
			hostname = s.AllocID[:8]
		}
		spec.HostsConfig = &drivers.HostsConfig{Hostname: hostname, Address: n.Addr}
	}
	return spec
}

func dnsConfig(s TaskSpec) *drivers.DNSConfig {
	if s.Network == nil || s.Network.DNS == nil {
		return nil
	}
	d := s.Network.DNS
	return &drivers.DNSConfig{Servers: d.Servers, Searches: d.Searches, Options: d.Options}
}
