"""Partition tables and superblocks: probe.py against sfdisk and blkid on real images."""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid  # the reference for uuid_text: the probe itself does without it
import zlib
from pathlib import Path

import pytest
from disk_support import blkid, sh, sparse, tool
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsiboot.disk.probe import (
    FsInfo,
    ProbeError,
    _guid,
    probe_filesystem,
    read_partition_table,
    reader_of,
    uuid_text,
)
from iscsiboot.disk.readers import file_reader
from iscsiboot.errors import ParseError

MiB = 1 << 20


def _expect(info: dict[str, str]) -> FsInfo:
    return FsInfo(info["TYPE"], info.get("LABEL"), info.get("UUID"))


# ------------------------------------------------------------------ file systems


@pytest.mark.parametrize(
    ("fstype", "options"),
    [
        ("ext2", []),
        ("ext3", []),
        ("ext4", []),
        ("ext4", ["-O", "^extent,^64bit"]),
        ("ext4", ["-O", "^has_journal"]),
    ],
)
@pytest.mark.parametrize("label", ["System", None])
def test_ext_matches_blkid(tmp_path: Path, fstype: str, options: list[str], label: str | None) -> None:
    image = sparse(tmp_path / "fs.img", 16 * MiB)
    argv = [tool("mke2fs"), "-q", "-F", "-t", fstype, *options]
    if label:
        argv += ["-L", label]
    sh(*argv, image)
    found = probe_filesystem(file_reader(image))
    assert found == _expect(blkid(image))
    assert found is not None and found.label == label and found.fs == fstype


@pytest.mark.parametrize("bits", ["12", "16", "32"])
@pytest.mark.parametrize("label", ["EFI", None])
def test_vfat_matches_blkid(tmp_path: Path, bits: str, label: str | None) -> None:
    image = sparse(tmp_path / "fat.img", 40 * MiB)
    argv = [tool("mkfs.vfat"), "-F", bits, "-i", "1a2b3c4d"]
    if label:
        argv += ["-n", label]
    sh(*argv, image)
    found = probe_filesystem(file_reader(image))
    assert found == _expect(blkid(image))
    assert found is not None and found.uuid == "1A2B-3C4D"


def test_vfat_root_dir_label_wins(tmp_path: Path) -> None:
    """blkid prefers the volume label in the root directory to the boot sector copy."""
    image = sparse(tmp_path / "fat.img", 40 * MiB)
    sh(tool("mkfs.vfat"), "-F", "16", "-n", "OLD", image)
    sh(tool("fatlabel"), image, "NEWER")
    found = probe_filesystem(file_reader(image))
    assert found == _expect(blkid(image))
    assert found is not None and found.label == "NEWER"


def test_btrfs_matches_blkid(tmp_path: Path) -> None:
    image = sparse(tmp_path / "btrfs.img", 128 * MiB)
    sh(tool("mkfs.btrfs"), "-q", "-L", "Storage", image)
    found = probe_filesystem(file_reader(image))
    assert found == _expect(blkid(image))
    assert found is not None and found.label == "Storage"


def test_xfs_matches_blkid(tmp_path: Path) -> None:
    image = sparse(tmp_path / "xfs.img", 320 * MiB)
    sh(tool("mkfs.xfs"), "-q", "-L", "Storage", image)
    found = probe_filesystem(file_reader(image))
    assert found == _expect(blkid(image))
    assert found is not None and found.label == "Storage"


def test_squashfs_matches_blkid(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "file").write_text("x")
    image = tmp_path / "SYSTEM"
    sh(tool("mksquashfs"), tree, image, "-quiet", "-noappend", "-no-progress")
    assert probe_filesystem(file_reader(image)) == FsInfo("squashfs", None, None)
    assert blkid(image)["TYPE"] == "squashfs"


def test_nothing_found() -> None:
    assert probe_filesystem(reader_of(b"")) is None
    assert probe_filesystem(reader_of(bytes(1 << 17))) is None


# -------------------------------------------------------------- partition tables


def _sfdisk(image: Path) -> dict[str, object]:
    table: dict[str, object] = json.loads(sh(tool("sfdisk"), "--json", image))["partitiontable"]
    return table


def _compare(image: Path, size: int) -> None:
    expected = _sfdisk(image)
    table = read_partition_table(file_reader(image), size=size)
    assert table is not None
    assert table.scheme == {"dos": "mbr", "gpt": "gpt"}[str(expected["label"])]
    sector = int(str(expected["sectorsize"]))
    parts = expected["partitions"]
    assert isinstance(parts, list)
    got = [
        (p.number, p.start // sector, p.size // sector, p.type.upper(), p.bootable) for p in table.partitions
    ]
    want = [
        (
            int(str(p["node"]).rsplit("img", 1)[1]),
            p["start"],
            p["size"],
            str(p["type"]).upper(),
            bool(p.get("bootable", False)) or "LegacyBIOSBootable" in str(p.get("attrs", "")),
        )
        for p in parts
    ]
    assert got == want
    if table.scheme == "mbr":
        assert f"0x{table.disk_id}" == expected["id"]
    else:
        assert table.disk_id.upper() == str(expected["id"]).upper()
        names = [p.get("name") for p in parts]
        assert [p.name or None for p in table.partitions] == names
    assert blkid(image)["PTUUID"] == table.disk_id


def test_mbr_with_logical_partitions(tmp_path: Path) -> None:
    image = sparse(tmp_path / "disk.img", 64 * MiB)
    script = "label: dos\nlabel-id: 0x12345678\n,10M,83,*\n,10M,ef\n,,5\n,5M,83\n,5M,82\n,,83\n"
    sh(tool("sfdisk"), "-q", image, input_text=script)
    _compare(image, 64 * MiB)
    table = read_partition_table(file_reader(image), size=64 * MiB)
    assert table is not None and [p.number for p in table.partitions] == [1, 2, 3, 5, 6, 7]


def test_gpt_with_names(tmp_path: Path) -> None:
    image = sparse(tmp_path / "disk.img", 64 * MiB)
    script = (
        "label: gpt\n"
        "size=10M, type=L, name=System, attrs=LegacyBIOSBootable\n"
        "size=10M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=EFI\n"
        "type=L\n"
    )
    sh(tool("sfdisk"), "-q", image, input_text=script)
    _compare(image, 64 * MiB)


def test_gpt_falls_back_to_backup_header(tmp_path: Path) -> None:
    image = sparse(tmp_path / "disk.img", 16 * MiB)
    sh(tool("sfdisk"), "-q", image, input_text="label: gpt\nsize=4M, type=L, name=one\n")
    good = read_partition_table(file_reader(image), size=16 * MiB)
    with image.open("r+b") as handle:  # break the primary header's CRC
        handle.seek(512 + 24)
        handle.write(b"\x99")
    assert read_partition_table(file_reader(image), size=16 * MiB) == good
    with image.open("r+b") as handle:  # and the backup's
        handle.seek(16 * MiB - 512 + 24)
        handle.write(b"\x99")
    with pytest.raises(ProbeError, match="no valid GPT header"):
        read_partition_table(file_reader(image), size=16 * MiB)


def test_gpt_entries_crc_checked(tmp_path: Path) -> None:
    data = bytearray(1 * MiB)
    # a protective MBR
    data[446 + 4] = 0xEE
    data[446 + 8 : 446 + 12] = (1).to_bytes(4, "little")
    data[446 + 12 : 446 + 16] = (2047).to_bytes(4, "little")
    data[510:512] = b"\x55\xaa"
    header = bytearray(92)
    header[0:8] = b"EFI PART"
    header[12:16] = (92).to_bytes(4, "little")
    header[72:80] = (2).to_bytes(8, "little")
    header[80:84] = (4).to_bytes(4, "little")
    header[84:88] = (128).to_bytes(4, "little")
    header[88:92] = (12345).to_bytes(4, "little")  # wrong entries CRC
    header[16:20] = zlib.crc32(header).to_bytes(4, "little")
    data[512 : 512 + 92] = header
    with pytest.raises(ProbeError, match="entries CRC"):
        read_partition_table(reader_of(bytes(data)), size=len(data))


def test_no_table() -> None:
    assert read_partition_table(reader_of(bytes(4096)), size=4096) is None
    assert read_partition_table(reader_of(b""), size=0) is None


def test_whole_disk_vfat_is_not_a_table(tmp_path: Path) -> None:
    image = sparse(tmp_path / "fat.img", 40 * MiB)
    sh(tool("mkfs.vfat"), "-F", "16", image)
    assert read_partition_table(file_reader(image), size=40 * MiB) is None


def test_partition_then_filesystem(tmp_path: Path) -> None:
    """The boot agent's path: find a partition, then read its superblock."""
    image = sparse(tmp_path / "disk.img", 32 * MiB)
    sh(tool("sfdisk"), "-q", image, input_text="label: dos\n,8M,83,*\n,,83\n")
    table = read_partition_table(file_reader(image), size=32 * MiB)
    assert table is not None
    part = table.partitions[1]
    window = tmp_path / "p2.img"
    sparse(window, part.size)
    sh(tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", "Storage", window)
    with image.open("r+b") as out:
        out.seek(part.start)
        out.write(window.read_bytes())
    found = probe_filesystem(file_reader(image, part.start, part.size))
    assert found is not None and found.label == "Storage"
    assert found == _expect(blkid(image, offset=part.start))


# ------------------------------------------------------------------------ fuzz

_SEEDS: dict[str, bytes] = {}


def _seed(kind: str) -> bytes:
    """A small valid image of ``kind`` (made once), as the base for mutations."""
    if kind not in _SEEDS:
        with tempfile.TemporaryDirectory() as tmp:
            image = Path(tmp) / "seed.img"
            if kind == "mbr":
                sparse(image, 4 * MiB)
                sh(tool("sfdisk"), "-q", image, input_text="label: dos\n,1M,83,*\n,,5\n,512K,83\n,,83\n")
            elif kind == "gpt":
                sparse(image, 4 * MiB)
                sh(tool("sfdisk"), "-q", image, input_text="label: gpt\nsize=1M, name=a\ntype=L\n")
            elif kind == "ext4":
                sparse(image, 4 * MiB)
                sh(tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", "x", image)
            else:
                sparse(image, 4 * MiB)
                sparse(image, 40 * MiB if kind == "fat32" else 4 * MiB)
                sh(tool("mkfs.vfat"), "-F", "32" if kind == "fat32" else "12", "-n", "L", image)
            _SEEDS[kind] = image.read_bytes()
    return _SEEDS[kind]


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(min_size=16, max_size=16))
def test_uuid_text_is_the_uuid_modules_format(raw: bytes) -> None:
    assert uuid_text(raw) == str(uuid.UUID(bytes=raw))
    assert _guid(raw) == str(uuid.UUID(bytes_le=raw))


@given(data=st.binary(max_size=8192), size=st.integers(min_value=0, max_value=1 << 40))
def test_fuzz_random_bytes(data: bytes, size: int) -> None:
    for sector in (512, 4096):
        with contextlib.suppress(ParseError):
            read_partition_table(reader_of(data), size=size, sector_size=sector)
    probe_filesystem(reader_of(data))


@settings(max_examples=400, deadline=None)
@given(
    kind=st.sampled_from(["mbr", "gpt", "ext4", "fat12", "fat32"]),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=72 * 1024), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=24,
    ),
    cut=st.integers(min_value=0, max_value=4 * MiB),
)
def test_fuzz_mutated_images(kind: str, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(_seed(kind))
    for offset, value in edits:
        data[offset] = value
    blob = bytes(data[: max(cut, 1024)])
    with contextlib.suppress(ParseError):
        read_partition_table(reader_of(blob), size=len(data))
    probe_filesystem(reader_of(blob))
