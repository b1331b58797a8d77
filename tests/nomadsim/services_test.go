package main

import (
	"strings"
	"testing"

	"nomadsim/pb/drivers"
)

var svcPorts = []AllocatedPort{{Label: "http", Value: 23456, To: 8080, HostIP: "127.0.0.1"}}

func TestServiceAddressModes(t *testing.T) {
	bridge := &DriverNet{IP: "10.88.0.5", PortMap: map[string]int{"http": 8080}, AutoAdvertise: true}
	quiet := &DriverNet{IP: "10.88.0.5", PortMap: map[string]int{"http": 8080}}
	for _, tc := range []struct {
		name, mode, label string
		dn                *DriverNet
		addr              string
		port              int
		err               string
	}{
		{"driver mode: the task's own address and `to`", "driver", "http", bridge, "10.88.0.5", 8080, ""},
		{"auto with auto_advertise is driver", "auto", "http", bridge, "10.88.0.5", 8080, ""},
		{"auto without auto_advertise is host", "auto", "http", quiet, "127.0.0.1", 23456, ""},
		{"auto without a driver network is host", "", "http", nil, "127.0.0.1", 23456, ""},
		{"host mode ignores the driver network", "host", "http", bridge, "127.0.0.1", 23456, ""},
		{"driver mode without a driver network fails", "driver", "http", nil, "", 0, "no driver network exists"},
		{"driver mode, no label: the address", "driver", "", bridge, "10.88.0.5", 0, ""},
		{"driver mode, a number", "driver", "9090", bridge, "10.88.0.5", 9090, ""},
		{"driver mode, unknown label", "driver", "grpc", bridge, "", 0, "in the driver's port map"},
		{"host mode, unknown label", "host", "grpc", nil, "", 0, `invalid port "grpc": port label not found`},
		{"alloc mode needs a network status", "alloc", "http", bridge, "", 0, "no allocation network status"},
	} {
		addr, port, err := resolveAddress("", tc.mode, tc.label, nil, tc.dn, svcPorts, "")
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || addr != tc.addr || port != tc.port {
			t.Errorf("%s: got %s:%d %v, want %s:%d", tc.name, addr, port, err, tc.addr, tc.port)
		}
	}
}

func TestDriverModeUsesThePortMapForLabelsOutsideTheGroup(t *testing.T) {
	dn := &DriverNet{IP: "10.88.0.5", PortMap: map[string]int{"metrics": 9100}}
	addr, port, err := resolveAddress("", "driver", "metrics", nil, dn, svcPorts, "")
	if err != nil || addr != "10.88.0.5" || port != 9100 {
		t.Fatalf("got %s:%d %v", addr, port, err)
	}
}

func TestCustomAddressOnlyInAutoMode(t *testing.T) {
	addr, port, err := resolveAddress("203.0.113.7", "auto", "http", nil, nil, svcPorts, "")
	if err != nil || addr != "203.0.113.7" || port != 23456 {
		t.Fatalf("got %s:%d %v", addr, port, err)
	}
	if _, _, err := resolveAddress("203.0.113.7", "driver", "http", nil, nil, svcPorts, ""); err == nil {
		t.Fatal("custom address accepted in driver mode")
	}
}

func TestGroupServicesUseTheGroupNetwork(t *testing.T) {
	networks := []netResource{{IP: "127.0.0.1", Ports: svcPorts}}
	r := register(ServiceSpec{Provider: "nomad", Port: "http"}, "web", "g", "a1", nil, networks,
		groupDriverNet("127.0.0.1", svcPorts), svcPorts, "")
	// auto + the client's made-up driver network: the host address with the port's `to`.
	if r.Service != "web-g" || r.Address != "127.0.0.1" || r.Port != 8080 || r.Error != "" {
		t.Fatalf("registration = %+v", r)
	}
	host := register(ServiceSpec{AddressMode: "host"}, "web", "g", "a1", nil, networks, nil, svcPorts, "")
	if host.Address != "127.0.0.1" || host.Port != 0 || host.Provider != "consul" {
		t.Fatalf("no-port host registration = %+v", host)
	}
}

func TestTaskServiceNameAndInterpolation(t *testing.T) {
	env := map[string]string{"NOMAD_ALLOC_INDEX": "1"}
	r := register(ServiceSpec{Name: "web-${NOMAD_ALLOC_INDEX}", Provider: "nomad", AddressMode: "driver",
		Port: "http", Task: "server"}, "j", "g", "a1", env, nil,
		&DriverNet{IP: "10.88.0.9"}, svcPorts, "")
	if r.Service != "web-1" || r.Address != "10.88.0.9" || r.Port != 8080 || r.Task != "server" {
		t.Fatalf("registration = %+v", r)
	}
	if d := register(ServiceSpec{Task: "server"}, "j", "g", "a1", nil, nil, nil, nil, ""); d.Service != "j-g-server" {
		t.Fatalf("default name = %q", d.Service)
	}
}

func TestNetworkOverridePresenceIsADriverNetwork(t *testing.T) {
	if driverNetFromProto(nil) != nil {
		t.Fatal("no override gave a driver network")
	}
	dn := driverNetFromProto(&drivers.NetworkOverride{Addr: "10.88.0.2", PortMap: map[string]int32{"http": 8080}, AutoAdvertise: true})
	if dn.IP != "10.88.0.2" || dn.PortMap["http"] != 8080 || !dn.advertise() {
		t.Fatalf("driver network = %+v", dn)
	}
}
