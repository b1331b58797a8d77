#!/usr/bin/env bash
# Run the FreeBSD test subset (scripts/test-freebsd.sh) in a throwaway FreeBSD 14 VM under QEMU/KVM.
#
#   scripts/freebsd-vm.sh FreeBSD-14.3-RELEASE-amd64-BASIC-CLOUDINIT-ufs.qcow2
#
# IMAGE: a FreeBSD 14 "BASIC-CLOUDINIT" VM image (download.freebsd.org, VM-IMAGES); its nuageinit
# runs our first-boot script from a NoCloud seed ISO. IMAGE is not modified (the VM writes to an
# overlay). Needs /dev/kvm, qemu-system-x86_64, qemu-img, genisoimage, ssh. Prints pytest's summary
# and exits with its status.
set -euo pipefail
IMAGE=$(realpath "${1:?usage: $0 FREEBSD-14-CLOUDINIT-IMAGE.qcow2}")
REPO=$(cd "$(dirname "$0")/.." && pwd)
PORT=${XC_VM_SSH_PORT:-2222}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xc-freebsd-vm.XXXXXX")
QEMU_PID=""
cleanup() {
  if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "==> overlay disk and first-boot seed"
qemu-img create -q -f qcow2 -b "$IMAGE" -F qcow2 "$WORK/disk.qcow2" 20G
ssh-keygen -q -t ed25519 -N '' -f "$WORK/key"
mkdir "$WORK/seed"
echo "instance-id: xc-freebsd-vm-$$" > "$WORK/seed/meta-data"
# First boot, as root: our key for root, racct on (a loader tunable, read at boot: hence the
# reboot), the Linux ABI, pf and a devd that serves more than its default 10 clients, every boot.
cat > "$WORK/seed/user-data" <<SEED
#!/bin/sh
mkdir -p /root/.ssh && chmod 700 /root/.ssh
echo '$(cat "$WORK/key.pub")' > /root/.ssh/authorized_keys
echo 'PermitRootLogin prohibit-password' >> /etc/ssh/sshd_config
echo 'kern.racct.enable=1' >> /boot/loader.conf
sysrc sshd_enable=YES linux_enable=YES pf_enable=YES devd_flags="-l 512"
touch /etc/pf.conf
shutdown -r now
SEED
genisoimage -quiet -output "$WORK/seed.iso" -volid cidata -joliet -rock "$WORK/seed"

echo "==> booting (console: $WORK/console.log)"
qemu-system-x86_64 -enable-kvm -cpu host -m 4096 -smp 2 -display none \
  -serial "file:$WORK/console.log" \
  -drive "file=$WORK/disk.qcow2,if=virtio" -drive "file=$WORK/seed.iso,media=cdrom" \
  -nic "user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:$PORT-:22" &
QEMU_PID=$!
SSH=(ssh -i "$WORK/key" -p "$PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o LogLevel=ERROR -o ConnectTimeout=5 root@127.0.0.1)
# Up means the second boot: the one with racct on.
for _ in $(seq 120); do
  if [ "$("${SSH[@]}" sysctl -n kern.racct.enable 2>/dev/null)" = 1 ]; then break; fi
  if ! kill -0 "$QEMU_PID" 2>/dev/null; then echo "qemu exited"; exit 1; fi
  sleep 5
done
if [ "$("${SSH[@]}" sysctl -n kern.racct.enable 2>/dev/null)" != 1 ]; then
  echo "the VM did not come up with racct on within 10 minutes; console tail:"
  tail -n 40 "$WORK/console.log"
  exit 1
fi

echo "==> copying the checkout in"
tar -C "$REPO" --exclude=./.venv --exclude=./.git -cf - . | "${SSH[@]}" 'mkdir -p /root/xc && tar -C /root/xc -xf -'

echo "==> the FreeBSD subset"
"${SSH[@]}" 'sh /root/xc/scripts/test-freebsd.sh'
