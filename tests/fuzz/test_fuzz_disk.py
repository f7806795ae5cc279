"""What a disk holds, read as the doctor and the install read it: partition tables (MBR, GPT),
file system superblocks, the ext4 reader and extlinux.conf, from arbitrary and mutated images.
Each ends in a value or the project's error (ProbeError, Ext4Error: ParseErrors)."""

from __future__ import annotations

import os
import struct
import subprocess
import tempfile
import uuid
import zlib
from pathlib import Path

from disk_support import sparse, tool
from fuzz_support import budget, clean, text_mutants
from hypothesis import given
from hypothesis import strategies as st
from iscsiboot.disk.ext4 import Ext4
from iscsiboot.disk.fat import Fat
from iscsiboot.disk.inspect import inspect_disk, parse_extlinux
from iscsiboot.disk.probe import probe_filesystem, read_partition_table, reader_of

KiB, MiB = 1 << 10, 1 << 20
SECTOR = 512
FS_UUID = "4b143ea1-24bd-40fc-87c7-4ff27e9d67a0"
LINUX_FS = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
EXTLINUX = Path(__file__).resolve().parents[1] / "golden" / "cmdline" / "extlinux-explicit-serial.conf"


def mbr(parts: list[tuple[bool, int, int, int]], boot_code: bytes = b"") -> bytes:
    """A master boot record: (bootable, type, first sector, sectors) per partition."""
    sector = bytearray(SECTOR)
    sector[: len(boot_code)] = boot_code
    for i, (bootable, kind, start, count) in enumerate(parts):
        chs = b"\xfe\xff\xff"
        struct.pack_into(
            "<B3sB3sII", sector, 446 + 16 * i, 0x80 if bootable else 0, chs, kind, chs, start, count
        )
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def gpt(size: int, parts: list[tuple[int, int, str]], *, count: int = 8) -> bytes:
    """The first 34 sectors of a GPT disk: protective MBR, header, entries (first, last LBA, name)."""
    entries = bytearray(count * 128)
    for i, (first, last, name) in enumerate(parts):
        guid = uuid.UUID(int=0x1234_0000 + i).bytes_le
        struct.pack_into("<16s16sQQQ", entries, 128 * i, LINUX_FS.bytes_le, guid, first, last, 0)
        encoded = name.encode("utf-16-le")[:72]
        entries[128 * i + 56 : 128 * i + 56 + len(encoded)] = encoded
    return _gpt_with_crcs(mbr([(False, 0xEE, 1, size // SECTOR - 1)]), size, bytes(entries), count)


def _gpt_with_crcs(protective: bytes, size: int, entries: bytes, count: int) -> bytes:
    last = size // SECTOR - 1
    header = bytearray(SECTOR)
    struct.pack_into("<8sIII", header, 0, b"EFI PART", 0x00010000, 92, 0)
    struct.pack_into("<QQQQ", header, 24, 1, last, 34, last - 33)
    header[56:72] = uuid.UUID(int=0xD15C).bytes_le
    struct.pack_into("<QIII", header, 72, 2, count, 128, zlib.crc32(entries))
    struct.pack_into("<I", header, 16, zlib.crc32(header[:92]))
    return protective + bytes(header) + entries.ljust(32 * SECTOR, b"\0")


def fix_gpt_crcs(data: bytearray) -> None:
    """Make the CRCs of a (mutated) primary GPT fit again, so the reader looks past them."""
    header = data[SECTOR : 2 * SECTOR]
    if len(header) < 92:
        return
    size = int.from_bytes(header[12:16], "little")
    count, entry_size = int.from_bytes(header[80:84], "little"), int.from_bytes(header[84:88], "little")
    start = int.from_bytes(header[72:80], "little") * SECTOR
    if count * entry_size <= 64 * KiB and start + count * entry_size <= len(data):
        struct.pack_into("<I", data, SECTOR + 88, zlib.crc32(data[start : start + count * entry_size]))
    if 92 <= size <= SECTOR:
        struct.pack_into("<I", data, SECTOR + 16, 0)
        struct.pack_into("<I", data, SECTOR + 16, zlib.crc32(data[SECTOR : SECTOR + size]))


_IMAGES: dict[str, bytes] = {}


def ext4_image() -> bytes:
    """A 2 MiB ext4 System file system with what a boot disk holds (mke2fs -d, built once)."""
    if "ext4" not in _IMAGES:
        with tempfile.TemporaryDirectory(prefix="disk-fuzz-") as folder:
            tree = Path(folder) / "tree"
            (tree / "boot" / "extlinux").mkdir(parents=True)
            (tree / "KERNEL").write_bytes(bytes(range(256)) * 40)
            (tree / "SYSTEM").write_bytes(b"hsqs" + bytes(30000))
            (tree / "ldlinux.sys").write_bytes(b"\x01" * 900)
            (tree / "extlinux.conf").write_bytes(EXTLINUX.read_bytes())
            (tree / "boot" / "extlinux" / "extlinux.conf").symlink_to("../../extlinux.conf")
            for path in [*tree.rglob("*"), tree]:
                os.utime(path, (1700000000, 1700000000), follow_symlinks=False)
            image = sparse(Path(folder) / "fs.img", 2 * MiB)
            # nearly the same bytes on every run (only the inodes' ctimes and checksums differ)
            argv = [tool("mke2fs"), "-q", "-F", "-t", "ext4", "-b", "1024", "-N", "32", "-L", "System"]
            argv += ["-U", FS_UUID, "-E", f"hash_seed={FS_UUID}", "-d", str(tree), str(image)]
            env = {**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"}
            subprocess.run(argv, check=True, capture_output=True, env=env)
            _IMAGES["ext4"] = image.read_bytes()
    return _IMAGES["ext4"]


def disk_images() -> dict[str, bytes]:
    """Whole disks: MBR and GPT, System at 1 MiB, a Storage partition without a file system after it."""
    if "mbr" not in _IMAGES:
        fs = ext4_image()
        size = 4 * MiB
        start, count = MiB // SECTOR, len(fs) // SECTOR
        table = mbr(
            [(True, 0x83, start, count), (False, 0x83, start + count, size // SECTOR - start - count)]
        )
        body = bytearray(size)
        body[start * SECTOR : start * SECTOR + len(fs)] = fs
        _IMAGES["mbr"] = table + bytes(body[SECTOR:])
        head = gpt(
            size, [(start, start + count - 1, "System"), (start + count, size // SECTOR - 34, "Storage")]
        )
        _IMAGES["gpt"] = head + bytes(body[len(head) :])
    return {k: _IMAGES[k] for k in ("mbr", "gpt")}


# Where the metadata lies: the tables, and the file system's superblock, descriptors, inodes, directories.
_REGIONS = st.one_of(
    st.integers(0, 34 * SECTOR - 1), st.integers(MiB, MiB + 96 * KiB), st.integers(0, 4 * MiB - 1)
)


@st.composite
def _edited(draw: st.DrawFn, data: bytes, regions: st.SearchStrategy[int]) -> bytearray:
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 24))):
        at = draw(regions)
        if at < len(out):
            value = draw(st.integers(0, 255) | st.sampled_from((0, 0xFF, 0x80, 0x7F, 1)))
            out[at] = value
    return out


def _read_all(fs: Ext4) -> None:
    for path in fs.walk("/"):
        info = fs.stat(path, follow=False)
        if info.kind == "file":
            fs.read_file(path, limit=64 * KiB)
        elif info.kind == "symlink":
            fs.readlink(path)
            fs.exists(path)
        elif info.kind == "dir":
            fs.listdir(path)


@budget(200)
@given(st.binary(max_size=8 * KiB), st.integers(0, 1 << 42), st.sampled_from((512, 4096)))
def test_arbitrary_bytes(data: bytes, size: int, sector: int) -> None:
    read = reader_of(data)
    clean(lambda: read_partition_table(read, size=size, sector_size=sector))
    clean(lambda: probe_filesystem(read))
    clean(lambda: _read_all(Ext4(read)))
    clean(lambda: inspect_disk(read, size))


@budget(150, deadline_ms=4000)
@given(st.data(), st.sampled_from(("mbr", "gpt")), st.booleans(), st.integers(0, 5 * MiB))
def test_mutated_disks(data: st.DataObject, kind: str, fix_crc: bool, size: int) -> None:
    """A boot disk with its tables or System's metadata changed: the doctor's whole inspection."""
    image = data.draw(_edited(disk_images()[kind], _REGIONS))
    if kind == "gpt" and fix_crc:
        fix_gpt_crcs(image)
    read = reader_of(bytes(image))
    clean(lambda: read_partition_table(read, size=size or len(image)))
    clean(lambda: inspect_disk(read, size or len(image), boot_code=bytes(440)))


@budget(150, deadline_ms=4000)
@given(st.data())
def test_mutated_ext4(data: st.DataObject) -> None:
    fs_bytes = bytes(data.draw(_edited(ext4_image(), st.integers(0, 96 * KiB) | st.integers(0, 2 * MiB - 1))))
    read = reader_of(fs_bytes)
    clean(lambda: probe_filesystem(read))
    clean(lambda: _read_all(Ext4(read)))


@budget(150)
@given(st.text(max_size=400) | text_mutants(EXTLINUX.read_text(), edits=10))
def test_extlinux(text: str) -> None:
    result = clean(lambda: parse_extlinux(text))
    if not isinstance(result, Exception):
        clean(result.entry)


def fat_image() -> bytes:
    """A 4 MiB FAT16 System as LibreELEC's layout holds it (mkfs.vfat and mtools, built once)."""
    if "fat" not in _IMAGES:
        with tempfile.TemporaryDirectory(prefix="disk-fuzz-") as folder:
            image = sparse(Path(folder) / "fat.img", 4 * MiB)
            mkfs = [tool("mkfs.vfat"), "-F", "16", "-s", "1", "-n", "System", "-i", "12345678", str(image)]
            subprocess.run(mkfs, check=True, capture_output=True)
            env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
            files = {"KERNEL": bytes(range(256)) * 40, "syslinux.cfg": EXTLINUX.read_bytes(),
                     "a long file name.bin": b"\x01" * 900}  # fmt: skip
            subprocess.run([tool("mmd"), "-i", str(image), "::/EFI", "::/EFI/BOOT"], check=True, env=env)
            for name, content in files.items():
                (Path(folder) / "src").write_bytes(content)
                subprocess.run([tool("mcopy"), "-i", str(image), str(Path(folder) / "src"), f"::/{name}"],
                               check=True, env=env)  # fmt: skip
            _IMAGES["fat"] = image.read_bytes()
    return _IMAGES["fat"]


def _read_fat(fs: Fat) -> None:
    todo = ["/"]
    while todo and len(todo) < 64:
        folder = todo.pop()
        for entry in fs.listdir(folder):
            path = f"{folder.rstrip('/')}/{entry.name}"
            if entry.kind == "dir":
                todo.append(path)
            else:
                fs.read_file(path, limit=64 * KiB)


@budget(150, deadline_ms=4000)
@given(st.data())
def test_mutated_fat(data: st.DataObject) -> None:
    """A FAT System with its boot sector, tables or directories changed: the reader and the probe."""
    regions = st.integers(0, 512) | st.integers(0, 64 * KiB) | st.integers(0, 4 * MiB - 1)
    read = reader_of(bytes(data.draw(_edited(fat_image(), regions))))
    clean(lambda: probe_filesystem(read))
    clean(lambda: _read_fat(Fat(read)))
