"""A GUID partition table, built as bytes for a disk of 512- or 4096-byte sectors (pure).

``iscsiboot install --layout libreelec`` writes its table with this module
rather than with ``sfdisk``: sfdisk counts 512-byte sectors on an image file
(util-linux 2.38 has no ``--sector-size``), and a LUN of 4096-byte blocks
needs the table in its own sectors.  Every field counts sectors of the
disk's size: the header lies at LBA 1 (byte 512 or 4096), the 128 entries
of 128 bytes from LBA 2 (32 or 4 sectors), their copy and the backup header
at the end, and the protective MBR's one partition of type ``ee`` covers
LBA 1 to the end in those sectors (at most 2^32 - 1 of them).  Sector 0
holds only the protective MBR; its first 440 bytes (boot code) stay zero
for the caller to fill.  What :func:`build` returns goes to the disk as is:
:func:`iscsiboot.disk.probe.read_partition_table` reads it back.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from iscsiboot.disk.probe import GPT_SIGNATURE as SIGNATURE
from iscsiboot.disk.probe import MBR_PROTECTIVE_TYPE as PROTECTIVE_TYPE
from iscsiboot.disk.probe import SECTOR_SIZES

ENTRY_COUNT = 128
ENTRY_SIZE = 128
HEADER_SIZE = 92
REVISION = 0x00010000
NAME_UNITS = 36  # UTF-16 code units in a partition name
LEGACY_BIOS_BOOTABLE = 1 << 2  # attribute bit 2
MBR_MAX_SECTORS = 0xFFFFFFFF


@dataclass(frozen=True)
class Entry:
    """One partition: bytes from the start of the disk, its type GUID, name and attributes."""

    start: int
    size: int
    type_guid: str
    name: str = ""
    attributes: int = 0
    guid: uuid.UUID | None = None  # None: a random one


@dataclass(frozen=True)
class Table:
    """The bytes of a GPT: ``(offset, data)`` pieces, each whole sectors, to write as they are."""

    sector_size: int
    pieces: tuple[tuple[int, bytes], ...]
    disk_guid: uuid.UUID


def geometry(disk_size: int, sector_size: int) -> tuple[int, int, int, int]:
    """(last LBA, sectors of the entry array, first usable LBA, last usable LBA)."""
    if sector_size not in SECTOR_SIZES:
        raise ValueError(f"a GPT of {sector_size}-byte sectors is not written here")
    array = -(-ENTRY_COUNT * ENTRY_SIZE // sector_size)
    last = disk_size // sector_size - 1
    return last, array, 2 + array, last - array - 1


def build(
    disk_size: int, sector_size: int, entries: Sequence[Entry], *, disk_guid: uuid.UUID | None = None
) -> Table:
    """The GPT of a disk of ``disk_size`` bytes with ``entries`` (numbered 1, 2, ... in order).

    ValueError when a partition is not whole sectors, overlaps another or
    lies outside the usable LBAs, or a name does not fit its 36 units.
    """
    last, array, first_usable, last_usable = geometry(disk_size, sector_size)
    if len(entries) > ENTRY_COUNT or last_usable < first_usable:
        raise ValueError(f"a disk of {disk_size} bytes cannot hold this GPT")
    disk_guid = disk_guid or uuid.uuid4()
    raw = bytearray(ENTRY_COUNT * ENTRY_SIZE)
    previous_end = first_usable
    for index, entry in enumerate(entries):
        if entry.start % sector_size or entry.size % sector_size or entry.size <= 0:
            raise ValueError(f"partition {index + 1} is not whole sectors of {sector_size} bytes")
        first = entry.start // sector_size
        end = first + entry.size // sector_size  # exclusive
        if first < previous_end or end - 1 > last_usable:
            raise ValueError(f"partition {index + 1} overlaps another or lies outside LBAs "
                             f"{first_usable}-{last_usable}")  # fmt: skip
        previous_end = end
        name = entry.name.encode("utf-16-le")
        if len(name) > 2 * NAME_UNITS:
            raise ValueError(f"partition name {entry.name!r} is longer than {NAME_UNITS} UTF-16 units")
        guid = entry.guid or uuid.uuid4()
        struct.pack_into("<16s16sQQQ72s", raw, index * ENTRY_SIZE, uuid.UUID(entry.type_guid).bytes_le,
                         guid.bytes_le, first, end - 1, entry.attributes, name)  # fmt: skip
    entries_crc = zlib.crc32(raw)
    padded = bytes(raw) + bytes(array * sector_size - len(raw))

    def header(current: int, backup: int, entries_lba: int) -> bytes:
        fields = struct.pack("<8sIIIIQQQQ16sQIII", SIGNATURE, REVISION, HEADER_SIZE, 0, 0, current, backup,
                             first_usable, last_usable, disk_guid.bytes_le, entries_lba, ENTRY_COUNT,
                             ENTRY_SIZE, entries_crc)  # fmt: skip
        crc = zlib.crc32(fields)
        done = fields[:16] + struct.pack("<I", crc) + fields[20:]
        return done + bytes(sector_size - len(done))

    pieces = (
        (0, protective_mbr(disk_size, sector_size)),
        (sector_size, header(1, last, 2)),
        (2 * sector_size, padded),
        ((last - array) * sector_size, padded),
        (last * sector_size, header(last, 1, last - array)),
    )
    return Table(sector_size, pieces, disk_guid)


def protective_mbr(disk_size: int, sector_size: int) -> bytes:
    """Sector 0: one partition of type ee from LBA 1 over the disk, in sectors of ``sector_size``."""
    sectors = min(disk_size // sector_size - 1, MBR_MAX_SECTORS)
    mbr = bytearray(sector_size)
    # status, CHS of the first sector (0/0/2), type, CHS of the last (as far as CHS goes), LBA, count
    struct.pack_into("<B3sB3sII", mbr, 446, 0, b"\x00\x02\x00", PROTECTIVE_TYPE, b"\xff\xff\xff", 1, sectors)
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)
