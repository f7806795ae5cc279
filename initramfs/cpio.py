"""A reproducible writer (and reader) for the cpio "newc" format the kernel unpacks.

Pure: entries in, bytes out.  Every archive is canonical: directories first
(sorted by path components, so parents come before children), then symbolic
links, then the other members grouped by content (machine code, kernel
modules, Python byte code, the rest) and sorted by path within a group; owner
0:0, one fixed mtime, inode numbers assigned in order, ``TRAILER!!!`` at the
end, header and data padded to 4 bytes.  The same entries always give the
same bytes.  Grouping like with like shortens the compressor's match
distances: the xz overlay is about 10 KB smaller than in plain path order.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from iscsiboot.errors import UsageError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_LEN = 110


class Kind(Enum):
    FILE = stat.S_IFREG
    DIR = stat.S_IFDIR
    SYMLINK = stat.S_IFLNK
    CHAR = stat.S_IFCHR
    BLOCK = stat.S_IFBLK


@dataclass(frozen=True)
class Entry:
    """One archive member.  ``path`` is relative ("usr/bin/python3.11", no leading slash).

    ``data`` is the file content, or the link target for a symlink.  ``rdev``
    is (major, minor) for device nodes.  ``mode`` holds permission bits only.
    """

    path: str
    kind: Kind
    mode: int = 0o644
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)

    @staticmethod
    def file(path: str, data: bytes, mode: int = 0o644) -> Entry:
        return Entry(path, Kind.FILE, mode, data)

    @staticmethod
    def directory(path: str, mode: int = 0o755) -> Entry:
        return Entry(path, Kind.DIR, mode)

    @staticmethod
    def symlink(path: str, target: str) -> Entry:
        return Entry(path, Kind.SYMLINK, 0o777, target.encode())

    @staticmethod
    def char(path: str, major: int, minor: int, mode: int = 0o600) -> Entry:
        return Entry(path, Kind.CHAR, mode, b"", (major, minor))


def normalize(path: str) -> str:
    """``/usr//bin/./x`` -> ``usr/bin/x``; refuses ``..``, empty and NUL-containing names."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\0" in path:
        raise UsageError(f"not a usable archive path: {path!r}", where="initramfs entry")
    return "/".join(parts)


def _key(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def canonical(entries: Iterable[Entry], *, existing_parents: frozenset[str] = frozenset()) -> list[Entry]:
    """Normalized, de-duplicated (a later entry wins), parents added, in archive order.

    ``existing_parents``: folders the archive is unpacked onto (an overlay's base has them):
    they are not added as parents, and no entry may name one.
    """
    by_path: dict[str, Entry] = {}
    for entry in entries:
        path = normalize(entry.path)
        if path in existing_parents:
            raise UsageError(
                f"{path!r} is a folder of the base the archive is unpacked onto", where="initramfs entry"
            )
        by_path[path] = Entry(path, entry.kind, entry.mode & 0o7777, entry.data, entry.rdev)
    for path in list(by_path):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            if parent in existing_parents:
                continue
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = Entry.directory(parent)
            elif existing.kind not in (Kind.DIR, Kind.SYMLINK):
                raise UsageError(
                    f"{parent!r} is a {existing.kind.name.lower()} but {path!r} lies below it",
                    where="initramfs entry",
                )
    return sorted(by_path.values(), key=_order)


def _order(entry: Entry) -> tuple[int, tuple[str, ...]]:
    if entry.kind is Kind.DIR:
        group = 0
    elif entry.kind is Kind.SYMLINK:
        group = 1  # before the members that may lie below a linked folder
    elif entry.data[:4] == b"\x7fELF":
        group = 3 if entry.path.endswith(".ko") else 2
    elif entry.path.endswith((".pyc", ".marshal")):
        group = 4
    else:
        group = 5
    return group, _key(entry.path)


def _pad(length: int) -> bytes:
    return b"\0" * (-length % 4)


def _member(
    ino: int, name: str, mode: int, *, nlink: int, mtime: int, data: bytes, rdev: tuple[int, int]
) -> bytes:
    raw = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
    head = MAGIC + b"".join(b"%08X" % f for f in fields) + raw
    return head + _pad(len(head)) + data + _pad(len(data))


def write_newc(
    entries: Iterable[Entry], *, mtime: int = 0, existing_parents: frozenset[str] = frozenset()
) -> bytes:
    """The newc archive of ``entries`` (see :func:`canonical`), ending with the trailer."""
    if not 0 <= mtime < 2**32:
        raise UsageError(f"timestamp {mtime} does not fit a cpio header", where="SOURCE_DATE_EPOCH")
    chunks: list[bytes] = []
    for ino, entry in enumerate(canonical(entries, existing_parents=existing_parents), start=1):
        data = entry.data if entry.kind in (Kind.FILE, Kind.SYMLINK) else b""
        nlink = 2 if entry.kind is Kind.DIR else 1
        rdev = entry.rdev if entry.kind in (Kind.CHAR, Kind.BLOCK) else (0, 0)
        chunks.append(
            _member(
                ino, entry.path, entry.kind.value | entry.mode, nlink=nlink, mtime=mtime, data=data, rdev=rdev
            )
        )
    chunks.append(_member(0, TRAILER, 0, nlink=1, mtime=0, data=b"", rdev=(0, 0)))
    return b"".join(chunks)


@dataclass(frozen=True)
class Member:
    """A member read back from an archive (what :func:`read_newc` returns)."""

    entry: Entry
    ino: int
    nlink: int
    mtime: int
    uid: int
    gid: int


def read_newc(blob: bytes) -> list[Member]:
    """Parse a newc archive (up to its trailer); for tests and size reports."""
    members: list[Member] = []
    pos = 0
    while True:
        if blob[pos : pos + 6] != MAGIC:
            raise UsageError(f"no newc header at offset {pos}", where="cpio archive")
        fields = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _maj, _min, rmaj, rmin, namesize, _check = fields
        name_start = pos + HEADER_LEN
        name = blob[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize
        data_start += -data_start % 4
        data = blob[data_start : data_start + size]
        pos = data_start + size
        pos += -pos % 4
        if name == TRAILER:
            return members
        kind = Kind(stat.S_IFMT(mode))
        entry = Entry(name, kind, stat.S_IMODE(mode), data, (rmaj, rmin))
        members.append(Member(entry, ino, nlink, mtime, uid, gid))
