"""The FAT reader against file systems that mkfs.vfat and mtools make, and the libreelec layout."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from disk_support import sh, sparse, tool
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsiboot.cli import main
from iscsiboot.disk.fat import Fat, FatError, FatNotFound, open_filesystem, parse_directory, short_checksum
from iscsiboot.disk.install import install_image
from iscsiboot.disk.layout import ESP_TYPE, LayoutKind, MiB, plan_layout
from iscsiboot.disk.probe import cp437, probe_filesystem, read_partition_table, reader_of, utf16le
from iscsiboot.disk.readers import file_reader, window
from iscsiboot.errors import UsageError


def fat_image(tmp_path: Path, bits: int, files: dict[str, bytes], *, size: int = 40 * MiB) -> Path:
    image = sparse(tmp_path / f"fat{bits}.img", size)
    sh(tool("mkfs.vfat"), "-F", str(bits), "-n", "System", image)
    for name, data in files.items():
        src = tmp_path / "src"
        src.write_bytes(data)
        parts = name.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:depth])
            if not Fat(file_reader(image)).exists(parent):
                sh(tool("mmd"), "-i", image, f"::{parent}")
        sh(tool("mcopy"), "-o", "-i", image, src, f"::{name}")
    return image


@pytest.mark.parametrize("bits", [12, 16, 32])
def test_reads_what_mtools_wrote(tmp_path: Path, bits: int) -> None:
    big = os.urandom(300_000)
    files = {
        "/KERNEL": big,
        "/syslinux.cfg": b"DEFAULT linux\n",
        "/EFI/BOOT/bootx64.efi": b"MZ" + bytes(5000),
        "/a rather long file name.txt": b"long",
        "/empty": b"",
    }
    size = {12: 4 * MiB, 16: 40 * MiB, 32: 64 * MiB}[bits]
    fs = Fat(file_reader(fat_image(tmp_path, bits, files, size=size)))
    assert fs.bits == bits
    assert fs.label == "System"
    for name, data in files.items():
        assert fs.read_file(name) == data
        assert fs.stat(name).size == len(data)
    names = {e.name for e in fs.listdir("/")}
    assert {"KERNEL", "syslinux.cfg", "EFI", "a rather long file name.txt", "empty"} <= names
    assert fs.exists("/efi/boot/BOOTX64.EFI")  # FAT compares names without case
    assert fs.stat("/EFI").kind == "dir"
    assert not fs.exists("/EFI/BOOT/grub.cfg")
    with pytest.raises(FatNotFound):
        fs.read_file("/nothing")
    with pytest.raises(FatError, match="limit"):
        fs.read_file("/KERNEL", limit=1000)


def test_open_filesystem_picks_the_reader(tmp_path: Path) -> None:
    image = fat_image(tmp_path, 16, {"/SYSTEM": b"squash"})
    assert open_filesystem(file_reader(image), "vfat").read_file("/SYSTEM") == b"squash"


def test_not_fat() -> None:
    with pytest.raises(FatError, match="no FAT boot sector"):
        Fat(reader_of(bytes(4096)))


def test_a_loop_in_the_table_ends(tmp_path: Path) -> None:
    image = fat_image(tmp_path, 16, {"/KERNEL": os.urandom(20_000)})
    fs = Fat(file_reader(image))
    entry = next(e for e in fs.listdir("/") if e.name == "KERNEL")
    data = bytearray(image.read_bytes())
    data[fs.fat_start + 2 * entry.cluster : fs.fat_start + 2 * entry.cluster + 2] = entry.cluster.to_bytes(
        2, "little"
    )
    looped = Fat(reader_of(bytes(data)))
    with pytest.raises(FatError, match=r"chain ends|loops"):
        looped.chain(entry.cluster, 1 << 30)


def test_long_names_need_their_checksum() -> None:
    short = b"LONGNA~1TXT"
    lfn = bytearray(32)
    lfn[0] = 0x41
    lfn[11] = 0x0F
    lfn[13] = short_checksum(short) ^ 1  # wrong
    lfn[1:11] = "longn".encode("utf-16-le")
    entry = bytearray(32)
    entry[0:11] = short
    entries = parse_directory(bytes(lfn + entry))
    assert [e.name for e in entries] == ["LONGNA~1.TXT"]


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=4096))
def test_directory_parser_never_crashes(data: bytes) -> None:
    for entry in parse_directory(data):
        assert entry.kind in ("file", "dir")


# ------------------------------------------------------------------ layout


def test_libreelec_plan() -> None:
    layout = plan_layout(4 << 30, 1024 * MiB, kind=LayoutKind.LIBREELEC)
    assert layout.scheme == "gpt"
    assert layout.system.start_sector == 8192 and layout.system.size == 1024 * MiB
    assert layout.system.fs == "vfat" and layout.system.type == ESP_TYPE and layout.system.bootable
    assert layout.storage.start == layout.system.end
    assert layout.storage.end == (4 << 30) - 1024 * 512  # LibreELEC leaves the last 1024 sectors free
    script = layout.sfdisk_script()
    assert 'name="System", attrs="LegacyBIOSBootable"' in script and "label: gpt" in script


@pytest.mark.parametrize(("label", "message"), [("LibreELEC-Sys", "11 bytes"), ("Sys.tem", "cannot carry")])
def test_fat_labels(label: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        plan_layout(256 * MiB, 64 * MiB, system_label=label, kind=LayoutKind.LIBREELEC)
    if message == "11 bytes":
        assert "FAT label holds at most 11 characters" in (caught.value.fix or "")
    plan_layout(256 * MiB, 64 * MiB, system_label=label, storage_label="Data")  # ext4 takes it


def test_fat16_size_limit() -> None:
    with pytest.raises(UsageError, match="FAT16"):
        plan_layout(8 << 30, 3 << 30, kind=LayoutKind.LIBREELEC)


# ------------------------------------------------------------------ install, no root


def test_install_libreelec_image(tmp_path: Path) -> None:
    for name in ("mkfs.vfat", "mcopy", "syslinux", "sfdisk", "mkfs.ext4"):
        tool(name)
    kernel = tmp_path / "KERNEL"
    kernel.write_bytes(os.urandom(500_000))
    system = tmp_path / "SYSTEM"
    system.write_bytes(os.urandom(700_000))
    image = tmp_path / "disk.img"
    report = install_image(
        image, kernel=kernel, system=system, append="boot=ISCSI=auto quiet", size_mb=96,
        layout=LayoutKind.LIBREELEC,
    )  # fmt: skip
    table = read_partition_table(file_reader(image), size=96 * MiB)
    assert table is not None and table.scheme == "gpt"
    system_part, storage_part = table.partitions
    assert system_part.start == 8192 * 512 and system_part.name == "System" and system_part.bootable
    assert image.read_bytes()[:440] == Path("/usr/lib/syslinux/mbr/gptmbr.bin").read_bytes()[:440]
    read = file_reader(image)
    assert probe_filesystem(window(read, system_part.start, system_part.size)).fs == "vfat"  # type: ignore[union-attr]
    info = probe_filesystem(window(read, storage_part.start, storage_part.size))
    assert info is not None and (info.fs, info.label) == ("ext4", "Storage")
    fs = Fat(window(read, system_part.start, system_part.size))
    assert fs.read_file("/KERNEL") == kernel.read_bytes()
    assert b"APPEND boot=ISCSI=auto quiet" in fs.read_file("/syslinux.cfg")
    for path in ("/ldlinux.sys", "/EFI/BOOT/bootx64.efi", "/EFI/BOOT/ldlinux.e64"):
        assert fs.exists(path), path
    assert {f.path for f in report.files} >= {"/KERNEL", "/SYSTEM", "/syslinux.cfg", "/EFI/BOOT/bootx64.efi"}
    assert "GPT" in report.lines()[0]


def test_install_warns_of_secrets_on_fat(tmp_path: Path) -> None:
    for name in ("mkfs.vfat", "mcopy", "syslinux"):
        tool(name)
    kernel = tmp_path / "KERNEL"
    kernel.write_bytes(b"k" * 1000)
    report = install_image(
        tmp_path / "disk.img", kernel=kernel, system=kernel, append="password=verysecret123 x",
        secrets=("verysecret123",), size_mb=64, layout=LayoutKind.LIBREELEC,
    )  # fmt: skip
    assert any("FAT has no permissions" in w and "--auto" in w for w in report.warnings)
    assert not any("verysecret123" in w for w in report.warnings)


# ------------------------------------------------------------------ text without codecs


@given(st.binary(max_size=64))
def test_cp437_is_the_codec(raw: bytes) -> None:
    assert cp437(raw) == raw.decode("cp437")


@given(st.text(max_size=36).filter(lambda t: "\0" not in t))
def test_utf16le_is_the_codec(text: str) -> None:
    raw = text.encode("utf-16-le", errors="surrogatepass")
    assert utf16le(raw + b"\0\0\xff\xff") == raw.decode("utf-16-le", errors="replace")


def test_install_cli_defaults_to_libreelec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("mkfs.vfat", "mcopy", "syslinux"):
        tool(name)
    kernel = tmp_path / "KERNEL"
    kernel.write_bytes(b"k" * 4096)
    image = tmp_path / "disk.img"
    code = main(["install", "--image", str(image), "--size", "64M", "--system-size", "32M",
                 "--kernel", str(kernel), "--system", str(kernel), "--auto", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(p["fs"], p["label"]) for p in report["partitions"]] == [("vfat", "System"), ("ext4", "Storage")]
    assert report["partitions"][0]["start"] == 8192 * 512 and report["boot_code"].endswith("gptmbr.bin")
    assert {"/syslinux.cfg", "/EFI/BOOT/bootx64.efi", "/ldlinux.sys"} <= {f["path"] for f in report["files"]}
    other = tmp_path / "other.img"
    too_long = main(["install", "--image", str(other), "--size", "64M", "--kernel", str(kernel),
                     "--system", str(kernel), "--auto", "--label-system", "LibreELEC-Sys"])  # fmt: skip
    assert too_long == 2 and "11 characters" in capsys.readouterr().err
