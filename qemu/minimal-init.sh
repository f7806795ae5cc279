#!/bin/sh
# A minimal busybox initramfs (the stand-in for a distribution's own).
# An appended iscsiboot overlay brings /init.iscsiboot, which takes over as PID 1.
if [ -x /init.iscsiboot ]; then
    exec /init.iscsiboot "$@"
fi
/bin/busybox mount -t proc proc /proc
echo "minimal initramfs: no overlay found; powering off"
/bin/busybox poweroff -f
