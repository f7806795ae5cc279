#!/bin/sh
# PID 1 of the LIO target VM (busybox only): load the target's modules, mount
# configfs, bring the user-mode network up, then run the host's requests.
#
# Requests come on the second serial port (/dev/ttyS1, a socket on the host):
# one line each, its words base64 (an empty word is "-"), decoded and given to
# lio-configfs.sh; the answer is "@DONE@ STATUS" on that port.  The scripts'
# own output goes to the console (/dev/ttyS0), which the host keeps as a log.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r module; do
    insmod "/lib/modules/$module" || echo "lio: insmod $module failed"
done < /modules.order
mount -t configfs none /sys/kernel/config
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
ip link set eth0 up
ip addr add @ADDRESS@ dev eth0
ip route add default via @GATEWAY@
# the request port is open (and raw) before the ready line: a closed tty drops what arrives
stty -F /dev/ttyS1 raw -echo
exec 3<> /dev/ttyS1
echo "@READY@ $(cat /sys/block/@DEVICE@/size) sectors"
while true; do
    IFS= read -r line <&3 || { sleep 1; continue; }
    set --
    for word in $line; do
        if [ "$word" = "-" ]; then
            set -- "$@" ""
        else
            set -- "$@" "$(echo "$word" | base64 -d)"
        fi
    done
    status=0
    sh /lio-configfs.sh "$@" || status=$?
    echo "@DONE@ $status" >&3
done
