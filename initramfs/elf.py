"""Shared-library closure of ELF programs: DT_NEEDED, PT_INTERP and RUNPATH read directly.

:func:`dynamic_info` is pure (bytes in).  :func:`closure` walks the needed
libraries through the host's library directories the way ld.so would for a
program without ``ld.so.cache`` and returns host paths to copy.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import EnvironmentProblem

PT_INTERP = 3
PT_DYNAMIC = 2
PT_LOAD = 1
DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_RPATH = 15
DT_RUNPATH = 29

# The directories Debian's ld.so searches by default on amd64 (multiarch first).
LIBRARY_DIRS: tuple[str, ...] = (
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
)


@dataclass(frozen=True)
class DynamicInfo:
    interpreter: str | None
    needed: tuple[str, ...]
    runpath: tuple[str, ...]


EM_386 = 3
EM_X86_64 = 62


def is_elf(blob: bytes) -> bool:
    return blob[:4] == b"\x7fELF"


def machine(blob: bytes) -> int | None:
    """``e_machine`` of a little-endian ELF header (the first 20 bytes suffice); None for other data."""
    if not is_elf(blob) or len(blob) < 20 or blob[5] != 1:
        return None
    value: int = struct.unpack_from("<H", blob, 18)[0]
    return value


def dynamic_info(blob: bytes) -> DynamicInfo:
    """The interpreter, needed sonames and run path of a 64-bit little-endian ELF file."""
    if not is_elf(blob) or blob[4] != 2 or blob[5] != 1:
        return DynamicInfo(None, (), ())
    (e_phoff,) = struct.unpack_from("<Q", blob, 0x20)
    e_phentsize, e_phnum = struct.unpack_from("<HH", blob, 0x36)
    interp: str | None = None
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        p_type, _flags, p_offset, p_vaddr, _paddr, p_filesz = struct.unpack_from("<IIQQQQ", blob, off)
        if p_type == PT_INTERP:
            interp = blob[p_offset : p_offset + p_filesz].split(b"\0", 1)[0].decode()
        elif p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return DynamicInfo(interp, (), ())

    def file_offset(vaddr: int) -> int:
        for start, offset, size in loads:
            if start <= vaddr < start + size:
                return offset + vaddr - start
        return vaddr

    entries: list[tuple[int, int]] = []
    for pos in range(dynamic[0], dynamic[0] + dynamic[1], 16):
        tag, value = struct.unpack_from("<qQ", blob, pos)
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab = next((file_offset(v) for t, v in entries if t == DT_STRTAB), None)
    if strtab is None:
        return DynamicInfo(interp, (), ())

    def string(offset: int) -> str:
        start = strtab + offset
        return blob[start : blob.index(b"\0", start)].decode()

    needed = tuple(string(v) for t, v in entries if t == DT_NEEDED)
    runpath: list[str] = []
    for tag, value in entries:
        if tag in (DT_RUNPATH, DT_RPATH):
            runpath.extend(p for p in string(value).split(":") if p)
    return DynamicInfo(interp, needed, tuple(runpath))


@dataclass(frozen=True)
class Library:
    soname: str
    host_path: Path  # the file found on the host (symlinks resolved)
    search_dir: str  # the directory it was found in, e.g. /lib/x86_64-linux-gnu


def _find(soname: str, runpath: Iterable[str], origin: Path) -> tuple[Path, str] | None:
    dirs = [p.replace("$ORIGIN", str(origin)) for p in runpath] + list(LIBRARY_DIRS)
    for directory in dirs:
        candidate = Path(directory) / soname
        if candidate.exists():
            return candidate.resolve(), directory
    return None


def closure(programs: Iterable[Path]) -> tuple[str | None, list[Library]]:
    """(interpreter path, libraries) needed by ``programs``, sorted by soname."""
    found: dict[str, Library] = {}
    interpreter: str | None = None
    queue = [Path(p) for p in programs]
    seen: set[Path] = set()
    while queue:
        path = queue.pop()
        real = path.resolve()
        if real in seen:
            continue
        seen.add(real)
        info = dynamic_info(real.read_bytes())
        if info.interpreter and interpreter is None:
            interpreter = info.interpreter
        for soname in info.needed:
            if soname in found:
                continue
            hit = _find(soname, info.runpath, real.parent)
            if hit is None:
                raise EnvironmentProblem(
                    f"{path} needs {soname}, which is not installed",
                    fix="install the package that provides it",
                )
            found[soname] = Library(soname, hit[0], hit[1])
            queue.append(hit[0])
    return interpreter, [found[k] for k in sorted(found)]
