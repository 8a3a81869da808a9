#!/usr/bin/env bash
# Builds the small Linux guest that the boot tests run under QEMU (TCG), from Debian packages only:
#   OUTDIR/vmlinuz            a Debian kernel (linux-image-cloud-amd64 preferred; /boot/vmlinuz-*)
#   OUTDIR/initramfs.cpio.gz  busybox-static + the kernel modules the disk needs + tools/guest/init.sh as /init
#   OUTDIR/disk.img           a raw ext4 image (64 MiB) with a few known files (listed in base.sha256)
#   OUTDIR/base.sha256        sha256sum lines of the known files, paths relative to the filesystem root
#   OUTDIR/guest.env          KEY=VALUE facts (kernel version, modules, disk size) for tests
# Usage: tools/guest/build.sh [OUTDIR]   (default: test-results/guest)
# Idempotent and cached: does nothing when every output exists, is newer than every file in
# tools/guest/, and was built from the same kernel. Safe to run concurrently (flock on OUTDIR/.lock).
# Needs: busybox-static, cpio, gzip, e2fsprogs and an installed Debian kernel package.
# Set REBOUND_GUEST_KERNEL=VERSION to pick a kernel when several are installed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$REPO/test-results/guest}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DISK_MIB=64
OUTPUTS=(vmlinuz initramfs.cpio.gz disk.img base.sha256 guest.env)

die() { echo "guest/build.sh: $*" >&2; exit 1; }

# shellcheck source=modules.sh
source "$HERE/modules.sh"

KVER=$(pick_kernel)
[[ -n $KVER ]] || die "no Debian kernel found (/boot/vmlinuz-* with /lib/modules/VERSION): apt-get install linux-image-cloud-amd64 (tools/setup.sh)"
[[ -r /boot/vmlinuz-$KVER ]] || die "/boot/vmlinuz-$KVER is missing or unreadable"
MODDIR=/lib/modules/$KVER
[[ -f $MODDIR/modules.dep ]] || die "$MODDIR/modules.dep is missing"
BUSYBOX=/bin/busybox
command -v cpio >/dev/null || die "cpio is missing: apt-get install cpio"
command -v mkfs.ext4 >/dev/null || die "mkfs.ext4 is missing: apt-get install e2fsprogs"
file_is_static() { ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; }
if [[ ! -x $BUSYBOX ]] || ! "$BUSYBOX" --list >/dev/null 2>&1; then die "busybox is missing: apt-get install busybox-static"; fi
if command -v readelf >/dev/null && ! file_is_static "$BUSYBOX"; then die "$BUSYBOX is not static: apt-get install busybox-static"; fi

exec 9>"$OUT/.lock"
flock 9

if up_to_date "${OUTPUTS[@]}"; then
  echo "guest/build.sh: up to date in $OUT (kernel $KVER)"
  exit 0
fi

echo "guest/build.sh: building into $OUT (kernel $KVER)"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- kernel modules: virtio-blk over PCI and ext4, with their dependencies, in load order ---
collect_modules virtio_pci virtio_blk ext4 crc32c_generic

ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,dev,proc,sys,mnt,tmp,etc,lib/modules}
cp "$BUSYBOX" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
install_modules "$ROOT"
install -m 0755 "$HERE/init.sh" "$ROOT/init"

# --- the disk: known files, checksums for the guest's and the tests' checks ---
FS=$WORK/fs
mkdir -p "$FS/etc" "$FS/data"
printf 'rebound test guest disk\nThe files under / are checked by the guest (check action) and by tests (base.sha256).\n' >"$FS/README.rebound"
printf 'guest=rebound-test-guest\nformat=1\n' >"$FS/etc/rebound-guest"
# 1 MiB of distinct 4 KiB blocks (gen_blocks in init.sh), so a misplaced block shows.
awk 'BEGIN { for (i = 0; i < 256; i++) printf "%-4095s\n", sprintf("base-pattern %08d", i) }' >"$FS/data/pattern.bin"
(cd "$FS" && sha256sum README.rebound etc/rebound-guest data/pattern.bin) >"$WORK/base.sha256"
cp "$WORK/base.sha256" "$ROOT/etc/base.sha256"

rm -f "$WORK/disk.img"
truncate -s "${DISK_MIB}M" "$WORK/disk.img"
E2FSPROGS_FAKE_TIME=1700000000 mkfs.ext4 -q -F -b 4096 -L rebound-guest -U 5eb0d1e5-0000-4000-8000-000000000001 \
  -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 -d "$FS" "$WORK/disk.img" "${DISK_MIB}M"

(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0) | gzip -9n >"$WORK/initramfs.cpio.gz"
cp "/boot/vmlinuz-$KVER" "$WORK/vmlinuz"

{
  echo "KERNEL=$KVER"
  echo "MODULES=$(tr '\n' ' ' <"$ROOT/lib/modules/load.list" | sed 's/ $//')"
  echo "DISK_BYTES=$((DISK_MIB * 1024 * 1024))"
} >"$WORK/guest.env"

# guest.env last: it is the stamp up_to_date() compares against.
for f in vmlinuz initramfs.cpio.gz disk.img base.sha256 guest.env; do mv -f "$WORK/$f" "$OUT/$f"; done
echo "guest/build.sh: done: $(cd "$OUT" && du -h vmlinuz initramfs.cpio.gz disk.img | tr '\t\n' '  ')"
