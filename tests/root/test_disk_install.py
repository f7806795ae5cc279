"""``iscsiboot install`` for real (root): loop devices, mkfs, extlinux, then checked by real tools."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from disk_support import blkid, need_root_and_loops, sh, sparse, tool
from iscsiboot.disk.ext4 import Ext4
from iscsiboot.disk.inspect import inspect_disk
from iscsiboot.disk.install import MBR_BIN, install_image
from iscsiboot.disk.probe import probe_filesystem, read_partition_table
from iscsiboot.disk.readers import file_reader

MiB = 1 << 20
PASSWORD = "s3cret-chap-password"


@pytest.fixture(autouse=True)
def _need_root() -> None:
    need_root_and_loops()


def _loops_of(path: Path) -> list[str]:
    """Loop devices whose backing file is ``path``."""
    out = json.loads(sh(tool("losetup"), "-J", "-l") or '{"loopdevices": []}')
    real = str(path.resolve())
    return [d["name"] for d in out.get("loopdevices", []) if (d.get("back-file") or "").startswith(real)]


def _mounts_under(prefix: Path) -> list[str]:
    with open("/proc/mounts", encoding="utf-8") as handle:
        return [line.split()[1] for line in handle if line.split()[1].startswith(str(prefix))]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    kernel = tmp_path / "KERNEL"
    kernel.write_bytes(os.urandom(300 * 1024))
    system = tmp_path / "SYSTEM"
    system.write_bytes(os.urandom(2 * MiB + 123))
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(os.urandom(64 * 1024))
    return {"kernel": kernel, "system": system, "initrd": initrd}


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """TMPDIR for the command: its mount points must be gone afterwards."""
    work = tmp_path / "tmp"
    work.mkdir()
    yield work
    assert _mounts_under(tmp_path) == []
    assert list(work.iterdir()) == []


def cli(*args: str | Path, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    return subprocess.run(
        [sys.executable, "-m", "iscsiboot", "install", "--layout", "seed", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=600,
    )


def _check_disk(image: Path, files: dict[str, Path], *, storage_label: str = "Storage") -> None:
    """Everything the boot needs, checked with our readers and with the real tools."""
    size = image.stat().st_size
    table = read_partition_table(file_reader(image), size=size)
    assert table is not None and table.scheme == "mbr"
    real = json.loads(sh(tool("sfdisk"), "-J", image))["partitiontable"]
    assert real["label"] == "dos"
    assert [
        (p["start"] * 512, p["size"] * 512, p["type"], p.get("bootable", False)) for p in real["partitions"]
    ] == [(p.start, p.size, p.type, p.bootable) for p in table.partitions]
    assert table.partitions[0].bootable and table.partitions[0].start == MiB
    # syslinux's boot code in the MBR
    assert image.read_bytes()[:440] == MBR_BIN.read_bytes()[:440]
    system_part, storage_part = table.partitions
    for part, label in ((system_part, "System"), (storage_part, storage_label)):
        info = probe_filesystem(file_reader(image, part.start, part.size))
        expected = blkid(image, offset=part.start)
        assert info is not None and (info.fs, info.label, info.uuid) == (
            expected["TYPE"],
            expected["LABEL"],
            expected["UUID"],
        )
        assert info.label == label
        loop = sh(
            tool("losetup"),
            "--find",
            "--show",
            "-r",
            "-o",
            str(part.start),
            "--sizelimit",
            str(part.size),
            image,
        ).strip()
        try:
            assert sh(tool("e2label"), loop).strip() == label
            check = subprocess.run([tool("e2fsck"), "-fn", loop], capture_output=True, text=True, check=False)
            assert check.returncode == 0, check.stdout + check.stderr
        finally:
            sh(tool("losetup"), "-d", loop)
    fs = Ext4(file_reader(image, system_part.start, system_part.size))
    assert fs.read_file("/KERNEL") == files["kernel"].read_bytes()
    assert fs.read_file("/SYSTEM") == files["system"].read_bytes()
    assert fs.exists("/ldlinux.sys") and fs.exists("/ldlinux.c32")
    conf = fs.read_file("/extlinux.conf").decode()
    assert "KERNEL /KERNEL" in conf
    view = inspect_disk(file_reader(image), size, boot_code=MBR_BIN.read_bytes()[:440])
    assert view.ok, view.problems
    warnings = [str(p) for p in view.problems]
    assert warnings == ([] if storage_label == "Storage" else [warnings[0]])


def test_install_image_cli(tmp_path: Path, files: dict[str, Path], scratch: Path) -> None:
    image = tmp_path / "disk.img"
    done = cli(
        "--image", image, "--size", "64M", "--system-size", "32M",
        "--kernel", files["kernel"], "--system", files["system"], "--initrd", files["initrd"],
        "--serial", "--append", "panic=1", "--auto", "--json",
        tmpdir=scratch,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["device"] == str(image) and report["created"] is True
    assert [p["label"] for p in report["partitions"]] == ["System", "Storage"]
    assert [p["start"] for p in report["partitions"]] == [MiB, 33 * MiB]
    assert {f["path"] for f in report["files"]} >= {
        "/KERNEL",
        "/SYSTEM",
        "/initrd",
        "/extlinux.conf",
        "/ldlinux.sys",
    }
    assert image.stat().st_size == 64 * MiB
    _check_disk(image, files)
    table = read_partition_table(file_reader(image), size=64 * MiB)
    assert table is not None
    fs = Ext4(file_reader(image, table.partitions[0].start, table.partitions[0].size))
    conf = fs.read_file("/extlinux.conf").decode()
    assert conf.startswith("SERIAL 0 115200\n")
    assert "INITRD /initrd" in conf and "ISCSI=auto" in conf and "panic=1" in conf
    assert "console=ttyS0,115200" in conf
    assert fs.read_file("/initrd") == files["initrd"].read_bytes()
    assert stat.S_IMODE(fs.stat("/extlinux.conf").mode) == 0o644
    assert report["partitions"][0]["uuid"] == blkid(image, offset=MiB)["UUID"]
    assert _loops_of(image) == []


def test_refuses_existing_data_without_wipe(tmp_path: Path, files: dict[str, Path], scratch: Path) -> None:
    image = tmp_path / "disk.img"
    args: list[str | Path] = ["--image", image, "--size", "64M", "--system-size", "32M",
            "--kernel", files["kernel"], "--system", files["system"], "--auto"]  # fmt: skip
    assert cli(*args, tmpdir=scratch).returncode == 0
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    again = cli(*args, tmpdir=scratch)
    assert again.returncode == 2
    assert "already holds an MBR partition table" in again.stderr and "--wipe" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "Traceback" not in again.stderr
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
    wiped = cli(*args[:-1], "--wipe", "--label-storage", "Other", tmpdir=scratch)
    assert wiped.returncode == 0, wiped.stderr
    assert "names no iSCSI target" in wiped.stderr  # --auto left out
    assert hashlib.sha256(image.read_bytes()).hexdigest() != before
    _check_disk(image, files, storage_label="Other")
    assert _loops_of(image) == []


def test_refuses_a_bare_file_system(tmp_path: Path, files: dict[str, Path], scratch: Path) -> None:
    image = sparse(tmp_path / "fs.img", 64 * MiB)
    sh(tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", "Precious", image)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    done = cli("--image", image, "--system-size", "32M", "--kernel", files["kernel"],
               "--system", files["system"], "--auto", tmpdir=scratch)  # fmt: skip
    assert done.returncode == 2 and "Precious" in done.stderr
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_failure_cleans_up_and_removes_new_image(
    tmp_path: Path, files: dict[str, Path], scratch: Path
) -> None:
    """A KERNEL larger than System fails after the loop mount: nothing may stay behind."""
    image = tmp_path / "disk.img"
    huge = tmp_path / "huge-kernel"
    huge.write_bytes(os.urandom(40 * MiB))
    done = cli("--image", image, "--size", "64M", "--system-size", "32M", "--kernel", huge,
               "--system", files["system"], "--auto", tmpdir=scratch)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "cannot copy" in done.stderr and "--system-size" in done.stderr
    assert "Traceback" not in done.stderr
    assert not image.exists()
    assert _loops_of(image) == []
    assert _loops_of(tmp_path) == []


def test_failure_keeps_an_image_it_did_not_create(
    tmp_path: Path, files: dict[str, Path], scratch: Path
) -> None:
    image = sparse(tmp_path / "disk.img", 64 * MiB)
    huge = tmp_path / "huge-kernel"
    huge.write_bytes(os.urandom(40 * MiB))
    done = cli("--image", image, "--system-size", "32M", "--kernel", huge,
               "--system", files["system"], "--auto", tmpdir=scratch)  # fmt: skip
    assert done.returncode == 1
    assert image.exists() and _loops_of(tmp_path) == []


def test_secrets_stay_hidden(tmp_path: Path, files: dict[str, Path], scratch: Path) -> None:
    image = tmp_path / "disk.img"
    done = cli(
        "--image", image, "--size", "64M", "--system-size", "32M",
        "--kernel", files["kernel"], "--system", files["system"],
        "--initiator", "iqn.2026-11.lab:client", "--target-name", "iqn.2026-11.lab:disk",
        "--target-ip", "10.0.2.2", "--username", "user", "--password", PASSWORD,
        "--json",
        tmpdir=scratch,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout and PASSWORD not in done.stderr
    assert "mode 0600" in done.stderr and "/proc/cmdline" in done.stderr
    report = json.loads(done.stdout)
    conf_entry = next(f for f in report["files"] if f["path"] == "/extlinux.conf")
    assert conf_entry["mode"] == "0600"
    fs = Ext4(file_reader(image, MiB, 32 * MiB))
    assert PASSWORD in fs.read_file("/extlinux.conf").decode()
    assert stat.S_IMODE(fs.stat("/extlinux.conf").mode) == 0o600
    text = cli("--image", image, "--kernel", files["kernel"], "--system", files["system"],
               "--password", PASSWORD, "--username", "u", "--target-name", "iqn.x:y",
               "--target-ip", "10.0.2.2", tmpdir=scratch)  # fmt: skip
    assert text.returncode == 2 and PASSWORD not in text.stderr + text.stdout


def test_install_image_python_api(tmp_path: Path, files: dict[str, Path]) -> None:
    """The QEMU harness's call: a finished command line, secrets named."""
    image = tmp_path / "disk.img"
    report = install_image(
        image,
        kernel=files["kernel"],
        initrd=files["initrd"],
        system=files["system"],
        append=f"console=ttyS0,115200 boot=ISCSI=x,iscsi_password={PASSWORD},LABEL=System",
        system_label="System",
        storage_label="Storage",
        size_mb=64,
        serial=True,
        secrets=[PASSWORD],
    )
    assert report.created and [p.label for p in report.partitions] == ["System", "Storage"]
    assert any("0600" in w for w in report.warnings)
    assert PASSWORD not in json.dumps(report.to_dict()) + "\n".join(report.lines())
    _check_disk(image, files)
    assert _loops_of(image) == []


def test_install_on_a_block_device(tmp_path: Path, files: dict[str, Path], scratch: Path) -> None:
    """--device on a whole-disk loop device, the way a logged-in LUN (/dev/sdX) is used."""
    backing = sparse(tmp_path / "lun.img", 96 * MiB)
    device = sh(tool("losetup"), "--find", "--show", backing).strip()
    try:
        done = cli("--device", device, "--system-size", "48M", "--kernel", files["kernel"],
                   "--system", files["system"], "--auto", "--wipe", "--json", tmpdir=scratch)  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["kind"] == "device" and report["size"] == 96 * MiB
        refused = cli("--device", device, "--kernel", files["kernel"], "--system", files["system"],
                      "--auto", tmpdir=scratch)  # fmt: skip
        assert refused.returncode == 2 and "--wipe" in refused.stderr
        sized = cli("--device", device, "--size", "1G", "--kernel", files["kernel"],
                    "--system", files["system"], "--auto", "--wipe", tmpdir=scratch)  # fmt: skip
        assert sized.returncode == 2 and "--size" in sized.stderr
    finally:
        sh(tool("losetup"), "-d", device)
    _check_disk(backing, files)
    assert _loops_of(backing) == []


def test_libreelec_on_a_device_of_4096_byte_sectors(
    tmp_path: Path, files: dict[str, Path], scratch: Path
) -> None:
    """--device takes the device's logical block size: the GPT and the FAT count 4096-byte sectors."""
    backing = sparse(tmp_path / "lun4k.img", 96 * MiB)
    device = sh(tool("losetup"), "--find", "--show", "--sector-size", "4096", backing).strip()
    try:
        done = cli("--device", device, "--layout", "libreelec", "--system-size", "32M",
                   "--kernel", files["kernel"], "--system", files["system"], "--auto", "--wipe", "--json",
                   tmpdir=scratch)  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["kind"], report["scheme"], report["sector_size"]) == ("device", "gpt", 4096)
        assert "syslinux does not boot from it" in done.stderr
        seed = cli("--device", device, "--system-size", "32M", "--kernel", files["kernel"],
                   "--system", files["system"], "--auto", "--wipe", tmpdir=scratch)  # fmt: skip
        assert seed.returncode == 2 and "seed layout" in seed.stderr and "nothing was written" in seed.stderr
    finally:
        sh(tool("losetup"), "-d", device)
    table = read_partition_table(file_reader(backing), size=96 * MiB, sector_size=4096)
    assert table is not None and table.scheme == "gpt"
    assert [(p.start, p.size) for p in table.partitions] == [
        (4 * MiB, 32 * MiB),
        (36 * MiB, 60 * MiB - 512 * 1024),
    ]
    system = probe_filesystem(file_reader(backing, table.partitions[0].start, table.partitions[0].size))
    assert system is not None and (system.fs, system.label) == ("vfat", "System")
    assert backing.read_bytes()[4096:4104] == b"EFI PART"
    assert _loops_of(backing) == []
