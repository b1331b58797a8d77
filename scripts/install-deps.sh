#!/usr/bin/env bash
# Installs everything the product, its tests and its demo need on Debian 12, idempotently.
# Run as root from the repository root. Leaves a virtualenv in .venv with the project installed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  zfs-fuse attr                                   # ZFS on a file-backed pool (no kernel ZFS here)
  docker-registry skopeo umoci busybox-static     # registry and test images
  runc                                            # Linux backend
  apache2-utils jq openssl curl ca-certificates   # htpasswd, token issuer cert, JSON
  gcc libc6-dev                                   # the per-task supervisor is a small C program
  python3 python3-venv python3-pip unzip
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go for the Nomad-client test rig, at least the version its go.mod names. Debian 12's golang-go is
# 1.19, so when no recent Go is on PATH, fetch the official toolchain module through Go's own client.
GO_MIN=$(awk '$1=="go"{print $2; exit}' tests/nomadsim/go.mod 2>/dev/null || true)
GO_MIN=${GO_MIN:-1.22.0}
case "$GO_MIN" in *.*.*) GO_WANT=$GO_MIN ;; *) GO_WANT=$GO_MIN.0 ;; esac
go_ok() {
  command -v go >/dev/null || return 1
  local have; have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
  [ "$(printf '%s\n%s\n' "$GO_WANT" "$have" | sort -V | head -n1)" = "$GO_WANT" ]
}
if ! go_ok && [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi
if ! go_ok; then
  # Debian's Go can still download modules: fetch the official toolchain module with it.
  command -v go >/dev/null || apt-get install -y -qq --no-install-recommends golang-go >/dev/null
  dest=/opt/xc-go/go$GO_WANT
  if [ ! -x "$dest/bin/go" ]; then
    echo "==> fetching the Go $GO_WANT toolchain module"
    mod="golang.org/toolchain@v0.0.1-go$GO_WANT.linux-amd64"
    dir=$(cd /tmp && GO111MODULE=on GOFLAGS=-mod=mod go mod download -json "$mod" |
      sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
    mkdir -p "$dest" && cp -a "$dir/." "$dest/" && chmod -R u+w "$dest"
    chmod +x "$dest"/bin/* "$dest"/pkg/tool/*/*
  fi
  export PATH=$dest/bin:$PATH
fi
echo "==> $(go version)"

# Python: a virtualenv keeps the system's Python untouched.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "==> $(.venv/bin/python --version) in .venv with nomad-driver-xc installed"

# Go modules for the rig.
if [ -f tests/nomadsim/go.mod ]; then
  (cd tests/nomadsim && go mod download)
fi
