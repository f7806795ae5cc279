"""``--boot-via dnsmasq`` as a pure plan: the firmware's PXE, dnsmasq's TFTP, Debian's iPXE, the script."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.errors import UsageError
from iscsiboot.qemu.netlab import SERVER_ADDRESS, LabNames
from iscsiboot.qemu.scenario import (
    BIOS_IMAGE,
    BOOTFILE,
    EFI_IMAGE,
    EFI_ROM,
    OVMF_NET_OFF,
    BootVia,
    Firmware,
    Mode,
    Plan,
    ScenarioOptions,
    plan,
)
from iscsiboot.qemu.targets import TargetKind
from iscsiboot.secret import Secret

LAB = LabNames("iscsiboot-test-ns")
CHAP = {"username": "htpc", "password": Secret("htpc-secret-12")}


def _plan(**kw: object) -> Plan:
    options = ScenarioOptions(boot_via=BootVia.DNSMASQ, **kw)  # type: ignore[arg-type]
    return plan(options, port=3260, workdir=Path("/tmp/w"), kernel=Path("/k"), initrd=Path("/i"), lab=LAB)


def test_the_chain_runs_in_the_lab_and_the_script_sanboots_its_target() -> None:
    p = _plan(**CHAP)
    assert p.qemu_argv[:4] == ("ip", "netns", "exec", LAB.namespace)
    assert f"tap,id=n0,ifname={LAB.tap},script=no,downscript=no" in p.qemu_argv
    assert p.ipxe_script is not None
    assert f"sanboot iscsi:{SERVER_ADDRESS}:::1:" in p.ipxe_script and "set username htpc" in p.ipxe_script
    assert "boot=ISCSI=auto" in p.append  # the iBFT that the chain-loaded iPXE writes


def test_dnsmasq_hands_pxe_clients_debians_ipxe_and_ipxe_the_script() -> None:
    config = _plan(**CHAP).dnsmasq_config
    assert config is not None
    lines = config.splitlines()
    assert f"dhcp-boot=tag:!ipxe,tag:!efi64,{BIOS_IMAGE}" in lines
    assert f"dhcp-boot=tag:!ipxe,tag:efi64,{EFI_IMAGE}" in lines
    assert f"dhcp-boot=tag:ipxe,{BOOTFILE}" in lines
    assert "tftp-root=/tmp/w/tftp" in lines
    # iPXE gets no root path: it would hook the SAN without the script's credentials and stop
    assert any(line.startswith("dhcp-option=tag:!ipxe,option:root-path,") for line in lines)
    assert "htpc-secret-12" not in config


def test_under_uefi_the_nic_has_no_rom_and_ovmf_pxe_boots() -> None:
    argv = _plan(firmware=Firmware.UEFI).qemu_argv
    nic = next(a for a in argv if a.startswith("virtio-net-pci,"))
    assert "romfile=," in nic + "," and "bootindex=1" in nic and str(EFI_ROM) not in nic
    assert not set(OVMF_NET_OFF) & set(argv)  # OVMF's own PXE client stays on


def test_under_bios_the_nic_rom_is_the_pxe_client() -> None:
    argv = _plan().qemu_argv
    assert "-boot" in argv and argv[argv.index("-boot") + 1] == "n"
    assert "-kernel" not in argv


@pytest.mark.parametrize(
    "kw",
    [
        {"mode": Mode.CMDLINE},
        {"mode": Mode.DHCP},
        {"acpi_ibft": True},
        {"target": TargetKind.LIO},
    ],
)
def test_the_chain_is_an_ipxe_sanboot_from_tgt(kw: dict[str, object]) -> None:
    with pytest.raises(UsageError, match="boot-via dnsmasq"):
        ScenarioOptions(boot_via=BootVia.DNSMASQ, **kw)  # type: ignore[arg-type]


def test_the_rom_path_has_no_lab() -> None:
    with pytest.raises(UsageError, match="network namespace"):
        plan(ScenarioOptions(), port=3260, workdir=Path("/tmp/w"), lab=LAB)
    with pytest.raises(UsageError, match="network namespace"):
        plan(ScenarioOptions(boot_via=BootVia.DNSMASQ), port=3260, workdir=Path("/tmp/w"))
