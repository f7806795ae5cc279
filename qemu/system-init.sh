#!/bin/busybox sh
# iscsiboot test SYSTEM: say that the root was reached, show the mounts, power off.
/bin/busybox mount -t proc proc /proc 2>/dev/null
/bin/busybox mount -t sysfs sysfs /sys 2>/dev/null
echo
echo "@SYSTEM_MARKER@ pid=$$"
echo "@MOUNTS_BEGIN@"
/bin/busybox cat /proc/mounts
echo "@MOUNTS_END@"
/bin/busybox sync
/bin/busybox poweroff -f
/bin/busybox sleep 5
echo o > /proc/sysrq-trigger
