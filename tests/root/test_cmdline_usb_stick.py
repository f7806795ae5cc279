"""``iscsiboot generate usb`` writes a real stick image: FAT, syslinux, Debian's ipxe.lkrn, the script."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from iscsiboot.cli import main
from iscsiboot.cmdline import usb

MODEL = [
    "--target-name", "iqn.2026-11.org.iscsiboot:htpc", "--target-ip", "10.0.2.2", "--lun", "1",
    "--username", "htpc", "--password", "htpc-secret-12",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _tools() -> None:
    if not usb.IPXE_LKRN.is_file() or shutil.which("mcopy") is None or shutil.which("syslinux") is None:
        pytest.skip("needs ipxe, mtools and syslinux")


def test_the_stick_holds_ipxe_lkrn_the_script_and_syslinux(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stick = tmp_path / "stick.img"
    assert main(["generate", "usb", "-o", str(stick), *MODEL]) == 0
    assert stick.stat().st_mode & 0o777 == 0o600
    assert stick.stat().st_size == usb.STICK_MB * 1024 * 1024
    err = capsys.readouterr().err
    assert "carries the CHAP secrets" in err and "htpc-secret-12" not in err
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(stick), "::/"], capture_output=True, text=True, check=True
    )
    names = {Path(line).name.lower() for line in listing.stdout.split()}
    assert {"ipxe.lkrn", "boot.ipxe", "syslinux.cfg"} <= names
    script = subprocess.run(
        ["mtype", "-i", str(stick), "::/boot.ipxe"], capture_output=True, text=True, check=True
    ).stdout
    assert "dhcp || goto retry_dhcp" in script and "set password htpc-secret-12" in script
    lkrn = subprocess.run(["mtype", "-i", str(stick), "::/ipxe.lkrn"], capture_output=True, check=True).stdout
    assert lkrn == usb.IPXE_LKRN.read_bytes()
    assert stick.read_bytes()[510:512] == b"\x55\xaa"  # syslinux's boot sector
    assert not [p for p in os.listdir(tmp_path) if p != "stick.img"]  # no scratch left behind


def test_a_uefi_stick_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    stick = tmp_path / "stick.img"
    assert main(["generate", "usb", "-o", str(stick), "--firmware", "uefi", *MODEL]) != 0
    assert not stick.exists()
