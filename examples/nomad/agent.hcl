# Nomad agent configuration for the xc task driver.
#
# Start a dev agent with it (as root: the driver creates ZFS clones and jails/containers):
#   nomad agent -dev -config examples/nomad/agent.hcl -plugin-dir /usr/local/libexec/nomad/plugins
# after `nomad-driver-xc install --plugin-dir /usr/local/libexec/nomad/plugins`.
#
# The values below match what `scripts/demo.sh` sets up: a ZFS pool "xcdemo" (zfs-fuse on a file),
# a plain-HTTP registry on 127.0.0.1:5000 holding xc-demo/busybox:1.0, and /srv/xc-demo as the
# one host path tasks may mount. On a real FreeBSD client, point `dataset` at your pool
# (e.g. "zroot/xc"), drop `allow_insecure_registries` and list your own host paths.

# Published ports (task config `ports`) sit on this interface's address; "lo" keeps the demo's
# ports on 127.0.0.1 (what `nomad agent -dev` does too).
client {
  network_interface = "lo"
}

plugin "xc" {
  config {
    # Images (one snapshot per layer chain) and task root clones live under this dataset.
    dataset   = "xcdemo/xc"
    backend   = "auto"                          # freebsd on FreeBSD, linux (runc) elsewhere
    state_dir = "/var/lib/nomad-driver-xc"      # per-task state; survives plugin restarts

    # Registries reached over plain HTTP. Never list a registry you do not control.
    allow_insecure_registries = ["127.0.0.1:5000"]

    # Host paths tasks may mount (task config `mount {}` / `volumes`). Off unless enabled.
    volumes {
      enabled            = true
      allowed_host_paths = ["/srv/xc-demo"]
    }

    # Unused images are removed this long after their last task is gone.
    gc {
      image       = true
      image_delay = "3m"
    }

    # Networks the driver makes for tasks with network_mode = "bridge" (web.nomad.hcl): a
    # bridge, made on first use, and the pool task addresses come from. See driver/README.md
    # (FreeBSD also needs the pf anchors and sysctls listed there).
    network {
      bridge    = "xcbr0"
      ipv4_pool = "10.213.0.0/16"
    }

    # Limits Nomad's job spec has no field for: defaults and operator caps. disk is each
    # task root's ZFS quota (refquota); a task asks with storage_opt = { size = "2G" }.
    default_limits {
      maxproc   = 512
      openfiles = 4096
      disk      = "1G"
    }
    max_limits {
      maxproc   = 4096
      openfiles = 65536
      disk      = "10G"
    }

    # FreeBSD: run an image that has only a linux/amd64 (arm64) variant through the Linux ABI
    # (needs linux_enable="YES"; see docs/freebsd.md). No effect on Linux.
    linux_images = false

    # Bounds on every pulled image; a task whose image hits one fails with an error naming the
    # option (image_limits.<field>) to raise for an image you trust. Unset: the defaults shown.
    image_limits {
      max_bytes   = "64G"                       # uncompressed bytes of one layer
      max_entries = 1000000                     # tar entries in one layer
      max_layers  = 256                         # layers of one image
    }
  }
}
