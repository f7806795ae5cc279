"""Readers (``ReadAt`` functions) over files, block devices and windows of them.

The probes, the ext4 reader and the doctor read disks through a
``ReadAt = Callable[[int, int], bytes]``; these are the ways to make one.
"""

from __future__ import annotations

import os

from iscsiboot.disk.probe import ReadAt


def file_reader(path: str | os.PathLike[str], offset: int = 0, limit: int | None = None) -> ReadAt:
    """A ReadAt over a file or block device (opened read-only for each read).

    With ``offset``/``limit`` it reads the window [offset, offset+limit) only.
    """

    def read(pos: int, length: int) -> bytes:
        if limit is not None:
            length = max(0, min(length, limit - pos))
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return os.pread(fd, length, offset + pos)
        finally:
            os.close(fd)

    return read


def window(read: ReadAt, start: int, size: int) -> ReadAt:
    """The reader of ``size`` bytes from ``start`` (one partition)."""

    def inner(offset: int, length: int) -> bytes:
        if offset >= size or offset < 0:
            return b""
        return read(start + offset, min(length, size - offset))

    return inner
