"""iBFT sources on real files: table files, ACPI trees, memory dumps, sysfs trees, auto."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ibft_support import (
    MUTUAL,
    NOCHAP,
    REVERSE_SECRET,
    memory_image,
    sample_paths,
    sample_sysfs,
    write_sysfs_tree,
)
from iscsiboot.errors import EnvironmentProblem, TableError
from iscsiboot.ibft import sources
from iscsiboot.ibft.build import build_table
from iscsiboot.ibft.mapping import table_to_model
from iscsiboot.ibft.parse import parse_table
from iscsiboot.ibft.sysfs import to_sysfs

SAMPLES = sample_paths()


def _bad_checksum(data: bytes) -> bytes:
    return data[:9] + bytes([data[9] ^ 0x55]) + data[10:]


# ---------------------------------------------------------------- files and ACPI


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_read_file(path: Path) -> None:
    found = sources.read_file(path)
    assert found.source == f"table file {path}"
    assert to_sysfs(found.parsed.table, show_secrets=True) == sample_sysfs(path)


def test_read_file_missing(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="does not exist"):
        sources.read_file(tmp_path / "nothing")


def _acpi(root: Path, files: dict[str, bytes]) -> Path:
    tables = root / "sys/firmware/acpi/tables"
    tables.mkdir(parents=True)
    (tables / "DSDT").write_bytes(b"DSDT" + bytes(40))
    for name, data in files.items():
        (tables / name).write_bytes(data)
    return root


@pytest.mark.parametrize("name", ["iBFT", "IBFT", "BIFT", "iBFT2"])
def test_read_acpi_signatures(tmp_path: Path, name: str) -> None:
    root = _acpi(tmp_path, {name: MUTUAL.read_bytes()})
    found = sources.read_acpi(root)
    assert found.source == f"ACPI table {root}/sys/firmware/acpi/tables/{name}"
    assert build_table(found.parsed.table) == MUTUAL.read_bytes()


def test_read_acpi_order_and_fallback(tmp_path: Path) -> None:
    root = _acpi(
        tmp_path,
        {
            "IBFT": _bad_checksum(MUTUAL.read_bytes()),
            "iBFT": NOCHAP.read_bytes(),
            "iBFT1": MUTUAL.read_bytes(),
        },
    )
    assert [p.name for p in sources.acpi_candidates(root)] == ["IBFT", "iBFT", "iBFT1"]
    # the damaged IBFT is passed over for the next valid one
    assert sources.read_acpi(root).source.endswith("/iBFT")


def test_read_acpi_none(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="no iBFT among the ACPI tables"):
        sources.read_acpi(_acpi(tmp_path, {}))


def test_read_acpi_only_invalid(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="bad checksum"):
        sources.read_acpi(_acpi(tmp_path, {"iBFT": _bad_checksum(MUTUAL.read_bytes())}))


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize("at", [0x80000, 0x9A000, 0x9FD80, 0xC0000, 0xE1230])
def test_scan_finds_aligned_table(at: int) -> None:
    table = MUTUAL.read_bytes()
    parsed, pos = sources.scan_memory(memory_image(table, at), 0)
    assert pos == at
    assert build_table(parsed.table) == table


def test_scan_with_base_and_fill() -> None:
    table = NOCHAP.read_bytes()
    image = memory_image(table, 0x9C010, base=0x80000, size=0x80000, fill=0xFF)
    _parsed, pos = sources.scan_memory(image, 0x80000)
    assert pos == 0x9C010


@pytest.mark.parametrize(
    "at",
    [
        0x9A008,  # not 16-byte aligned
        0xA0000,  # in the VGA hole, which is skipped
        0xB8000,
        0x7FFF0,  # below the scanned range
        0xFFF00,  # would end above 1 MiB
    ],
)
def test_scan_rules(at: int) -> None:
    with pytest.raises(EnvironmentProblem, match="no iBFT signature"):
        sources.scan_memory(memory_image(MUTUAL.read_bytes(), at), 0)


def test_scan_table_must_end_below_one_mebibyte() -> None:
    table = MUTUAL.read_bytes()
    last = (0xFFFFF - len(table)) // 16 * 16  # the highest start that still ends at or below 0xFFFFF
    _parsed, pos = sources.scan_memory(memory_image(table, last), 0)
    assert pos == last
    with pytest.raises(EnvironmentProblem):
        sources.scan_memory(memory_image(table, last + 16), 0)


def test_scan_skips_a_false_signature() -> None:
    image = bytearray(memory_image(MUTUAL.read_bytes(), 0x9B000))
    image[0x90000:0x90008] = b"iBFT" + (0x200000).to_bytes(4, "little")  # length beyond 1 MiB
    _parsed, pos = sources.scan_memory(bytes(image), 0)
    assert pos == 0x9B000


def test_scan_reports_an_invalid_table() -> None:
    image = memory_image(_bad_checksum(MUTUAL.read_bytes()), 0x9B000)
    with pytest.raises(TableError, match=r"memory 0x9b000: acpi_header.checksum at offset 0x9: bad checksum"):
        sources.scan_memory(image, 0)
    parsed, _pos = sources.scan_memory(image, 0, lenient=True)
    assert any("bad checksum" in w for w in parsed.warnings)


def test_read_devmem_from_an_image_file(tmp_path: Path) -> None:
    dev = tmp_path / "mem"
    image = bytearray(memory_image(NOCHAP.read_bytes(), 0x9F000))
    image[0xA0000:0xC0000] = b"iBFT" * (0x20000 // 4)  # the VGA hole is never read
    dev.write_bytes(bytes(image))
    found = sources.read_devmem(dev)
    assert found.source == f"legacy BIOS memory {dev} at 0x9f000"


def test_memory_dump_file(tmp_path: Path) -> None:
    dump = tmp_path / "low.bin"
    dump.write_bytes(memory_image(MUTUAL.read_bytes(), 0x9E000, base=0x80000, size=0x80000))
    found = sources.read_memory_dump(dump, 0x80000)
    assert found.source == f"memory dump {dump} at 0x9e000"


def test_real_devmem_is_read_or_refused_cleanly() -> None:
    """Whatever this machine has at /dev/mem (nothing, no iBFT, a refusal), the answer is one clean error."""
    try:
        found = sources.read_devmem()
    except EnvironmentProblem as exc:
        assert str(exc).count("\n") == 0
        assert any(s in str(exc) for s in ("no iBFT", "not readable", "cannot read", "does not exist"))
    except TableError as exc:
        assert "memory 0x" in str(exc)
    else:
        assert found.source.startswith("legacy BIOS memory /dev/mem at 0x")


# ---------------------------------------------------------------- sysfs


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sysfs_tree_rebuilds_the_table(tmp_path: Path, path: Path) -> None:
    data = path.read_bytes()
    tree = write_sysfs_tree(tmp_path / "ibft", parse_table(data).table)
    assert (tree / "ethernet0/subnet-mask").read_bytes() == b"255.255.255.0"  # the kernel's missing newline
    parsed = sources.read_sysfs_parsed(tree)
    assert parsed.warnings == ()
    assert to_sysfs(parsed.table, show_secrets=True) == sample_sysfs(path)
    # iPXE's layout, the PCI location from the device link: the very same bytes
    assert build_table(parsed.table) == data
    assert sources.read_sysfs(tree) == parsed.table


def test_sysfs_values_without_layout_need_no_construct(tmp_path: Path) -> None:
    """The boot agent's read: the same values, no offsets, and construct stays unimported."""
    tree = write_sysfs_tree(tmp_path / "ibft", parse_table(MUTUAL.read_bytes()).table)
    laid = sources.read_sysfs_parsed(tree)
    bare = sources.read_sysfs_parsed(tree, laid_out=False)
    assert bare.table.targets[0].offset == 0 and laid.table.targets[0].offset > 0
    assert table_to_model(bare.table) == table_to_model(laid.table)
    script = (
        "import sys\n"
        "from iscsiboot.ibft import sources\n"
        "from iscsiboot.ibft.mapping import table_to_model\n"
        f"found = sources.read_sysfs_found({str(tree)!r}, laid_out=False)\n"
        "table_to_model(found.parsed.table)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'construct'))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sysfs_quirks(tmp_path: Path) -> None:
    tree = write_sysfs_tree(tmp_path / "ibft", parse_table(MUTUAL.read_bytes()).table, pci_link=False)
    (tree / "ethernet0/prefix-len").unlink()  # subnet-mask alone still gives the prefix
    (tree / "target0/lun").write_text("1a1b00000\n")  # 9 digits, several readings
    parsed = sources.read_sysfs_parsed(tree)
    assert parsed.table.nics[0].prefix == 24
    assert parsed.table.targets[0].rev_chap_secret is not None
    assert parsed.table.targets[0].rev_chap_secret.reveal() == REVERSE_SECRET
    text = " | ".join(parsed.warnings)
    assert "no device link" in text and "fits several byte sequences" in text


def test_sysfs_missing(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem, match="modprobe iscsi_ibft"):
        sources.read_sysfs(tmp_path / "nothing")


# ---------------------------------------------------------------- auto


def test_auto_order(tmp_path: Path) -> None:
    root = tmp_path
    _acpi(root, {"iBFT": MUTUAL.read_bytes()})
    (root / "dev").mkdir()
    (root / "dev/mem").write_bytes(memory_image(NOCHAP.read_bytes(), 0x9A000))
    write_sysfs_tree(root / "sys/firmware/ibft", parse_table(MUTUAL.read_bytes()).table)

    table, source = sources.read_auto(root)
    assert source.startswith("ACPI table ")
    (root / "sys/firmware/acpi/tables/iBFT").unlink()
    table, source = sources.read_auto(root)
    assert source == f"legacy BIOS memory {root}/dev/mem at 0x9a000"
    assert table.initiator is not None and table.initiator.name is not None
    assert table.initiator.name.startswith("iqn.2010-04.org.ipxe:")
    (root / "dev/mem").unlink()
    table, source = sources.read_auto(root)
    assert source == f"kernel view {root}/sys/firmware/ibft"
    shutil.rmtree(root / "sys/firmware/ibft")
    with pytest.raises(EnvironmentProblem, match=r"no iBFT found \(ACPI: .*; /dev/mem: .*; sysfs: "):
        sources.read_auto(root)


def test_large_memory_dump_is_read_only_in_the_scanned_window(tmp_path: Path) -> None:
    dump = tmp_path / "ram.bin"
    with dump.open("wb") as f:
        f.write(memory_image(MUTUAL.read_bytes(), 0x9A000))
        f.truncate(64 << 20)  # a 64 MiB sparse "RAM" image
    found = sources.read_memory_dump(dump, 0)
    assert found.source.endswith("at 0x9a000")
    with pytest.raises(TableError, match="above the scanned range"):
        sources.read_memory_dump(dump, 0x100000)
