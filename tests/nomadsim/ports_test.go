package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestStaticAndDynamicPortsPlacedOnTheClientAddress(t *testing.T) {
	b := newPortBook(nil)
	got, err := b.acquire("a1", "127.0.0.1", []PortSpec{{Label: "http", To: 8080}, {Label: "admin", Static: 9000}}, 20000, 20010)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Label != "http" || got[1].Label != "admin" {
		t.Fatalf("ports = %+v, want http then admin (the job's order)", got)
	}
	if got[0].Value < 20000 || got[0].Value > 20010 || got[0].To != 8080 || got[0].HostIP != "127.0.0.1" {
		t.Fatalf("http = %+v, want a dynamic port in 20000-20010 -> 8080 on 127.0.0.1", got[0])
	}
	if got[1] != (AllocatedPort{Label: "admin", Value: 9000, To: 0, HostIP: "127.0.0.1"}) {
		t.Fatalf("admin = %+v", got[1])
	}
}

func TestTasksOfOneAllocShareItsPortsUntilTheLastLeaves(t *testing.T) {
	b := newPortBook(nil)
	specs := []PortSpec{{Label: "http", Static: 8080}}
	first, _ := b.acquire("a1", "127.0.0.1", specs, 20000, 20010)
	second, err := b.acquire("a1", "127.0.0.1", specs, 20000, 20010)
	if err != nil || !reflect.DeepEqual(first, second) {
		t.Fatalf("second task got %+v, %v; want the alloc's %+v", second, err, first)
	}
	if _, err := b.acquire("a2", "127.0.0.1", specs, 20000, 20010); err == nil ||
		!strings.Contains(err.Error(), "static port 8080") {
		t.Fatalf("a second alloc on static 8080: err = %v", err)
	}
	b.release("a1")
	if _, err := b.acquire("a2", "127.0.0.1", specs, 20000, 20010); err == nil {
		t.Fatal("the port was freed while a task of a1 still runs")
	}
	b.release("a1")
	if _, err := b.acquire("a2", "127.0.0.1", specs, 20000, 20010); err != nil {
		t.Fatalf("after a1's last task: %v", err)
	}
}

func TestDynamicPortsNeverCollideAndRunOut(t *testing.T) {
	b := newPortBook(nil)
	seen := map[int]bool{}
	for i := 0; i < 3; i++ {
		ps, err := b.acquire(string(rune('a'+i)), "127.0.0.1", []PortSpec{{Label: "http"}}, 20000, 20002)
		if err != nil {
			t.Fatal(err)
		}
		if seen[ps[0].Value] {
			t.Fatalf("port %d given twice", ps[0].Value)
		}
		seen[ps[0].Value] = true
	}
	_, err := b.acquire("d", "127.0.0.1", []PortSpec{{Label: "http"}}, 20000, 20002)
	if err == nil || !strings.Contains(err.Error(), "no free dynamic port in 20000-20002") {
		t.Fatalf("err = %v", err)
	}
	// A failed placement holds nothing.
	b.release("a")
	if _, err := b.acquire("d", "127.0.0.1", []PortSpec{{Label: "http"}}, 20000, 20002); err != nil {
		t.Fatal(err)
	}
}

func TestPortsBusyOnTheHostAreSkipped(t *testing.T) {
	b := newPortBook(func(_ string, p int) bool { return p != 20000 })
	ps, err := b.acquire("a", "127.0.0.1", []PortSpec{{Label: "http"}}, 20000, 20001)
	if err != nil || ps[0].Value != 20001 {
		t.Fatalf("ports = %+v, %v; want 20001", ps, err)
	}
}

func TestToMinusOneIsTheHostPort(t *testing.T) {
	ps, err := newPortBook(nil).acquire("a", "10.0.0.5", []PortSpec{{Label: "http", Static: 8081, To: -1}}, 20000, 20010)
	if err != nil || ps[0].To != 8081 {
		t.Fatalf("ports = %+v, %v", ps, err)
	}
}

func TestPortEnvLikeNomadsEnvBuilder(t *testing.T) {
	env := portEnv([]AllocatedPort{
		{Label: "http", Value: 23456, To: 8080, HostIP: "127.0.0.1"},
		{Label: "admin", Value: 9000, HostIP: "127.0.0.1"},
		{Label: "my-port", Value: 9001, HostIP: "127.0.0.1"},
	})
	want := map[string]string{
		"NOMAD_PORT_http": "8080", "NOMAD_ALLOC_PORT_http": "8080", "NOMAD_HOST_PORT_http": "23456",
		"NOMAD_IP_http": "127.0.0.1", "NOMAD_HOST_IP_http": "127.0.0.1",
		"NOMAD_ADDR_http": "127.0.0.1:23456", "NOMAD_HOST_ADDR_http": "127.0.0.1:23456",
		// no `to`: the task listens on the host port
		"NOMAD_PORT_admin": "9000", "NOMAD_ALLOC_PORT_admin": "9000", "NOMAD_HOST_PORT_admin": "9000",
		"NOMAD_ADDR_admin": "127.0.0.1:9000",
		// cleaned under the NOMAD_{ADDR,IP,PORT,HOST_PORT}_ prefixes only
		"NOMAD_PORT_my_port": "9001", "NOMAD_HOST_PORT_my_port": "9001", "NOMAD_ALLOC_PORT_my-port": "9001",
		"NOMAD_HOST_ADDR_my-port": "127.0.0.1:9001",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
}

func TestTaskEnvKeepsPortsUnderTheTasksOwnEnv(t *testing.T) {
	s := TaskSpec{Name: "t", AllocID: "a1b2c3d4-0000", Job: "j", Group: "g", AllocIndex: 1,
		Env: map[string]string{"NOMAD_PORT_http": "1"}}
	env := taskEnv(s, 100, 300, []AllocatedPort{{Label: "http", Value: 20001, To: 8080, HostIP: "127.0.0.1"}})
	if env["NOMAD_PORT_http"] != "1" || env["NOMAD_HOST_PORT_http"] != "20001" {
		t.Fatalf("env = %v", env)
	}
	if env["NOMAD_ALLOC_INDEX"] != "1" || env["NOMAD_ALLOC_NAME"] != "j.g[1]" {
		t.Fatalf("alloc index/name = %q %q", env["NOMAD_ALLOC_INDEX"], env["NOMAD_ALLOC_NAME"])
	}
}

func TestPortMappingsCarryEveryField(t *testing.T) {
	pm := portMappings([]AllocatedPort{{Label: "http", Value: 20001, To: 8080, HostIP: "127.0.0.1"}})
	if len(pm) != 1 || pm[0].GetLabel() != "http" || pm[0].GetValue() != 20001 || pm[0].GetTo() != 8080 ||
		pm[0].GetHostIp() != "127.0.0.1" {
		t.Fatalf("mappings = %v", pm)
	}
}

func TestLoopbackInterfaceGivesLoopbackAddress(t *testing.T) {
	ip, err := hostIP("lo")
	if err != nil || ip != "127.0.0.1" {
		t.Fatalf("hostIP(lo) = %q, %v", ip, err)
	}
	if _, err := hostIP("xctest-none0"); err == nil || !strings.Contains(err.Error(), "network_interface") {
		t.Fatalf("missing interface: err = %v", err)
	}
}

func TestAgentClientBlock(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.hcl")
	src := `plugin_dir = "/x"
client {
  enabled           = true
  network_interface = "lo"
  min_dynamic_port  = 21000
  max_dynamic_port  = 21999
}
plugin "xc" {}
`
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := parseClientBlock(p)
	if err != nil {
		t.Fatal(err)
	}
	if c != (ClientConfig{NetworkInterface: "lo", MinDynamicPort: 21000, MaxDynamicPort: 21999}) {
		t.Fatalf("client = %+v", c)
	}
	if err := setClientConfig(ClientConfig{MinDynamicPort: 30000, MaxDynamicPort: 20000}); err == nil {
		t.Fatal("min > max accepted")
	}
}
