"""Partition tables and file system superblocks, read from bytes.

Pure: every function takes a :data:`ReadAt` callable ``(offset, length) ->
bytes`` and returns facts; no I/O of its own.  The boot agent resolves
``LABEL=``/``UUID=`` with it (no blkid, no udev in the initramfs) and
``iscsiboot doctor`` runs it over iSCSI reads.

Labels and UUIDs come out as ``blkid`` prints them.  Malformed input gives
``None`` or a :class:`ProbeError`, never an ``IndexError``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from iscsiboot.errors import ParseError

ReadAt = Callable[[int, int], bytes]

MBR_EXTENDED_TYPES = frozenset({0x05, 0x0F, 0x85})
MBR_PROTECTIVE_TYPE = 0xEE
MAX_LOGICAL = 128
MAX_GPT_ENTRIES = 4096


class ProbeError(ParseError):
    """A partition table or superblock that claims to be there but is broken."""


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str  # MBR: "83", "ef", "5" (as sfdisk prints); GPT: type GUID, lower case
    bootable: bool
    name: str | None = None  # GPT partition name


@dataclass(frozen=True)
class PartitionTable:
    scheme: str  # "mbr" | "gpt"
    disk_id: str  # MBR: 8 hex digits as blkid's PTUUID; GPT: the disk GUID
    partitions: tuple[Partition, ...]
    sector_size: int = 512  # the sectors its fields count

    def partition(self, number: int) -> Partition | None:
        for part in self.partitions:
            if part.number == number:
                return part
        return None


@dataclass(frozen=True)
class FsInfo:
    fs: str  # "ext2" | "ext3" | "ext4" | "vfat" | "btrfs" | "xfs" | "squashfs"
    label: str | None
    uuid: str | None


def _read(read: ReadAt, offset: int, length: int) -> bytes | None:
    """``length`` bytes at ``offset``, or None when the device is shorter."""
    if offset < 0 or length < 0:
        return None
    data = read(offset, length)
    if len(data) < length:
        return None
    return bytes(data[:length])


# Text on disk, decoded without the codecs of the encodings package: the boot agent's lean
# Python carries ASCII, Latin-1 and UTF-8 only.
CP437_HIGH = (  # code page 437, bytes 0x80-0xFF (FAT short names and labels)
    "ÇüéâäàåçêëèïîìÄÅÉæÆôöòûùÿÖÜ¢£¥₧ƒáíóúñÑªº¿⌐¬½¼¡«»░▒▓│┤╡╢╖╕╣║╗╝╜╛┐"
    "└┴┬├─┼╞╟╚╔╩╦╠═╬╧╨╤╥╙╘╒╓╫╪┘┌█▄▌▐▀αßΓπΣσµτΦΘΩδ∞φε∩≡±≥≤⌠⌡÷≈°∙·√ⁿ²■\xa0"
)


def cp437(raw: bytes) -> str:
    """``raw.decode("cp437")``."""
    return "".join(chr(b) if b < 0x80 else CP437_HIGH[b - 0x80] for b in raw)


def utf16le(raw: bytes) -> str:
    """``raw.decode("utf-16-le", errors="replace")``, up to the first NUL (GPT and VFAT names)."""
    units = [raw[i] | raw[i + 1] << 8 for i in range(0, len(raw) - 1, 2)]
    out: list[str] = []
    i = 0
    while i < len(units):
        unit = units[i]
        if unit == 0:
            break
        if 0xD800 <= unit < 0xDC00 and i + 1 < len(units) and 0xDC00 <= units[i + 1] < 0xE000:
            out.append(chr(0x10000 + ((unit - 0xD800) << 10) + (units[i + 1] - 0xDC00)))
            i += 2
            continue
        out.append("\ufffd" if 0xD800 <= unit < 0xE000 else chr(unit))
        i += 1
    return "".join(out)


def le16(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<H", data, offset)[0]
    return value


def le32(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<I", data, offset)[0]
    return value


def le64(data: bytes, offset: int) -> int:
    value: int = struct.unpack_from("<Q", data, offset)[0]
    return value


# --------------------------------------------------------------------- partitions


# The sector sizes the project reads and writes; a GPT is looked for at each when the disk's is not known.
SECTOR_SIZES = (512, 4096)
GPT_SIGNATURE = b"EFI PART"


def read_partition_table(read: ReadAt, *, size: int, sector_size: int | None = None) -> PartitionTable | None:
    """The MBR or GPT partition table of a disk of ``size`` bytes, or None if it has none.

    A protective MBR (type ee) leads to the GPT; a GPT whose primary and backup
    headers both fail their CRC raises :class:`ProbeError`.  ``sector_size``
    is the disk's logical block size when the caller knows it (a LUN's READ
    CAPACITY): the table must count those sectors, as the kernel reads it.
    Without it (an image file, a reader of unknown origin) an MBR counts
    512-byte sectors and a GPT is looked for at LBA 1 of 512, then of 4096
    bytes: its header says which.
    """
    if sector_size is not None and sector_size not in (512, 1024, 2048, 4096):
        raise ProbeError(f"sector size {sector_size} is not supported", fix="use 512 or 4096")
    mbr = _read(read, 0, 512)
    if mbr is None or mbr[510:512] != b"\x55\xaa":
        return None
    entries = [_mbr_entry(mbr, 446 + 16 * i) for i in range(4)]
    if any(status not in (0x00, 0x80) for status, _t, _s, _n in entries):
        return None  # boot code of a file system, not a partition table
    used = [e for e in entries if e[1] != 0 and e[3] != 0]
    if not used:
        return None
    if any(e[1] == MBR_PROTECTIVE_TYPE for e in used):
        return _read_gpt(read, size=size, sizes=(sector_size,) if sector_size else SECTOR_SIZES)
    return _read_mbr(read, mbr, entries, size=size, sector_size=sector_size or 512)


def _mbr_entry(sector: bytes, offset: int) -> tuple[int, int, int, int]:
    """(status, type, first LBA, sector count) of the 16-byte entry at ``offset``."""
    return sector[offset], sector[offset + 4], le32(sector, offset + 8), le32(sector, offset + 12)


def _read_mbr(
    read: ReadAt,
    mbr: bytes,
    entries: list[tuple[int, int, int, int]],
    *,
    size: int,
    sector_size: int,
) -> PartitionTable | None:
    total = size // sector_size
    parts: list[Partition] = []
    extended: tuple[int, int] | None = None
    for index, (status, ptype, lba, count) in enumerate(entries):
        if ptype == 0 or count == 0:
            continue
        if lba == 0 or (total and lba + count > total):
            if _probe_vfat(read) is not None:
                return None  # a FAT boot sector whose code happens to look like entries
            raise ProbeError(
                f"partition {index + 1} (sectors {lba}+{count}) lies outside the disk of {total} sectors",
                where="MBR",
            )
        parts.append(
            Partition(index + 1, lba * sector_size, count * sector_size, f"{ptype:x}", status == 0x80)
        )
        if ptype in MBR_EXTENDED_TYPES and extended is None:
            extended = (lba, count)
    if extended is not None:
        parts.extend(_read_logical(read, extended, total=total, sector_size=sector_size))
    disk_id = f"{le32(mbr, 440):08x}"
    return PartitionTable("mbr", disk_id, tuple(parts), sector_size)


def _read_logical(
    read: ReadAt, extended: tuple[int, int], *, total: int, sector_size: int
) -> list[Partition]:
    """Follow the chain of extended boot records inside the extended partition."""
    base, count = extended
    parts: list[Partition] = []
    ebr_lba = base
    seen: set[int] = set()
    number = 5
    while len(parts) < MAX_LOGICAL:
        if ebr_lba in seen or not base <= ebr_lba < base + count:
            break
        seen.add(ebr_lba)
        ebr = _read(read, ebr_lba * sector_size, 512)
        if ebr is None or ebr[510:512] != b"\x55\xaa":
            break
        status, ptype, rel, n = _mbr_entry(ebr, 446)
        if ptype != 0 and n != 0:
            start = ebr_lba + rel
            if total and start + n > total:
                raise ProbeError(f"logical partition {number} lies outside the disk", where="EBR")
            boot = status == 0x80
            parts.append(Partition(number, start * sector_size, n * sector_size, f"{ptype:x}", boot))
            number += 1
        _s, ntype, next_rel, next_n = _mbr_entry(ebr, 446 + 16)
        if ntype not in MBR_EXTENDED_TYPES or next_n == 0 or next_rel == 0:
            break
        ebr_lba = base + next_rel
    return parts


def _read_gpt(read: ReadAt, *, size: int, sizes: tuple[int, ...]) -> PartitionTable:
    problems: list[str] = []
    for sector_size in sizes:
        for lba in (1, size // sector_size - 1):
            try:
                return _read_gpt_at(read, lba, size=size, sector_size=sector_size)
            except ProbeError as exc:
                where = f" of {sector_size} bytes" if len(sizes) > 1 else ""
                problems.append(exc.what + where)
    raise ProbeError(
        f"protective MBR but no valid GPT header ({'; '.join(problems)})",
        where="GPT",
        fix="repair the table with sgdisk or gdisk, or wipe the disk",
    )


def uuid_text(raw: bytes) -> str:
    """The 16 bytes as ``8-4-4-4-12`` lower-case hex, as ``str(uuid.UUID(bytes=raw))`` (pure).

    The uuid module is not imported: it brings platform and libuuid into the
    boot agent for a string format.
    """
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def _guid(raw: bytes) -> str:
    """A GPT GUID: its first three fields are little-endian (``uuid.UUID(bytes_le=raw)``)."""
    return uuid_text(raw[3::-1] + raw[5:3:-1] + raw[7:5:-1] + raw[8:16])


def _read_gpt_at(read: ReadAt, lba: int, *, size: int, sector_size: int) -> PartitionTable:
    header = _read(read, lba * sector_size, sector_size)
    if header is None:
        raise ProbeError(f"no header at LBA {lba}")
    if header[0:8] != GPT_SIGNATURE:
        raise ProbeError(f"no signature at LBA {lba}")
    header_size = le32(header, 12)
    if not 92 <= header_size <= sector_size:
        raise ProbeError(f"header size {header_size} at LBA {lba}")
    crc = le32(header, 16)
    raw = bytearray(header[:header_size])
    raw[16:20] = b"\0\0\0\0"
    if zlib.crc32(raw) != crc:
        raise ProbeError(f"header CRC mismatch at LBA {lba}")
    disk_guid = _guid(header[56:72])
    entries_lba = le64(header, 72)
    count = le32(header, 80)
    entry_size = le32(header, 84)
    entries_crc = le32(header, 88)
    if entry_size < 128 or entry_size % 8 or entry_size > 4096 or count > MAX_GPT_ENTRIES:
        raise ProbeError(f"entry size {entry_size} or count {count} at LBA {lba}")
    table = _read(read, entries_lba * sector_size, count * entry_size)
    if table is None:
        raise ProbeError(f"partition entries at LBA {entries_lba} lie outside the disk")
    if zlib.crc32(table) != entries_crc:
        raise ProbeError(f"partition entries CRC mismatch (header at LBA {lba})")
    parts: list[Partition] = []
    for index in range(count):
        entry = table[index * entry_size : (index + 1) * entry_size]
        type_raw = entry[0:16]
        if type_raw == bytes(16):
            continue
        first, last, attrs = le64(entry, 32), le64(entry, 40), le64(entry, 48)
        if last < first or (last + 1) * sector_size > size:
            raise ProbeError(f"partition {index + 1} has bad extent {first}-{last}")
        name = utf16le(entry[56:128])
        parts.append(
            Partition(
                number=index + 1,
                start=first * sector_size,
                size=(last - first + 1) * sector_size,
                type=_guid(type_raw),
                bootable=bool(attrs & (1 << 2)),
                name=name,
            )
        )
    return PartitionTable("gpt", disk_guid, tuple(parts), sector_size)


# -------------------------------------------------------------------- file systems

EXT_MAGIC = 0xEF53
EXT_COMPAT_HAS_JOURNAL = 0x0004
EXT_INCOMPAT_JOURNAL_DEV = 0x0008
EXT3_INCOMPAT_SUPP = 0x0002 | 0x0004 | 0x0010  # filetype, recover, meta_bg
EXT3_RO_COMPAT_SUPP = 0x0001 | 0x0002 | 0x0004  # sparse_super, large_file, btree_dir


def _text(raw: bytes) -> str | None:
    text = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    return text or None


def _uuid_be(raw: bytes) -> str | None:
    if raw == bytes(len(raw)):
        return None
    return uuid_text(raw)


def probe_filesystem(read: ReadAt) -> FsInfo | None:
    """Which file system starts at offset 0 of ``read``, with its label and UUID."""
    for probe in (_probe_ext, _probe_xfs, _probe_squashfs, _probe_btrfs, _probe_vfat):
        found = probe(read)
        if found is not None:
            return found
    return None


def _probe_ext(read: ReadAt) -> FsInfo | None:
    sb = _read(read, 1024, 1024)
    if sb is None or le16(sb, 0x38) != EXT_MAGIC:
        return None
    compat, incompat, ro_compat = le32(sb, 0x5C), le32(sb, 0x60), le32(sb, 0x64)
    if incompat & EXT_INCOMPAT_JOURNAL_DEV:
        return None  # an external journal, not a file system
    if incompat & ~EXT3_INCOMPAT_SUPP or ro_compat & ~EXT3_RO_COMPAT_SUPP:
        fs = "ext4"
    elif compat & EXT_COMPAT_HAS_JOURNAL:
        fs = "ext3"
    else:
        fs = "ext2"
    return FsInfo(fs, _text(sb[0x78:0x88]), _uuid_be(sb[0x68:0x78]))


def _probe_xfs(read: ReadAt) -> FsInfo | None:
    sb = _read(read, 0, 512)
    if sb is None or sb[0:4] != b"XFSB":
        return None
    return FsInfo("xfs", _text(sb[108:120]), _uuid_be(sb[32:48]))


def _probe_squashfs(read: ReadAt) -> FsInfo | None:
    sb = _read(read, 0, 96)
    if sb is None or sb[0:4] != b"hsqs":
        return None
    if le16(sb, 28) != 4:
        return None
    return FsInfo("squashfs", None, None)


def _probe_btrfs(read: ReadAt) -> FsInfo | None:
    sb = _read(read, 0x10000, 4096)
    if sb is None or sb[0x40:0x48] != b"_BHRfS_M":
        return None
    return FsInfo("btrfs", _text(sb[0x12B : 0x12B + 256]), _uuid_be(sb[0x20:0x30]))


_FAT_ATTR_VOLUME = 0x08
_FAT_ATTR_LFN = 0x0F
_FAT_MAX_ROOT_CLUSTERS = 64


def _probe_vfat(read: ReadAt) -> FsInfo | None:
    bs = _read(read, 0, 512)
    if bs is None or bs[510:512] != b"\x55\xaa" or bs[0] not in (0xEB, 0xE9):
        return None
    bps, spc, reserved, nfats = le16(bs, 11), bs[13], le16(bs, 14), bs[16]
    root_entries, total16, fat16 = le16(bs, 17), le16(bs, 19), le16(bs, 22)
    total32, fat32 = le32(bs, 32), le32(bs, 36)
    if bps not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1) or reserved == 0:
        return None
    if nfats not in (1, 2) or bs[21] not in (0xF0, *range(0xF8, 0x100)):
        return None
    is32 = fat16 == 0
    fat_size = fat32 if is32 else fat16
    if fat_size == 0 or (total16 or total32) == 0:
        return None
    ext = 64 if is32 else 36
    if bs[ext + 2] in (0x28, 0x29):
        serial = le32(bs, ext + 3)
        uid: str | None = f"{serial >> 16:04X}-{serial & 0xFFFF:04X}"
        boot_label: bytes | None = bs[ext + 7 : ext + 18] if bs[ext + 2] == 0x29 else None
    else:
        uid, boot_label = None, None
    first_data = (reserved + nfats * fat_size) * bps
    root_label: bytes | None
    if is32:
        root_label = _fat32_root_label(read, bs, data_start=first_data, fat_start=reserved * bps)
    else:
        root_dir = _read(read, first_data, root_entries * 32)
        root_label = _fat_dir_label(root_dir) if root_dir else None
    raw = root_label if root_label is not None else boot_label
    label = None
    if raw is not None:
        text = cp437(raw).rstrip(" \0")
        label = None if text in ("", "NO NAME") else text
    return FsInfo("vfat", label, uid)


def _fat_dir_label(data: bytes) -> bytes | None:
    for off in range(0, len(data) - 31, 32):
        entry = data[off : off + 32]
        if entry[0] == 0:
            break
        if entry[0] == 0xE5 or entry[11] == _FAT_ATTR_LFN:
            continue
        if entry[11] & _FAT_ATTR_VOLUME:
            return entry[0:11]
    return None


def _fat32_root_label(read: ReadAt, bs: bytes, *, data_start: int, fat_start: int) -> bytes | None:
    cluster = le32(bs, 44) & 0x0FFFFFFF
    cluster_bytes = le16(bs, 11) * bs[13]
    seen: set[int] = set()
    while 2 <= cluster < 0x0FFFFFF7 and cluster not in seen and len(seen) < _FAT_MAX_ROOT_CLUSTERS:
        seen.add(cluster)
        data = _read(read, data_start + (cluster - 2) * cluster_bytes, cluster_bytes)
        if data is None:
            return None
        label = _fat_dir_label(data)
        if label is not None:
            return label
        if any(data[i] == 0 for i in range(0, len(data), 32)):
            return None
        link = _read(read, fat_start + cluster * 4, 4)
        if link is None:
            return None
        cluster = le32(link, 0) & 0x0FFFFFFF
    return None


def reader_of(data: bytes) -> ReadAt:
    """A :data:`ReadAt` over bytes in memory (tests, small images)."""

    def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    return read
