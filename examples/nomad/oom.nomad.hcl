# A job whose task outgrows its memory limit: the memory cgroup (Linux) or rctl's memoryuse:sigkill
# (FreeBSD, within about a second; docs/freebsd.md) kills it, and Nomad reports "OOM Killed" in the
# task's events.
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
        # One 64 MB buffer (dd's block) filled at once, twice the limit: the kernel cannot find
        # that much to reclaim and kills the task right away. (Growing memory a little at a time
        # can instead make a cgroup page its own program in and out for minutes before the kill.)
        # Many blocks: FreeBSD samples RSS once a second, so the buffer must stay that long.
        args = ["-c", <<-SCRIPT
          echo "hog: asking for 64 MB under a 32 MB limit"
          exec dd if=/dev/zero of=/dev/null bs=64M count=1000
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
