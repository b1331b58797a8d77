#!/usr/bin/env bash
# The README's main command: on a fresh Debian 12 machine, as root, from the repository root,
#
#   bash scripts/demo.sh
#
# installs what is needed, starts the local components (zfs-fuse with a file-backed pool
# "xcdemo", a registry on 127.0.0.1:5000 holding a demo image built here from busybox-static),
# installs the plugin into a plugin dir and runs examples/nomad/hello.nomad.hcl, showing its
# task events, stats and logs: through a real `nomad agent -dev` when `nomad` is on PATH,
# otherwise through the test rig's `nomadsim run-job` (a Nomad client emulation).
# Everything it starts is stopped by pid on exit, also on failure or Ctrl-C.
#
# Environment: XC_DEMO_KEEP=1 leaves the work dir (logs) in place; XC_DEMO_USE_RIG=1 uses the
# rig even when nomad is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

if [ "$(id -u)" -ne 0 ]; then
  echo "demo.sh: run as root (ZFS pools, mounts and containers need it)" >&2
  exit 1
fi

POOL=xcdemo
REGISTRY=127.0.0.1:5000
ZFS_LOCK=/tmp/xctest-zfs-fuse.lock      # the test fixtures' lock for sharing one zfs-fuse daemon
ZFS_OWNER=/tmp/xctest-zfs-fuse.pid      # who stops a daemon started by a test session
WORK=""
ZFS_PID=""
REGISTRY_PID=""
NOMAD_PID=""
POOL_CREATED=""

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_pid() {  # stop_pid PID NAME SECONDS: SIGTERM, wait, then SIGKILL
  local pid=$1 name=$2 secs=${3:-10} i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  echo "    $name (pid $pid) did not stop in ${secs}s: SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  say "tearing down"
  if [ -n "$NOMAD_PID" ]; then
    nomad job stop -purge -yes hello >/dev/null 2>&1
    nomad system gc >/dev/null 2>&1        # terminal allocs: DestroyTask now, not at agent GC
    sleep 2
    stop_pid "$NOMAD_PID" "nomad agent" 30
  fi
  # Containers a crashed run could have left (normally DestroyTask removed them).
  if [ -n "$WORK" ] && [ -d "$WORK/state/jails/runc" ]; then
    for c in $(runc --root "$WORK/state/jails/runc" list -q 2>/dev/null); do
      runc --root "$WORK/state/jails/runc" kill --all "$c" KILL >/dev/null 2>&1
      runc --root "$WORK/state/jails/runc" delete --force "$c" >/dev/null 2>&1
    done
  fi
  stop_pid "$REGISTRY_PID" "docker-registry" 10
  if [ -n "$POOL_CREATED" ]; then
    for _ in $(seq 50); do zpool destroy "$POOL" 2>/dev/null && break; sleep 0.1; done
    zpool list "$POOL" >/dev/null 2>&1 && zpool destroy -f "$POOL"
  fi
  if [ -n "$ZFS_PID" ]; then
    if flock -n -x "$LOCK_FD"; then
      stop_pid "$ZFS_PID" "zfs-fuse" 30          # takes ~4 s
    else
      # A test session uses the daemon we started: the last one out stops it.
      echo "    zfs-fuse (pid $ZFS_PID) is in use by a test session; it will stop it"
      echo "$ZFS_PID" > "$ZFS_OWNER"
    fi
  fi
  if [ -n "$WORK" ]; then
    awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r |
      xargs -r -n1 umount -l 2>/dev/null
    if [ "${XC_DEMO_KEEP:-}" = 1 ]; then echo "    kept $WORK"; else rm -rf "$WORK"; fi
  fi
  if [ $rc -eq 0 ]; then say "demo finished"; else say "demo FAILED (exit $rc)"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "installing dependencies"
# shellcheck source=scripts/install-deps.sh
source scripts/install-deps.sh
set -euo pipefail          # install-deps.sh may have changed them
export PATH="$REPO/.venv/bin:$PATH"
WORK=$(mktemp -d /tmp/xc-demo.XXXXXX)

say "zfs-fuse and a file-backed pool \"$POOL\""
exec {LOCK_FD}>"$ZFS_LOCK"
flock -x "$LOCK_FD"
if zpool list >/dev/null 2>&1; then
  echo "    a zfs-fuse daemon is already running: using it (and leaving it running)"
else
  setsid /sbin/zfs-fuse -n -x >"$WORK/zfs-fuse.log" 2>&1 &
  ZFS_PID=$!
  for _ in $(seq 200); do zpool list >/dev/null 2>&1 && break; sleep 0.05; done
  zpool list >/dev/null 2>&1 || { echo "zfs-fuse did not start: $(cat "$WORK/zfs-fuse.log")" >&2; exit 1; }
  echo "    started zfs-fuse (pid $ZFS_PID)"
fi
flock -s "$LOCK_FD"        # shared while we use it, as the test fixtures do
if zpool list "$POOL" >/dev/null 2>&1; then
  echo "pool $POOL already exists: another demo is running, or one was killed; remove it with" \
       "'zpool destroy $POOL'" >&2
  exit 1
fi
truncate -s 2G "$WORK/$POOL.img"
zpool create -o cachefile=none -O mountpoint=none "$POOL" "$WORK/$POOL.img"
POOL_CREATED=1
zpool list "$POOL"

say "a registry on $REGISTRY with the demo image"
if (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null; then
  echo "127.0.0.1:5000 is in use; stop what listens there (the example jobs name this registry)" >&2
  exit 1
fi
mkdir -p "$WORK/registry/data"
cat >"$WORK/registry/config.yml" <<EOF
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry/data}, delete: {enabled: true}}
http: {addr: "$REGISTRY", secret: demo-only-secret}
EOF
setsid docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 150); do curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fsS "http://$REGISTRY/v2/" >/dev/null || { cat "$WORK/registry.log" >&2; exit 1; }
echo "    docker-registry (pid $REGISTRY_PID)"
IMAGE=$(python scripts/demo_image.py "$REGISTRY")
echo "    pushed $IMAGE (busybox-static + /etc/motd, built in code by tests/fixtures/images.py)"

say "installing the plugin"
nomad-driver-xc install --plugin-dir "$WORK/plugins"
# The example agent file as it is, with the plugin's state kept under the work dir.
sed "s|\"/var/lib/nomad-driver-xc\"|\"$WORK/state\"|" examples/nomad/agent.hcl >"$WORK/agent.hcl"
grep -q "$WORK/state" "$WORK/agent.hcl"
JOB=examples/nomad/hello.nomad.hcl

if command -v nomad >/dev/null && [ "${XC_DEMO_USE_RIG:-}" != 1 ]; then
  say "nomad agent -dev with the xc plugin ($(nomad version | head -n1))"
  export NOMAD_ADDR=http://127.0.0.1:4646
  nomad agent -dev -config "$WORK/agent.hcl" -plugin-dir "$WORK/plugins" >"$WORK/nomad.log" 2>&1 &
  NOMAD_PID=$!
  healthy=""
  for _ in $(seq 120); do
    if nomad node status -self -json 2>/dev/null | jq -e '.Drivers.xc.Healthy == true' >/dev/null; then
      healthy=1; break
    fi
    kill -0 "$NOMAD_PID" 2>/dev/null || break
    sleep 0.5
  done
  [ -n "$healthy" ] || { tail -n 40 "$WORK/nomad.log" >&2; echo "driver xc did not become healthy" >&2; exit 1; }
  nomad node status -self -verbose | sed -n '/Drivers/,/^$/p'
  say "nomad job run $JOB"
  nomad job run "$JOB"
  ALLOC=$(nomad job allocs -json hello | jq -r '.[0].ID')
  sleep 1
  say "nomad alloc status -stats $ALLOC (while it runs)"
  nomad alloc status -stats "$ALLOC" || true
  for _ in $(seq 120); do
    status=$(nomad alloc status -json "$ALLOC" | jq -r .ClientStatus)
    case $status in complete|failed|lost) break ;; esac
    sleep 0.5
  done
  say "nomad alloc status $ALLOC (events)"
  nomad alloc status "$ALLOC"
  say "nomad alloc logs $ALLOC hello"
  nomad alloc logs "$ALLOC" hello
  say "nomad alloc logs -stderr $ALLOC hello"
  nomad alloc logs -stderr "$ALLOC" hello
  [ "$status" = complete ] || { echo "hello ended as $status" >&2; exit 1; }
else
  say "no nomad binary on PATH: running the job through the Nomad-client rig (tests/nomadsim)"
  (cd tests/nomadsim && GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$WORK/bin/nomadsim" .)
  echo "    \$ nomadsim run-job --plugin-dir $WORK/plugins --config $WORK/agent.hcl $JOB"
  "$WORK/bin/nomadsim" run-job --plugin-dir "$WORK/plugins" --config "$WORK/agent.hcl" \
    --alloc-root "$WORK/allocs" "$JOB"
fi
