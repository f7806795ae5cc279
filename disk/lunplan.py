"""What ``iscsiboot install --portal`` sends to a LUN, decided without I/O.

The layout is built in a sparse temporary image of the LUN's size; only the
parts of it that hold data travel.  :func:`plan_extents` turns the data
ranges the file system reports (``SEEK_DATA``/``SEEK_HOLE``) into whole
blocks of the LUN, merged where they touch, plus the first and last MiB of
the disk: an older partition table (its GPT backup lies at the end) must not
survive under the new one.  :func:`check_room` and :func:`check_blank`
refuse a LUN before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from iscsiboot.disk.layout import (
    ALIGN,
    LIBREELEC_START,
    LIBREELEC_TAIL,
    MIN_STORAGE,
    LayoutKind,
    MiB,
    check_sector_size,
    format_size,
)
from iscsiboot.disk.probe import SECTOR_SIZES
from iscsiboot.errors import UsageError

# the ends of the disk that are always sent (old partition tables there are overwritten)
EDGE = MiB
BLOCK_SIZES = SECTOR_SIZES


@dataclass(frozen=True)
class Extent:
    """``length`` bytes at ``offset`` of the disk, both multiples of the LUN's block size."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + self.length

    def lba(self, block_size: int) -> int:
        return self.offset // block_size

    def blocks(self, block_size: int) -> int:
        return self.length // block_size


@dataclass(frozen=True)
class LunName:
    """The LUN written: its portal, target and number (for messages and the report)."""

    host: str
    port: int
    target: str
    lun: int | None  # None: the first disk LUN the target lists

    @property
    def number(self) -> int:
        if self.lun is None:
            raise ValueError("the LUN is not known yet")
        return self.lun

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        lun = "the disk LUN" if self.lun is None else f"LUN {self.lun}"
        return f"{lun} of {self.target} at {host}:{self.port}"


def plan_extents(
    spans: Iterable[tuple[int, int]], *, size: int, block_size: int, edge: int = EDGE
) -> tuple[Extent, ...]:
    """The block-aligned, merged, sorted extents that cover ``spans`` and both edges of the disk.

    ``spans`` are ``(offset, length)`` byte ranges with data; ``size`` is
    the disk's size (a multiple of ``block_size``).
    """
    if block_size <= 0 or size % block_size:
        raise ValueError(f"a disk of {size} bytes is not whole blocks of {block_size}")
    wanted = [(o, n) for o, n in spans if n > 0]
    wanted += [(0, min(edge, size)), (max(0, size - edge), min(edge, size))]
    ranges = sorted(
        (o // block_size * block_size, min(size, -(-(o + n) // block_size) * block_size))
        for o, n in wanted
        if o < size
    )
    merged: list[list[int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple(Extent(start, end - start) for start, end in merged if end > start)


def chunks(extent: Extent, limit: int, block_size: int) -> list[Extent]:
    """``extent`` cut in pieces of at most ``limit`` bytes (whole blocks; one command each)."""
    per = max(block_size, limit // block_size * block_size)
    return [Extent(o, min(per, extent.end - o)) for o in range(extent.offset, extent.end, per)]


def total(extents: Iterable[Extent]) -> int:
    return sum(e.length for e in extents)


def minimum_size(kind: LayoutKind, system_size: int) -> int:
    """The smallest disk that holds a System of ``system_size`` and the smallest Storage."""
    system = -(-system_size // ALIGN) * ALIGN
    if kind is LayoutKind.LIBREELEC:
        return LIBREELEC_START + system + MIN_STORAGE + LIBREELEC_TAIL
    return ALIGN + system + MIN_STORAGE


def check_room(name: LunName, *, capacity: int, block_size: int, kind: LayoutKind, system_size: int) -> None:
    """UsageError when the layout is not written for the LUN's block size, or the LUN is too small.

    The seed layout boots from BIOS only, whose boot code reads 512-byte
    sectors: a LUN of 4096-byte blocks is refused for it.
    """
    check_sector_size(kind, block_size, str(name))
    need = minimum_size(kind, system_size)
    if capacity < need:
        raise UsageError(
            f"{name} holds {format_size(capacity)}, too small for a System of "
            f"{format_size(system_size)} and a Storage of at least {format_size(MIN_STORAGE)} "
            f"({format_size(need)} in all); nothing was written",
            fix="give a smaller --system-size, or make the LUN larger",
        )


def check_blank(name: LunName, found: str | None, *, wipe: bool) -> None:
    """UsageError when the LUN holds something (``found``, in words) and ``wipe`` is not given."""
    if found is not None and not wipe:
        raise UsageError(
            f"{name} already holds {found}; nothing was written",
            fix="pass --wipe to overwrite it; everything on it is lost",
        )
