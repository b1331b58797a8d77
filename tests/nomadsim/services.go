package main

// Service registrations as Nomad's client computes them (client/serviceregistration GetAddress):
// a task's service resolves its address with the DriverNetwork its driver returned from
// StartTask (network_override: addr, port_map, auto_advertise); a group service with a
// DriverNetwork the client makes from the group network (its address, the ports' host values,
// auto_advertise). address_mode "auto" is "driver" when the driver network says advertise,
// else "host"; "host" is the port's host_ip:value; "driver" is the driver's address with the
// port's `to` (or the driver's port map, or a literal number); "alloc" is the group network's
// own address (the rig's bridge). The rig prints what the `nomad` provider would store.

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"

	"nomadsim/pb/drivers"
)

// ServiceSpec is one `service { }` block of a group or a task.
type ServiceSpec struct {
	Name        string `json:"name"`
	Provider    string `json:"provider"`     // "consul" (Nomad's default) or "nomad"
	AddressMode string `json:"address_mode"` // "auto" (default), "host", "driver", "alloc"
	Port        string `json:"port"`         // a port label or a number
	Address     string `json:"address"`      // custom advertise address (auto mode only)
	Task        string `json:"task"`         // "" for a group service
}

// DriverNet is Nomad's drivers.DriverNetwork.
type DriverNet struct {
	IP            string         `json:"ip"`
	PortMap       map[string]int `json:"port_map"`
	AutoAdvertise bool           `json:"auto_advertise"`
}

func (d *DriverNet) advertise() bool { return d != nil && d.AutoAdvertise }

// netResource is one entry of structs.Networks: an address and the ports on it.
type netResource struct {
	IP    string
	Ports []AllocatedPort
}

// Registration is one service instance as the nomad provider would store it.
type Registration struct {
	Service     string `json:"service"`
	Provider    string `json:"provider"`
	AllocID     string `json:"alloc_id"`
	Task        string `json:"task,omitempty"`
	AddressMode string `json:"address_mode"`
	Address     string `json:"address"`
	Port        int    `json:"port"`
	Error       string `json:"error,omitempty"` // Nomad fails the task's service hook with this
}

func findPort(ps []AllocatedPort, label string) (AllocatedPort, bool) {
	for _, p := range ps {
		if p.Label == label {
			return p, true
		}
	}
	return AllocatedPort{}, false
}

// resolveAddress follows GetAddress's rules; netStatusAddr is "" without a group network status.
func resolveAddress(address, mode, label string, networks []netResource, dn *DriverNet,
	ps []AllocatedPort, netStatusAddr string) (string, int, error) {
	literal := func(what string) (int, error) {
		n, err := strconv.Atoi(label)
		if err != nil {
			return 0, errors.New(what)
		}
		if n <= 0 {
			return 0, fmt.Errorf("invalid port: %q: port must be >0", label)
		}
		return n, nil
	}
	switch mode {
	case "", "auto":
		switch {
		case address != "":
			if label == "" {
				return address, 0, nil
			}
			if p, ok := findPort(ps, label); ok {
				return address, p.Value, nil
			}
			n, err := literal(fmt.Sprintf("invalid port: %q: not a valid port mapping or numeric port", label))
			return address, n, err
		case dn.advertise():
			return resolveAddress("", "driver", label, networks, dn, ps, netStatusAddr)
		default:
			return resolveAddress("", "host", label, networks, dn, ps, netStatusAddr)
		}
	case "host":
		if address != "" {
			return "", 0, fmt.Errorf("cannot use custom advertise address with %q address mode", mode)
		}
		if label == "" {
			if len(networks) != 1 {
				return "", 0, nil
			}
			return networks[0].IP, 0, nil
		}
		if p, ok := findPort(ps, label); ok {
			return p.HostIP, p.Value, nil
		}
		for _, n := range networks {
			if p, ok := findPort(n.Ports, label); ok && p.Value > 0 {
				return p.HostIP, p.Value, nil
			}
		}
		n, err := literal(fmt.Sprintf("invalid port %q: port label not found", label))
		return "", n, err
	case "driver":
		if address != "" {
			return "", 0, fmt.Errorf("cannot use custom advertise address with %q address mode", mode)
		}
		if dn == nil {
			return "", 0, errors.New(`cannot use address_mode="driver": no driver network exists`)
		}
		if label == "" {
			return dn.IP, 0, nil
		}
		if p, ok := findPort(ps, label); ok {
			return dn.IP, p.To, nil
		}
		if v, ok := dn.PortMap[label]; ok {
			return dn.IP, v, nil
		}
		n, err := literal(fmt.Sprintf("invalid port label %q: port labels in driver address_mode must be "+
			"numeric or in the driver's port map", label))
		return dn.IP, n, err
	case "alloc":
		if address != "" {
			return "", 0, fmt.Errorf("cannot use custom advertise address with %q address mode", mode)
		}
		if netStatusAddr == "" {
			return "", 0, errors.New(`cannot use address_mode="alloc": no allocation network status reported`)
		}
		if label == "" {
			return netStatusAddr, 0, nil
		}
		if p, ok := findPort(ps, label); ok {
			if p.To > 0 {
				return netStatusAddr, p.To, nil
			}
			return netStatusAddr, p.Value, nil
		}
		n, err := literal(fmt.Sprintf("invalid port %q: port label not found or is not numeric", label))
		return netStatusAddr, n, err
	}
	return "", 0, fmt.Errorf("invalid address mode %q", mode)
}

// groupDriverNet is the DriverNetwork the client makes up for group services.
func groupDriverNet(hostIP string, ps []AllocatedPort) *DriverNet {
	m := map[string]int{}
	for _, p := range ps {
		m[p.Label] = p.Value
	}
	return &DriverNet{IP: hostIP, PortMap: m, AutoAdvertise: true}
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z0-9_.]+)\}`)

// interpolate replaces ${NAME} from the task environment, as InterpolateServices does.
func interpolate(s string, env map[string]string) string {
	return envRef.ReplaceAllStringFunc(s, func(m string) string {
		if v, ok := env[m[2:len(m)-1]]; ok {
			return v
		}
		return m
	})
}

// register computes one service's registration. networks is the task's (empty for group
// networks) or, for a group service, the group's.
func register(s ServiceSpec, job, group, allocID string, env map[string]string, networks []netResource,
	dn *DriverNet, ps []AllocatedPort, netStatusAddr string) Registration {
	name := s.Name
	if name == "" {
		name = job + "-" + group
		if s.Task != "" {
			name += "-" + s.Task
		}
	}
	provider, mode := s.Provider, s.AddressMode
	if provider == "" {
		provider = "consul"
	}
	if mode == "" {
		mode = "auto"
	}
	r := Registration{Service: interpolate(name, env), Provider: provider, AllocID: allocID, Task: s.Task, AddressMode: mode}
	addr, port, err := resolveAddress(interpolate(s.Address, env), mode, interpolate(s.Port, env), networks, dn, ps, netStatusAddr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	r.Address, r.Port = addr, port
	return r
}

// driverNetFromProto reads StartTaskResponse.network_override: a message that is present is a
// DriverNetwork even when its fields are empty, as in Nomad's proto conversion.
func driverNetFromProto(o *drivers.NetworkOverride) *DriverNet {
	if o == nil {
		return nil
	}
	m := make(map[string]int, len(o.GetPortMap()))
	for k, v := range o.GetPortMap() {
		m[k] = int(v)
	}
	return &DriverNet{IP: o.GetAddr(), PortMap: m, AutoAdvertise: o.GetAutoAdvertise()}
}
