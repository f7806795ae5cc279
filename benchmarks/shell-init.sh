#!/bin/sh
# Baseline: the OpenELEC-style boot steps as a busybox shell script.
PATH=/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mark() { echo "<6>bench: $*" > /dev/kmsg; }
stop() { mark "failed: $*"; poweroff -f; }
mark start
while read -r mod; do
    insmod "/lib/modules/$mod.ko" 2>/dev/null
done < /etc/modules.load
mark modules
iscsistart -N > /dev/null 2>&1 || stop "iscsistart -N"
mark network
iscsistart -b > /dev/null 2>&1 || stop "iscsistart -b"
mark login
mkdir -p /flash /storage
tries=0
until dev=$(findfs LABEL=System) && mount -o ro "$dev" /flash; do
    tries=$((tries + 1)); [ "$tries" -ge 60 ] && stop "no System"; sleep 1
done
until dev=$(findfs LABEL=Storage) && mount "$dev" /storage; do
    tries=$((tries + 1)); [ "$tries" -ge 60 ] && stop "no Storage"; sleep 1
done
mark "mounted uptime=$(cut -d' ' -f1 /proc/uptime)"
umount /storage /flash
poweroff -f
