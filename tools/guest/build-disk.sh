#!/usr/bin/env bash
# Builds the disk-bootable test guest of the boot-verification tests (docs/verification.md), from
# Debian packages only. Unlike tools/guest/build.sh's guest (booted with QEMU's -kernel), this one
# boots from its own disk through a bootloader:
#   OUTDIR/disk.img         raw, 64 MiB: an MBR (syslinux mbr.bin) with one active FAT partition
#                           holding SYSLINUX (ldlinux.sys), syslinux.cfg, the Debian kernel and a
#                           busybox initramfs whose /init is tools/guest/disk-init.sh (network up,
#                           httpd on port 80, nc banner on port 7, serial marker REBOUND-BOOTED).
#                           The same partition boots under UEFI too: systemd-boot as the removable
#                           media loader \EFI\BOOT\BOOTX64.EFI, with a loader entry for the same
#                           kernel and initramfs (BIOS boots through SYSLINUX, UEFI through
#                           systemd-boot: one disk for both kinds of verification boot)
#   OUTDIR/disk-broken.img  the same disk with the kernel file overwritten by zeros (same size, so
#                           the bootloader still finds it and fails to boot it)
#   OUTDIR/guest.env        KEY=VALUE facts (kernel, marker, ports, disk size)
# Usage: tools/guest/build-disk.sh [OUTDIR]   (default: test-results/guest-boot)
# Idempotent and cached like build.sh (stamp: guest.env newer than every file in tools/guest/,
# same kernel); flock on OUTDIR/.lock. No root and no loop mounts: syslinux and mtools write the
# FAT file system inside the image at its offset.
# Needs: syslinux, syslinux-common, systemd-boot-efi, mtools, dosfstools, fdisk (sfdisk), busybox-static,
# cpio, a kernel.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$REPO/test-results/guest-boot}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DISK_MIB=64
PART_START=2048 # sectors: the partition starts at 1 MiB
OUTPUTS=(disk.img disk-broken.img guest.env)

die() { echo "guest/build-disk.sh: $*" >&2; exit 1; }
# shellcheck source=modules.sh
source "$HERE/modules.sh"

KVER=$(pick_kernel)
[[ -n $KVER ]] || die "no Debian kernel found: apt-get install linux-image-cloud-amd64 (tools/setup.sh)"
[[ -r /boot/vmlinuz-$KVER ]] || die "/boot/vmlinuz-$KVER is missing or unreadable"
MODDIR=/lib/modules/$KVER
MBR=/usr/lib/syslinux/mbr/mbr.bin
EFI_LOADER=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
for c in syslinux mcopy mkfs.fat sfdisk cpio; do command -v $c >/dev/null || die "$c is missing: apt-get install syslinux syslinux-common mtools dosfstools fdisk cpio (tools/setup.sh)"; done
[[ -r $MBR ]] || die "$MBR is missing: apt-get install syslinux-common"
[[ -r $EFI_LOADER ]] || die "$EFI_LOADER is missing: apt-get install systemd-boot-efi"
[[ -x /bin/busybox ]] || die "busybox is missing: apt-get install busybox-static"

exec 9>"$OUT/.lock"
flock 9
if up_to_date "${OUTPUTS[@]}"; then
  echo "guest/build-disk.sh: up to date in $OUT (kernel $KVER)"
  exit 0
fi
echo "guest/build-disk.sh: building into $OUT (kernel $KVER)"
WORK=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- the initramfs: busybox, the network driver, /init ---
ROOT=$WORK/initramfs
mkdir -p "$ROOT"/{bin,dev,proc,sys,tmp,etc,www}
cp /bin/busybox "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"
collect_modules virtio_pci virtio_net
install_modules "$ROOT"
install -m 0755 "$HERE/disk-init.sh" "$ROOT/init"
(cd "$ROOT" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --owner=0:0) | gzip -9n >"$WORK/initrd.gz"

# --- the disk: MBR, one active FAT partition with SYSLINUX, the kernel and the initramfs ---
cat >"$WORK/syslinux.cfg" <<CFG
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=tty0 console=ttyS0,115200 panic=-1 no_timer_check
CFG
# UEFI: systemd-boot, menu hidden, one entry (the same kernel, initramfs and command line)
printf 'timeout 0\ndefault guest.conf\n' >"$WORK/loader.conf"
cat >"$WORK/guest.conf" <<ENTRY
title rebound test guest
linux /vmlinuz
initrd /initrd.gz
options console=tty0 console=ttyS0,115200 panic=-1 no_timer_check
ENTRY
IMG=$WORK/disk.img
truncate -s "${DISK_MIB}M" "$IMG"
echo "start=$PART_START, type=c, bootable" | sfdisk -q --label dos "$IMG" >/dev/null
dd if="$MBR" of="$IMG" bs=440 count=1 conv=notrunc status=none
OFFSET=$((PART_START * 512))
SECTORS=$(((DISK_MIB * 1024 * 1024 - OFFSET) / 512))
PART=$WORK/part.img
truncate -s $((SECTORS * 512)) "$PART"
mkfs.fat -F 32 -n REBOUNDBOOT -i 5eb0d1e5 -h $PART_START "$PART" >/dev/null
export MTOOLS_SKIP_CHECK=1
mcopy -i "$PART" "/boot/vmlinuz-$KVER" ::/vmlinuz
mcopy -i "$PART" "$WORK/initrd.gz" ::/initrd.gz
mcopy -i "$PART" "$WORK/syslinux.cfg" ::/syslinux.cfg
mmd -i "$PART" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries
mcopy -i "$PART" "$EFI_LOADER" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$PART" "$WORK/loader.conf" ::/loader/loader.conf
mcopy -i "$PART" "$WORK/guest.conf" ::/loader/entries/guest.conf
syslinux --install "$PART"
dd if="$PART" of="$IMG" bs=1M seek=$((OFFSET / 1048576)) conv=notrunc,sparse status=none

# --- the broken disk: the kernel's bytes replaced by zeros, everything else the same ---
cp --sparse=always "$IMG" "$WORK/disk-broken.img"
cp --sparse=always "$PART" "$WORK/part-broken.img"
head -c "$(stat -c %s "/boot/vmlinuz-$KVER")" /dev/zero >"$WORK/zeros"
mcopy -o -i "$WORK/part-broken.img" "$WORK/zeros" ::/vmlinuz
dd if="$WORK/part-broken.img" of="$WORK/disk-broken.img" bs=1M seek=$((OFFSET / 1048576)) conv=notrunc status=none

{
  echo "KERNEL=$KVER"
  echo "MARKER=REBOUND-BOOTED"
  echo "HTTP_PORT=80"
  echo "BANNER_PORT=7"
  echo "DISK_BYTES=$((DISK_MIB * 1024 * 1024))"
} >"$WORK/guest.env"
for f in disk.img disk-broken.img guest.env; do mv -f "$WORK/$f" "$OUT/$f"; done
echo "guest/build-disk.sh: done: $(cd "$OUT" && du -h disk.img disk-broken.img | tr '\t\n' '  ')"
