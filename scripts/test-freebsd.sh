#!/bin/sh
# The FreeBSD test subset, run as root on a FreeBSD 14 host from the checkout. scripts/freebsd-vm.sh
# runs it inside its VM and .cirrus.yml on its FreeBSD instance; see docs/freebsd.md.
set -eu
cd "$(dirname "$0")/.."

echo "==> packages"
env ASSUME_ALWAYS_YES=yes pkg install -q python311 py311-grpcio py311-protobuf py311-msgpack \
    py311-requests py311-zstandard py311-pytest py311-pytest-timeout py311-cryptography py311-pyjwt

echo "==> kernel modules: ZFS, the Linux ABI and its file systems, pf; devd for OOM reports"
kldload -n zfs linux64 fdescfs linprocfs linsysfs pf
service devd onestatus >/dev/null 2>&1 || service devd onestart

echo "==> a file-backed pool (the driver's dataset lives on one like it)"
if ! zpool list xcpool >/dev/null 2>&1; then
    truncate -s 2G /var/tmp/xcpool.img
    zpool create -O mountpoint=none xcpool /var/tmp/xcpool.img
fi

markers="freebsd_kernel or not root"
if [ "$(sysctl -n kern.racct.enable 2>/dev/null || echo 0)" != 1 ]; then
    # A loader tunable: only a reboot with kern.racct.enable=1 in /boot/loader.conf turns it on.
    echo "==> kern.racct.enable is not 1 here: tests marked racct are left out"
    markers="($markers) and not racct"
fi
echo "==> pytest -m \"$markers\" tests/jails"
exec python3.11 -m pytest -p no:cacheprovider -q -ra -m "$markers" tests/jails
