"""``generate usb`` and ``--boot-via usb`` as pure plans: what goes on the stick, how QEMU boots it."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.cmdline import usb
from iscsiboot.errors import RepresentError, UsageError
from iscsiboot.qemu.scenario import BootVia, Firmware, Plan, ScenarioOptions, plan
from iscsiboot.secret import Secret

CHAP = {"username": "htpc", "password": Secret("htpc-secret-12")}


def _plan(**kw: object) -> Plan:
    options = ScenarioOptions(boot_via=BootVia.USB, **kw)  # type: ignore[arg-type]
    return plan(options, port=3260, workdir=Path("/tmp/w"), kernel=Path("/k"), initrd=Path("/i"))


def test_syslinux_starts_debians_ipxe_lkrn_with_the_script_as_its_initrd() -> None:
    lines = usb.syslinux_config().splitlines()
    assert "  KERNEL /ipxe.lkrn" in lines and "  INITRD /boot.ipxe" in lines
    assert "TIMEOUT 0" in lines and "PROMPT 0" in lines


@pytest.mark.parametrize("firmware", [usb.StickFirmware.UEFI, usb.StickFirmware.BOTH])
def test_a_uefi_stick_is_refused_with_the_reason(firmware: usb.StickFirmware) -> None:
    with pytest.raises(RepresentError, match=r"autoexec\.ipxe"):
        usb.stick_files("#!ipxe\n", firmware)


def test_the_stick_takes_an_ipxe_script_only() -> None:
    with pytest.raises(RepresentError, match="not an iPXE script"):
        usb.stick_files("echo hi\n", usb.StickFirmware.BIOS)


def test_the_usb_scenario_boots_the_stick_on_a_nic_without_a_rom() -> None:
    p = _plan(**CHAP)
    argv = p.qemu_argv
    nic = next(a for a in argv if a.startswith("virtio-net-pci,"))
    assert nic.endswith(",romfile=")
    assert f"if=none,id=stick,format=raw,file={p.files.stick}" in argv
    assert "usb-storage,bus=ehci.0,drive=stick,bootindex=0" in argv
    assert "-boot" not in argv and "-kernel" not in argv
    assert p.ipxe_script is not None
    assert "dhcp || goto retry_dhcp" in p.ipxe_script and "set password htpc-secret-12" in p.ipxe_script
    assert "htpc-secret-12" not in p.describe()


def test_the_usb_scenario_is_bios_only() -> None:
    with pytest.raises(UsageError, match=r"autoexec\.ipxe"):
        ScenarioOptions(boot_via=BootVia.USB, firmware=Firmware.UEFI)
