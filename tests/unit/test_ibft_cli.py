"""``iscsiboot ibft show`` and ``ibft build`` through the real console entry point."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest
from ibft_support import (
    MUTUAL,
    NOCHAP,
    REVERSE_SECRET,
    SECRET,
    cli,
    memory_image,
    sample_paths,
    sample_sysfs,
    write_sysfs_tree,
)
from iscsiboot.ibft.mapping import table_to_model
from iscsiboot.ibft.parse import parse_table
from iscsiboot.model import Target

SAMPLES = sample_paths()


def _one_line_error(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, done.stderr
    err: str = done.stderr
    assert "Traceback" not in err
    assert err.startswith("iscsiboot: error: ") and err.count("\n") == 1, err
    assert done.stdout == ""
    return err


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_show_sysfs_equals_kernel(path: Path) -> None:
    done = cli("ibft", "show", "--sysfs", "--show-secrets", path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert dict(line.split("=", 1) for line in lines) == sample_sysfs(path)
    assert f"source: table file {path}" in done.stderr


def test_show_sysfs_masks_secrets() -> None:
    done = cli("ibft", "show", "--sysfs", MUTUAL)
    assert "target0/chap-secret=***" in done.stdout.splitlines()
    assert "target0/rev-chap-name-secret=***" in done.stdout.splitlines()
    assert SECRET not in done.stdout + done.stderr
    assert REVERSE_SECRET not in done.stdout + done.stderr


def test_show_text() -> None:
    done = cli("ibft", "show", "--model", MUTUAL)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for block in (
        "iSCSI Boot Firmware Table",
        "control (offset 0x30",
        "initiator (offset 0x50)",
        "NIC 0 (ethernet0, offset 0xa0)",
        "target 0 (target0, offset 0x180)",
        "boot model",
    ):
        assert block in out
    assert "mutual CHAP" in out and "htpc / ***" in out
    assert SECRET not in out and REVERSE_SECRET not in out


def test_show_json_every_field() -> None:
    done = cli("ibft", "show", "--json", MUTUAL)
    assert done.returncode == 0, done.stderr
    obj = json.loads(done.stdout)
    table = obj["table"]
    assert obj["source"] == f"table file {MUTUAL}"
    assert table["signature"] == "iBFT" and table["length"] == 616 and table["checksum"] == 0xF1
    assert table["control"]["slots"] == [0xA0, 0x180, 0, 0]
    nic = table["nics"][0]
    assert nic["pci_bdf"] == 0x10 and nic["pci"] == "00:02.0" and nic["origin"] == 3
    tgt = table["targets"][0]
    assert tgt["lun"] == "0001000000000000" and tgt["lun_number"] == 1
    assert tgt["chap_secret"] == "***" and tgt["rev_chap_secret"] == "***"
    assert tgt["chap_secret_ref"] == {"length": len(SECRET), "offset": 0x245}
    assert obj["model"]["targets"][0]["chap"]["password"] == "***"
    assert SECRET not in done.stdout
    shown = json.loads(cli("ibft", "show", "--json", "--show-secrets", MUTUAL).stdout)
    assert shown["table"]["targets"][0]["chap_secret"] == SECRET


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _patch(data: bytes, offset: int, raw: bytes, fix: bool = True) -> bytes:
    out = bytearray(data)
    out[offset : offset + len(raw)] = raw
    if fix:
        out[9] = 0
        out[9] = (-sum(out)) & 0xFF
    return bytes(out)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda d: _patch(d, 9, bytes([d[9] ^ 1]), fix=False),
            "acpi_header.checksum at offset 0x9: bad checksum",
        ),
        (lambda d: d[:40], "truncated"),
        (lambda d: d[:500], "table length 603 is beyond the 500 bytes of data"),
        (
            lambda d: _patch(d, 0x3C, (0x2000).to_bytes(2, "little")),
            "control.target0: offset 0x2000 is out of range",
        ),
        (lambda d: _patch(d, 0x25A, b"X"), "not NUL-terminated"),
        (lambda d: _patch(d, 0x180, b"\x03"), "target0 at offset 0x180: structure id 3 (nic), expected 4"),
        (lambda d: _patch(d, 0x51, b"\x07"), "initiator at offset 0x50: version 7, expected 1"),
        (lambda d: b"RSDT" + d[4:], "signature b'RSDT' is not one of iBFT, IBFT, BIFT"),
    ],
    ids=["checksum", "truncated", "beyond", "offset", "unterminated", "id", "version", "signature"],
)
def test_show_errors_are_one_line(tmp_path: Path, make: object, words: str) -> None:
    data = make(NOCHAP.read_bytes())  # type: ignore[operator]
    path = _write(tmp_path, "t.bin", data)
    for mode in ((), ("--json",), ("--sysfs",)):
        err = _one_line_error(cli("ibft", "show", *mode, path))
        assert words in err


def test_show_unreadable_source(tmp_path: Path) -> None:
    err = _one_line_error(cli("ibft", "show", tmp_path / "absent.bin"), code=1)
    assert "does not exist" in err


def test_lenient_reads_a_bad_checksum(tmp_path: Path) -> None:
    data = NOCHAP.read_bytes()
    path = _write(tmp_path, "t.bin", _patch(data, 9, bytes([data[9] ^ 1]), fix=False))
    done = cli("ibft", "show", "--lenient", "--sysfs", path)
    assert done.returncode == 0
    assert "warning: acpi_header.checksum at offset 0x9: bad checksum" in done.stderr
    assert dict(line.split("=", 1) for line in done.stdout.splitlines()) == sample_sysfs(NOCHAP)


def test_show_sources(tmp_path: Path) -> None:
    dump = _write(tmp_path, "dump.bin", memory_image(MUTUAL.read_bytes(), 0x9D000))
    done = cli("ibft", "show", "--source", "memory", "--sysfs", dump)
    assert done.returncode == 0, done.stderr
    assert f"source: memory dump {dump} at 0x9d000" in done.stderr
    tree = write_sysfs_tree(tmp_path / "ibft", parse_table(MUTUAL.read_bytes()).table)
    done = cli("ibft", "show", "--source", "sysfs", "--sysfs", "--show-secrets", tree)
    assert dict(line.split("=", 1) for line in done.stdout.splitlines()) == sample_sysfs(MUTUAL)
    root = tmp_path / "root"
    write_sysfs_tree(root / "sys/firmware/ibft", parse_table(NOCHAP.read_bytes()).table)
    done = cli("ibft", "show", "--source", "auto", root)
    assert done.returncode == 0, done.stderr
    assert f"source     kernel view {root}/sys/firmware/ibft" in done.stdout
    err = _one_line_error(cli("ibft", "show", "--source", "auto", tmp_path / "empty"), code=1)
    assert "no iBFT found (ACPI:" in err


# ---------------------------------------------------------------- build


def test_build_from_options(tmp_path: Path) -> None:
    out = tmp_path / "t.bin"
    done = cli(
        "ibft", "build", "-o", out, "--initiator", "iqn.2010-04.org.ipxe:client",
        "--target-name", "iqn.2003-01.org.example:disk1", "--target-ip", "10.0.2.2", "--lun", "1",
        "--username", "user", "--password", "secret123456",
        "--reverse-username", "tgt", "--reverse-password", "secret654321",
        "--mac", "52:54:00:AB:CD:EF", "--pci", "00:04.0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # secrets inside
    table = parse_table(out.read_bytes()).table
    assert table.nics[0].mac == "52:54:00:ab:cd:ef" and table.nics[0].pci == "00:04.0"
    cfg, warnings = table_to_model(table)
    assert warnings == ()
    assert cfg.initiator == "iqn.2010-04.org.ipxe:client"
    assert cfg.targets[0].reverse_chap is not None and cfg.targets[0].reverse_chap.username == "tgt"
    assert "secret123456" not in done.stdout + done.stderr


def test_build_without_secrets_is_world_readable(tmp_path: Path) -> None:
    out = tmp_path / "t.bin"
    done = cli(
        "ibft", "build", "-o", out, "--target-name", "iqn.2003-01.org.example:d", "--target-ip", "10.0.0.9"
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    table = parse_table(out.read_bytes()).table
    assert table.nics[0].mac == "52:54:00:12:34:56" and table.nics[0].pci == "00:03.0"


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_build_from_table_json_is_byte_identical(tmp_path: Path, path: Path) -> None:
    dumped = cli("ibft", "show", "--json", "--show-secrets", path)
    json_path = tmp_path / "t.json"
    json_path.write_text(dumped.stdout)
    out = tmp_path / "t.bin"
    done = cli("ibft", "build", "--from-json", json_path, "-o", out)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == path.read_bytes()
    # the table part alone works too, from stdin
    done = cli("ibft", "build", "--from-json", "-", "-o", out,
               input_text=json.dumps(json.loads(dumped.stdout)["table"]))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == path.read_bytes()


def test_build_from_model_json(tmp_path: Path) -> None:
    parsed = cli("cmdline", "parse", "--json", "--show-secrets",
                 "root=iscsi:10.0.2.2::3260:1:iqn.2003-01.org.example:disk1 ip=dhcp")  # fmt: skip
    assert parsed.returncode == 0, parsed.stderr
    model = tmp_path / "m.json"
    model.write_text(parsed.stdout)
    out = tmp_path / "t.bin"
    done = cli("ibft", "build", "--from-json", model, "-o", out, "--pci", "00:02.0")
    assert done.returncode == 0, done.stderr
    cfg, _ = table_to_model(parse_table(out.read_bytes()).table)
    assert cfg.targets == (Target(name="iqn.2003-01.org.example:disk1", address="10.0.2.2", lun=1),)
    assert cfg.network.mac == "52:54:00:12:34:56"


def test_build_errors(tmp_path: Path) -> None:
    out = tmp_path / "t.bin"
    err = _one_line_error(
        cli("ibft", "build", "-o", out, "--target-name", "iqn.x:y", "--target-ip", "nas.local")
    )
    assert "host name" in err
    err = _one_line_error(cli("ibft", "build", "-o", out))
    assert "no target" in err
    masked = tmp_path / "masked.json"
    masked.write_text(cli("ibft", "show", "--json", MUTUAL).stdout)
    err = _one_line_error(cli("ibft", "build", "--from-json", masked, "-o", out))
    assert "masked" in err
    err = _one_line_error(cli("ibft", "build", "--from-json", masked, "--lun", "2", "-o", out))
    assert "--from-json given together with --lun" in err
    err = _one_line_error(cli("ibft", "build", "-o", tmp_path / "no/such/dir/t.bin", "--target-name",
                              "iqn.x:y", "--target-ip", "10.0.0.1"))  # fmt: skip
    assert "cannot write" in err
    err = _one_line_error(cli("ibft", "build", "-o", out, "--mac", "zz", "--target-name", "iqn.x:y",
                              "--target-ip", "10.0.0.1"))  # fmt: skip
    assert "--mac" in err
    assert not out.exists()
