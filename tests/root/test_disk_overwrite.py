"""``iscsiboot install`` never writes over data or its own inputs without --wipe, and never leaves a stub."""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from disk_support import need_root_and_loops, sh, sparse, tool

MiB = 1 << 20


@pytest.fixture(autouse=True)
def _need_root() -> None:
    need_root_and_loops()


def cli(*args: str | Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iscsiboot", "install", "--layout", "seed", *map(str, args)],
        capture_output=True, text=True, check=False, timeout=300,
        env={**os.environ, "TMPDIR": str(tmp)},
    )  # fmt: skip


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    kernel = tmp_path / "KERNEL"
    kernel.write_bytes(os.urandom(200 * 1024))
    system = tmp_path / "SYSTEM"
    system.write_bytes(os.urandom(MiB))
    return {"kernel": kernel, "system": system}


def _header(size: int, *parts: tuple[int, bytes]) -> bytes:
    data = bytearray(size)
    for offset, raw in parts:
        data[offset : offset + len(raw)] = raw
    return bytes(data)


# data the probe does not recognise: none of these is a partition table or a file system it knows
CONTENTS = {
    "text": b"my notes\n" * 100,
    "gzip": gzip.compress(os.urandom(4096)),
    "qcow2": _header(MiB, (0, b"QFI\xfb\x00\x00\x00\x03")),
    "luks": _header(MiB, (0, b"LUKS\xba\xbe\x00\x02")),
    "lvm2": _header(MiB, (512, b"LABELONE"), (536, b"LVM2 001")),
    "iso9660": _header(MiB, (32769, b"CD001\x01")),
    "written zeros": bytes(4 * MiB),
    "one byte": b"x",
}


@pytest.mark.parametrize("kind", sorted(CONTENTS))
def test_an_image_holding_anything_is_refused_without_wipe(
    tmp_path: Path, inputs: dict[str, Path], kind: str
) -> None:
    image = tmp_path / "precious"
    image.write_bytes(CONTENTS[kind])
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    for extra in ([], ["--size", "64M"]):
        done = cli("--image", image, *extra, "--system-size", "16M", "--kernel", inputs["kernel"],
                   "--system", inputs["system"], "--auto", tmp=tmp_path)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "already holds" in done.stderr and "--wipe" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert hashlib.sha256(image.read_bytes()).hexdigest() == before


def test_an_empty_or_sparse_image_needs_no_wipe(tmp_path: Path, inputs: dict[str, Path]) -> None:
    for image in (tmp_path / "empty.img", sparse(tmp_path / "sparse.img", 64 * MiB)):
        image.touch()
        done = cli("--image", image, "--size", "64M", "--system-size", "16M", "--kernel", inputs["kernel"],
                   "--system", inputs["system"], "--auto", tmp=tmp_path)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert image.stat().st_size == 64 * MiB


@pytest.mark.parametrize("alias", ["same path", "symbolic link", "hard link"])
@pytest.mark.parametrize("role", ["--kernel", "--system", "--initrd"])
def test_an_input_is_never_the_output_even_with_wipe(
    tmp_path: Path, inputs: dict[str, Path], role: str, alias: str
) -> None:
    source = tmp_path / "input"
    source.write_bytes(os.urandom(300 * 1024))
    image = {"same path": source, "symbolic link": tmp_path / "sym", "hard link": tmp_path / "hard"}[alias]
    if alias == "symbolic link":
        image.symlink_to(source)
    elif alias == "hard link":
        os.link(source, image)
    before = hashlib.sha256(source.read_bytes()).hexdigest()
    files = {"--kernel": inputs["kernel"], "--system": inputs["system"], role: source}
    for wipe in ([], ["--wipe"]):
        done = cli("--image", image, "--size", "64M", "--system-size", "16M", *wipe,
                   *[str(a) for pair in files.items() for a in pair], "--auto", tmp=tmp_path)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "input cannot also be the output" in done.stderr, done.stderr
        assert hashlib.sha256(source.read_bytes()).hexdigest() == before


@pytest.mark.parametrize("size", ["100T", "20000T", "99999999999999999999T", "1" * 400, "1e400"])
def test_a_size_beyond_any_disk_is_one_line_and_leaves_no_file(
    tmp_path: Path, inputs: dict[str, Path], size: str
) -> None:
    image = tmp_path / "new.img"
    done = cli("--image", image, "--size", size, "--kernel", inputs["kernel"], "--system", inputs["system"],
               "--auto", tmp=tmp_path)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not image.exists()


def test_a_device_is_written_only_with_wipe(tmp_path: Path, inputs: dict[str, Path]) -> None:
    """A block device is never known to be empty (a new LUN included): --wipe is always needed."""
    backing = sparse(tmp_path / "lun.img", 64 * MiB)
    device = sh(tool("losetup"), "--find", "--show", backing).strip()
    try:
        done = cli("--device", device, "--system-size", "16M", "--kernel", inputs["kernel"],
                   "--system", inputs["system"], "--auto", tmp=tmp_path)  # fmt: skip
        assert done.returncode == 2 and "--wipe" in done.stderr, done.stderr
        assert backing.read_bytes() == bytes(64 * MiB)
    finally:
        sh(tool("losetup"), "-d", device)
