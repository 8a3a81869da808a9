#!/bin/sh
# /init of the rebound test guest (busybox-static; see tools/guest/build.sh). Loads the disk
# modules, mounts /dev/vda (ext4) at /mnt, runs the steps of `rebound.action=` from the kernel
# command line, unmounts and powers off. Everything it says goes to the console (ttyS0):
#   rebound-guest: ...                 progress
#   REBOUND-LOOP synced=N              loop step: file N is written and synced
#   REBOUND-RESULT-BEGIN ... REBOUND-RESULT-END   KEY=VALUE lines, the result of the steps
#   REBOUND-STATUS: ok | REBOUND-STATUS: fail REASON   last line before power-off
# Steps (join several with '+', e.g. write:m1+check):
#   write:MARKER   /rebound/marker.txt = MARKER; /rebound/payload.bin = gen_blocks "payload:MARKER" 1024 (4 MiB)
#   check          reports marker, verifies payload, the base files (base.sha256) and loop files
#   loop:COUNT     writes COUNT files /rebound/loop/NNNNNN.bin = gen_blocks "loop:N" 64 (256 KiB): written as
#                  NNNNNN.bin.tmp, fsync'ed, renamed, sync'ed; so even after a crash every *.bin is complete.
#                  Stops early (result loop.full=1) when the filesystem has less than LOOP_RESERVE_KB free.
#   loop:COUNT:WORD  the same, but ends as soon as the line WORD arrives on the console (the test types it,
#                  e.g. once a switch-over is done); after COUNT files (or a full disk) it only waits for WORD.
#                  Bounded by count and free space, never by time: the outcome does not depend on speed.
#   fstrim         fstrim -v /mnt (discard through to the export)
#   boot           nothing: mount and unmount only
# gen_blocks TAG COUNT: COUNT blocks of 4 KiB, each printf("%-4095s\n", sprintf("%s %08d", TAG, i)) for
# i = 0..COUNT-1: distinct blocks, so a misplaced block shows (test/helpers/guest.ts genBlocks() is the same).
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp

RESULT=/tmp/result
: >$RESULT

log() { echo "rebound-guest: $*"; }
res() { echo "$1=$2" >>$RESULT; }
power_off() {
  sync
  poweroff -f
  sleep 2
  echo o >/proc/sysrq-trigger
  sleep 10
}
finish() { # STATUS-TEXT
  echo "REBOUND-RESULT-BEGIN"
  cat $RESULT
  echo "REBOUND-RESULT-END"
  echo "REBOUND-STATUS: $1"
  power_off
}
fail() {
  log "FAILED: $*"
  cd /
  umount /mnt 2>/dev/null
  finish "fail $*"
}
gen_blocks() {
  awk -v tag="$1" -v n="$2" 'BEGIN { for (i = 0; i < n; i++) printf "%-4095s\n", sprintf("%s %08d", tag, i) }'
}
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
sha_gen() { gen_blocks "$1" "$2" | sha256sum | cut -d' ' -f1; }

read -r up _ </proc/uptime
log "init started at ${up}s uptime, kernel $(uname -r)"
ACTION=boot
for w in $(cat /proc/cmdline); do
  case $w in rebound.action=*) ACTION=${w#rebound.action=} ;; esac
done
log "action: $ACTION"

for m in $(cat /lib/modules/load.list); do
  insmod /lib/modules/$m || fail "insmod $m"
done
n=0
while [ ! -b /dev/vda ]; do
  n=$((n + 1))
  [ $n -gt 100 ] && fail "no /dev/vda"
  sleep 0.1
done
log "disk /dev/vda: $(cat /sys/block/vda/size) sectors"
mount -t ext4 /dev/vda /mnt || fail "mount /dev/vda"
log "mounted /dev/vda at /mnt"

step_write() {
  marker=$1
  mkdir -p /mnt/rebound || fail "mkdir"
  gen_blocks "payload:$marker" 1024 >/mnt/rebound/payload.bin || fail "write payload"
  echo "$marker" >/mnt/rebound/marker.txt || fail "write marker"
  sync || fail "sync"
  res marker.written "$marker"
  res payload.sha256 "$(sha_of /mnt/rebound/payload.bin)"
  log "wrote marker $marker and 4 MiB payload, synced"
}

step_check() {
  if [ -f /mnt/rebound/marker.txt ]; then
    marker=$(cat /mnt/rebound/marker.txt)
    res marker "$marker"
    if [ -f /mnt/rebound/payload.bin ]; then
      got=$(sha_of /mnt/rebound/payload.bin)
      res payload.sha256 "$got"
      if [ "$got" = "$(sha_gen "payload:$marker" 1024)" ]; then res payload ok; else res payload bad; fi
    else
      res payload missing
    fi
  else
    res marker none
  fi
  if (cd /mnt && sha256sum -c -s /etc/base.sha256); then res base ok; else res base bad; fi
  if [ -d /mnt/rebound/loop ]; then
    count=0
    bad=""
    for f in /mnt/rebound/loop/*.bin; do
      [ -f "$f" ] || continue
      i=${f##*/}
      i=${i%.bin}
      while [ "${i#0}" != "$i" ] && [ -n "${i#0}" ]; do i=${i#0}; done
      count=$((count + 1))
      gen_blocks "loop:$i" 64 | cmp -s - "$f" || bad="$bad $i"
    done
    res loop.files $count
    if [ -z "$bad" ]; then res loop ok; else res loop "bad$bad"; fi
  fi
  res df "$(df -k /mnt | tail -n1 | awk '{print $3 "K used, " $4 "K free"}')"
  log "check done"
}

LOOP_RESERVE_KB=2048
free_kb() { df -k /mnt | tail -n1 | awk '{print $4}'; }

step_loop() { # COUNT [WORD]
  count=$1
  word=$2
  mkdir -p /mnt/rebound/loop || fail "mkdir loop"
  i=$(ls /mnt/rebound/loop | grep -c '\.bin$')
  heard=/tmp/heard.$$
  rm -f $heard
  if [ -n "$word" ]; then
    # A background reader of the console; an asynchronous list reads /dev/null unless told otherwise.
    (while read -r line; do [ "$line" = "$word" ] && break; done; : >$heard) </dev/console &
    log "loop: up to $count files until the console says '$word'"
  fi
  written=0
  while [ $written -lt "$count" ]; do
    [ -n "$word" ] && [ -f $heard ] && break
    if [ "$(free_kb)" -lt $LOOP_RESERVE_KB ]; then
      res loop.full 1
      log "loop: less than ${LOOP_RESERVE_KB}K free, stopping"
      break
    fi
    name=/mnt/rebound/loop/$(printf %06d $i).bin
    gen_blocks "loop:$i" 64 >$name.tmp || fail "write $name"
    sync $name.tmp || fail "fsync $name.tmp"
    mv $name.tmp $name || fail "rename $name"
    sync || fail "sync"
    echo "REBOUND-LOOP synced=$i"
    i=$((i + 1))
    written=$((written + 1))
  done
  if [ -n "$word" ]; then
    while [ ! -f $heard ]; do sleep 0.2; done
    res loop.heard "$word"
  fi
  res loop.written $written
  res loop.next $i
  log "loop wrote $written files"
}

step_fstrim() {
  out=$(fstrim -v /mnt 2>&1) || fail "fstrim: $out"
  res fstrim "$out"
  log "fstrim: $out"
}

uptime_s() { read -r u _ </proc/uptime; echo "$u"; }
for step in $(echo "$ACTION" | tr '+' ' '); do
  t0=$(uptime_s)
  case $step in
    write:*) step_write "${step#write:}" ;;
    check) step_check ;;
    loop:*:*) w=${step#loop:}; step_loop "${w%%:*}" "${w#*:}" ;;
    loop:*) step_loop "${step#loop:}" ;;
    fstrim) step_fstrim ;;
    boot) ;;
    *) fail "unknown action step '$step'" ;;
  esac
  log "step $step: ${t0}s -> $(uptime_s)s uptime"
done

cd /
umount /mnt || fail "umount /mnt"
sync
read -r up _ </proc/uptime
log "unmounted, powering off at ${up}s uptime"
finish ok
