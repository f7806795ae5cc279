"""UEFI sanboot in QEMU (TCG): OVMF, iPXE's EFI driver, LibreELEC's own disk layout, from tgtd.

The disk is what ``iscsiboot install --layout libreelec`` writes: GPT with
gptmbr.bin, a FAT16 System with syslinux.efi at EFI/BOOT/bootx64.efi and
ldlinux.sys, ext4 Storage.  Under UEFI iPXE publishes the iBFT as an ACPI
table.  A UEFI boot takes about twice as long as a BIOS one under TCG.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.disk.layout import LayoutKind
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import Firmware, ScenarioOptions
from iscsiboot.secret import Secret
from vm_support import (
    BOOT_TIMEOUT,
    PASSWORD,
    REVERSE_PASSWORD,
    REVERSE_USER,
    USER,
    WRONG_PASSWORD,
    boot,
    expect_success,
    explain,
    require_vm,
)

ACPI_IBFT = "ACPI: iBFT"  # the kernel lists iPXE's table among the ACPI tables (UEFI only)


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    for path, package in ((Path("/usr/share/ovmf/OVMF.fd"), "ovmf"),
                          (Path("/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi"), "syslinux-efi")):  # fmt: skip
        if not path.is_file():
            pytest.skip(f"{path} is missing (install {package})")
    return prepare()


def mutual(**kw: object) -> ScenarioOptions:
    return ScenarioOptions(
        username=USER,
        password=Secret(PASSWORD),
        reverse_username=REVERSE_USER,
        reverse_password=Secret(REVERSE_PASSWORD),
        timeout=BOOT_TIMEOUT,
        **kw,  # type: ignore[arg-type]
    )


def expect_fat_system(outcome: Outcome, name: str) -> None:
    expect_success(outcome, name)
    why = explain(outcome, name)
    assert outcome.system.mounted_at("/flash").fstype == "vfat", why  # type: ignore[union-attr]
    assert outcome.system.mounted_at("/storage").fstype == "ext4", why  # type: ignore[union-attr]
    for secret in (PASSWORD, REVERSE_PASSWORD):
        assert secret not in outcome.console, "a CHAP secret leaked\n" + why


def test_uefi_sanboot_mutual_chap(artifacts: Artifacts, tmp_path: Path) -> None:
    outcome = boot("uefi ibft mutual", mutual(firmware=Firmware.UEFI), artifacts, tmp_path)
    expect_fat_system(outcome, "uefi ibft mutual")
    why = explain(outcome, "uefi ibft mutual")
    assert ACPI_IBFT in outcome.console, why  # iPXE's iBFT reached the kernel as an ACPI table
    assert "iPXE" in outcome.console, why  # OVMF's console is the serial port: iPXE shows there


def test_one_disk_boots_bios_and_uefi(artifacts: Artifacts, tmp_path: Path) -> None:
    disk = tmp_path / "libreelec.img"
    bios = boot(
        "bios, libreelec disk",
        mutual(layout=LayoutKind.LIBREELEC, disk=disk),
        artifacts,
        tmp_path,
    )
    expect_fat_system(bios, "bios, libreelec disk")
    assert ACPI_IBFT not in bios.console, explain(bios, "bios")  # SeaBIOS: the table is in low memory
    uefi = boot("uefi, same disk", mutual(firmware=Firmware.UEFI, disk=disk), artifacts, tmp_path)
    expect_fat_system(uefi, "uefi, same disk")
    assert any("kept from an earlier boot" in step for step in uefi.progress), explain(uefi, "uefi")


def test_wrong_password_under_uefi_names_the_cause(artifacts: Artifacts, tmp_path: Path) -> None:
    options = mutual(firmware=Firmware.UEFI, client_password=Secret(WRONG_PASSWORD))
    outcome = boot("uefi wrong password", options, artifacts, tmp_path)
    why = explain(outcome, "uefi wrong password")
    assert not outcome.ok and outcome.result is None, why
    assert (outcome.phase, outcome.cause) == ("sanboot", "auth"), why
    assert "initiator authentication failed" in (outcome.error or ""), why
    assert outcome.reason == "exited", why  # the wrapper's reboot ended QEMU (-no-reboot), no time-out
    assert outcome.boot_seconds < BOOT_TIMEOUT / 2, why
    for secret in (PASSWORD, REVERSE_PASSWORD, WRONG_PASSWORD):
        assert secret not in outcome.console, "a CHAP secret leaked\n" + why


@pytest.fixture(scope="module")
def nbd_artifacts(artifacts: Artifacts) -> Artifacts:
    return prepare(transport="nbd")


def test_uefi_sanboot_over_nbd(nbd_artifacts: Artifacts, tmp_path: Path) -> None:
    """No kernel iSCSI in the image: the agent reads the iBFT from ACPI and serves the LUN over NBD."""
    outcome = boot("uefi ibft mutual, nbd", mutual(firmware=Firmware.UEFI), nbd_artifacts, tmp_path)
    expect_fat_system(outcome, "uefi ibft mutual, nbd")
    why = explain(outcome, "uefi ibft mutual, nbd")
    assert outcome.result is not None and outcome.result.transport == "nbd", why
    assert (outcome.result.system or "").startswith("/dev/nbd"), why
    # no iscsi_ibft in this image and no table in low memory under UEFI: the agent read the ACPI table
    assert ACPI_IBFT in outcome.console and "iBFT found at" not in outcome.console, why
    assert (outcome.result.ibft or "").startswith("ACPI table "), why  # the result names the source
