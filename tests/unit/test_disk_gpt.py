"""The GPT install writes (a pure builder), in 512- and 4096-byte sectors, read by util-linux and the probe.

sfdisk reads an image file in 512-byte sectors, ``fdisk -b 4096`` in
4096-byte ones; the probe finds either by itself (a GPT's header lies at
LBA 1) and only the one asked for when told the disk's sector size.  The
libreelec layout built for 4096-byte sectors (no root: mtools and mkfs at
an offset) has a FAT of 4096-byte sectors, ext4 blocks of 4096 bytes and no
BIOS loader.
"""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path

import pytest
from disk_support import sh, sparse, tool
from iscsiboot.disk import esp, gpt, lunplan
from iscsiboot.disk.fat import Fat
from iscsiboot.disk.inspect import inspect_disk
from iscsiboot.disk.install import install
from iscsiboot.disk.layout import (
    ESP_TYPE,
    IMAGE_SECTOR_SIZE,
    LINUX_TYPE,
    LayoutKind,
    MiB,
    plan_layout,
)
from iscsiboot.disk.lunplan import LunName
from iscsiboot.disk.probe import ProbeError, le32, read_partition_table
from iscsiboot.disk.readers import file_reader, window
from iscsiboot.errors import UsageError

SIZE = 64 * MiB
NAME = LunName("192.0.2.1", 3260, "iqn.2026-11.org.example:disk", 1)


def entries(sector_size: int = 512) -> list[gpt.Entry]:
    layout = plan_layout(SIZE, 16 * MiB, kind=LayoutKind.LIBREELEC, sector_size=sector_size)
    return [
        gpt.Entry(p.start, p.size, p.type, p.name or p.label, gpt.LEGACY_BIOS_BOOTABLE if p.bootable else 0)
        for p in layout.partitions
    ]


def write(path: Path, table: gpt.Table, size: int = SIZE) -> Path:
    sparse(path, size)
    with path.open("r+b") as handle:
        for offset, data in table.pieces:
            handle.seek(offset)
            handle.write(data)
    return path


def test_at_512_sfdisk_reads_the_planned_table(tmp_path: Path) -> None:
    image = write(tmp_path / "disk.img", gpt.build(SIZE, 512, entries()))
    real = json.loads(sh(tool("sfdisk"), "-J", image))["partitiontable"]
    assert (real["label"], real["sectorsize"], real["firstlba"]) == ("gpt", 512, 34)
    assert real["lastlba"] == SIZE // 512 - 34
    assert [(p["start"], p["size"], p["type"], p["name"], p.get("attrs")) for p in real["partitions"]] == [
        (8192, 16 * MiB // 512, ESP_TYPE, "System", "LegacyBIOSBootable"),
        (40960, (SIZE - 20 * MiB - 512 * 1024) // 512, LINUX_TYPE, "Storage", None),
    ]
    assert "No errors detected" in sh(tool("sfdisk"), "--verify", image)


def test_at_4096_every_field_counts_4096_byte_sectors(tmp_path: Path) -> None:
    guid = uuid.UUID("5f051090-1ada-4e9d-982b-17974495c00d")
    image = write(tmp_path / "disk.img", gpt.build(SIZE, 4096, entries(4096), disk_guid=guid))
    data = image.read_bytes()
    assert data[4096:4104] == b"EFI PART" and data[512:520] != b"EFI PART"
    # header: this LBA, the backup's, first and last usable, the entries' LBA
    assert struct.unpack_from("<QQQQ", data, 4096 + 24) == (1, 16383, 6, 16383 - 5)
    assert struct.unpack_from("<Q", data, 4096 + 72) == (2,)
    assert data[16383 * 4096 : 16383 * 4096 + 8] == b"EFI PART"  # the backup header in the last sector
    # the protective MBR covers LBA 1 to the end in 4096-byte sectors
    assert data[446 + 4] == 0xEE and struct.unpack_from("<II", data, 446 + 8) == (1, 16383)
    listed = sh(tool("fdisk"), "-b", "4096", "-l", "-o", "Start,Sectors,Type-UUID,Name", image)
    assert "Disklabel type: gpt" in listed and guid.hex.upper()[:8] in listed.replace("-", "")
    rows = [line.split() for line in listed.splitlines()[-2:]]
    storage = str((SIZE - 20 * MiB - 512 * 1024) // 4096)  # to 512 KiB before the end, as at 512
    assert rows == [["1024", "4096", ESP_TYPE, "System"], ["5120", storage, LINUX_TYPE, "Storage"]]
    assert "corrupt" not in listed.lower()


def test_the_probe_finds_the_sector_size_or_takes_the_one_given(tmp_path: Path) -> None:
    image = write(tmp_path / "disk.img", gpt.build(SIZE, 4096, entries(4096)))
    read = file_reader(image)
    found = read_partition_table(read, size=SIZE)
    assert found is not None and found.sector_size == 4096
    assert [(p.start, p.size, p.name) for p in found.partitions] == [
        (4 * MiB, 16 * MiB, "System"),
        (20 * MiB, SIZE - 20 * MiB - 512 * 1024, "Storage"),
    ]
    assert read_partition_table(read, size=SIZE, sector_size=4096) == found
    with pytest.raises(ProbeError, match="no valid GPT header"):  # a kernel of 512-byte sectors finds none
        read_partition_table(read, size=SIZE, sector_size=512)
    at512 = write(tmp_path / "512.img", gpt.build(SIZE, 512, entries()))
    table = read_partition_table(file_reader(at512), size=SIZE)
    assert table is not None and table.sector_size == 512
    with pytest.raises(ProbeError):
        read_partition_table(file_reader(at512), size=SIZE, sector_size=4096)


def test_the_backup_header_stands_in_for_a_broken_primary(tmp_path: Path) -> None:
    image = write(tmp_path / "disk.img", gpt.build(SIZE, 4096, entries(4096)))
    with image.open("r+b") as handle:
        handle.seek(4096 + 20)
        handle.write(b"\xff")  # the primary header's CRC no longer matches
    table = read_partition_table(file_reader(image), size=SIZE, sector_size=4096)
    assert table is not None and [p.name for p in table.partitions] == ["System", "Storage"]


def test_a_huge_disk_caps_the_protective_partition() -> None:
    size = 40 << 40  # 40 TiB: more than 2^32 sectors of 4096 bytes
    table = gpt.build(size, 4096, [gpt.Entry(MiB, MiB, LINUX_TYPE, "x")])
    mbr = dict(table.pieces)[0]
    assert struct.unpack_from("<II", mbr, 446 + 8) == (1, 0xFFFFFFFF)
    assert len(mbr) == 4096 and mbr[510:512] == b"\x55\xaa"


@pytest.mark.parametrize(
    ("part", "message"),
    [
        (gpt.Entry(MiB + 512, MiB, LINUX_TYPE), "whole sectors"),
        (gpt.Entry(0, MiB, LINUX_TYPE), "outside"),
        (gpt.Entry(SIZE - MiB, MiB, LINUX_TYPE), "outside"),  # over the backup entries
        (gpt.Entry(MiB, MiB, LINUX_TYPE, "n" * 37), "36"),
    ],
)
def test_build_refuses(part: gpt.Entry, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gpt.build(SIZE, 4096, [part])
    with pytest.raises(ValueError, match="overlaps"):
        gpt.build(SIZE, 4096, [gpt.Entry(MiB, 2 * MiB, LINUX_TYPE), gpt.Entry(2 * MiB, MiB, LINUX_TYPE)])


def test_clusters_fit_fat16_at_4096() -> None:
    assert esp.sectors_per_cluster(16 * MiB, 4096) == 1  # 4096 clusters, above FAT12's 4084
    assert esp.sectors_per_cluster(255 * MiB, 4096) == 1
    assert esp.sectors_per_cluster(256 * MiB, 4096) == 2
    assert esp.sectors_per_cluster(1024 * MiB, 4096) == 8
    assert esp.sectors_per_cluster(2048 * MiB, 4096) == 16


def test_seed_is_refused_on_4096_byte_sectors() -> None:
    with pytest.raises(UsageError, match="seed layout") as refused:
        plan_layout(SIZE, 16 * MiB, kind=LayoutKind.SEED, sector_size=4096)
    assert refused.value.fix is not None and "--layout libreelec" in refused.value.fix
    with pytest.raises(UsageError, match=r"LUN 1 of .* has 4096-byte blocks, and the seed layout"):
        lunplan.check_room(NAME, capacity=SIZE, block_size=4096, kind=LayoutKind.SEED, system_size=16 * MiB)
    lunplan.check_room(NAME, capacity=SIZE, block_size=4096, kind=LayoutKind.LIBREELEC, system_size=16 * MiB)
    with pytest.raises(UsageError, match="below the minimum of 16M"):
        plan_layout(SIZE, 15 * MiB, kind=LayoutKind.LIBREELEC)


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    for name in ("mkfs.vfat", "mcopy", "syslinux", "mkfs.ext4"):
        tool(name)
    kernel, system = tmp_path / "KERNEL", tmp_path / "SYSTEM"
    kernel.write_bytes(b"MZ" + bytes(range(256)) * 300)
    system.write_bytes(b"hsqs" + bytes(range(256)) * 3000)
    return kernel, system


def test_install_builds_the_libreelec_layout_in_4096_byte_sectors(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    image = tmp_path / "lun.img"
    token = IMAGE_SECTOR_SIZE.set(4096)  # as install --portal builds the image of a LUN of 4096-byte blocks
    try:
        report = install(image=image, size=SIZE, kernel=files[0], system=files[1], system_size=16 * MiB,
                         layout=LayoutKind.LIBREELEC, append="quiet")  # fmt: skip
    finally:
        IMAGE_SECTOR_SIZE.reset(token)
    assert (report.scheme, report.sector_size, report.boot_code) == ("gpt", 4096, None)
    assert any("syslinux does not boot from it" in w for w in report.warnings)
    assert "GPT of 4096-byte sectors, no BIOS boot code" in report.lines()[0]
    assert "/ldlinux.sys" not in {f.path for f in report.files}
    assert not any(image.read_bytes()[:440])  # no boot code for a BIOS that cannot read these sectors
    read = file_reader(image)
    table = read_partition_table(read, size=SIZE, sector_size=4096)
    assert table is not None and not table.partitions[0].bootable
    system, storage = table.partitions
    fat = Fat(window(read, system.start, system.size))
    assert (fat.sector, fat.bits) == (4096, 16)
    assert le32(read(system.start, 512), 28) == 0  # mkfs.fat's hidden sectors, as at 512
    assert fat.read_file("/KERNEL") == files[0].read_bytes() and fat.exists("/EFI/BOOT/bootx64.efi")
    assert 1024 << le32(read(storage.start + 1024, 1024), 24) == 4096  # ext4 blocks of 4096 bytes
    view = inspect_disk(read, SIZE)
    assert view.ok, view.problems
    assert [p.what for p in view.problems if p.severity == "warning"] == [
        "the disk has 4096-byte sectors, which syslinux's BIOS loader cannot read"
    ]


def test_install_at_512_keeps_the_bios_loader(tmp_path: Path, files: tuple[Path, Path]) -> None:
    image = tmp_path / "disk.img"
    report = install(image=image, size=SIZE, kernel=files[0], system=files[1], system_size=16 * MiB,
                     layout=LayoutKind.LIBREELEC, append="quiet")  # fmt: skip
    assert (report.scheme, report.sector_size) == ("gpt", 512) and report.boot_code == str(esp.GPTMBR_BIN)
    assert "/ldlinux.sys" in {f.path for f in report.files} and not report.warnings
    assert image.read_bytes()[:440] == esp.boot_code()
    real = json.loads(sh(tool("sfdisk"), "-J", image))["partitiontable"]
    assert [p.get("attrs") for p in real["partitions"]] == ["LegacyBIOSBootable", None]
    view = inspect_disk(file_reader(image), SIZE)
    assert view.ok and not view.problems, view.problems
