"""inspect_disk on disks assembled from real tools (sfdisk, mkfs.ext4 -d), without root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from disk_support import sh, sparse, tool
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsiboot.disk.inspect import cached, inspect_disk, parse_extlinux
from iscsiboot.disk.layout import plan_layout
from iscsiboot.disk.probe import reader_of
from iscsiboot.disk.readers import file_reader

MiB = 1 << 20
CONF = (
    "SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\n\n"
    "LABEL linux\n  KERNEL /KERNEL\n  INITRD /initrd\n  APPEND boot=x\n"
)


def build_disk(
    tmp_path: Path,
    *,
    files: dict[str, bytes],
    system_label: str = "System",
    storage_label: str = "Storage",
    bootable: bool = True,
) -> Path:
    """A disk like install writes, assembled without root: sfdisk, then mkfs.ext4 -d per partition."""
    layout = plan_layout(48 * MiB, 24 * MiB)
    image = sparse(tmp_path / "disk.img", 48 * MiB)
    script = layout.sfdisk_script() if bootable else layout.sfdisk_script().replace(", bootable", "")
    sh(tool("sfdisk"), "-q", image, input_text=script)
    for part, label, content in (
        (layout.system, system_label, files),
        (layout.storage, storage_label, {}),
    ):
        tree = tmp_path / f"tree-{part.number}"
        tree.mkdir()
        for name, data in content.items():
            (tree / name).write_bytes(data)
        piece = sparse(tmp_path / f"part{part.number}.img", part.size)
        sh(tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", label, "-d", tree, piece)
        with image.open("r+b") as out:
            out.seek(part.start)
            out.write(piece.read_bytes())
    return image


GOOD = {
    "KERNEL": os.urandom(5000),
    "SYSTEM": os.urandom(9000),
    "initrd": os.urandom(3000),
    "extlinux.conf": CONF.encode(),
    "ldlinux.sys": b"x" * 512,
    "ldlinux.c32": b"y" * 512,
}


def _problems(image: Path) -> list[str]:
    view = inspect_disk(file_reader(image), image.stat().st_size)
    return [str(p) for p in view.problems]


def test_good_disk(tmp_path: Path) -> None:
    image = build_disk(tmp_path, files=GOOD)
    view = inspect_disk(file_reader(image), 48 * MiB)
    assert view.ok and view.problems == ()
    assert view.system is not None and view.system.number == 1
    kinds = {f.path: f.kind for f in view.system.files}
    assert kinds["/KERNEL"] == "file" and kinds["/initrd"] == "file"
    assert view.system.extlinux is not None
    entry = view.system.extlinux.entry()
    assert entry is not None and entry.append == "boot=x"
    assert [v.fs.label for v in view.partitions if v.fs] == ["System", "Storage"]


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("KERNEL", "System has no KERNEL"),
        ("SYSTEM", "System has no SYSTEM"),
        ("extlinux.conf", "System has no extlinux.conf"),
        ("ldlinux.sys", "extlinux --install"),
        ("initrd", "INITRD /initrd is not on System"),
    ],
)
def test_missing_files(tmp_path: Path, missing: str, message: str) -> None:
    files = {k: v for k, v in GOOD.items() if k != missing}
    problems = _problems(build_disk(tmp_path, files=files))
    assert any(message in p for p in problems), problems


def test_missing_labels_and_boot_flag(tmp_path: Path) -> None:
    image = build_disk(tmp_path, files=GOOD, storage_label="Other", bootable=False)
    view = inspect_disk(file_reader(image), 48 * MiB)
    texts = [str(p) for p in view.problems]
    assert any("'Storage'" in t for t in texts) and any("not marked bootable" in t for t in texts)
    assert not view.ok
    (tmp_path / "b").mkdir()
    renamed = build_disk(tmp_path / "b", files=GOOD, system_label="Sys")
    assert any("no file system labelled 'System'" in p for p in _problems(renamed))


def test_boot_code_compared(tmp_path: Path) -> None:
    image = build_disk(tmp_path, files=GOOD)
    view = inspect_disk(file_reader(image), 48 * MiB, boot_code=b"\x33\xc0" * 220)
    assert any("mbr.bin" in str(p) for p in view.problems)


def test_bare_and_empty_disks(tmp_path: Path) -> None:
    assert "no partition table" in str(inspect_disk(reader_of(bytes(MiB)), MiB).problems[0])
    bare = sparse(tmp_path / "bare.img", 8 * MiB)
    sh(tool("mke2fs"), "-q", "-F", "-t", "ext4", bare)
    assert "bare ext4" in str(inspect_disk(file_reader(bare), 8 * MiB).problems[0])


def test_parse_extlinux_forms() -> None:
    conf = parse_extlinux("# c\ndefault Two\nlabel one\nkernel /a\nLABEL Two\n LINUX /b\n initrd /i1,/i2\n")
    entry = conf.entry()
    assert entry is not None and (entry.name, entry.kernel, entry.initrd) == ("Two", "/b", "/i1,/i2")
    bare = parse_extlinux("DEFAULT /vmlinuz root=/dev/x\n").entry()
    assert bare is not None and (bare.kernel, bare.append) == ("/vmlinuz", "root=/dev/x")
    assert parse_extlinux("").entry() is None


@settings(max_examples=200, deadline=None)
@given(
    reads=st.lists(
        st.tuples(st.integers(min_value=0, max_value=300_000), st.integers(min_value=0, max_value=70_000)),
        max_size=30,
    ),
    chunk=st.sampled_from([512, 4096, 65536]),
)
def test_cached_reader_equals_plain(reads: list[tuple[int, int]], chunk: int) -> None:
    data = bytes(range(256)) * 1000  # 256000 bytes: reads run past the end too
    plain = reader_of(data)
    calls: list[int] = []

    def counting(offset: int, length: int) -> bytes:
        calls.append(length)
        return plain(offset, length)

    read = cached(counting, chunk=chunk, capacity=8)
    for offset, length in reads:
        assert read(offset, length) == plain(offset, length)
    calls.clear()
    assert read(1000, 10) == read(1005, 10)[:0] + plain(1000, 10)
    assert len(calls) <= 1  # the second read of the same chunk comes from the cache
