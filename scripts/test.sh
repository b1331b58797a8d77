#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs what it needs, checks
# generated code, lints, type-checks, then runs every test against real components.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/install-deps.sh
export PATH="$PWD/.venv/bin:$PATH"

echo "==> generated code is up to date"
python -m plugin_proto.gen --check
if [ -x tests/nomadsim/gen.sh ]; then tests/nomadsim/gen.sh --check; fi

echo "==> ruff"
ruff check .
echo "==> mypy (Linux, and FreeBSD's branches)"
mypy
mypy --platform freebsd

echo "==> pytest"
set +e
python -m pytest -p no:cacheprovider -q -ra --durations=15 "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then
  # pytest's "no tests collected": only acceptable when the caller narrowed the selection.
  if [ $# -gt 0 ]; then echo "no test matched the selection: $*"; exit 0; fi
  echo "pytest collected no tests: the suite is broken"; exit 1
fi
exit $rc
