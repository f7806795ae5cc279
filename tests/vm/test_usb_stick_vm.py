"""The boot stick of ``iscsiboot generate usb`` in QEMU (TCG, SeaBIOS): no iPXE ROM in the NIC.

``iscsiboot qemu boot --boot-via usb``: the harness writes the stick with the
same code as ``generate usb`` (syslinux, Debian's ``ipxe.lkrn``, the
embedded script with its own DHCP and CHAP) and attaches it as a USB disk;
the NIC has no boot ROM, so iPXE can only come from the stick.  The agent
mounts System and Storage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.cmdline import usb
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.scenario import BootVia, ScenarioOptions
from iscsiboot.secret import Secret
from vm_support import BOOT_TIMEOUT, boot, expect_success, explain, require_vm


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    if not usb.IPXE_LKRN.is_file():
        pytest.skip("Debian's iPXE is missing (install ipxe)")
    return prepare()


def test_the_bios_stick_boots_ipxe_lkrn_and_sanboots_with_chap(artifacts: Artifacts, tmp_path: Path) -> None:
    options = ScenarioOptions(
        boot_via=BootVia.USB, username="htpc", password=Secret("htpc-secret-12"), timeout=BOOT_TIMEOUT
    )
    outcome = boot("usb stick bios", options, artifacts, tmp_path / "logs")
    expect_success(outcome, "usb stick bios")
    why = explain(outcome, "usb stick bios")
    assert any("boot stick" in step for step in outcome.progress), why
    assert "htpc-secret-12" not in outcome.console
