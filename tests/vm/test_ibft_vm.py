"""The real Linux kernel reads our tables, and iPXE's table reads like the kernel shows it.

The guest (:mod:`iscsiboot.qemu.ibftcapture`) boots the Debian kernel with a
busybox initramfs that loads ``iscsi_ibft`` and prints every attribute's raw
bytes, the ACPI copy of the table, and low memory 0x80000-0xFFFFF from
/dev/mem.  Tables we build go in with ``-acpitable file=TABLE``; iPXE (the NIC
ROM QEMU loads) writes its own table into base memory after logging in to a
real tgtd.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from ibft_support import write_sysfs_tree
from initramfs_support import test_kernel
from iscsiboot.errors import EnvironmentProblem
from iscsiboot.ibft import sources
from iscsiboot.ibft.build import build_table, layout
from iscsiboot.ibft.mapping import table_to_model
from iscsiboot.ibft.parse import parse_table
from iscsiboot.ibft.sysfs import to_sysfs
from iscsiboot.ibft.types import IbftTarget, Initiator, Nic, Table
from iscsiboot.model import Chap, NetMode, lun_to_sam
from iscsiboot.qemu.ibftcapture import LOW, IpxeScenario, boot_acpi_table, boot_ipxe
from iscsiboot.secret import Secret


def _rich_table() -> Table:
    """Three targets (a longer control structure), two NICs, IPv6, VLAN, every string kind."""
    return layout(
        Table(
            initiator=Initiator(
                name="iqn.2010-04.org.ipxe:rich", isns_server="10.0.2.100", slp_server="fe80::1"
            ),
            nics=(
                Nic(index=0, flags=3, ip_address="10.0.2.15", prefix=24, origin=1, gateway="10.0.2.2",
                    primary_dns="10.0.2.3", secondary_dns="8.8.8.8", vlan=100, mac="52:54:00:12:34:56",
                    pci_bdf=0x18, hostname="client-a"),
                Nic(index=1, flags=7, ip_address="2001:db8::15", prefix=64, origin=4, gateway="fe80::1",
                    mac="52:54:00:12:34:57", pci_bdf=0x20, hostname=""),
            ),
            targets=(
                IbftTarget(index=0, address="10.0.2.2", lun=lun_to_sam(1), chap_type=2,
                           name="iqn.2003-01.org.example:disk1", chap_name="user",
                           chap_secret=Secret("secret123456"), rev_chap_name="target",
                           rev_chap_secret=Secret("secret654321")),
                IbftTarget(index=1, flags=1, address="2001:db8::2", port=3261, lun=lun_to_sam(0x3A4F4752),
                           chap_type=1, nic_assoc=1, name="iqn.2003-01.org.example:disk2", chap_name="u2",
                           chap_secret=Secret("another-secret")),
                IbftTarget(index=2, flags=1, address=None, lun=bytes([0, 0x10, 0, 0, 0, 0, 0, 0]),
                           name="iqn.2003-01.org.example:x\0hidden"),
            ),
        )
    )  # fmt: skip


def _odd_table() -> Table:
    """ACPICA's IBFT signature, full-width OEM fields, mapped-null addresses, a 33-bit prefix."""
    return layout(
        Table(
            signature="IBFT",
            oem_id="ABCDEF",
            oem_table_id="TBL01234",
            initiator=Initiator(flags=1, name="iqn.2010-04.org.ipxe:odd"),
            nics=(
                Nic(index=3, flags=2, ip_address="0.0.0.0", prefix=33, origin=3, dhcp="0.0.0.0",
                    mac="52:54:00:aa:bb:cc", pci_bdf=0x0108),
            ),
            targets=(
                IbftTarget(index=5, flags=2, address="0.0.0.0", port=860, lun=lun_to_sam(0x10),
                           nic_assoc=3, name="iqn.2003-01.org.example:odd"),
            ),
        )
    )  # fmt: skip


def _tools() -> None:
    for tool in ("qemu-system-x86_64", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root (kernel download, tgtd)")


def _expected(table: Table) -> dict[str, bytes]:
    return {
        k: (v if k.endswith("/subnet-mask") else v + "\n").encode()
        for k, v in to_sysfs(table, show_secrets=True).items()
    }


def _tree(root: Path, attrs: Mapping[str, bytes]) -> Path:
    for key, value in attrs.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(value)
    return root


@pytest.mark.parametrize("make", [_rich_table, _odd_table], ids=["rich", "odd"])
def test_kernel_shows_what_to_sysfs_says(tmp_path: Path, make: object) -> None:
    table: Table = make()  # type: ignore[operator]
    data = build_table(table)
    parsed = parse_table(data).table
    _tools()
    guest = boot_acpi_table(data, test_kernel(), tmp_path)
    attrs = guest.attrs
    assert len(attrs) > 15 and "acpi_header/signature" in attrs

    # the kernel's view, byte for byte (trailing newlines, subnet-mask without one)
    assert attrs == _expected(parsed)

    # the ACPI copy reads back to the same table
    ((name, raw),) = guest.acpi.items()
    assert name == table.signature
    assert replace(parse_table(raw).table, checksum=0) == replace(parsed, checksum=0)

    # the sysfs reader rebuilds the same kernel view from the kernel's files
    assert _expected(sources.read_sysfs(_tree(tmp_path / "ibft", attrs))) == attrs
    # and our own fake trees match the kernel's
    fake = write_sysfs_tree(tmp_path / "fake", parsed, pci_link=False)
    assert {str(p.relative_to(fake)): p.read_bytes() for p in fake.rglob("*") if p.is_file()} == attrs

    # an ACPI table is not in low memory: the legacy scan of the guest's real memory finds nothing
    assert len(guest.memory) == 0x80000
    with pytest.raises(EnvironmentProblem, match="no iBFT signature"):
        sources.scan_memory(guest.memory, LOW)


def test_ipxe_table_in_low_memory(tmp_path: Path) -> None:
    """iPXE logs in to a real tgtd (mutual CHAP), writes its iBFT in base memory and boots Linux:
    the scan of the guest's /dev/mem finds the table, and it reads as the kernel shows it."""
    _tools()
    iqn = "iqn.2003-01.org.example:ibft-lab"
    chap = Chap("labuser", Secret("secret123456"))
    reverse = Chap("labtarget", Secret("secret654321"))
    scenario = IpxeScenario(target=iqn, initiator="iqn.2010-04.org.ipxe:lab", chap=chap, reverse_chap=reverse)
    capture = boot_ipxe(scenario, test_kernel(), tmp_path)
    guest, port = capture.guest, capture.port
    assert guest.attrs, "the kernel showed no /sys/firmware/ibft"
    assert not guest.acpi  # BIOS iPXE does not publish the table through ACPI
    parsed, pos = capture.parsed, capture.position  # the legacy scan of the guest's /dev/mem
    assert LOW <= pos < 0xA0000 and pos % 16 == 0
    table = parsed.table
    assert parsed.warnings == ()
    assert _expected(table) == guest.attrs
    assert (table.oem_id, table.oem_table_id) == ("FENSYS", "iPXE")
    # iPXE's layout is ours: rebuilding from the parse gives iPXE's bytes
    assert build_table(table) == capture.table == guest.memory[pos - LOW : pos - LOW + table.length]
    # the kernel's view rebuilds the same table (only the PCI location needs the device link)
    from_sysfs = sources.read_sysfs(_tree(tmp_path / "ibft", guest.attrs))
    nics = tuple(replace(n, pci_bdf=table.nics[0].pci_bdf) for n in from_sysfs.nics)
    assert build_table(replace(from_sysfs, nics=nics)) == build_table(table)
    cfg, warnings = table_to_model(table)
    assert warnings == ()
    assert cfg.initiator == "iqn.2010-04.org.ipxe:lab"
    (target,) = cfg.targets
    assert (target.name, target.address, target.port, target.lun) == (iqn, "10.0.2.2", port, 1)
    assert target.chap == chap
    assert target.reverse_chap == reverse
    assert cfg.network.mode is NetMode.DHCP and cfg.network.mac == "52:54:00:12:34:56"
    assert cfg.network.server == "10.0.2.2"
