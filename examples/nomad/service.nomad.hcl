# A long-running service: prints a heartbeat every second until Nomad stops it, and shuts down
# cleanly on its kill_signal (Nomad sends SIGKILL to the whole jail after kill_timeout).
#   nomad job run examples/nomad/service.nomad.hcl
#   nomad alloc logs -f -job ticker
#   nomad job stop ticker
job "ticker" {
  datacenters = ["*"]
  type        = "service"

  group "ticker" {
    task "ticker" {
      driver       = "xc"
      kill_signal  = "SIGTERM"
      kill_timeout = "5s"

      config {
        image    = "127.0.0.1:5000/xc-demo/busybox:1.0"
        command  = "/bin/sh"
        args = ["-c", <<-SCRIPT
          trap 'echo "ticker: got SIGTERM, shutting down"; exit 0' TERM
          echo "ticker: started as pid $$ on $(hostname)"
          i=0
          while true; do
            i=$((i + 1))
            echo "ticker: tick $i"
            sleep 1 &
            wait $!
          done
        SCRIPT
        ]
        hostname    = "ticker"
        storage_opt = { size = "64M" }   # the task's root file system quota
      }

      resources {
        cpu    = 100
        memory = 32
      }
    }
  }
}
