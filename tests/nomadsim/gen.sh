#!/usr/bin/env bash
# Regenerates the rig's Go stubs from the project's own .proto files (plugin_proto/*.proto), so the
# rig and the plugin can never disagree on the wire format.
#
#   tests/nomadsim/gen.sh           rewrite tests/nomadsim/pb/**
#   tests/nomadsim/gen.sh --check   exit 1 when the committed stubs are stale
#
# protoc comes from grpcio-tools (python -m grpc_tools.protoc); the Go plugins are pinned below and
# installed with `go install` into tests/nomadsim/bin/tools (git-ignored). The .proto files carry no
# go_package, so every file is mapped to a Go package with M options. go-plugin's own services
# (plugin.GRPCController, GRPCStdio, GRPCBroker) are not generated: go-plugin's client speaks them
# itself, and registering the same proto names twice would panic at start-up.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0
PYTHON=${PYTHON:-python3}
[ -x "$ROOT/.venv/bin/python" ] && PYTHON="$ROOT/.venv/bin/python"
command -v go >/dev/null || export PATH=/usr/local/go/bin:$PATH

TOOLS="$HERE/bin/tools"
want_tool() {  # name module version
  local stamp="$TOOLS/$1.version"
  if [ ! -x "$TOOLS/$1" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$3" ]; then
    mkdir -p "$TOOLS"
    GOBIN="$TOOLS" go install "$2@$3"
    echo "$3" >"$stamp"
  fi
}
want_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go "$PROTOC_GEN_GO_VERSION"
want_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc "$PROTOC_GEN_GO_GRPC_VERSION"

# proto file -> Go package (import path inside module nomadsim)
declare -A PKG=(
  [plugin_proto/hclspec.proto]=nomadsim/pb/hclspec
  [plugin_proto/structs.proto]=nomadsim/pb/structs
  [plugin_proto/base.proto]=nomadsim/pb/base
  [plugin_proto/driver.proto]=nomadsim/pb/drivers
)
MOPTS=()
for f in "${!PKG[@]}"; do
  MOPTS+=("--go_opt=M$f=${PKG[$f]}" "--go-grpc_opt=M$f=${PKG[$f]}")
done

generate() {  # out_dir
  local out=$1 gen
  gen=$(mktemp -d)
  (cd "$ROOT" && "$PYTHON" -m grpc_tools.protoc -I. \
    --plugin=protoc-gen-go="$TOOLS/protoc-gen-go" \
    --plugin=protoc-gen-go-grpc="$TOOLS/protoc-gen-go-grpc" \
    --go_out="$gen" --go-grpc_out="$gen" "${MOPTS[@]}" \
    --go-grpc_opt=require_unimplemented_servers=false \
    $(printf '%s\n' "${!PKG[@]}" | sort))
  # Output lands under $gen/nomadsim/pb/...; the protoc version line depends on grpcio-tools,
  # so it is normalised to keep the check about content, not tool versions.
  mkdir -p "$out"
  cp -r "$gen/nomadsim/pb/." "$out/"
  find "$out" -name '*.go' -exec sed -i -E -e 's#^// \tprotoc +.*#// \tprotoc        (grpcio-tools)#' -e 's#^// - protoc +.*#// - protoc             (grpcio-tools)#' {} +
  rm -rf "$gen"
}

if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  generate "$tmp/pb"
  if ! diff -r "$tmp/pb" "$HERE/pb" >/dev/null 2>&1; then
    diff -r "$tmp/pb" "$HERE/pb" | head -40 || true
    echo "tests/nomadsim/pb is stale: run tests/nomadsim/gen.sh and commit the result" >&2
    exit 1
  fi
  echo "tests/nomadsim/pb is up to date"
else
  rm -rf "$HERE/pb"
  generate "$HERE/pb"
  echo "wrote $HERE/pb"
fi
