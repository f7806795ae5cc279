"""The disk ``iscsiboot install`` is about to write: what it already holds, and whether it may be written.

A target is written only when it is new or holds nothing (an empty file, or
one made by ``truncate`` that has no data on disk), or when the user gives
``--wipe``; whatever it holds, recognised by the probe or not.  An input of
the installation (KERNEL, SYSTEM, the initrd) is never the target, whatever
path, hard link or symbolic link names it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
from pathlib import Path

from iscsiboot.disk.probe import ProbeError, ReadAt, probe_filesystem, read_partition_table
from iscsiboot.disk.readers import file_reader
from iscsiboot.errors import UsageError


def device_size(path: Path) -> int:
    """The size of a block device (or a file) in bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


BLKSSZGET = 0x1268  # ioctl: a block device's logical sector size


def logical_sector_size(path: Path) -> int:
    """The logical block size of a block device (what its partition table counts); 512 for a file."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if not stat.S_ISBLK(os.fstat(fd).st_mode):
            return 512
        value = fcntl.ioctl(fd, BLKSSZGET, struct.pack("i", 0))
        size: int = struct.unpack("i", value)[0]
        return size
    finally:
        os.close(fd)


def existing_data(read: ReadAt, size: int) -> str | None:
    """What the start of a disk already holds, in words, or None when it looks empty."""
    try:
        table = read_partition_table(read, size=size)
    except ProbeError as exc:
        return f"a damaged partition table ({exc.what})"
    if table is not None:
        return f"an {table.scheme.upper()} partition table with {len(table.partitions)} partition(s)"
    found = probe_filesystem(read)
    if found is not None:
        label = f" labelled {found.label!r}" if found.label else ""
        return f"a file system ({found.fs}){label}"
    if read(510, 2) == b"\x55\xaa":
        return "a boot sector"
    return None


def mounted_from(device: Path) -> list[str]:
    """The mounted sources that are ``device`` or one of its partitions."""
    real = str(device.resolve())
    out = []
    with open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            source = line.split(" ", 1)[0]
            if source == real or (source.startswith(real) and source[len(real) :].lstrip("p").isdigit()):
                out.append(source)
    return out


def refuse_overwrite(
    target: Path, *, is_image: bool, wipe: bool, inputs: list[tuple[str, Path]]
) -> os.stat_result | None:
    """UsageError when ``target`` is an input or holds data and ``wipe`` is not given; its stat."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return None
    for what, path in inputs:
        source = path.stat()
        if (source.st_dev, source.st_ino) == (st.st_dev, st.st_ino) or (
            not is_image and source.st_dev == st.st_rdev
        ):
            where = f"is {target} itself" if is_image else f"lies on {target}"
            raise UsageError(
                f"{what} file {path} {where}, which is about to be written",
                fix="an input cannot also be the output: copy it elsewhere first",
            )
    if wipe:
        return st
    size = st.st_size if is_image else device_size(target)
    found = existing_data(file_reader(target), size) if size else None
    if found is None and is_image and size and has_data(target):
        found = f"{size} bytes of data in no format iscsiboot recognises"
    fix = "pass --wipe to overwrite it; everything on it is lost"
    if found is not None:
        raise UsageError(f"{target} already holds {found}", fix=fix)
    if not is_image:
        raise UsageError(f"{target} may hold data that iscsiboot does not recognise", fix=fix)
    return st


def has_data(path: Path) -> bool:
    """Whether a file has any data on disk (a file made by ``truncate`` has none)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        return exc.errno != errno.ENXIO  # ENXIO: holes only; any other error: assume data
    finally:
        os.close(fd)
    return True
