#!/bin/sh
# /init of the disk-bootable test guest (tools/guest/build-disk.sh): the bootloader on the guest's
# own disk loaded the kernel and this initramfs. It brings up the network QEMU's user-mode network
# expects (10.0.2.15/24, gateway 10.0.2.2), serves HTTP on port 80 (busybox httpd) and a banner on
# port 7 (busybox nc), then prints the marker the verification looks for on the serial console and
# on the screen, and waits to be stopped. Nothing here is timed: the guest idles until QEMU quits.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
say() { echo "rebound-boot-guest: $*"; echo "rebound-boot-guest: $*" >/dev/tty0 2>/dev/null; }
for m in $(cat /lib/modules/load.list); do insmod "/lib/modules/$m" || say "insmod $m failed"; done
ip link set lo up
ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2 || say "no network"
mkdir -p /www
echo "rebound boot guest $(uname -r)" >/www/index.html
httpd -p 80 -h /www || say "httpd failed"
(while :; do echo "rebound boot guest" | nc -l -p 7 >/dev/null 2>&1 || break; done) &
read -r up _ </proc/uptime
say "REBOUND-BOOTED uptime=${up}s"
while :; do sleep 3600; done
