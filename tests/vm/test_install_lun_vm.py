"""A LUN written by ``iscsiboot install --portal`` (the project's initiator) boots (QEMU, TCG).

The install is the command itself, as the README's everyday call has it: a
synthetic LibreELEC release (``release_support``: the harness's kernel and
SYSTEM as ``target/KERNEL`` and ``target/SYSTEM`` with their ``.md5``
files) goes with ``--auto`` (the iBFT names the target on the box) onto a
blank LUN of a tgtd of its own, logged in with mutual CHAP: the LibreELEC
layout (GPT, FAT16 System, ext4 Storage), sent as data extents.
``iscsiboot doctor``, given the box's command line (the APPEND line the
install wrote), finds every check ok on that LUN.  The harness then serves
that very backing file, and iPXE sanboots it with
mutual CHAP to System and Storage, under BIOS (SeaBIOS, gptmbr.bin,
ldlinux.sys) and under UEFI (OVMF, ``EFI/BOOT/bootx64.efi``): one install,
two boots.

A LUN of 4096-byte blocks gets the layout in its own sectors.  Neither
firmware of the harness sanboots such a LUN (BIOS cannot; the harness
serves it to a direct boot only), so the guest's kernel logs in to it
itself (cmdline mode, tgt serving blocks of 4096 bytes), finds the
partitions in the GPT of 4096-byte sectors, and the agent mounts the FAT
System of 4096-byte sectors and the ext4 Storage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from iscsiboot.disk.fat import open_filesystem
from iscsiboot.disk.inspect import parse_extlinux
from iscsiboot.disk.layout import LayoutKind, MiB
from iscsiboot.disk.probe import read_partition_table
from iscsiboot.disk.readers import file_reader, window
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts, disk_size_mb
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import FAILURE_OPTION, Firmware, Mode
from iscsiboot.qemu.tgt import Tgtd
from iscsiboot.secret import Secret
from release_support import make_release_tar
from vm_support import boot, expect_success, explain, mutual, no_secret_in, require_vm

INSTALLER = "iqn.2026-11.org.iscsiboot.test:installer"
STAGING = "iqn.2026-11.org.iscsiboot.test:staging"
# the installing connection's own mutual CHAP accounts (the boots use vm_support's)
INSTALL_USER, INSTALL_SECRET = "installer", "install-secret-0042"
STAGING_USER, STAGING_SECRET = "staging", "staging-secret-0043"
UEFI_FILES = ((Path("/usr/share/ovmf/OVMF.fd"), "ovmf"),
              (Path("/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi"), "syslinux-efi"))  # fmt: skip


@dataclass(frozen=True)
class Installed:
    """A LUN's backing file as ``install --portal`` left it, and the command's JSON report."""

    disk: Path
    report: dict[str, Any]


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    return prepare()


@pytest.fixture(scope="module")
def release(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release tarball as downloaded, holding the harness's kernel and SYSTEM."""
    folder = tmp_path_factory.mktemp("release")
    return make_release_tar(folder, artifacts.kernel.read_bytes(), artifacts.system.read_bytes())


def install_over_iscsi(
    work: Path, artifacts: Artifacts, release: Path, *, block_size: int = 512
) -> Installed:
    """``iscsiboot install --portal`` of ``release`` onto a blank LUN of ``block_size``-byte blocks."""
    size_mb = disk_size_mb(artifacts)
    work.mkdir(parents=True, exist_ok=True)
    disk = work / "lun.img"
    with disk.open("wb") as handle:
        handle.truncate(size_mb * MiB)
    secrets = {}
    for name, value in (("pw", INSTALL_SECRET), ("rpw", STAGING_SECRET)):
        secrets[name] = work / name
        secrets[name].write_text(value + "\n")
        secrets[name].chmod(0o600)
    with Tgtd(work / "staging") as tgtd:
        tgtd.add_target(1, STAGING, [disk], block_size=block_size)
        tgtd.add_account(INSTALL_USER, Secret(INSTALL_SECRET))
        tgtd.add_account(STAGING_USER, Secret(STAGING_SECRET))
        tgtd.bind_account(1, INSTALL_USER)
        tgtd.bind_account(1, STAGING_USER, outgoing=True)
        login = [
            "--portal", tgtd.portal, "--target", STAGING, "--lun", "1", "--initiator", INSTALLER,
            "--username", INSTALL_USER, "--password-file", str(secrets["pw"]),
            "--reverse-username", STAGING_USER, "--reverse-password-file", str(secrets["rpw"]),
        ]  # fmt: skip
        argv = [
            sys.executable, "-m", "iscsiboot", "install", *login, "--auto", "--release", str(release),
            "--initrd", str(artifacts.initrd), "--serial", "--append", f"panic=1 {FAILURE_OPTION}",
            "--system-size", f"{max(16, size_mb // 2)}M", "--json",
        ]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False,
                              env={**os.environ, "TMPDIR": str(work)})  # fmt: skip
        assert done.returncode == 0, done.stderr
        doctor = [
            sys.executable, "-m", "iscsiboot", "doctor", "--json", *login, "--cmdline", append_line(disk),
        ]  # fmt: skip
        checked = subprocess.run(doctor, capture_output=True, text=True, timeout=120, check=False)
    failed = [c for c in json.loads(checked.stdout)["checks"] if not c["ok"]]
    assert checked.returncode == 0 and not failed, json.dumps(failed, indent=1) + checked.stderr
    for secret in (INSTALL_SECRET, STAGING_SECRET):
        assert secret not in done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["kind"] == "lun" and report["transfer"]["block_size"] == block_size
    assert report["sector_size"] == block_size and report["scheme"] == "gpt"
    assert report["transfer"]["sent"] < report["size"]  # only the extents that hold data travelled
    return Installed(disk, report)


def append_line(disk: Path) -> str:
    """The APPEND line of System's syslinux.cfg on ``disk`` (the box's kernel command line)."""
    read = file_reader(disk)
    table = read_partition_table(read, size=disk.stat().st_size)
    assert table is not None
    system = table.partitions[0]
    conf = open_filesystem(window(read, system.start, system.size), "vfat").read_file("/syslinux.cfg")
    entry = parse_extlinux(conf.decode()).entry()
    assert entry is not None and entry.append is not None and "ISCSI=auto" in entry.append
    return entry.append


@pytest.fixture(scope="module")
def installed(artifacts: Artifacts, release: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """One LUN installed from the release, booted under BIOS and then under UEFI."""
    return install_over_iscsi(tmp_path_factory.mktemp("lun512"), artifacts, release)


def expect_fat_system(outcome: Outcome, name: str) -> None:
    expect_success(outcome, name)
    why = explain(outcome, name)
    assert outcome.system.mounted_at("/flash").fstype == "vfat", why  # type: ignore[union-attr]
    assert outcome.system.mounted_at("/storage").fstype == "ext4", why  # type: ignore[union-attr]
    no_secret_in(outcome.console, why)


def test_bios_boots_the_installed_lun(artifacts: Artifacts, installed: Installed, tmp_path: Path) -> None:
    files = {f["path"] for f in installed.report["files"]}
    assert {
        "/KERNEL",
        "/SYSTEM",
        "/initrd",
        "/syslinux.cfg",
        "/ldlinux.sys",
        "/EFI/BOOT/bootx64.efi",
    } <= files
    assert installed.report["boot_code"].endswith("gptmbr.bin")
    options = mutual(layout=LayoutKind.LIBREELEC, disk=installed.disk)
    outcome = boot("install --portal, bios", options, artifacts, tmp_path)
    expect_fat_system(outcome, "install --portal, bios")
    assert any("kept from an earlier boot" in step for step in outcome.progress), explain(outcome, "bios")


def test_uefi_boots_the_installed_lun(artifacts: Artifacts, installed: Installed, tmp_path: Path) -> None:
    for path, package in UEFI_FILES:
        if not path.is_file():
            pytest.skip(f"{path} is missing (install {package})")
    options = mutual(firmware=Firmware.UEFI, disk=installed.disk)
    outcome = boot("install --portal, uefi", options, artifacts, tmp_path)
    expect_fat_system(outcome, "install --portal, uefi")
    why = explain(outcome, "uefi")
    assert any("kept from an earlier boot" in step for step in outcome.progress), why
    assert "ACPI: iBFT" in outcome.console, why  # iPXE's EFI sanboot: the iBFT is an ACPI table


def test_lun_of_4096_byte_blocks(artifacts: Artifacts, release: Path, tmp_path: Path) -> None:
    """The guest's kernel reads the GPT and both file systems in 4096-byte sectors."""
    installed = install_over_iscsi(tmp_path / "lun4k", artifacts, release, block_size=4096)
    assert installed.report["boot_code"] is None  # syslinux's BIOS loader reads 512-byte sectors
    assert "/ldlinux.sys" not in {f["path"] for f in installed.report["files"]}
    options = mutual(mode=Mode.CMDLINE, lun_block_size=4096, layout=LayoutKind.LIBREELEC, disk=installed.disk)
    outcome = boot("install --portal, 4096-byte blocks", options, artifacts, tmp_path)
    expect_fat_system(outcome, "install --portal, 4096-byte blocks")
    why = explain(outcome, "4096-byte blocks")
    assert "logical blocks" in outcome.console and "4096-byte logical blocks" in outcome.console, why
