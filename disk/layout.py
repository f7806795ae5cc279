"""The disk layout ``iscsiboot install`` writes, planned without I/O.

An MBR with two primary partitions, both aligned to 1 MiB: a bootable System
partition (type 83) of the requested size for KERNEL, SYSTEM and
extlinux.conf, and a Storage partition (type 83) over the rest of the disk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from iscsiboot.errors import UsageError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
ALIGN = MiB
SECTOR = 512
MIN_SYSTEM = 8 * MiB
MIN_STORAGE = 8 * MiB
MBR_LIMIT = (1 << 32) * SECTOR  # an MBR addresses 2^32 sectors
LABEL_MAX = 16  # bytes in the ext4 superblock

_UNITS = {"": 1, "B": 1, "K": KiB, "M": MiB, "G": GiB, "T": GiB * 1024}
SIZE_MAX = (1 << 63) - 1  # the largest file offset, beyond any disk
_SIZE = re.compile(r"^\s*(\d{1,30})(?:\.(\d{1,30}))?\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE | re.ASCII)


def parse_size(text: str, *, what: str = "size") -> int:
    """``"4G"``, ``"256M"``, ``"512MiB"``, ``"1.5G"``, ``"1048576"`` as bytes (powers of 1024)."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{what} {text!r} is not a size", fix="write a number with K, M, G or T, e.g. 256M")
    whole, fraction, unit = match.groups()
    scale = _UNITS[unit.upper()]
    fraction = fraction or ""
    value: int = (int(whole + fraction) * scale) // 10 ** len(fraction)  # exact: no float rounding
    if value <= 0:
        raise UsageError(f"{what} {text!r} is not positive")
    if value > SIZE_MAX:
        raise UsageError(
            f"{what} {text!r} is larger than any disk", fix="give the size of the disk to make, e.g. 4G"
        )
    return value


def format_size(value: int) -> str:
    for unit, scale in (("G", GiB), ("M", MiB), ("K", KiB)):
        if value >= scale and value % scale == 0:
            return f"{value // scale}{unit}"
    return f"{value}B"


@dataclass(frozen=True)
class PartitionPlan:
    number: int
    start: int  # bytes, a multiple of ALIGN
    size: int  # bytes, a multiple of the sector size
    label: str
    bootable: bool
    type: str = "83"

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def start_sector(self) -> int:
        return self.start // SECTOR

    @property
    def sectors(self) -> int:
        return self.size // SECTOR


@dataclass(frozen=True)
class Layout:
    disk_size: int
    system: PartitionPlan
    storage: PartitionPlan

    @property
    def partitions(self) -> tuple[PartitionPlan, PartitionPlan]:
        return (self.system, self.storage)

    def sfdisk_script(self) -> str:
        """The input for ``sfdisk`` (sectors of 512 bytes)."""
        lines = ["label: dos", "unit: sectors", ""]
        for part in self.partitions:
            boot = ", bootable" if part.bootable else ""
            lines.append(f"start={part.start_sector}, size={part.sectors}, type={part.type}{boot}")
        return "\n".join(lines) + "\n"


def check_label(label: str, what: str) -> str:
    raw = label.encode()
    if not label or len(raw) > LABEL_MAX:
        raise UsageError(
            f"{what} label {label!r} must have 1 to {LABEL_MAX} bytes", fix="choose a shorter label"
        )
    if any(c in label for c in "\0\n/= \t\"'"):
        raise UsageError(
            f"{what} label {label!r} contains a character that LABEL= cannot carry",
            fix="use letters, digits, '-' and '_'",
        )
    return label


def plan_layout(
    size: int,
    system_size: int,
    *,
    system_label: str = "System",
    storage_label: str = "Storage",
) -> Layout:
    """System from 1 MiB, Storage from the next MiB boundary to the end of the disk."""
    check_label(system_label, "System")
    check_label(storage_label, "Storage")
    if system_label == storage_label:
        raise UsageError(f"System and Storage both have the label {system_label!r}")
    if system_size < MIN_SYSTEM:
        raise UsageError(
            f"System size {format_size(system_size)} is below the minimum of {format_size(MIN_SYSTEM)}",
            fix="give --system-size 256M or so",
        )
    usable = min(size, MBR_LIMIT) // SECTOR * SECTOR
    system_size = -(-system_size // ALIGN) * ALIGN
    storage_start = ALIGN + system_size
    storage_size = usable - storage_start
    if storage_size < MIN_STORAGE:
        raise UsageError(
            f"a disk of {format_size(size)} has no room for a System of {format_size(system_size)}"
            f" and a Storage of at least {format_size(MIN_STORAGE)}",
            fix="give a larger --size or a smaller --system-size",
        )
    return Layout(
        disk_size=size,
        system=PartitionPlan(1, ALIGN, system_size, system_label, bootable=True),
        storage=PartitionPlan(2, storage_start, storage_size, storage_label, bootable=False),
    )
