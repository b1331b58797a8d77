package main

// A group's `network { port "<label>" { static = N, to = M } }` as Nomad's scheduler and client
// treat it: every port gets a host port on the client's network address (a static one as
// written, a dynamic one picked from the client's range, 20000-32000 unless the client block
// says otherwise), the alloc's ports reach every task of the group as
// TaskConfig.resources.ports (PortMapping{label, value, to, host_ip}, Nomad's
// AllocatedResources.Shared.Ports), and the task environment gets NOMAD_{IP,PORT,ADDR,HOST_IP,
// HOST_PORT,HOST_ADDR,ALLOC_PORT}_<label> (client/taskenv/env.go, addPorts). A driver's
// network_override (DriverNetwork) changes only the service addresses (services.go): for group
// ports the env builder never reads it.
//
// AllocatedTaskResources.networks stays empty, as in Nomad for group networks: the task-level
// `resources { network {} }` that filled it is gone from Nomad's job spec.

import (
	"bufio"
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"nomadsim/pb/drivers"
)

// PortSpec is one `port "<label>" { static, to }` of a group network.
type PortSpec struct {
	Label  string `json:"label"`
	Static int    `json:"static"` // 0: dynamic
	To     int    `json:"to"`     // 0: unset; -1: the host port (Nomad's "to = -1")
}

// AllocatedPort is Nomad's AllocatedPortMapping.
type AllocatedPort struct {
	Label  string `json:"label"`
	Value  int    `json:"value"`
	To     int    `json:"to"`
	HostIP string `json:"host_ip"`
}

// ClientConfig is the part of the agent's `client { }` block the rig honours.
type ClientConfig struct {
	NetworkInterface string `json:"network_interface"` // "" : the default route's interface
	MinDynamicPort   int    `json:"min_dynamic_port"`  // 0: 20000
	MaxDynamicPort   int    `json:"max_dynamic_port"`  // 0: 32000
}

func (c ClientConfig) portRange() (int, int) {
	lo, hi := c.MinDynamicPort, c.MaxDynamicPort
	if lo == 0 {
		lo = 20000
	}
	if hi == 0 {
		hi = 32000
	}
	return lo, hi
}

var clientConf = struct {
	mu  sync.Mutex
	cfg ClientConfig
}{}

func setClientConfig(c ClientConfig) error {
	lo, hi := c.portRange()
	if lo < 1 || hi > 65535 || lo > hi {
		return fmt.Errorf("client: min_dynamic_port %d and max_dynamic_port %d must be 1 <= min <= max <= 65535", lo, hi)
	}
	if _, err := hostIP(c.NetworkInterface); err != nil {
		return err
	}
	clientConf.mu.Lock()
	clientConf.cfg = c
	clientConf.mu.Unlock()
	return nil
}

func clientConfig() ClientConfig {
	clientConf.mu.Lock()
	defer clientConf.mu.Unlock()
	return clientConf.cfg
}

// hostIP is the address Nomad's client fingerprints for its network: the first IPv4 address
// of network_interface, or of the default route's interface when none is configured.
func hostIP(iface string) (string, error) {
	if iface == "" {
		iface = defaultRouteInterface()
		if iface == "" {
			return "127.0.0.1", nil // no default route: nothing but loopback to offer
		}
	}
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return "", fmt.Errorf("client.network_interface %q: %v", iface, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return "", fmt.Errorf("client.network_interface %q: %v", iface, err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			return ipn.IP.String(), nil
		}
	}
	return "", fmt.Errorf("client.network_interface %q has no IPv4 address", iface)
}

// defaultRouteInterface reads /proc/net/route for the 0.0.0.0/0 entry.
func defaultRouteInterface() string {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 7 && fields[1] == "00000000" && fields[7] == "00000000" {
			return fields[0]
		}
	}
	return ""
}

// portBook is the client's view of which host ports its allocs hold, per address.
type portBook struct {
	mu     sync.Mutex
	byAddr map[string]map[int]string // host ip -> port -> alloc id
	allocs map[string]*allocPorts
	// free says whether nothing else on the host listens there. Nomad's scheduler only knows
	// its own allocs; on a machine shared with other rigs a bound port would fail the task's
	// start instead of the placement, so the rig skips those.
	free func(ip string, port int) bool
}

type allocPorts struct {
	ports []AllocatedPort
	refs  int
}

var portsBook = newPortBook(portFreeOnHost)

func newPortBook(free func(string, int) bool) *portBook {
	return &portBook{byAddr: map[string]map[int]string{}, allocs: map[string]*allocPorts{}, free: free}
}

func portFreeOnHost(ip string, port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

var errNoDynamicPort = errors.New("no free dynamic port")

// acquire gives the alloc its ports (the first task of an alloc places them; the others share).
func (b *portBook) acquire(allocID, ip string, specs []PortSpec, lo, hi int) ([]AllocatedPort, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if a := b.allocs[allocID]; a != nil {
		a.refs++
		return a.ports, nil
	}
	if len(specs) == 0 {
		return nil, nil
	}
	used := b.byAddr[ip]
	if used == nil {
		used = map[int]string{}
		b.byAddr[ip] = used
	}
	var out []AllocatedPort
	undo := func() {
		for _, p := range out {
			delete(used, p.Value)
		}
	}
	seen := map[string]bool{}
	// Static ports first, so a dynamic pick never takes a port the group asks for by number.
	order := append([]PortSpec(nil), specs...)
	sort.SliceStable(order, func(i, j int) bool { return order[i].Static > 0 && order[j].Static == 0 })
	for _, s := range order {
		if seen[s.Label] {
			undo()
			return nil, fmt.Errorf("network: port label %q is defined twice", s.Label)
		}
		seen[s.Label] = true
		value := s.Static
		if value > 0 {
			if owner, taken := used[value]; taken {
				undo()
				return nil, fmt.Errorf("network: static port %d (%q) on %s is already held by alloc %s: "+
					"Nomad would not place this alloc on the node", value, s.Label, ip, owner)
			}
		} else {
			v, err := b.pickDynamic(used, ip, lo, hi)
			if err != nil {
				undo()
				return nil, fmt.Errorf("network: port %q: %w in %d-%d on %s", s.Label, err, lo, hi, ip)
			}
			value = v
		}
		used[value] = allocID
		to := s.To
		if to < 0 {
			to = value
		}
		out = append(out, AllocatedPort{Label: s.Label, Value: value, To: to, HostIP: ip})
	}
	// Back in the job's order, as Nomad lists them.
	pos := map[string]int{}
	for i, s := range specs {
		pos[s.Label] = i
	}
	sort.SliceStable(out, func(i, j int) bool { return pos[out[i].Label] < pos[out[j].Label] })
	b.allocs[allocID] = &allocPorts{ports: out, refs: 1}
	return out, nil
}

// pickDynamic tries random ports in the range, then walks it, like Nomad's network index.
func (b *portBook) pickDynamic(used map[int]string, ip string, lo, hi int) (int, error) {
	ok := func(p int) bool {
		_, taken := used[p]
		return !taken && (b.free == nil || b.free(ip, p))
	}
	for i := 0; i < 20; i++ {
		if p := lo + rand.Intn(hi-lo+1); ok(p) {
			return p, nil
		}
	}
	for p := lo; p <= hi; p++ {
		if ok(p) {
			return p, nil
		}
	}
	return 0, errNoDynamicPort
}

// release frees the alloc's ports with its last task.
func (b *portBook) release(allocID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.allocs[allocID]
	if a == nil {
		return
	}
	a.refs--
	if a.refs > 0 {
		return
	}
	delete(b.allocs, allocID)
	for _, p := range a.ports {
		if m := b.byAddr[p.HostIP]; m != nil && m[p.Value] == allocID {
			delete(m, p.Value)
		}
	}
}

// portMappings is TaskConfig.resources.ports.
func portMappings(ps []AllocatedPort) []*drivers.PortMapping {
	out := make([]*drivers.PortMapping, 0, len(ps))
	for _, p := range ps {
		out = append(out, &drivers.PortMapping{Label: p.Label, Value: int32(p.Value), To: int32(p.To), HostIp: p.HostIP})
	}
	return out
}

// portEnv is what Nomad's env builder sets for the alloc's ports (addPorts in taskenv).
func portEnv(ps []AllocatedPort) map[string]string {
	env := map[string]string{}
	for _, p := range ps {
		host := strconv.Itoa(p.Value)
		addr := net.JoinHostPort(p.HostIP, host)
		task := host
		if p.To > 0 {
			task = strconv.Itoa(p.To)
		}
		for prefix, v := range map[string]string{
			"NOMAD_ADDR_": addr, "NOMAD_HOST_ADDR_": addr, "NOMAD_IP_": p.HostIP, "NOMAD_HOST_IP_": p.HostIP,
			"NOMAD_PORT_": task, "NOMAD_ALLOC_PORT_": task, "NOMAD_HOST_PORT_": host,
		} {
			env[cleanEnvName(prefix+p.Label, prefix)] = v
		}
	}
	return env
}

// cleanEnvName is the env builder's last pass: under NOMAD_{ADDR,IP,PORT,HOST_PORT}_ a name
// keeps letters, '_', '.' and (not first) digits; anything else becomes '_'.
func cleanEnvName(name, prefix string) string {
	switch prefix {
	case "NOMAD_ADDR_", "NOMAD_IP_", "NOMAD_PORT_", "NOMAD_HOST_PORT_":
	default:
		return name
	}
	b := []byte(name)
	for i, c := range b {
		switch {
		case c == '_', c == '.', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', i > 0 && c >= '0' && c <= '9':
		default:
			b[i] = '_'
		}
	}
	return string(b)
}
