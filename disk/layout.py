"""The disk layouts ``iscsiboot install`` writes, planned without I/O.

``libreelec`` (what LibreELEC's own installer writes, one disk for BIOS and
UEFI): a GPT whose protective MBR carries syslinux's ``gptmbr.bin``; System
from sector 8192, an EFI System partition named ``System`` with the
legacy-BIOS-bootable attribute, FAT16, for KERNEL, SYSTEM, syslinux.cfg and
both syslinux loaders; Storage (ext4) over the rest but the last 1024
sectors, which LibreELEC leaves free (the backup GPT lies there).

``seed`` (the seed how-to's): an MBR with two primary partitions aligned to
1 MiB, a bootable System (type 83, ext4 with extlinux) and Storage (type 83)
over the rest of the disk.

Positions are planned in bytes; the tables count sectors of the disk's
logical block size (``sector_size``): 512, or 4096 for ``libreelec`` on a
disk or LUN of 4096-byte blocks.  The seed layout boots from BIOS only, and
BIOS boot code reads 512-byte sectors, so it is planned for those alone.
"""

from __future__ import annotations

import enum
import re
from contextvars import ContextVar
from dataclasses import dataclass

from iscsiboot.disk.probe import SECTOR_SIZES
from iscsiboot.errors import UsageError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
ALIGN = MiB
SECTOR = 512
MIN_SYSTEM = 8 * MiB
MIN_FAT_SYSTEM = 16 * MiB  # FAT16 needs 4085 clusters: 8 MiB is too few at 512-byte sectors, 15 MiB at 4096
MIN_STORAGE = 8 * MiB
MBR_LIMIT = (1 << 32) * SECTOR  # an MBR addresses 2^32 sectors
LABEL_MAX = 16  # bytes in the ext4 superblock
FAT_LABEL_MAX = 11  # bytes in a FAT volume label
FAT_LABEL_REFUSED = '*?.,;:/\\|+=<>[]"'  # characters FAT tools refuse in a label
LIBREELEC_START = 8192 * 512  # LibreELEC's System starts at sector 8192
LIBREELEC_TAIL = 1024 * 512  # and Storage ends 1024 sectors before the end of the disk
MAX_FAT16 = 2 * GiB  # FAT16 clusters of 32 KiB: larger ones are not portable
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"  # EFI System partition
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"  # Linux file system data
# The sectors a disk image is planned in when its caller names none: 512, or the LUN's block
# size while iscsiboot.disk.lun builds the image it sends (the image is that LUN, byte for byte).
IMAGE_SECTOR_SIZE: ContextVar[int] = ContextVar("image_sector_size", default=SECTOR)


class LayoutKind(enum.Enum):
    """The disk layouts ``iscsiboot install --layout`` writes (values are the CLI spellings)."""

    LIBREELEC = "libreelec"
    SEED = "seed"


def check_sector_size(kind: LayoutKind, sector_size: int, disk: str = "the disk") -> None:
    """UsageError unless ``kind`` can be written on ``disk`` of ``sector_size``-byte blocks."""
    if sector_size not in SECTOR_SIZES:
        raise UsageError(
            f"{disk} has blocks of {sector_size} bytes; nothing was written",
            fix=f"serve it with blocks of {' or '.join(str(b) for b in SECTOR_SIZES)} bytes",
        )
    if kind is LayoutKind.SEED and sector_size != SECTOR:
        raise UsageError(
            f"{disk} has {sector_size}-byte blocks, and the seed layout (MBR, extlinux) boots from BIOS, "
            "whose boot code reads 512-byte sectors; nothing was written",
            fix="use --layout libreelec (GPT in the disk's own sectors), or serve it with 512-byte blocks",
        )


def minimum_system(kind: LayoutKind) -> int:
    """The smallest System of the layout: FAT16 needs its clusters, ext4 a few MiB."""
    return MIN_FAT_SYSTEM if kind is LayoutKind.LIBREELEC else MIN_SYSTEM


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
    bootable: bool  # MBR: the active flag; GPT: the legacy-BIOS-bootable attribute
    type: str = "83"
    fs: str = "ext4"
    name: str | None = None  # GPT partition name

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
    kind: LayoutKind = LayoutKind.SEED
    sector_size: int = SECTOR  # the disk's logical block size, which the table counts

    @property
    def partitions(self) -> tuple[PartitionPlan, PartitionPlan]:
        return (self.system, self.storage)

    @property
    def scheme(self) -> str:
        """The partition table: ``gpt`` or ``mbr`` (as the probe names it)."""
        return "gpt" if self.kind is LayoutKind.LIBREELEC else "mbr"

    def sfdisk_script(self) -> str:
        """The input for ``sfdisk`` (sectors of 512 bytes, as sfdisk counts them on an image file)."""
        lines = [f"label: {'gpt' if self.scheme == 'gpt' else 'dos'}", "unit: sectors", ""]
        for part in self.partitions:
            line = f"start={part.start_sector}, size={part.sectors}, type={part.type}"
            if self.scheme == "gpt":
                line += f', name="{part.name or part.label}"'
                line += ', attrs="LegacyBIOSBootable"' if part.bootable else ""
            elif part.bootable:
                line += ", bootable"
            lines.append(line)
        return "\n".join(lines) + "\n"


def check_label(label: str, what: str, *, fat: bool = False) -> str:
    """``label`` when it fits its file system (FAT: 11 bytes of ASCII, ext4: 16 bytes)."""
    raw = label.encode()
    limit = FAT_LABEL_MAX if fat else LABEL_MAX
    if not label or len(raw) > limit:
        kind = "a FAT label holds at most 11 characters" if fat else "choose a shorter label"
        raise UsageError(f"{what} label {label!r} must have 1 to {limit} bytes", fix=kind)
    if fat and (not label.isascii() or any(c in FAT_LABEL_REFUSED for c in label)):
        raise UsageError(
            f"{what} label {label!r} holds a character a FAT label cannot carry",
            fix="use letters, digits, '-' and '_'",
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
    kind: LayoutKind = LayoutKind.SEED,
    sector_size: int = SECTOR,
) -> Layout:
    """``seed``: System from 1 MiB, Storage from the next MiB boundary to the end of the disk.

    ``libreelec``: System from byte 4 MiB (sector 8192 of 512 bytes), Storage
    from the next MiB boundary to 512 KiB (1024 sectors of 512 bytes) before
    the end.  ``sector_size``: the disk's logical block size (512 or 4096).
    """
    fat = kind is LayoutKind.LIBREELEC
    check_sector_size(kind, sector_size)
    check_label(system_label, "System", fat=fat)
    check_label(storage_label, "Storage")
    if system_label == storage_label:
        raise UsageError(f"System and Storage both have the label {system_label!r}")
    smallest = minimum_system(kind)
    if system_size < smallest:
        raise UsageError(
            f"System size {format_size(system_size)} is below the minimum of {format_size(smallest)}"
            + (" (FAT16)" if fat else ""),
            fix="give --system-size 256M or so",
        )
    if fat and system_size > MAX_FAT16:
        raise UsageError(
            f"System size {format_size(system_size)} is above FAT16's {format_size(MAX_FAT16)}",
            fix="give --system-size 1024M (LibreELEC's own size)",
        )
    if fat:
        usable = (size // sector_size * sector_size) - LIBREELEC_TAIL
        start = LIBREELEC_START
    else:
        usable = min(size, MBR_LIMIT) // SECTOR * SECTOR
        start = ALIGN
    system_size = -(-system_size // ALIGN) * ALIGN
    storage_start = start + system_size
    storage_size = usable - storage_start
    if storage_size < MIN_STORAGE:
        raise UsageError(
            f"a disk of {format_size(size)} has no room for a System of {format_size(system_size)}"
            f" and a Storage of at least {format_size(MIN_STORAGE)}",
            fix="give a larger --size or a smaller --system-size",
        )
    if fat:
        return Layout(
            disk_size=size,
            # legacy-BIOS-bootable where syslinux's BIOS loader can boot it (512-byte sectors)
            system=PartitionPlan(1, start, system_size, system_label, sector_size == SECTOR, ESP_TYPE, "vfat",
                                 "System"),
            storage=PartitionPlan(2, storage_start, storage_size, storage_label, False, LINUX_TYPE, "ext4",
                                  "Storage"),
            kind=kind,
            sector_size=sector_size,
        )  # fmt: skip
    return Layout(
        disk_size=size,
        system=PartitionPlan(1, ALIGN, system_size, system_label, bootable=True),
        storage=PartitionPlan(2, storage_start, storage_size, storage_label, bootable=False),
    )
