"""The installed disk boots as a local disk (QEMU, TCG).

seed: SeaBIOS -> mbr.bin -> extlinux -> KERNEL.  libreelec: SeaBIOS -> gptmbr.bin ->
syslinux -> KERNEL, and OVMF -> EFI/BOOT/bootx64.efi (syslinux.efi) -> KERNEL, from one disk.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from disk_support import need_root_and_loops
from iscsiboot.disk.install import install_image
from iscsiboot.disk.layout import LayoutKind

OVMF = Path("/usr/share/ovmf/OVMF.fd")


@pytest.fixture(autouse=True)
def _need_root() -> None:
    need_root_and_loops()


@pytest.mark.parametrize(
    ("layout", "uefi"),
    [(LayoutKind.SEED, False), (LayoutKind.LIBREELEC, False), (LayoutKind.LIBREELEC, True)],
)
def test_installed_disk_boots_the_kernel(tmp_path: Path, layout: LayoutKind, uefi: bool) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86 not installed")
    if uefi and not OVMF.is_file():
        pytest.skip(f"{OVMF} is missing (install ovmf)")
    from iscsiboot.initramfs.kernel import fetch_kernel  # noqa: PLC0415 (only this tier needs it)

    kernel = fetch_kernel().vmlinuz
    system = tmp_path / "SYSTEM"
    system.write_bytes(b"not used by this boot")
    image = tmp_path / "disk.img"
    install_image(
        image,
        kernel=kernel,
        system=system,
        append="panic=-1 root=/dev/nonexistent",
        size_mb=64,
        system_size_mb=40,
        serial=True,
        layout=layout,
    )
    firmware = ["-machine", "q35", "-bios", str(OVMF)] if uefi else []
    log = tmp_path / "serial.log"
    done = subprocess.run(
        [qemu, *firmware, "-m", "512", "-drive", f"file={image},format=raw,if=ide", "-no-reboot",
         "-chardev", f"file,id=c0,path={log}", "-serial", "chardev:c0", "-display", "none"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    text = log.read_text(errors="replace")
    if not uefi:  # syslinux.efi writes its banner to the firmware's screen, not the serial port
        assert "SYSLINUX" in text, (done.stderr, text[-2000:])
    assert "Linux version" in text, text[-2000:]
    # the kernel came up with our command line and stopped where there is no root file system
    assert "root=/dev/nonexistent" in text and "console=ttyS0,115200" in text
    assert "Kernel panic" in text
