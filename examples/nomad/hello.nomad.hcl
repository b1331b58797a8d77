# A batch job that prints from an image and exits 0.
#   nomad job run examples/nomad/hello.nomad.hcl
#   nomad alloc logs -job hello
# The image is the one scripts/demo.sh builds and pushes to its local registry; to use another
# registry, change `image` (and `allow_insecure_registries` in agent.hcl if it is plain HTTP).
job "hello" {
  datacenters = ["*"]
  type        = "batch"

  group "hello" {
    restart {
      attempts = 0
      mode     = "fail"
    }

    task "hello" {
      driver = "xc"

      config {
        image   = "127.0.0.1:5000/xc-demo/busybox:1.0"
        command = "/bin/sh"
        args = ["-c", <<-SCRIPT
          cat /etc/motd
          echo "hello from xc, task $NOMAD_TASK_NAME of job $NOMAD_JOB_NAME"
          echo "running as $(id -un) in $(pwd), greeting=$GREETING"
          ls /alloc /local /secrets >/dev/null && echo "alloc, local and secrets dirs are mounted"
          echo "this line goes to stderr" >&2
          sleep 2 # long enough for a couple of stats samples
          echo "goodbye"
        SCRIPT
        ]
      }

      env {
        GREETING = "hi"
      }

      resources {
        cpu    = 100 # MHz
        memory = 64  # MB
      }

      logs {
        max_files     = 2
        max_file_size = 5
      }
    }
  }
}
