"""The installed disk boots: SeaBIOS -> mbr.bin -> extlinux -> KERNEL (QEMU, TCG)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from disk_support import sh, tool
from iscsiboot.disk.install import MBR_BIN, install_image

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _need_root() -> None:
    if os.geteuid() != 0 or not Path("/dev/loop-control").exists():
        pytest.skip("needs root and loop devices")
    if not MBR_BIN.exists():
        pytest.skip("syslinux-common (mbr.bin) not installed")


@pytest.mark.root
@pytest.mark.vm
def test_installed_disk_boots_the_kernel(tmp_path: Path) -> None:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86 not installed")
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
    )
    log = tmp_path / "serial.log"
    done = subprocess.run(
        [qemu, "-m", "512", "-drive", f"file={image},format=raw,if=ide", "-no-reboot",
         "-chardev", f"file,id=c0,path={log}", "-serial", "chardev:c0", "-display", "none"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    text = log.read_text(errors="replace")
    assert "SYSLINUX" in text, (done.stderr, text[-2000:])
    assert "Linux version" in text, text[-2000:]
    # the kernel came up with our command line and stopped where there is no root file system
    assert "root=/dev/nonexistent" in text and "console=ttyS0,115200" in text
    assert "Kernel panic" in text


def _loops_under(prefix: Path) -> list[str]:
    out = sh(tool("losetup"), "-a")
    return [line for line in out.splitlines() if str(prefix) in line]


def _mounts_under(prefix: Path) -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as handle:
        return [line for line in handle if str(prefix) in line.split()[1]]


@pytest.mark.root
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cleans_up(tmp_path: Path, signum: int) -> None:
    """A signal while files are copied into the mounted System: no mount, loop or image stays."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    kernel = tmp_path / "KERNEL"
    kernel.write_bytes(os.urandom(MiB))
    system = tmp_path / "SYSTEM"
    system.write_bytes(os.urandom(200 * MiB))
    image = tmp_path / "disk.img"
    proc = subprocess.Popen(
        [sys.executable, "-m", "iscsiboot", "install", "--image", str(image), "--size", "320M",
         "--system-size", "280M", "--kernel", str(kernel), "--system", str(system), "--auto"],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _mounts_under(scratch):
            assert proc.poll() is None, "install ended before System was mounted"
            assert time.monotonic() < deadline, "System was never mounted"
            time.sleep(0.002)  # polling for the mount (no event exists for it)
        os.kill(proc.pid, signum)
        _out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert _mounts_under(tmp_path) == []
    assert _loops_under(tmp_path) == []
    assert not image.exists()
    assert list(scratch.iterdir()) == []
