"""The real Linux kernel reads our tables, and iPXE's table reads like the kernel shows it.

QEMU (TCG) boots the Debian kernel with a busybox initramfs that loads
``iscsi_ibft`` and prints, on the serial console, every attribute's raw bytes,
the ACPI copy of the table, and low memory 0x80000-0xFFFFF from /dev/mem.
Tables we build go in with ``-acpitable file=TABLE``; iPXE (the NIC ROM QEMU
loads) writes its own table into base memory after logging in to a real tgtd.
"""

from __future__ import annotations

import base64
import os
import random
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
from ibft_support import write_sysfs_tree
from initramfs_support import test_kernel
from iscsiboot.errors import EnvironmentProblem
from iscsiboot.ibft import sources
from iscsiboot.ibft.table import (
    IbftTarget,
    Initiator,
    Nic,
    Table,
    build_table,
    layout,
    parse_table,
    table_to_model,
    to_sysfs,
)
from iscsiboot.model import Chap, NetMode, lun_to_sam
from iscsiboot.qemu.tgt import Tgtd, free_control_port
from iscsiboot.secret import Secret

pytestmark = pytest.mark.vm

INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
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
echo IBFT-MEM-BEGIN
/bin/busybox dd if=/dev/mem bs=4096 skip=128 count=128 2>/dev/null | /bin/busybox base64
echo IBFT-MEM-END
echo IBFT-END
/bin/busybox poweroff -f
"""
APPEND = "console=ttyS0 quiet loglevel=1 panic=-1"
LOW = 0x80000


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


class Guest:
    """What the guest printed: sysfs attributes, ACPI tables, and low memory 0x80000-0xFFFFF."""

    def __init__(self, text: str) -> None:
        self.attrs: dict[str, bytes] = {}
        self.acpi: dict[str, bytes] = {}
        memory: list[str] = []
        in_memory = False
        for raw in text.splitlines():
            line = raw.strip()
            parts = line.split(" ")
            if parts[0] == "IBFT-ATTR":
                self.attrs[parts[1]] = base64.b64decode(parts[2] if len(parts) > 2 else "")
            elif parts[0] == "IBFT-ACPI":
                self.acpi[parts[1]] = base64.b64decode(parts[2])
            elif line == "IBFT-MEM-BEGIN":
                in_memory = True
            elif line == "IBFT-MEM-END":
                in_memory = False
            elif in_memory:
                memory.append(line)
        self.memory = base64.b64decode("".join(memory))


def _tools() -> None:
    for tool in ("qemu-system-x86_64", "cpio", "busybox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if os.geteuid() != 0:
        pytest.skip("needs root (kernel download, tgtd)")


def _initrd(modules: Path, work: Path) -> Path:
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


def _qemu_base(log: Path, memory: str = "256") -> list[str]:
    return [
        "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", memory, "-nodefaults",
        "-display", "none", "-no-reboot", "-chardev", f"file,id=c0,path={log}", "-serial", "chardev:c0",
    ]  # fmt: skip


def _run_qemu(argv: list[str], log: Path) -> Guest:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if log.exists() and b"IBFT-END" in log.read_bytes():
                break
            if proc.poll() is not None:
                break
            time.sleep(0.5)  # polling a file the guest writes, with a deadline
        text = log.read_bytes().decode("latin-1") if log.exists() else ""
        output = proc.stdout.read() if proc.poll() is not None and proc.stdout is not None else b""
        assert "IBFT-END" in text, f"the guest did not finish: {text[-3000:]} {output[-2000:]!r}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    return Guest(text)


def _boot(table_bytes: bytes, work: Path) -> Guest:
    _tools()
    kernel = test_kernel()
    initrd = _initrd(kernel.modules, work)
    table = work / "table.bin"
    table.write_bytes(table_bytes)
    log = work / "console.log"
    argv = [
        *_qemu_base(log),
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", APPEND,
        "-acpitable", f"file={table}",
    ]  # fmt: skip
    return _run_qemu(argv, log)


def _expected(table: Table) -> dict[str, bytes]:
    return {
        k: (v if k.endswith("/subnet-mask") else v + "\n").encode()
        for k, v in to_sysfs(table, show_secrets=True).items()
    }


def _tree(root: Path, attrs: dict[str, bytes]) -> Path:
    for key, value in attrs.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(value)
    return root


@pytest.mark.parametrize("make", [_rich_table, _odd_table], ids=["rich", "odd"])
def test_kernel_shows_what_to_sysfs_says(tmp_path: Path, make: object) -> None:
    table: Table = make()  # type: ignore[operator]
    data = build_table(table)
    parsed = parse_table(data).table
    guest = _boot(data, tmp_path)
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


IPXE_SCRIPT = """#!ipxe
set initiator-iqn {initiator}
set username {user}
set password {password}
set reverse-username {ruser}
set reverse-password {rpassword}
sanhook iscsi:10.0.2.2::{port}:1:{iqn}
kernel vmlinuz {append}
initrd initrd.cpio
boot
"""


@pytest.mark.target
def test_ipxe_table_in_low_memory(tmp_path: Path) -> None:
    """iPXE logs in to a real tgtd (mutual CHAP), writes its iBFT in base memory and boots Linux:
    the scan of the guest's /dev/mem finds the table, and it reads as the kernel shows it."""
    _tools()
    kernel = test_kernel()
    tftp = tmp_path / "tftp"
    tftp.mkdir()
    shutil.copy(_initrd(kernel.modules, tmp_path), tftp / "initrd.cpio")
    shutil.copy(kernel.vmlinuz, tftp / "vmlinuz")
    disk = tmp_path / "disk.img"
    with disk.open("wb") as f:
        f.truncate(4 << 20)
    iqn = "iqn.2003-01.org.example:ibft-lab"
    user, password = "labuser", Secret("secret123456")
    ruser, rpassword = "labtarget", Secret("secret654321")
    # tgtd takes control ports up to 32767 only
    with Tgtd(tmp_path / "tgt", control_port=free_control_port(random.randrange(2000, 32000))) as tgt:
        tgt.add_target(1, iqn, [disk])
        tgt.add_account(user, password)
        tgt.bind_account(1, user)
        tgt.add_account(ruser, rpassword)
        tgt.bind_account(1, ruser, outgoing=True)
        (tftp / "boot.ipxe").write_text(
            IPXE_SCRIPT.format(
                initiator="iqn.2010-04.org.ipxe:lab", user=user, password=password.reveal(), ruser=ruser,
                rpassword=rpassword.reveal(), port=tgt.port, iqn=iqn, append=APPEND,
            )
        )  # fmt: skip
        log = tmp_path / "console.log"
        argv = [
            *_qemu_base(log, "512"),
            "-netdev", f"user,id=n0,tftp={tftp},bootfile=boot.ipxe", "-device", "virtio-net-pci,netdev=n0",
            "-boot", "n",
        ]  # fmt: skip
        guest = _run_qemu(argv, log)
        port = tgt.port
    assert guest.attrs, "the kernel showed no /sys/firmware/ibft"
    assert not guest.acpi  # BIOS iPXE does not publish the table through ACPI
    parsed, pos = sources.scan_memory(guest.memory, LOW)
    assert LOW <= pos < 0xA0000 and pos % 16 == 0
    table = parsed.table
    assert parsed.warnings == ()
    assert _expected(table) == guest.attrs
    assert (table.oem_id, table.oem_table_id) == ("FENSYS", "iPXE")
    # iPXE's layout is ours: rebuilding from the parse gives iPXE's bytes
    assert build_table(table) == guest.memory[pos - LOW : pos - LOW + table.length]
    # the kernel's view rebuilds the same table (only the PCI location needs the device link)
    from_sysfs = sources.read_sysfs(_tree(tmp_path / "ibft", guest.attrs))
    nics = tuple(replace(n, pci_bdf=table.nics[0].pci_bdf) for n in from_sysfs.nics)
    assert build_table(replace(from_sysfs, nics=nics)) == build_table(table)
    cfg, warnings = table_to_model(table)
    assert warnings == ()
    assert cfg.initiator == "iqn.2010-04.org.ipxe:lab"
    (target,) = cfg.targets
    assert (target.name, target.address, target.port, target.lun) == (iqn, "10.0.2.2", port, 1)
    assert target.chap == Chap(user, password)
    assert target.reverse_chap == Chap(ruser, rpassword)
    assert cfg.network.mode is NetMode.DHCP and cfg.network.mac == "52:54:00:12:34:56"
    assert cfg.network.server == "10.0.2.2"
