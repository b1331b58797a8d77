# A job that reads a file from a host directory mounted into its jail. The host path must be
# allowed by the operator in agent.hcl (`volumes { enabled = true, allowed_host_paths = [...] }`);
# anything else is refused with an error naming the path.
#   mkdir -p /srv/xc-demo && echo "greetings from the host" > /srv/xc-demo/greeting.txt
#   nomad job run examples/nomad/volume.nomad.hcl
job "reader" {
  datacenters = ["*"]
  type        = "batch"

  group "reader" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    task "reader" {
      driver = "xc"

      config {
        image   = "127.0.0.1:5000/xc-demo/busybox:1.0"
        command = "/bin/sh"
        args = ["-c", <<-SCRIPT
          echo "reader: the host says: $(cat /data/greeting.txt)"
          echo "reader: a note in the task dir" > /local/note && cat /local/note
          if touch /data/new-file 2>/dev/null; then echo "reader: /data is writable"; exit 1; fi
          echo "reader: /data is read-only"
        SCRIPT
        ]

        mount {
          type     = "bind"
          source   = "/srv/xc-demo"
          target   = "/data"
          readonly = true
        }
      }

      resources {
        cpu    = 100
        memory = 32
      }
    }
  }
}
