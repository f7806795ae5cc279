"""KERNEL and SYSTEM out of a LibreELEC release as people download it.

Two shapes are published:

- ``LibreELEC-<device>.<arch>-<version>.tar``: one folder holding
  ``target/KERNEL``, ``target/SYSTEM`` and ``target/KERNEL.md5``,
  ``target/SYSTEM.md5`` (``md5sum`` lines: the digest, two spaces, a name).
  Both files are copied out of the archive while their MD5 is computed; both
  ``.md5`` files must be there and match.
- ``LibreELEC-<device>.<arch>-<version>.img.gz``: a whole disk image (the
  installer's layout, a FAT System first).  It is unpacked sparse, its first
  partition read with the project's FAT reader (no mount, no loop device),
  and KERNEL and SYSTEM copied out; a ``KERNEL.md5``/``SYSTEM.md5`` beside
  them on System is checked, and so is a ``FILE.md5`` beside the download.

A digest that does not match, a missing member or a file that is neither
shape is a :class:`~iscsiboot.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from iscsiboot.disk.fat import FatError, open_filesystem
from iscsiboot.disk.probe import ProbeError, read_partition_table
from iscsiboot.disk.readers import file_reader, window
from iscsiboot.errors import UsageError

NAMES = ("KERNEL", "SYSTEM")
COPY_CHUNK = 1 << 20
MD5_LIMIT = 4096
FILE_LIMIT = 4 << 30  # larger than any KERNEL or SYSTEM
_MD5 = re.compile(r"^\s*([0-9a-fA-F]{32})\b")


@dataclass(frozen=True)
class Release:
    """The release's KERNEL and SYSTEM, copied into a working folder, and their checked MD5s."""

    source: Path
    kernel: Path
    system: Path
    md5: tuple[tuple[str, str], ...]  # (name, digest) of each file checked


def parse_md5(text: str, where: str) -> str:
    """The digest of an ``md5sum`` line (``<32 hex digits>  name``)."""
    match = _MD5.match(text)
    if match is None:
        raise UsageError("is not an md5sum line", where=where, fix="download the release again")
    return match.group(1).lower()


def check_md5(name: str, got: str, want: str, source: Path) -> None:
    if got != want:
        raise UsageError(
            f"{name} in {source} has MD5 {got}, its .md5 file says {want}",
            fix="the download is damaged or not the release: download it again",
        )


def open_release(path: Path, workdir: Path) -> Release:
    """KERNEL and SYSTEM of the release at ``path``, copied into ``workdir`` and checked."""
    if not path.is_file():
        raise UsageError(f"release {path} does not exist or is not a regular file")
    if path.name.endswith(".gz") and not tarfile.is_tarfile(path):
        return _from_image(path, workdir)
    if tarfile.is_tarfile(path):
        return _from_tar(path, workdir)
    raise UsageError(
        f"{path} is neither a LibreELEC release .tar nor an .img.gz", fix="give the file as downloaded"
    )


def _copy(source: IO[bytes], dest: Path) -> str:
    """Copy ``source`` to ``dest``; its MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(dest, "wb") as out:
        while chunk := source.read(COPY_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _from_tar(path: Path, workdir: Path) -> Release:
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {_member_name(m.name): m for m in archive.getmembers() if m.isfile()}
            found: dict[str, Path] = {}
            checked: list[tuple[str, str]] = []
            for name in NAMES:
                member, sums = members.get(f"target/{name}"), members.get(f"target/{name}.md5")
                if member is None or sums is None:
                    missing = f"target/{name}" if member is None else f"target/{name}.md5"
                    raise UsageError(
                        f"{path} holds no {missing}", fix="give a LibreELEC release .tar as downloaded"
                    )
                handle = archive.extractfile(sums)
                assert handle is not None
                want = parse_md5(handle.read(MD5_LIMIT).decode("ascii", "replace"), f"{path}: {sums.name}")
                data = archive.extractfile(member)
                assert data is not None
                dest = workdir / name
                check_md5(name, _copy(data, dest), want, path)
                found[name] = dest
                checked.append((name, want))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UsageError(f"cannot read the release {path}: {exc}", fix="download it again") from None
    return Release(path, found["KERNEL"], found["SYSTEM"], tuple(checked))


def _member_name(name: str) -> str:
    """``LibreELEC-x/target/KERNEL`` -> ``target/KERNEL`` (the release's own folder dropped)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    return "/".join(parts[-2:])


def _unpack(path: Path, dest: Path) -> int:
    """Unpack the gzip ``path`` into ``dest``, leaving holes for blocks of zeroes; its size."""
    zero = bytes(COPY_CHUNK)
    size = 0
    with gzip.open(path, "rb") as source, open(dest, "wb") as out:
        while chunk := source.read(COPY_CHUNK):
            if chunk == zero[: len(chunk)]:
                out.seek(len(chunk), 1)
            else:
                out.write(chunk)
            size += len(chunk)
        out.truncate(size)
    return size


def _from_image(path: Path, workdir: Path) -> Release:
    outer: str | None = None
    beside = path.with_name(path.name + ".md5")
    if beside.is_file():
        outer = parse_md5(beside.read_text(encoding="ascii", errors="replace")[:MD5_LIMIT], str(beside))
        with open(path, "rb") as handle:
            check_md5(path.name, hashlib.file_digest(handle, "md5").hexdigest(), outer, path)
    disk = workdir / "release.img"
    try:
        size = _unpack(path, disk)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise UsageError(f"cannot unpack {path}: {exc}", fix="download it again") from None
    read = file_reader(disk)
    try:
        table = read_partition_table(read, size=size)
    except ProbeError as exc:
        raise UsageError(f"the disk image in {path} has a damaged partition table: {exc.what}") from None
    if table is None or not table.partitions:
        raise UsageError(f"the disk image in {path} has no partition table", fix="give a LibreELEC .img.gz")
    first = table.partitions[0]
    found: dict[str, Path] = {}
    checked: list[tuple[str, str]] = [(path.name, outer)] if outer else []
    try:
        fs = open_filesystem(window(read, first.start, first.size), "vfat")
        for name in NAMES:
            if not fs.exists(f"/{name}"):
                raise UsageError(f"System in {path} holds no {name}", fix="give a LibreELEC .img.gz")
            data = fs.read_file(f"/{name}", limit=FILE_LIMIT)
            dest = workdir / name
            dest.write_bytes(data)
            if fs.exists(f"/{name}.md5"):
                want = parse_md5(fs.read_file(f"/{name}.md5", limit=MD5_LIMIT).decode("ascii", "replace"),
                                 f"{path}: System/{name}.md5")  # fmt: skip
                check_md5(name, hashlib.md5(data, usedforsecurity=False).hexdigest(), want, path)
                checked.append((name, want))
            found[name] = dest
    except FatError as exc:
        raise UsageError(
            f"System in {path} does not read as FAT: {exc}", fix="give a LibreELEC .img.gz"
        ) from None
    disk.unlink()
    return Release(path, found["KERNEL"], found["SYSTEM"], tuple(checked))
