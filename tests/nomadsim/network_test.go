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
		Servers: []string{"10.0.0.53", "10.0.0.54"}, Searches: []string{"svc.local"}, Options: []string{"ndots:2"}}}
	if !reflect.DeepEqual(jt.Spec.Network, want) {
		t.Fatalf("network = %+v, want %+v", jt.Spec.Network, want)
	}
	if !reflect.DeepEqual(jt.Ignored, []string{"network.port"}) {
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
