# A job whose task outgrows its memory limit: the kernel (rctl on FreeBSD, the memory cgroup on
# Linux) kills it and Nomad reports "OOM Killed" in the task's events.
#   nomad job run examples/nomad/oom.nomad.hcl
#   nomad job status hog               # lists the alloc id
#   nomad alloc status <alloc id>      # the Terminated event says "OOM Killed: true"
job "hog" {
  datacenters = ["*"]
  type        = "batch"

  group "hog" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    task "hog" {
      driver = "xc"

      config {
        image   = "127.0.0.1:5000/xc-demo/busybox:1.0"
        command = "/bin/sh"
        # Doubles a shell string until the 32 MB limit is hit.
        args = ["-c", <<-SCRIPT
          echo "hog: allocating until the 32 MB limit stops me"
          s=xxxxxxxxxxxxxxxx
          n=16
          while true; do s="$s$s"; n=$((n * 2)); echo "hog: holding $n bytes"; done
        SCRIPT
        ]
      }

      resources {
        cpu    = 100
        memory = 32 # MB: without memory_max this is also the hard limit
      }
    }
  }
}
