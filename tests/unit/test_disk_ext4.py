"""The read-only ext reader against images that mkfs.ext4 -d filled from a real tree."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from disk_support import sh, sparse, tool
from hypothesis import given, settings
from hypothesis import strategies as st
from iscsiboot.disk.ext4 import Ext4, Ext4Error, Ext4NotFound
from iscsiboot.disk.probe import reader_of
from iscsiboot.disk.readers import file_reader
from iscsiboot.errors import ParseError

MiB = 1 << 20
LONG_TARGET = "a-target-that-is-longer-than-sixty-characters/" + "x" * 40


def make_tree(root: Path) -> Path:
    root.mkdir()
    (root / "KERNEL").write_bytes(os.urandom(3 * 4096 + 17))
    (root / "SYSTEM").write_bytes(os.urandom(700 * 1024 + 5))  # double indirect at 1 KiB blocks
    (root / "empty").write_bytes(b"")
    (root / "extlinux.conf").write_text("DEFAULT linux\nLABEL linux\n  KERNEL /KERNEL\n")
    with (root / "sparse").open("wb") as handle:  # many extents: an extent tree of depth 1
        for i in range(40):
            handle.seek(i * 65536)
            handle.write(bytes([i + 1]) * 3000)
    big = root / "many"
    big.mkdir()
    for i in range(400):
        (big / f"entry-with-a-longish-name-{i:04d}").write_text(str(i))
    deep = root / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "leaf.txt").write_text("leaf\n")
    os.symlink("a/b/c/leaf.txt", root / "fast-link")
    os.symlink("/" + LONG_TARGET, root / "slow-link")
    (root / LONG_TARGET.split("/", maxsplit=1)[0]).mkdir()
    (root / LONG_TARGET).write_text("slow\n")
    os.symlink("../../..", deep / "up")
    os.symlink("loop", root / "loop")
    return root


VARIANTS = {
    "ext4-default": ["-t", "ext4"],
    "ext4-4k": ["-t", "ext4", "-b", "4096"],
    "ext4-no-64bit": ["-t", "ext4", "-O", "^64bit"],
    "ext4-blockmap": ["-t", "ext4", "-O", "^extent,^64bit,^flex_bg"],
    "ext3": ["-t", "ext3"],
    "ext2": ["-t", "ext2"],
}


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src") / "tree")


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def image(request: pytest.FixtureRequest, source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = sparse(tmp_path_factory.mktemp("img") / "fs.img", 48 * MiB)
    sh(tool("mke2fs"), "-q", "-F", *VARIANTS[request.param], "-L", "System", "-d", source, path)
    sh(tool("e2fsck"), "-fyD", path)  # -D builds htree indexes for the big directory
    return path


def test_files_read_back(image: Path, source: Path) -> None:
    fs = Ext4(file_reader(image))
    assert fs.label == "System"
    for name in ("KERNEL", "SYSTEM", "empty", "extlinux.conf", "sparse", "a/b/c/leaf.txt", LONG_TARGET):
        assert fs.read_file("/" + name) == (source / name).read_bytes(), name


def test_listdir_matches(image: Path, source: Path) -> None:
    fs = Ext4(file_reader(image))
    top = {e.name: e.kind for e in fs.listdir("/")}
    assert set(top) - {"lost+found"} == set(os.listdir(source))
    assert top["KERNEL"] == "file" and top["a"] == "dir" and top["fast-link"] == "symlink"
    many = fs.listdir("/many")
    assert sorted(e.name for e in many) == sorted(os.listdir(source / "many"))
    assert all(e.kind == "file" for e in many)


def test_htree_directory_really_indexed(image: Path) -> None:
    """The big directory is an htree (e2fsck -D built it), and listdir read it above."""
    out = sh(tool("debugfs"), "-R", "htree /many", image)
    assert "Root node dump" in out


def test_stat_and_exists(image: Path, source: Path) -> None:
    fs = Ext4(file_reader(image))
    st_kernel = fs.stat("/KERNEL")
    assert st_kernel.size == (source / "KERNEL").stat().st_size
    assert st_kernel.kind == "file" and stat.S_ISREG(st_kernel.mode)
    assert fs.stat("/a").kind == "dir"
    assert fs.stat("/fast-link", follow=False).kind == "symlink"
    assert fs.stat("/fast-link").kind == "file"
    assert fs.exists("/SYSTEM") and fs.exists("a/b/c") and fs.exists("/")
    assert not fs.exists("/nope") and not fs.exists("/KERNEL/x") and not fs.exists("/a/nope/c")


def test_symlinks(image: Path) -> None:
    fs = Ext4(file_reader(image))
    assert fs.readlink("/fast-link") == "a/b/c/leaf.txt"
    assert fs.read_file("/fast-link") == b"leaf\n"
    assert fs.readlink("/slow-link") == "/" + LONG_TARGET
    assert fs.read_file("/slow-link") == b"slow\n"
    assert fs.read_file("/a/b/c/up/KERNEL") == fs.read_file("/KERNEL")
    with pytest.raises(Ext4Error, match="too many levels"):
        fs.read_file("/loop")


def test_errors(image: Path) -> None:
    fs = Ext4(file_reader(image))
    with pytest.raises(Ext4NotFound):
        fs.read_file("/missing")
    with pytest.raises(Ext4Error, match="not a regular file"):
        fs.read_file("/a")
    with pytest.raises(Ext4Error, match="limit"):
        fs.read_file("/SYSTEM", limit=1024)
    with pytest.raises(Ext4NotFound):
        fs.listdir("/KERNEL")


def test_walk_finds_everything(image: Path, source: Path) -> None:
    fs = Ext4(file_reader(image))
    expected = set()
    for top, dirs, files in os.walk(source):
        for name in dirs + files:
            expected.add("/" + str((Path(top) / name).relative_to(source)))
    got = {p for p in fs.walk("/") if not p.startswith("/lost+found")}
    assert got == expected


def test_not_ext() -> None:
    with pytest.raises(Ext4Error, match="magic"):
        Ext4(reader_of(bytes(4096)))
    with pytest.raises(Ext4Error):
        Ext4(reader_of(b""))


_SEED: list[bytes] = []


@settings(max_examples=200, deadline=None)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=64 * 1024), st.integers(min_value=0, max_value=255)),
        min_size=1,
        max_size=16,
    )
)
def test_fuzz_corrupt_metadata(
    edits: list[tuple[int, int]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if not _SEED:
        tree = tmp_path_factory.mktemp("fuzz") / "tree"
        (tree / "d" / "e").mkdir(parents=True)
        (tree / "d" / "e" / "f").write_bytes(os.urandom(20000))
        (tree / "g").write_text("g")
        os.symlink("d/e/f", tree / "link")
        img = sparse(tree.parent / "fs.img", 4 * MiB)
        sh(tool("mke2fs"), "-q", "-F", "-t", "ext4", "-N", "64", "-d", tree, img)
        _SEED.append(img.read_bytes())
    data = bytearray(_SEED[0])
    for offset, value in edits:
        data[offset] = value
    try:
        fs = Ext4(reader_of(bytes(data)))
        for path in fs.walk("/"):
            fs.stat(path, follow=False)
            if fs.stat(path, follow=False).kind == "file":
                fs.read_file(path, limit=MiB)
    except ParseError:
        pass
