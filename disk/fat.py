"""A read-only FAT12/16/32 reader over a :data:`~iscsiboot.disk.probe.ReadAt`.

LibreELEC's installer formats System as FAT16 (the EFI System partition that
both syslinux loaders read), so ``iscsiboot doctor`` and the install
read-back look into FAT as they look into ext4 (:mod:`iscsiboot.disk.ext4`):
through a reader, never a mount (many kernels, this project's test hosts
among them, have no vfat).  Pure: it only calls the reader it is given.

What it understands: the BIOS parameter block (the FAT type follows from the
cluster count, as the specification says, not from the type string),
cluster chains, 8.3 names with the lower-case flags of Windows NT (byte 12)
and VFAT long names (checked against the short name's checksum).  Names are
compared without regard to case, as the FAT drivers of Linux and UEFI do.
Every chain is bounded by the cluster count, so a loop in the table ends in
a :class:`FatError`, not a hang.
"""

from __future__ import annotations

import stat as statmod
from dataclasses import dataclass
from typing import Protocol

from iscsiboot.disk.ext4 import Stat
from iscsiboot.disk.probe import ReadAt, cp437, le16, le32, utf16le
from iscsiboot.errors import ParseError

MiB = 1 << 20
ATTR_VOLUME = 0x08
ATTR_DIRECTORY = 0x10
ATTR_LFN = 0x0F
FAT12_MAX_CLUSTERS = 4084  # fewer than 4085 clusters: FAT12
FAT16_MAX_CLUSTERS = 65524  # fewer than 65525: FAT16, else FAT32
MAX_FAT_BYTES = 64 * MiB
MAX_DIR_BYTES = 8 * MiB
LABEL_MAX = 11  # bytes of a FAT volume label (boot sector and root directory entry)


class FatError(ParseError):
    """Not a FAT file system, or a damaged one."""


class FatNotFound(FatError):
    """A path that does not exist (or runs through something that is not a directory)."""


@dataclass(frozen=True)
class FatEntry:
    name: str  # the long name when there is one, else the 8.3 name as Linux shows it
    short: str  # the 8.3 name, upper case, "NAME.EXT"
    kind: str  # "file" | "dir"
    cluster: int  # first cluster (0: empty file, or the FAT12/16 root)
    size: int


class FileSystem(Protocol):
    """What the doctor and the install read-back need of System, whatever its file system."""

    def exists(self, path: str) -> bool: ...

    def stat(self, path: str) -> Stat: ...

    def read_file(self, path: str, *, limit: int = ...) -> bytes: ...


def open_filesystem(read: ReadAt, fs: str) -> FileSystem:
    """The reader of the file system ``fs`` (as :func:`~iscsiboot.disk.probe.probe_filesystem` names it)."""
    if fs == "vfat":
        return Fat(read)
    from iscsiboot.disk.ext4 import Ext4  # noqa: PLC0415  (the FAT reader alone does not need it)

    return Ext4(read)


def short_checksum(short: bytes) -> int:
    """The checksum of an 11-byte 8.3 name that each of its long-name entries carries."""
    total = 0
    for byte in short:
        total = (((total & 1) << 7) + (total >> 1) + byte) & 0xFF
    return total


def _short_name(raw: bytes, case: int) -> tuple[str, str]:
    """(name as Linux shows it, upper-case NAME.EXT) of an 11-byte 8.3 field."""
    base = raw[0:8].rstrip(b" ")
    ext = raw[8:11].rstrip(b" ")
    if base[:1] == b"\x05":
        base = b"\xe5" + base[1:]
    b_text, e_text = cp437(base), cp437(ext)
    upper = b_text + (f".{e_text}" if e_text else "")
    shown_base = b_text.lower() if case & 0x08 else b_text
    shown_ext = e_text.lower() if case & 0x10 else e_text
    return shown_base + (f".{shown_ext}" if shown_ext else ""), upper


def _lfn_part(entry: bytes) -> str:
    return utf16le(entry[1:11] + entry[14:26] + entry[28:32])


def parse_directory(data: bytes) -> list[FatEntry]:
    """The entries of a directory's bytes (without ``.``, ``..``, deleted entries and the label)."""
    out: list[FatEntry] = []
    parts: dict[int, str] = {}
    checksum: int | None = None
    for off in range(0, len(data) - 31, 32):
        entry = data[off : off + 32]
        first, attr = entry[0], entry[11]
        if first == 0:
            break
        if first == 0xE5:
            parts, checksum = {}, None
            continue
        if attr & 0x3F == ATTR_LFN:
            seq = first & 0x1F
            if first & 0x40:
                parts, checksum = {}, entry[13]
            if seq and entry[13] == checksum:
                parts[seq] = _lfn_part(entry)
            continue
        long_name: str | None = None
        complete = sorted(parts) == list(range(1, len(parts) + 1))
        if parts and complete and checksum == short_checksum(entry[0:11]):
            long_name = "".join(parts[i] for i in sorted(parts))
        parts, checksum = {}, None
        if attr & ATTR_VOLUME:
            continue
        shown, upper = _short_name(entry[0:11], entry[12])
        if shown in (".", ".."):
            continue
        cluster = (le16(entry, 20) << 16) | le16(entry, 26)
        kind = "dir" if attr & ATTR_DIRECTORY else "file"
        out.append(FatEntry(long_name or shown, upper, kind, cluster, le32(entry, 28)))
    return out


class Fat:
    """Read files and directories of the FAT file system at offset 0 of ``read``."""

    def __init__(self, read: ReadAt) -> None:
        self._read_at = read
        bs = self._read(0, 512, "boot sector")
        if bs[510:512] != b"\x55\xaa" or bs[0] not in (0xEB, 0xE9):
            raise FatError("no FAT boot sector (no jump instruction or 55 AA signature)")
        self.sector = le16(bs, 11)
        self.per_cluster = bs[13]
        reserved, nfats = le16(bs, 14), bs[16]
        self.root_entries = le16(bs, 17)
        total = le16(bs, 19) or le32(bs, 32)
        fat_sectors = le16(bs, 22) or le32(bs, 36)
        if (
            self.sector not in (512, 1024, 2048, 4096)
            or self.per_cluster == 0
            or self.per_cluster & (self.per_cluster - 1)
            or reserved == 0
            or nfats == 0
            or fat_sectors == 0
            or total == 0
        ):
            raise FatError("the BIOS parameter block is inconsistent")
        self.cluster_bytes = self.sector * self.per_cluster
        root_sectors = -(-self.root_entries * 32 // self.sector)
        self.fat_start = reserved * self.sector
        self.fat_bytes = fat_sectors * self.sector
        self.root_start = (reserved + nfats * fat_sectors) * self.sector
        first_data = reserved + nfats * fat_sectors + root_sectors
        if first_data >= total:
            raise FatError("the file system has no data area")
        self.data_start = first_data * self.sector
        self.clusters = (total - first_data) // self.per_cluster
        if self.clusters <= FAT12_MAX_CLUSTERS:
            self.bits = 12
        elif self.clusters <= FAT16_MAX_CLUSTERS:
            self.bits = 16
        else:
            self.bits = 32
        self.root_cluster = le32(bs, 44) & 0x0FFFFFFF if self.bits == 32 else 0
        ext = 64 if self.bits == 32 else 36
        label = bs[ext + 7 : ext + 18] if bs[ext + 2] == 0x29 else b""
        self.boot_label = cp437(label).rstrip(" ") or None
        self._fat: bytes | None = None

    # ------------------------------------------------------------- low level

    def _read(self, offset: int, length: int, what: str) -> bytes:
        data = self._read_at(offset, length)
        if len(data) < length:
            raise FatError(f"{what} at byte {offset} lies beyond the end of the device")
        return bytes(data[:length])

    def _table(self) -> bytes:
        if self._fat is None:
            size = min(self.fat_bytes, (self.clusters + 2) * self.bits // 8 + 2)
            if size > MAX_FAT_BYTES:
                raise FatError(f"the allocation table of {size} bytes is larger than {MAX_FAT_BYTES}")
            self._fat = self._read(self.fat_start, size, "allocation table")
        return self._fat

    def next_cluster(self, cluster: int) -> int | None:
        """The cluster after ``cluster`` in its chain; None at the end of the chain."""
        fat = self._table()
        if self.bits == 12:
            pos = cluster + cluster // 2
            if pos + 2 > len(fat):
                raise FatError(f"cluster {cluster} lies outside the allocation table")
            value = le16(fat, pos)
            value = value >> 4 if cluster & 1 else value & 0xFFF
            end = value >= 0xFF8
        elif self.bits == 16:
            if 2 * cluster + 2 > len(fat):
                raise FatError(f"cluster {cluster} lies outside the allocation table")
            value = le16(fat, 2 * cluster)
            end = value >= 0xFFF8
        else:
            if 4 * cluster + 4 > len(fat):
                raise FatError(f"cluster {cluster} lies outside the allocation table")
            value = le32(fat, 4 * cluster) & 0x0FFFFFFF
            end = value >= 0x0FFFFFF8
        if end:
            return None
        if not 2 <= value < self.clusters + 2:
            raise FatError(f"cluster {cluster} links to {value}, outside the file system")
        return value

    def chain(self, first: int, limit: int) -> bytes:
        """The bytes of the chain from ``first`` (at most ``limit`` of them)."""
        out = bytearray()
        cluster: int | None = first
        steps = 0
        while cluster is not None and len(out) < limit:
            if not 2 <= cluster < self.clusters + 2:
                raise FatError(f"cluster {cluster} is outside the file system")
            steps += 1
            if steps > self.clusters:
                raise FatError(f"the chain from cluster {first} loops")
            out += self._read(
                self.data_start + (cluster - 2) * self.cluster_bytes, self.cluster_bytes, f"cluster {cluster}"
            )
            cluster = self.next_cluster(cluster)
        return bytes(out)

    # ------------------------------------------------------- directories

    def _root(self) -> list[FatEntry]:
        if self.bits == 32:
            return parse_directory(self.chain(self.root_cluster, MAX_DIR_BYTES))
        return parse_directory(self._read(self.root_start, self.root_entries * 32, "root directory"))

    def _entries(self, entry: FatEntry | None) -> list[FatEntry]:
        if entry is None:
            return self._root()
        if entry.kind != "dir":
            raise FatNotFound(f"{entry.name} is not a directory")
        if entry.cluster == 0:
            return self._root()  # ".." of a first-level folder points to the root as cluster 0
        return parse_directory(self.chain(entry.cluster, MAX_DIR_BYTES))

    def _resolve(self, path: str) -> FatEntry | None:
        """The entry of ``path``; None for the root directory."""
        current: FatEntry | None = None
        stack: list[FatEntry | None] = []
        for name in (p for p in path.split("/") if p and p != "."):
            if name == "..":
                current = stack.pop() if stack else None
                continue
            wanted = name.casefold()
            found = next(
                (e for e in self._entries(current) if wanted in (e.name.casefold(), e.short.casefold())),
                None,
            )
            if found is None:
                raise FatNotFound(f"{path}: {name!r} not found")
            stack.append(current)
            current = found
        return current

    # -------------------------------------------------------------- public

    @property
    def label(self) -> str | None:
        """The volume label: the root directory's label entry, else the boot sector's (as blkid)."""
        from iscsiboot.disk.probe import probe_filesystem  # noqa: PLC0415  (one label rule)

        info = probe_filesystem(self._read_at)
        return info.label if info is not None else self.boot_label

    def listdir(self, path: str = "/") -> tuple[FatEntry, ...]:
        return tuple(self._entries(self._resolve(path)))

    def read_file(self, path: str, *, limit: int = 16 * MiB) -> bytes:
        entry = self._resolve(path)
        if entry is None or entry.kind != "file":
            raise FatError(f"{path} is a directory, not a regular file")
        if entry.size > limit:
            raise FatError(f"{path} holds {entry.size} bytes, more than the limit of {limit}")
        if entry.size == 0:
            return b""
        data = self.chain(entry.cluster, entry.size)
        if len(data) < entry.size:
            raise FatError(f"{path}: its chain ends before its {entry.size} bytes")
        return data[: entry.size]

    def stat(self, path: str) -> Stat:
        """As :meth:`Ext4.stat`; FAT keeps no modes: Linux shows 0755 for both kinds (umask 022)."""
        entry = self._resolve(path)
        if entry is None:
            return Stat(0, statmod.S_IFDIR | 0o755, "dir", 0, 1, 0)
        mode = (statmod.S_IFDIR if entry.kind == "dir" else statmod.S_IFREG) | 0o755
        return Stat(entry.size, mode, entry.kind, entry.cluster, 1, 0)

    def exists(self, path: str) -> bool:
        try:
            self._resolve(path)
        except FatNotFound:
            return False
        return True
