#!/usr/bin/env bash
# Installs everything rebound and its tests need on Debian 12, then the npm dependencies and the
# build. Idempotent: packages already present are not touched; run it as often as you like.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: runtime (FUSE) and the real peers the tests and benchmarks run against.
PACKAGES=(
  libfuse2 fuse            # FUSE mounts (fuse-native)
  qemu-utils               # qemu-img, qemu-io, qemu-nbd
  qemu-system-x86          # boot tests (TCG)
  libnbd-bin python3-libnbd  # nbdinfo, nbdcopy, nbdsh
  nbdkit                   # reference server for benchmarks
  fio                      # fio with the nbd engine
  e2fsprogs                # mkfs.ext4 -d, e2fsck, debugfs (test guest disks)
  busybox-static cpio      # the test guest's initramfs
  syslinux syslinux-common mtools dosfstools  # the disk-bootable test guest (tools/guest/build-disk.sh: MBR, SYSLINUX on FAT, no mounts)
  ovmf systemd-boot-efi  # UEFI verification boots (OVMF firmware) and the test guest's UEFI boot loader
  linux-image-cloud-amd64  # the test guest's kernel (boot tests under TCG)
  fdisk                    # sfdisk: partitioned test disks (file-level restore)
  libnfs-utils             # nfs-ls, nfs-cat, nfs-cp (NFS interop)
  qemu-block-extra         # QEMU's nfs:// driver (NFS interop, boot over NFS)
  rpcbind                  # rpcinfo (NFS interop: portmapper checks)
  nfs-ganesha nfs-ganesha-vfs  # reference NFS server for benchmarks
  tshark                   # decodes captured NFS test traffic
  libiscsi-bin             # iscsi-ls, iscsi-inq, iscsi-test-cu (iSCSI interop and conformance)
  tgt                      # tgtd, reference iSCSI target for the conformance comparison and benchmarks
  g++ make python3          # node-gyp: rebound's native addon (src/native, tools/build-native.sh)
  libzstd-dev              # the native addon links libzstd (src/native/zstd.c: chunk encoding and decoding on the workers)
  libdeflate-dev           # the native addon links libdeflate (src/native/crc32.c: the chunks' fast check on the workers)
  libipsec-mb-dev          # the native addon links intel-ipsec-mb (src/native/tls-record.c: AES-GCM of NBD TLS records)
  chromium                 # headless browser for the dashboard's end-to-end test (playwright-core drives it; no browser download)
  openssl                  # test CAs and certificates for NBD TLS (test/helpers/tls-certs.ts, tools/bench/tls.mjs)
  ceph-mon ceph-osd radosgw ceph-common  # one-node Ceph RGW: the S3 endpoint of the S3 repository tests (test/helpers/rgw.ts)
  restic                   # reference S3 backup client for tools/bench/s3.mjs
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# package.json's engines: Node 20.19 or newer (zlib.crc32, the chunk files' fast check, came in 20.15).
node_ok=$(node -p 'const [a, b] = process.versions.node.split(".").map(Number); a > 20 || (a === 20 && b >= 19) ? 1 : 0' 2>/dev/null || echo 0)
if ((node_ok != 1)); then
  echo "setup: rebound needs Node.js 20.19 or newer (found $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

if [[ ! -d node_modules ]] || ! cmp -s package-lock.json node_modules/.package-lock.json.copy 2>/dev/null; then
  echo "setup: installing npm dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.package-lock.json.copy
fi

echo "setup: building the native addon (SEEK_DATA/SEEK_HOLE, against this Node's own headers)"
tools/build-native.sh

echo "setup: building"
npm run --silent build
echo "setup: done"
