"""The PXE chain through a real dnsmasq, in QEMU (TCG): no iPXE ROM in the NIC.

``iscsiboot qemu boot --boot-via dnsmasq --firmware uefi``: OVMF's own PXE
client asks dnsmasq (``iscsiboot generate dnsmasq``'s configuration) for a
boot file, gets Debian's ``ipxe.efi`` over TFTP; that iPXE asks again, is
given the script, which sanboots the LUN with CHAP; the agent takes its own
lease from the same dnsmasq.  Guest, dnsmasq and tgtd share a network
namespace the test makes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.netlab import SERVER_ADDRESS
from iscsiboot.qemu.scenario import BOOTFILE, EFI_IMAGE, SCENARIO_SCRIPT, BootVia, Firmware, ScenarioOptions
from iscsiboot.secret import Secret
from vm_support import BOOT_TIMEOUT, boot, expect_success, explain, require_vm


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    if not Path("/usr/lib/ipxe", EFI_IMAGE).is_file():
        pytest.skip("Debian's iPXE is missing (install ipxe)")
    return prepare()


def test_ovmf_pxe_chains_debians_ipxe_efi_from_dnsmasq_and_sanboots(
    artifacts: Artifacts, tmp_path: Path
) -> None:
    options = ScenarioOptions(
        boot_via=BootVia.DNSMASQ,
        firmware=Firmware.UEFI,
        username="htpc",
        password=Secret("htpc-secret-12"),
        timeout=BOOT_TIMEOUT,
    )
    outcome = boot("pxe chain uefi", options, artifacts, tmp_path / "logs")
    expect_success(outcome, "pxe chain uefi")
    why = explain(outcome, "pxe chain uefi")
    console, _, dnsmasq = outcome.console.partition("\n--- dnsmasq ---\n")
    assert "Start PXE over IPv4" in console and f"NBP filename is {EFI_IMAGE}" in console, why
    assert "iPXE" in console and f"Filename: {BOOTFILE}" in console, why
    for served in (EFI_IMAGE, BOOTFILE, SCENARIO_SCRIPT):
        assert f"tftp/{served} to " in dnsmasq, why
    # three leases from the same dnsmasq: OVMF's PXE, iPXE (tag ipxe) and the agent's own
    acks = [line for line in dnsmasq.splitlines() if "tags:" in line]
    assert any("ipxe" not in line and "efi64" in line for line in acks), why
    assert any("ipxe" in line for line in acks), why
    assert any("ipxe" not in line and "efi64" not in line for line in acks), why
    assert f"via {SERVER_ADDRESS} (dhcp)" in console, why
    assert "htpc-secret-12" not in outcome.console
