package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func writeJob(t *testing.T, network string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "job.nomad.hcl")
	src := `job "j" {
  group "g" {
` + network + `
    task "t" {
      driver = "xc"
      config { image = "x" }
    }
  }
}
`
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestJobFileGroupNetwork(t *testing.T) {
	jt, err := parseJobFile(writeJob(t, `    network {
      mode     = "bridge"
      hostname = "web-1"
      port "http" { to = 8080 }
      dns {
        servers  = ["10.0.0.53", "10.0.0.54"]
        searches = ["svc.local"]
        options  = ["ndots:2"]
      }
    }`))
	if err != nil {
		t.Fatal(err)
	}
	want := &NetworkSpec{Mode: "bridge", Hostname: "web-1", DNS: &DNSSpec{
		Servers: []string{"10.0.0.53", "10.0.0.54"}, Searches: []string{"svc.local"}, Options: []string{"ndots:2"}},
		Ports: []PortSpec{{Label: "http", To: 8080}}}
	if !reflect.DeepEqual(jt.Spec.Network, want) {
		t.Fatalf("network = %+v, want %+v", jt.Spec.Network, want)
	}
	if len(jt.Ignored) != 0 {
		t.Fatalf("ignored = %v", jt.Ignored)
	}
}

func TestJobFileWithoutNetworkIsHost(t *testing.T) {
	jt, err := parseJobFile(writeJob(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	if jt.Spec.Network != nil {
		t.Fatalf("network = %+v, want nil", jt.Spec.Network)
	}
	if s := dnsConfig(jt.Spec); s != nil {
		t.Fatalf("dns = %v, want nil", s)
	}
}

func TestJobFileBadNetwork(t *testing.T) {
	for _, tc := range []struct{ block, words string }{
		{`network { mode = "cni/mynet" }`, `network mode "cni/mynet"`},
		{`network { mode = "bridge" }
network { mode = "none" }`, "more than one network block"},
		{`network {
  dns { servers = "10.0.0.1" }
}`, "servers must be a list of strings"},
		{`network {
  port "http" { static = "80" }
}`, `port "http": static must be a port number`},
		{`network {
  port "http" { to = 70000 }
}`, `port "http": to must be a port number`},
		{`network {
  port { static = 80 }
}`, "a port block takes exactly one label"},
		{`count = 0`, "count of at least 1"},
		{`service {
  provider = "etcd"
}`, `service provider "etcd"`},
		{`service {
  address_mode = "bridge"
}`, `service address_mode "bridge"`},
	} {
		_, err := parseJobFile(writeJob(t, tc.block))
		if err == nil || !strings.Contains(err.Error(), tc.words) {
			t.Errorf("%s: err = %v, want %q", tc.block, err, tc.words)
		}
	}
}

func TestIsolationSpecLikeNomads(t *testing.T) {
	s := TaskSpec{AllocID: "a1b2c3d4-0000-0000-0000-000000000000", Network: &NetworkSpec{Mode: "bridge"}}
	n := &allocNet{Name: "xctest-1-ns", Mode: "bridge", Addr: "10.199.0.2"}
	spec := isolationSpec(n, s)
	if spec.Path != "/var/run/netns/xctest-1-ns" || spec.HostsConfig.GetHostname() != "a1b2c3d4" ||
		spec.HostsConfig.GetAddress() != "10.199.0.2" || spec.Mode.String() != "GROUP" {
		t.Fatalf("spec = %v", spec)
	}
	none := isolationSpec(&allocNet{Name: "x", Mode: "none"}, TaskSpec{AllocID: s.AllocID, Network: &NetworkSpec{Mode: "none"}})
	if none.HostsConfig != nil {
		t.Fatalf("mode none got hosts config %v", none.HostsConfig)
	}
}

func TestJobFilePortsServicesAndCount(t *testing.T) {
	p := filepath.Join(t.TempDir(), "job.nomad.hcl")
	src := `job "web" {
  group "g" {
    count = 2
    network {
      port "http" { to = 8080 }
      port "admin" {
        static = 9000
        to     = -1
      }
    }
    service {
      name     = "g-admin"
      provider = "nomad"
      port     = "admin"
      check {
        type = "http"
      }
    }
    task "t" {
      driver = "xc"
      config { image = "x" }
      service {
        provider     = "nomad"
        address_mode = "driver"
        port         = "http"
      }
      service {
        port = 8081
      }
    }
  }
}
`
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	jt, err := parseJobFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if jt.Count != 2 {
		t.Fatalf("count = %d", jt.Count)
	}
	if !reflect.DeepEqual(jt.Spec.Network.Ports, []PortSpec{{Label: "http", To: 8080}, {Label: "admin", Static: 9000, To: -1}}) {
		t.Fatalf("ports = %+v", jt.Spec.Network.Ports)
	}
	if !reflect.DeepEqual(jt.GroupServices, []ServiceSpec{{Name: "g-admin", Provider: "nomad", Port: "admin"}}) {
		t.Fatalf("group services = %+v", jt.GroupServices)
	}
	want := []ServiceSpec{{Provider: "nomad", AddressMode: "driver", Port: "http"}, {Port: "8081"}}
	if !reflect.DeepEqual(jt.Spec.Services, want) {
		t.Fatalf("task services = %+v", jt.Spec.Services)
	}
	if !reflect.DeepEqual(jt.Ignored, []string{"service.check"}) {
		t.Fatalf("ignored = %v", jt.Ignored)
	}
}
