# A batch job in a group network of its own (mode = "bridge"): the Nomad client makes the alloc's
# network namespace (with real Nomad, bridge mode needs the CNI reference plugins in
# /opt/cni/bin) and the task runs inside it, seeing only `lo` and the alloc's `eth0`. The
# `dns` block becomes the task's /etc/resolv.conf (mounted read-only; without a dns block the
# image's own file is used). Linux clients only: Nomad has no group networks on FreeBSD, where
# the xc driver offers host networking alone.
#   nomad job run examples/nomad/bridge.nomad.hcl
#   nomad alloc logs -job bridge
job "bridge" {
  datacenters = ["*"]
  type        = "batch"

  group "net" {
    network {
      mode = "bridge"

      dns {
        servers  = ["10.0.0.53"]
        searches = ["service.consul"]
        options  = ["ndots:2"]
      }
    }

    restart {
      attempts = 0
      mode     = "fail"
    }

    task "show" {
      driver = "xc"

      config {
        image   = "127.0.0.1:5000/xc-demo/busybox:1.0"
        command = "/bin/sh"
        args = ["-c", <<-SCRIPT
          echo "hostname: $(hostname)"
          echo "--- /proc/net/dev"; cat /proc/net/dev
          echo "--- /etc/hosts"; cat /etc/hosts 2>/dev/null
          echo "--- /etc/resolv.conf"; cat /etc/resolv.conf
          echo "--- end"
        SCRIPT
        ]
      }

      resources {
        cpu    = 100 # MHz
        memory = 64  # MB
      }
    }
  }
}
