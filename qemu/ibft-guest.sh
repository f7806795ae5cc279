#!/bin/busybox sh
# /init of the iBFT guest: load iscsi_ibft, then print on the serial console
# every /sys/firmware/ibft attribute, the ACPI copies of the table and low
# memory 0x80000-0xFFFFF (from /dev/mem), each base64-encoded, and power off.
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox insmod /lib/iscsi_boot_sysfs.ko
/bin/busybox insmod /lib/iscsi_ibft.ko
echo IBFT-BEGIN
for f in /sys/firmware/ibft/*/*; do
  [ -f "$f" ] || continue
  echo "IBFT-ATTR ${f#/sys/firmware/ibft/} $(/bin/busybox base64 -w 0 "$f")"
done
for f in /sys/firmware/acpi/tables/*; do
  case "${f##*/}" in iBFT*|IBFT*|BIFT*) echo "IBFT-ACPI ${f##*/} $(/bin/busybox base64 -w 0 "$f")";; esac
done
echo IBFT-MEM-BEGIN
/bin/busybox dd if=/dev/mem bs=4096 skip=128 count=128 2>/dev/null | /bin/busybox base64
echo IBFT-MEM-END
echo IBFT-END
/bin/busybox poweroff -f
