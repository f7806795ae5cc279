"""UEFI scenarios planned without QEMU: OVMF, iPXE's EFI driver, LibreELEC's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.cli import build_parser
from iscsiboot.disk.layout import LayoutKind
from iscsiboot.errors import UsageError
from iscsiboot.qemu.cli import options_from_args
from iscsiboot.qemu.outcome import judge, sanboot_failure
from iscsiboot.qemu.scenario import EFI_ROM, OVMF, Firmware, Mode, ScenarioOptions, plan

WORK = Path("/tmp/iscsiboot-test-work")
KERNEL = Path("/k/vmlinuz")
INITRD = Path("/k/initrd")


def argv(options: ScenarioOptions) -> list[str]:
    return list(plan(options, port=3260, workdir=WORK, kernel=KERNEL, initrd=INITRD).qemu_argv)


def test_uefi_sanboot_argv() -> None:
    args = argv(ScenarioOptions(firmware=Firmware.UEFI))
    assert args[args.index("-machine") + 1] == "q35"
    assert args[args.index("-bios") + 1] == str(OVMF)
    nic = args[args.index("-device") + 1]
    assert f"romfile={EFI_ROM}" in nic and "bootindex=1" in nic
    assert "-boot" not in args and "-kernel" not in args
    assert "-no-reboot" in args  # the wrapper's reboot after a failed sanboot ends QEMU
    knobs = [args[i + 1] for i, a in enumerate(args) if a == "-fw_cfg"]
    assert "name=opt/org.tianocore/IPv4PXESupport,string=n" in knobs


def test_bios_argv_is_unchanged() -> None:
    args = argv(ScenarioOptions())
    assert args[args.index("-machine") + 1] == "pc"
    assert "-bios" not in args and "-fw_cfg" not in args
    assert args[args.index("-boot") + 1] == "n"


def test_uefi_direct_boot_keeps_the_kernel() -> None:
    args = argv(ScenarioOptions(firmware=Firmware.UEFI, mode=Mode.CMDLINE))
    assert "-kernel" in args and "-bios" in args


def test_layouts() -> None:
    assert ScenarioOptions(firmware=Firmware.UEFI).disk_layout is LayoutKind.LIBREELEC
    assert ScenarioOptions().disk_layout is LayoutKind.SEED
    both = ScenarioOptions(layout=LayoutKind.LIBREELEC)
    assert both.disk_layout is LayoutKind.LIBREELEC
    with pytest.raises(UsageError, match="does not boot under UEFI"):
        ScenarioOptions(firmware=Firmware.UEFI, layout=LayoutKind.SEED)
    text = plan(ScenarioOptions(firmware=Firmware.UEFI), port=3260, workdir=WORK).describe()
    assert "uefi, libreelec layout" in text


def test_cli_firmware_option() -> None:
    parser = build_parser("qemu")
    args = parser.parse_args(["qemu", "boot", "--firmware", "uefi"])
    assert options_from_args(args).firmware is Firmware.UEFI
    assert parser.parse_args(["qemu", "demo", "--firmware", "uefi"]).firmware == "uefi"
    assert options_from_args(parser.parse_args(["qemu", "boot"])).firmware is Firmware.BIOS


# OVMF's serial console after a sanboot with a wrong CHAP secret (Debian's iPXE 1.0.0+git-20190125)
WRONG_SECRET_CONSOLE = """\x1b[2J\x1b[01;01HiPXE 1.0.0+git-20190125.36a4c85-5.1 -- Open Source Network Boot
Ready for iSCSI boot
Could not open SAN device: Operation not permitted (http://ipxe.org/410d618f)
Could not open SAN device: Operation not permitted (http://ipxe.org/410d618f)
sanboot failed
Could not boot: Error 0x00000001 (http://ipxe.org/00000001)
iscsiboot: sanboot failed
poweroff: command not found
"""


def test_a_refused_sanboot_names_its_cause() -> None:
    failure = sanboot_failure(WRONG_SECRET_CONSOLE.splitlines())
    assert failure is not None and failure.cause == "auth"
    assert "CHAP" in failure.error and "410d618f" in failure.ipxe
    acl = WRONG_SECRET_CONSOLE.replace("410d618f", "410d628f")
    assert sanboot_failure(acl.splitlines()).cause == "acl"  # type: ignore[union-attr]
    other = WRONG_SECRET_CONSOLE.replace("Operation not permitted (http://ipxe.org/410d618f)",
                                         "No such device (http://ipxe.org/2c0d6039)")  # fmt: skip
    assert sanboot_failure(other.splitlines()).cause == "sanboot"  # type: ignore[union-attr]
    assert sanboot_failure(["iPXE", "Ready for iSCSI boot"]) is None
    outcome = judge(WRONG_SECRET_CONSOLE.splitlines(), reason="exited", boot_seconds=8.0, total_seconds=9.0,
                    console=WRONG_SECRET_CONSOLE)  # fmt: skip
    assert (outcome.phase, outcome.cause) == ("sanboot", "auth")
    assert outcome.to_json()["cause"] == "auth" and "initiator authentication failed" in (outcome.error or "")
