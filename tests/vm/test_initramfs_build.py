"""Real builds against the downloaded Debian kernel (root tier: apt-get, depmod, chroot)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from initramfs_support import need_root, test_kernel
from iscsiboot.initramfs import cpio
from iscsiboot.initramfs.build import Compression, build, compress

BASE_INIT = b"""#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
T=iscsi_target
I=iqn.2024-01.test
echo "console=ttyS0 boot=ISCSI=iscsi_initiator=$I:c,${T}_name=$I:t,${T}_ip=10.0.2.2,LABEL=System" > /cmdline
/usr/lib/iscsiboot/bin/iscsiboot agent run --cmdline-file /cmdline --hook /run/hook.env --last modules
echo "HOOK-RC=$?"
. /run/hook.env
echo "HOOK-OK=$ISCSIBOOT_OK HOOK-PHASE=$ISCSIBOOT_PHASE"
while read name rest; do echo "LOADED $name"; done < /proc/modules
for dep in /lib/modules/*/modules.dep; do
    n=0; while read line; do n=$((n+1)); done < $dep; echo "BASE-DEP $n"
done
poweroff -f
"""


NIC = ("8139cp", "8139too")  # both claim QEMU's rtl8139; the overlay has neither


def test_overlay_appended_to_busybox_initramfs_runs_agent_hook(tmp_path: Path) -> None:
    """A minimal non-usrmerge busybox initramfs + the overlay: the agent runs and loads modules.

    The base, like a distribution's, has the kernel's whole module index and a NIC driver
    the overlay lacks (rtl8139, the NIC QEMU gets here): the overlay leaves that index alone
    and the agent finds the driver through it.
    """
    need_root()
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86 is not installed")
    kernel = test_kernel()
    busybox = Path("/bin/busybox").read_bytes()
    base = [cpio.Entry.file("bin/busybox", busybox, 0o755), cpio.Entry.file("init", BASE_INIT, 0o755)]
    base += [cpio.Entry.symlink(f"bin/{a}", "busybox") for a in ("sh", "mount", "echo", "poweroff")]
    base += [cpio.Entry.directory(d) for d in ("proc", "sys", "dev", "run", "usr", "usr/lib")]
    base.append(cpio.Entry.char("dev/console", 5, 1))
    moddir = kernel.root / "lib" / "modules" / kernel.version
    base_dir = f"lib/modules/{kernel.version}"
    for name in ("modules.dep", "modules.dep.bin", "modules.alias", "modules.alias.bin", "modules.builtin"):
        base.append(cpio.Entry.file(f"{base_dir}/{name}", (moddir / name).read_bytes()))
    for rel in ("kernel/drivers/net/mii.ko", *(f"kernel/drivers/net/ethernet/realtek/{m}.ko" for m in NIC)):
        base.append(cpio.Entry.file(f"{base_dir}/{rel}", (moddir / rel).read_bytes()))
    base_lines = len((moddir / "modules.dep").read_text().splitlines())
    # xz with the x86 BCJ filter, as the builder writes it: the kernel's decoder must take it
    overlay = build(kernel=kernel, overlay=True, compression="xz")
    image = tmp_path / "combined.img"
    image.write_bytes(compress(cpio.write_newc(base), Compression.GZIP) + overlay.archive)
    log = tmp_path / "serial.log"
    subprocess.run(
        [
            qemu,
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "2",
            "-display",
            "none",
            "-no-reboot",
            "-kernel",
            str(kernel.vmlinuz),
            "-initrd",
            str(image),
            "-append",
            "console=ttyS0 panic=-1 quiet",
            "-nic",
            "user,model=rtl8139,restrict=on",
            "-chardev",
            f"file,id=c0,path={log}",
            "-serial",
            "chardev:c0",
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        check=True,
    )
    text = log.read_text(errors="replace")
    assert "HOOK-OK=1 HOOK-PHASE=done" in text, text[-3000:]
    # the agent exits cleanly: glibc finds libgcc_s (dlopened for pthread_exit) in the overlay
    assert "must be installed for pthread_exit" not in text, text[-3000:]
    assert "HOOK-RC=0" in text, text[-3000:]
    loaded = {line.split()[1] for line in text.splitlines() if line.startswith("LOADED ")}
    # the NIC driver came from the base, found through the base's index
    assert set(NIC) & loaded and "mii" in loaded, loaded
    # the iSCSI modules came from the overlay, found through its own index
    assert {"iscsi_tcp", "scsi_transport_iscsi"} <= loaded, loaded
    # the base's index is the one it brought
    assert f"BASE-DEP {base_lines}" in text, text[-3000:]
