"""The real Linux kernel reads tables we build: /sys/firmware/ibft must equal ``to_sysfs``.

QEMU (TCG) boots the Debian kernel with ``-acpitable file=TABLE`` and a
busybox initramfs that loads ``iscsi_ibft`` and prints every attribute's raw
bytes, and the ACPI copy of the table, on the serial console.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from ibft_support import write_sysfs_tree
from initramfs_support import test_kernel
from iscsiboot.ibft import sources
from iscsiboot.ibft.table import IbftTarget, Initiator, Nic, Table, build_table, layout, parse_table, to_sysfs
from iscsiboot.model import lun_to_sam
from iscsiboot.secret import Secret

pytestmark = pytest.mark.vm

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox insmod /lib/iscsi_boot_sysfs.ko
/bin/busybox insmod /lib/iscsi_ibft.ko
echo IBFT-BEGIN
for f in /sys/firmware/ibft/*/*; do
  [ -f "$f" ] || continue
  echo "IBFT-ATTR ${f#/sys/firmware/ibft/} $(/bin/busybox base64 -w 0 "$f")"
done
for f in /sys/firmware/acpi/tables/*; do
  case "${f##*/}" in iBFT*|IBFT*|BIFT*) echo "IBFT-ACPI ${f##*/} $(/bin/busybox base64 -w 0 "$f")";; esac
done
echo IBFT-END
/bin/busybox poweroff -f
"""


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


def _initrd(kernel_root: Path, modules: Path, work: Path) -> Path:
    tree = work / "initrd"
    (tree / "bin").mkdir(parents=True)
    (tree / "lib").mkdir()
    shutil.copy(shutil.which("busybox") or "/bin/busybox", tree / "bin/busybox")
    for name in ("iscsi_boot_sysfs.ko", "iscsi_ibft.ko"):
        (found,) = list(modules.rglob(name))
        shutil.copy(found, tree / "lib" / name)
    (tree / "init").write_text(INIT)
    (tree / "init").chmod(0o755)
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    image = work / "initrd.cpio"
    with image.open("wb") as out:
        subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], input="\n".join(names).encode(), cwd=tree,
                       stdout=out, check=True, timeout=60)  # fmt: skip
    return image


def _boot(table_bytes: bytes, work: Path) -> tuple[dict[str, bytes], dict[str, bytes]]:
    if shutil.which("qemu-system-x86_64") is None or shutil.which("cpio") is None:
        pytest.skip("qemu-system-x86 or cpio not installed")
    kernel = test_kernel()
    initrd = _initrd(kernel.root, kernel.modules, work)
    table = work / "table.bin"
    table.write_bytes(table_bytes)
    log = work / "console.log"
    argv = [
        "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", "256", "-nodefaults",
        "-display", "none", "-no-reboot", "-chardev", f"file,id=c0,path={log}", "-serial", "chardev:c0",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
        "-append", "console=ttyS0 quiet loglevel=1 panic=-1", "-acpitable", f"file={table}",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if log.exists() and b"IBFT-END" in log.read_bytes():
                break
            if proc.poll() is not None:
                break
            time.sleep(0.5)  # polling a file the guest writes, with a deadline
        text = log.read_bytes().decode("latin-1") if log.exists() else ""
        assert "IBFT-END" in text, f"the guest did not finish: {text[-2000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    attrs: dict[str, bytes] = {}
    acpi: dict[str, bytes] = {}
    for line in text.splitlines():
        parts = line.strip().split(" ")
        if parts[0] == "IBFT-ATTR":
            attrs[parts[1]] = base64.b64decode(parts[2] if len(parts) > 2 else "")
        elif parts[0] == "IBFT-ACPI":
            acpi[parts[1]] = base64.b64decode(parts[2])
    return attrs, acpi


def _expected(table: Table) -> dict[str, bytes]:
    return {
        k: (v if k.endswith("/subnet-mask") else v + "\n").encode()
        for k, v in to_sysfs(table, show_secrets=True).items()
    }


@pytest.mark.parametrize("make", [_rich_table, _odd_table], ids=["rich", "odd"])
def test_kernel_shows_what_to_sysfs_says(tmp_path: Path, make: object) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for the kernel download")
    table: Table = make()  # type: ignore[operator]
    data = build_table(table)
    parsed = parse_table(data).table
    attrs, acpi = _boot(data, tmp_path)
    assert len(attrs) > 15 and "acpi_header/signature" in attrs

    # the kernel's view, byte for byte (trailing newlines, subnet-mask without one)
    assert attrs == _expected(parsed)

    # the ACPI copy reads back to the same table
    (name, raw), *_ = acpi.items()
    assert name == table.signature
    assert replace(parse_table(raw).table, checksum=0) == replace(parsed, checksum=0)

    # the sysfs reader rebuilds the same kernel view from the kernel's files
    tree = tmp_path / "ibft"
    for key, value in attrs.items():
        (tree / key).parent.mkdir(parents=True, exist_ok=True)
        (tree / key).write_bytes(value)
    rebuilt = sources.read_sysfs(tree)
    assert _expected(rebuilt) == attrs
    # and our own fake trees match the kernel's
    fake = write_sysfs_tree(tmp_path / "fake", parsed, pci_link=False)
    assert {str(p.relative_to(fake)): p.read_bytes() for p in fake.rglob("*") if p.is_file()} == attrs
