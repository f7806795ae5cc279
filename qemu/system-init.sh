#!/bin/busybox sh
# iscsiboot test SYSTEM: say that the root was reached, run the checks the kernel command line
# asks for (iscsiboot.test=NAME,NAME...), show the mounts, power off.
bb=/bin/busybox
$bb mount -t proc proc /proc 2>/dev/null
$bb mount -t sysfs sysfs /sys 2>/dev/null
echo
echo "@SYSTEM_MARKER@ pid=$$"

say() { echo "@TEST_MARKER@ $*"; }
uptime_s() { $bb cut -d' ' -f1 /proc/uptime; }
# the whole disk under /flash (sda1 -> sda, nbd0p1 -> nbd0)
disk_of_flash() {
    part=$($bb awk '$2 == "/flash" { print $1 }' /proc/mounts)
    part=${part#/dev/}
    for d in /sys/block/*; do
        [ -e "$d/$part" ] && { echo "${d##*/}"; return; }
    done
}
storage_daemons() {
    for p in /proc/[0-9]*; do
        first=$($bb head -c 1 "$p/cmdline" 2>/dev/null)
        [ "$first" = "@" ] && echo "${p#/proc/}"
    done
}

# soak: checksummed 16 KiB blocks written to Storage with fsync and a direct read of the disk,
# over and over for iscsiboot.soak=SECONDS while the host injects faults; then every block is
# read back past the page cache and the totals and the kernel's log are reported.
soak() {
    $bb mount -t tmpfs tmpfs /tmp 2>/dev/null
    f=/storage/iscsiboot-soak.bin
    disk=$(disk_of_flash)
    n=0
    errs=0
    : > /tmp/sums
    t0=$(uptime_s)
    t0=${t0%.*}
    say "soak start $1"
    while :; do
        now=$(uptime_s)
        [ $((${now%.*} - t0)) -lt "$1" ] || break
        $bb dd if=/dev/urandom of=/tmp/b bs=16384 count=1 2>/dev/null
        sum=$($bb sha256sum < /tmp/b | $bb cut -c1-64)
        if $bb dd if=/tmp/b of=$f bs=16384 seek=$n count=1 conv=notrunc,fsync 2>/dev/null; then
            echo "$n $sum" >> /tmp/sums
            say "soakw $n $sum"
            n=$((n + 1))
        else
            errs=$((errs + 1))
            say "soakerr write $n"
            $bb sleep 1
        fi
        if ! $bb dd if=/dev/$disk of=/dev/null bs=4096 count=1 skip=$(((n * 7919) % 16384)) iflag=direct 2>/dev/null; then
            errs=$((errs + 1))
            say "soakerr read $n"
        fi
    done
    good=0
    while read -r i sum; do
        got=$($bb dd if=$f bs=16384 skip=$i count=1 iflag=direct 2>/dev/null | $bb sha256sum | $bb cut -c1-64)
        [ "$got" = "$sum" ] && good=$((good + 1))
    done < /tmp/sums
    say "soak result $((n * 16384)) $((good * 16384)) $errs"
    $bb dmesg | $bb sed "s/^/@TEST_MARKER@ dmesg /"
}
# soakread: the blocks a soak wrote, each one's checksum (a later boot checks what was kept)
soakread() {
    f=/storage/iscsiboot-soak.bin
    [ -f "$f" ] || { say "soakread none"; return; }
    blocks=$(($($bb stat -c %s "$f") / 16384))
    i=0
    while [ $i -lt $blocks ]; do
        say "soakr $i $($bb dd if=$f bs=16384 skip=$i count=1 2>/dev/null | $bb sha256sum | $bb cut -c1-64)"
        i=$((i + 1))
    done
}

tests=
soak_s=60
for word in $($bb cat /proc/cmdline); do
    case "$word" in
    iscsiboot.test=*) tests="${word#iscsiboot.test=}" ;;
    iscsiboot.soak=*) soak_s="${word#iscsiboot.soak=}" ;;
    esac
done
for t in $(echo "$tests" | $bb tr ',' ' '); do
    case "$t" in
    persist)  # the first boot writes a file to Storage, a later boot reads it back
        f=/storage/iscsiboot-persist.bin
        if [ -f "$f" ]; then
            say "persist read $($bb sha256sum < "$f" | $bb cut -d' ' -f1)"
        else
            $bb dd if=/dev/urandom of="$f" bs=65536 count=64 2>/dev/null
            $bb sync
            say "persist wrote $($bb sha256sum < "$f" | $bb cut -d' ' -f1)"
        fi
        ;;
    bigread)  # the SYSTEM image read back through the transport
        t0=$(uptime_s)
        sum=$($bb sha256sum < /flash/SYSTEM | $bb cut -d' ' -f1)
        say "bigread $sum $($bb stat -c %s /flash/SYSTEM) $t0 $(uptime_s)"
        ;;
    daemon)  # the root storage daemons (argv[0] starting with @) and their memory
        for pid in $(storage_daemons); do
            rss=$($bb awk '/^VmRSS/ { print $2 }' /proc/$pid/status)
            argv0=$($bb tr '\0' '\n' < /proc/$pid/cmdline | $bb head -n 1)
            say "daemon $pid ${argv0:-unknown} ${rss:-unknown}"
        done
        ;;
    seqread)  # 64 MiB straight from the disk, past the page cache
        disk=$(disk_of_flash)
        ios0=$($bb awk '{ print $1 }' /sys/block/$disk/stat)
        t0=$(uptime_s)
        $bb dd if=/dev/$disk of=/dev/null bs=1048576 count=64 iflag=direct 2>/dev/null
        t1=$(uptime_s)
        ios1=$($bb awk '{ print $1 }' /sys/block/$disk/stat)
        say "seqread $disk 67108864 $t0 $t1 $((ios1 - ios0)) $($bb cat /sys/block/$disk/queue/max_sectors_kb)"
        ;;
    soak) soak "$soak_s" ;;
    soakread) soakread ;;
    randread)  # 4 KiB reads at pseudo-random places of the first 64 MiB, past the page cache
        disk=$(disk_of_flash)
        n=0
        r=12345
        t0=$(uptime_s)
        while [ $n -lt 200 ]; do
            r=$(( (r * 1103515245 + 12345) % 2147483648 ))
            $bb dd if=/dev/$disk of=/dev/null bs=4096 count=1 skip=$(( r % 16384 )) iflag=direct 2>/dev/null
            n=$((n + 1))
        done
        say "randread $disk 200 $t0 $(uptime_s)"
        ;;
    esac
done

echo "@MOUNTS_BEGIN@"
$bb cat /proc/mounts
echo "@MOUNTS_END@"
$bb sync
# A clean power-off, as systemd's last step does it: the storage is unmounted, every
# process but the root storage daemons gets SIGTERM, the daemons are asked to flush and
# log out (SIGUSR1) once nothing writes any more.
$bb umount /storage 2>/dev/null
$bb kill -TERM -1 2>/dev/null
daemons=$(storage_daemons)
for pid in $daemons; do $bb kill -USR1 "$pid"; done
n=0
while [ -n "$daemons" ] && [ $n -lt 100 ]; do
    left=
    for pid in $daemons; do [ -e "/proc/$pid" ] && left="$left $pid"; done
    daemons=$left
    [ -n "$daemons" ] && $bb usleep 50000
    n=$((n + 1))
done
[ -n "$daemons" ] && say "daemons still running at power-off:$daemons"
$bb poweroff -f
$bb sleep 5
echo o > /proc/sysrq-trigger
