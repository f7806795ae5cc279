"""The installed disk boots: SeaBIOS -> mbr.bin -> extlinux -> KERNEL (QEMU, TCG)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from disk_support import need_root_and_loops, sh, tool


@pytest.fixture(autouse=True)
def _need_root() -> None:
    need_root_and_loops()


MiB = 1 << 20


def _loops_under(prefix: Path) -> list[str]:
    out = sh(tool("losetup"), "-a")
    return [line for line in out.splitlines() if str(prefix) in line]


def _mounts_under(prefix: Path) -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as handle:
        return [line for line in handle if str(prefix) in line.split()[1]]


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
