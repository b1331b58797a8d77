# Two instances of a small web server, each in a network the xc driver makes itself
# (`network_mode = "bridge"`: its own address on the plugin's bridge, see driver/README.md), each
# publishing its `http` port: the Nomad client picks a host port per instance, and the driver
# forwards it to the task's port 8080. The service registers each instance's own address and
# port (`address_mode = "driver"`), which is what the task really listens on. Works the same on
# FreeBSD (a vnet jail on an if_bridge) and Linux (a network namespace on a Linux bridge).
#   nomad job run examples/nomad/web.nomad.hcl
#   nomad service info web                     # two instances: <task address>:8080
#   nomad alloc status <alloc id>              # the host port of `http`
#   curl http://127.0.0.1:<host port>/         # "hello from web instance N"
#   nomad job stop web
job "web" {
  datacenters = ["*"]
  type        = "service"

  group "web" {
    count = 2

    network {
      port "http" {
        to = 8080
      }
    }

    task "httpd" {
      driver       = "xc"
      kill_signal  = "SIGTERM"
      kill_timeout = "5s"

      config {
        image        = "127.0.0.1:5000/xc-demo/busybox:1.0"
        network_mode = "bridge"
        ports        = ["http"]
        command      = "/bin/sh"
        args = ["-c", <<-SCRIPT
          mkdir -p /local/www
          echo "hello from web instance ${NOMAD_ALLOC_INDEX}" > /local/www/index.html
          echo "web: serving on port ${NOMAD_PORT_http} (host port ${NOMAD_HOST_PORT_http})"
          # The shell stays pid 1 and stops the server on Nomad's kill_signal.
          /bin/busybox httpd -f -v -p ${NOMAD_PORT_http} -h /local/www &
          trap 'kill $!; echo "web: stopped"; exit 0' TERM
          wait
        SCRIPT
        ]
      }

      service {
        name         = "web"
        provider     = "nomad"
        address_mode = "driver"
        port         = "http"
      }

      resources {
        cpu    = 100 # MHz
        memory = 32  # MB
      }
    }
  }
}
