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


SWEEP = 32  # signals spread over one run of install, SIGINT and SIGTERM in turn


def _install(
    image: Path, kernel: Path, system: Path, scratch: Path, *, size: str = "64M", system_size: str = "40M"
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "iscsiboot", "install", "--layout", "seed", "--image", str(image),
         "--size", size, "--system-size", system_size, "--kernel", str(kernel), "--system", str(system),
         "--auto"],
        env={**os.environ, "TMPDIR": str(scratch)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _inputs(tmp_path: Path, *, system_mib: int) -> tuple[Path, Path, Path, Path]:
    """A TMPDIR for install, a KERNEL and a SYSTEM of random bytes, and where the image goes."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    kernel = tmp_path / "KERNEL"
    kernel.write_bytes(os.urandom(MiB))
    system = tmp_path / "SYSTEM"
    system.write_bytes(os.urandom(system_mib * MiB))
    return scratch, kernel, system, tmp_path / "disk.img"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cleans_up(tmp_path: Path, signum: int) -> None:
    """A signal while files are copied into the mounted System: no mount, loop or image stays."""
    scratch, kernel, system, image = _inputs(tmp_path, system_mib=200)
    proc = _install(image, kernel, system, scratch, size="320M", system_size="280M")
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


def _wait_for(image: Path, proc: subprocess.Popen[str]) -> float:
    """When ``image`` appeared (install has begun its work); polled, as no event exists for it."""
    deadline = time.monotonic() + 60
    while not image.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the image was never created"
        time.sleep(0.002)
    return time.monotonic()


def test_a_signal_at_any_point_of_install_leaves_nothing_behind(tmp_path: Path) -> None:
    """SIGINT or SIGTERM at many points of one run: no loop device, mount or folder stays,
    and the image is either gone or the whole installation."""
    from iscsiboot.disk.inspect import inspect_disk  # noqa: PLC0415 (root tier only)
    from iscsiboot.disk.install import MBR_BIN  # noqa: PLC0415
    from iscsiboot.disk.readers import file_reader  # noqa: PLC0415

    scratch, kernel, system, image = _inputs(tmp_path, system_mib=24)
    spans = []
    for _ in range(3):  # the first run reads its inputs from a cold cache: the fastest sets the sweep
        image.unlink(missing_ok=True)
        proc = _install(image, kernel, system, scratch)
        began = _wait_for(image, proc)
        _out, err = proc.communicate(timeout=120)
        spans.append(time.monotonic() - began)
        assert proc.returncode == 0, err
    span = min(spans)
    outcomes: dict[str, int] = {}
    for step in range(SWEEP + 1):
        image.unlink(missing_ok=True)
        signum = (signal.SIGINT, signal.SIGTERM)[step % 2]
        proc = _install(image, kernel, system, scratch)
        try:
            _wait_for(image, proc)
            time.sleep(span * step / SWEEP)
            os.kill(proc.pid, signum)
            _out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        where = f"signal {signum} after {span * step / SWEEP:.3f} s of {span:.3f} s: {err}"
        assert "Traceback" not in err, where
        assert _mounts_under(tmp_path) == [], where
        assert _loops_under(tmp_path) == [], where
        assert list(scratch.iterdir()) == [], where
        if proc.returncode == 130 and not image.exists():
            outcomes["undone"] = outcomes.get("undone", 0) + 1
            assert "interrupted" in err, where
            continue
        # the signal came after the work was done: the image is a whole installation (a signal
        # that arrives while the interpreter shuts down meets the default action: -SIGINT, -SIGTERM)
        assert proc.returncode in (0, 130, -signal.SIGINT, -signal.SIGTERM), where
        view = inspect_disk(file_reader(image), image.stat().st_size, boot_code=MBR_BIN.read_bytes()[:440])
        assert view.ok, (where, view.problems)
        outcomes["done"] = outcomes.get("done", 0) + 1
    # the sweep did interrupt the work, not only arrive after it (how many depends on the host's speed)
    assert outcomes.get("undone", 0) >= SWEEP // 8, outcomes
