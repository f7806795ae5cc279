"""What a Linux guest sees of an iBFT: the kernel's sysfs view, ACPI, low memory.

QEMU (TCG) boots the Debian kernel with a busybox initramfs whose /init
(``ibft-guest.sh``, beside this module) loads ``iscsi_ibft`` and prints, on
the serial console, every ``/sys/firmware/ibft`` attribute's raw bytes, the
ACPI copies of the table and low memory 0x80000-0xFFFFF from ``/dev/mem``.

The table comes from QEMU (``-acpitable file=TABLE``, :func:`boot_acpi_table`)
or from iPXE, the NIC ROM QEMU loads, which logs in to a real tgtd with
``sanhook`` (``ibft-sanhook.ipxe``) and writes its own table into base memory
before it boots the guest kernel (:func:`boot_ipxe`).
"""

from __future__ import annotations

import base64
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import BootFailure, EnvironmentProblem
from iscsiboot.ibft import sources
from iscsiboot.ibft.types import Parsed
from iscsiboot.initramfs.cpio import Entry, write_newc
from iscsiboot.initramfs.kernel import KernelTree
from iscsiboot.model import Chap
from iscsiboot.qemu.runner import ConsoleFollower, Qemu, follow
from iscsiboot.qemu.scripts import script
from iscsiboot.qemu.system import _busybox
from iscsiboot.qemu.tgt import Tgtd

GUEST_INIT = "ibft-guest.sh"  # the guest's /init, beside this module
IPXE_SCRIPT = "ibft-sanhook.ipxe"  # iPXE's boot script
GUEST_MODULES = ("iscsi_boot_sysfs.ko", "iscsi_ibft.ko")
APPEND = "console=ttyS0 quiet loglevel=1 panic=-1"
LOW = 0x80000  # where the guest's memory dump starts
HOST = "10.0.2.2"  # the host as QEMU's user network shows it to the guest
TIMEOUT = 600.0
END = "IBFT-END"


@dataclass(frozen=True)
class GuestView:
    """What the guest printed: sysfs attributes, ACPI tables, and low memory 0x80000-0xFFFFF."""

    attrs: Mapping[str, bytes]
    acpi: Mapping[str, bytes]
    memory: bytes

    def sysfs(self) -> dict[str, str]:
        """The attributes as text, without the kernel's trailing newline, sorted by name."""
        return {k: v.decode("utf-8", "replace").removesuffix("\n") for k, v in sorted(self.attrs.items())}


def parse_console(text: str) -> GuestView:
    """The guest's console lines (``IBFT-ATTR``, ``IBFT-ACPI``, the memory block) as a :class:`GuestView`."""
    attrs: dict[str, bytes] = {}
    acpi: dict[str, bytes] = {}
    memory: list[str] = []
    in_memory = False
    for raw in text.splitlines():
        line = raw.strip()
        parts = line.split(" ")
        if parts[0] == "IBFT-ATTR" and len(parts) >= 2:
            attrs[parts[1]] = base64.b64decode(parts[2] if len(parts) > 2 else "")
        elif parts[0] == "IBFT-ACPI" and len(parts) == 3:
            acpi[parts[1]] = base64.b64decode(parts[2])
        elif line == "IBFT-MEM-BEGIN":
            in_memory = True
        elif line == "IBFT-MEM-END":
            in_memory = False
        elif in_memory:
            memory.append(line)
    return GuestView(attrs, acpi, base64.b64decode("".join(memory)))


def guest_initrd(kernel: KernelTree) -> bytes:
    """The busybox initramfs (newc) that prints the guest's view of the iBFT."""
    entries = [Entry.directory("bin"), Entry.directory("lib")]
    entries.append(Entry.file("bin/busybox", _busybox().read_bytes(), 0o755))
    for name in GUEST_MODULES:
        found = sorted(kernel.modules.rglob(name))
        if not found:
            raise EnvironmentProblem(
                f"kernel module {name} not found",
                where=str(kernel.modules),
                fix="use a kernel built with CONFIG_ISCSI_IBFT=m",
            )
        entries.append(Entry.file(f"lib/{name}", found[0].read_bytes()))
    entries.append(Entry.file("init", script(GUEST_INIT).encode(), 0o755))
    return write_newc(entries)


def qemu_argv(console: Path, *, memory: int = 256) -> list[str]:
    """The machine every capture boots: BIOS, TCG, no default devices, the console in a file."""
    return [
        "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", str(memory), "-nodefaults",
        "-display", "none", "-no-reboot", "-chardev", f"file,id=c0,path={console}", "-serial", "chardev:c0",
    ]  # fmt: skip


def run_guest(argv: list[str], work: Path, *, timeout: float = TIMEOUT) -> GuestView:
    """Run QEMU until the guest printed its view (or exited, or ``timeout``)."""
    console = ConsoleFollower(work / "console.log")
    finished = False

    def seen(line: str) -> None:
        nonlocal finished
        finished = finished or line.strip() == END

    with Qemu(tuple(argv), work / "qemu.log") as qemu:
        result = follow(qemu, console, timeout=timeout, until=lambda _lines: finished, on_line=seen)
    if not finished:
        raise BootFailure(
            f"the guest did not print its iBFT view ({result.reason} after {result.elapsed:.0f} s)",
            where=str(console.path),
            fix=f"read the console's end: {console.text()[-1500:]!r}; QEMU: {qemu.stderr_text()[-500:]!r}",
        )
    return parse_console(console.text())


def boot_acpi_table(table: bytes, kernel: KernelTree, work: Path) -> GuestView:
    """Boot the guest with ``table`` as an ACPI table (QEMU's ``-acpitable``)."""
    work.mkdir(parents=True, exist_ok=True)
    initrd = work / "initrd.cpio"
    initrd.write_bytes(guest_initrd(kernel))
    path = work / "table.bin"
    path.write_bytes(table)
    argv = [
        *qemu_argv(work / "console.log"),
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd), "-append", APPEND,
        "-acpitable", f"file={path}",
    ]  # fmt: skip
    return run_guest(argv, work)


@dataclass(frozen=True)
class IpxeScenario:
    """What iPXE is told: the target, and optionally an initiator name and CHAP.

    Without ``initiator`` iPXE names itself (``iqn.2010-04.org.ipxe:`` and the
    machine's SMBIOS UUID).  ``port`` ``None`` lets tgtd listen on a free port.
    """

    target: str
    initiator: str | None = None
    chap: Chap | None = None
    reverse_chap: Chap | None = None
    lun: int = 1
    port: int | None = None
    disk_size: int = 4 << 20

    def ipxe_script(self, port: int) -> str:
        """iPXE's boot script (it holds the CHAP secrets: written only into the guest's TFTP folder)."""
        settings = f"set initiator-iqn {self.initiator}\n" if self.initiator else ""
        if self.chap is not None:
            settings += f"set username {self.chap.username}\nset password {self.chap.password.reveal()}\n"
        if self.reverse_chap is not None:
            settings += (
                f"set reverse-username {self.reverse_chap.username}\n"
                f"set reverse-password {self.reverse_chap.password.reveal()}\n"
            )
        return script(
            IPXE_SCRIPT,
            SETTINGS=settings,
            HOST=HOST,
            PORT=str(port),
            LUN=str(self.lun),
            TARGET=self.target,
            APPEND=APPEND,
        )


@dataclass(frozen=True)
class IpxeCapture:
    """iPXE's table as the guest found it in low memory, and the kernel's view of it."""

    guest: GuestView
    port: int
    parsed: Parsed
    position: int  # physical address of the table
    table: bytes  # the table's bytes, as iPXE wrote them


def boot_ipxe(scenario: IpxeScenario, kernel: KernelTree, work: Path) -> IpxeCapture:
    """iPXE logs in to a tgtd serving ``scenario``, writes its iBFT and boots the guest."""
    work.mkdir(parents=True, exist_ok=True)
    tftp = work / "tftp"
    tftp.mkdir(exist_ok=True)
    (tftp / "initrd.cpio").write_bytes(guest_initrd(kernel))
    shutil.copy(kernel.vmlinuz, tftp / "vmlinuz")
    disk = work / "disk.img"
    with disk.open("wb") as f:
        f.truncate(scenario.disk_size)
    with Tgtd(work / "tgt", port=scenario.port) as tgt:
        tgt.add_target(1, scenario.target, [disk])
        if scenario.chap is not None:
            tgt.add_account(scenario.chap.username, scenario.chap.password)
            tgt.bind_account(1, scenario.chap.username)
        if scenario.reverse_chap is not None:
            tgt.add_account(scenario.reverse_chap.username, scenario.reverse_chap.password)
            tgt.bind_account(1, scenario.reverse_chap.username, outgoing=True)
        (tftp / "boot.ipxe").write_text(scenario.ipxe_script(tgt.port))
        argv = [
            *qemu_argv(work / "console.log", memory=512),
            "-netdev", f"user,id=n0,tftp={tftp},bootfile=boot.ipxe", "-device", "virtio-net-pci,netdev=n0",
            "-boot", "n",
        ]  # fmt: skip
        guest = run_guest(argv, work)
        port = tgt.port
    (tftp / "boot.ipxe").unlink()
    if not guest.attrs:
        raise BootFailure(
            "the guest kernel showed no /sys/firmware/ibft",
            where=str(work / "console.log"),
            fix="iPXE did not log in or wrote no table: read the console",
        )
    parsed, position = sources.scan_memory(guest.memory, LOW)
    start = position - LOW
    return IpxeCapture(guest, port, parsed, position, guest.memory[start : start + parsed.table.length])
