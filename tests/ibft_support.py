"""Helpers for the iBFT tests: the sample tables, memory images, sysfs-like trees, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from iscsiboot.ibft.build import build_table, layout
from iscsiboot.ibft.sysfs import to_sysfs
from iscsiboot.ibft.types import IbftTarget, Initiator, Nic, Table
from iscsiboot.secret import Secret

TESTS = Path(__file__).resolve().parent
SAMPLES = TESTS / "data" / "ibft"  # iPXE's tables, captured by tools/capture-ibft.py
GOLDEN = TESTS / "golden" / "ibft"
MUTUAL = SAMPLES / "ipxe-mutual.bin"
NOCHAP = SAMPLES / "ipxe-nochap.bin"
SECRET = "Sup3r-S3cret-pw"  # ipxe-mutual's CHAP secret (user htpc)
REVERSE_SECRET = "Rev3rse-S3cret"  # and its reverse CHAP secret (user tgt)


def sample_paths() -> list[Path]:
    return sorted(SAMPLES.glob("*.bin"))


def sample_sysfs(path: Path) -> dict[str, str]:
    obj = json.loads(path.with_suffix(".sysfs.json").read_text())
    assert isinstance(obj, dict)
    return {str(k): str(v) for k, v in obj.items()}


def memory_image(table: bytes, at: int, *, base: int = 0, size: int = 0x100000, fill: int = 0) -> bytes:
    """A memory dump covering [base, base + size) with ``table`` placed at physical ``at``."""
    image = bytearray([fill]) * size
    image[at - base : at - base + len(table)] = table
    return bytes(image)


def write_sysfs_tree(root: Path, table: Table, *, pci_link: bool = True) -> Path:
    """Write the files the kernel would show for ``table`` under ``root`` (like /sys/firmware/ibft).

    Every value ends in a newline except ``subnet-mask``, as in the kernel;
    NICs get a ``device`` symlink named after their PCI address.
    """
    for key, value in to_sysfs(table, show_secrets=True).items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value if key.endswith("/subnet-mask") else value + "\n")
    if pci_link:
        for nic in table.nics:
            devices = root / "_devices"
            devices.mkdir(exist_ok=True)
            name = f"0000:{nic.pci_bdf >> 8:02x}:{(nic.pci_bdf >> 3) & 0x1F:02x}.{nic.pci_bdf & 7}"
            (devices / name).mkdir(exist_ok=True)
            os.symlink(devices / name, root / f"ethernet{nic.index}" / "device")
    return root


def cli(*args: str | os.PathLike[str], input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real ``iscsiboot`` console entry point in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "iscsiboot", *(str(a) for a in args)],
        capture_output=True,
        text=True,
        input=input_text,
        check=False,
        timeout=60,
    )


def vector_table() -> Table:
    """The reference notes' test vector (§1.12): length 594, checksum 0x98."""
    table = Table(
        initiator=Initiator(name="iqn.2010-04.org.ipxe:test"),
        nics=(
            Nic(
                ip_address="192.168.1.10",
                prefix=24,
                origin=3,
                gateway="192.168.1.1",
                primary_dns="192.168.1.1",
                dhcp="192.168.1.1",
                mac="52:54:00:12:34:56",
                pci_bdf=0x0018,
                hostname="client1",
            ),
        ),
        targets=(
            IbftTarget(
                address="192.168.1.2",
                lun=bytes([0, 1, 0, 0, 0, 0, 0, 0]),
                chap_type=1,
                name="iqn.2003-01.org.example:disk1",
                chap_name="user",
                chap_secret=Secret("secret123456"),
            ),
        ),
    )
    return layout(table)


def built(table: Table) -> bytes:
    return build_table(table)
