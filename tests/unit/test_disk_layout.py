"""The install planner (pure) and the pieces of install that need no root."""

from __future__ import annotations

from pathlib import Path

import pytest
from disk_support import sh, sparse, tool
from hypothesis import given
from hypothesis import strategies as st
from iscsiboot.disk.install import raw_extlinux
from iscsiboot.disk.layout import ALIGN, MBR_LIMIT, MiB, parse_size, plan_layout
from iscsiboot.disk.probe import read_partition_table
from iscsiboot.disk.readers import file_reader
from iscsiboot.disk.target import existing_data
from iscsiboot.errors import RepresentError, UsageError


def test_plan_small_image() -> None:
    layout = plan_layout(64 * MiB, 32 * MiB)
    assert (layout.system.start, layout.system.size) == (MiB, 32 * MiB)
    assert (layout.storage.start, layout.storage.size) == (33 * MiB, 31 * MiB)
    assert layout.system.bootable and not layout.storage.bootable
    assert (layout.system.label, layout.storage.label) == ("System", "Storage")


@given(
    size=st.integers(min_value=0, max_value=8 << 40),
    system=st.integers(min_value=0, max_value=1 << 34),
)
def test_plan_invariants(size: int, system: int) -> None:
    try:
        layout = plan_layout(size, system)
    except UsageError:
        return
    for part in layout.partitions:
        assert part.start % ALIGN == 0 and part.size % 512 == 0 and part.size > 0
        assert part.end <= min(size, MBR_LIMIT)
    assert layout.system.size >= system
    assert layout.system.end <= layout.storage.start


@pytest.mark.parametrize(
    ("size", "system", "message"),
    [
        (64 * MiB, 60 * MiB, "no room"),
        (64 * MiB, 4 * MiB, "below the minimum"),
    ],
)
def test_plan_refuses(size: int, system: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        plan_layout(size, system)


@pytest.mark.parametrize("label", ["", "x" * 17, "has space", "a=b"])
def test_bad_labels(label: str) -> None:
    with pytest.raises(UsageError, match="label"):
        plan_layout(64 * MiB, 32 * MiB, storage_label=label)


def test_same_labels_refused() -> None:
    with pytest.raises(UsageError, match="both"):
        plan_layout(64 * MiB, 32 * MiB, system_label="X", storage_label="X")


@pytest.mark.parametrize(
    ("text", "value"),
    [("4G", 4 << 30), ("256M", 256 << 20), ("512MiB", 512 << 20), ("1.5G", 3 << 29), ("4096", 4096)],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "G", "-1M", "0", "4X", "1 2"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_size(text)


def test_sfdisk_reads_the_script(tmp_path: Path) -> None:
    """The planned script, given to the real sfdisk, gives the planned table."""
    layout = plan_layout(80 * MiB, 24 * MiB)
    image = sparse(tmp_path / "disk.img", 80 * MiB)
    sh(tool("sfdisk"), "-q", image, input_text=layout.sfdisk_script())
    table = read_partition_table(file_reader(image), size=80 * MiB)
    assert table is not None and table.scheme == "mbr"
    assert [(p.number, p.start, p.size, p.type, p.bootable) for p in table.partitions] == [
        (1, MiB, 24 * MiB, "83", True),
        (2, 25 * MiB, 55 * MiB, "83", False),
    ]


def test_existing_data(tmp_path: Path) -> None:
    image = sparse(tmp_path / "disk.img", 16 * MiB)
    assert existing_data(file_reader(image), 16 * MiB) is None
    sh(tool("mke2fs"), "-q", "-F", "-t", "ext4", "-L", "Old", image)
    assert existing_data(file_reader(image), 16 * MiB) == "a file system (ext4) labelled 'Old'"
    sh(tool("sfdisk"), "-q", image, input_text="label: dos\n,,83\n")
    found = existing_data(file_reader(image), 16 * MiB)
    assert found is not None and "MBR partition table with 1" in found


def test_raw_extlinux() -> None:
    text = raw_extlinux("root=/dev/x quiet", initrd=True, serial=True)
    assert text.splitlines()[0] == "SERIAL 0 115200"
    assert "  KERNEL /KERNEL" in text and "  INITRD /initrd" in text
    assert "  APPEND root=/dev/x quiet console=ttyS0,115200" in text
    plain = raw_extlinux("console=ttyS0,9600", initrd=False, serial=True)
    assert "INITRD" not in plain and plain.count("console=") == 1


@pytest.mark.parametrize("char", ["\x1b", "\x00", "\x7f", "\x01", "\x9b"])
def test_raw_append_refuses_control_characters(char: str) -> None:
    """install --append without a model: white space separates words, other control characters are refused."""
    assert "APPEND a b c" in raw_extlinux("a\nb\u2028c", initrd=False, serial=False)
    with pytest.raises(RepresentError, match="control or line-separator") as info:
        raw_extlinux(f"ip=dhcp iscsi_password=pw{char}x", initrd=False, serial=False)
    assert "pw" not in str(info.value)
