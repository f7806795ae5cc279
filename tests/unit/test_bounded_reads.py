"""Files a user names are read bounded and never waited on: FIFOs, devices, huge files, sysfs links.

Each command is run as a child process with a deadline: a reader that blocks
on a FIFO or reads /dev/zero without end fails the test by its timeout
instead of hanging the suite.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ibft_support import NOCHAP, write_sysfs_tree
from iscsiboot import files
from iscsiboot.errors import UsageError
from iscsiboot.ibft.parse import parse_table

DEADLINE = 20.0  # seconds: each command here answers in well under one
TARGET = ["--initiator", "iqn.2003-01.org.example:box"]
TARGET += ["--target-name", "iqn.2003-01.org.example:disk", "--target-ip", "10.0.0.9"]


def iscsiboot(
    *args: str | os.PathLike[str], stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``iscsiboot ARGS`` in a child; the test fails if it does not end within DEADLINE."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "iscsiboot", *(os.fspath(a) for a in args)],
        input=stdin,
        cwd=cwd,
        capture_output=True,
        timeout=DEADLINE,
        check=False,
    )
    assert time.monotonic() - started < DEADLINE
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 2, one line on stderr that names the problem, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big"
    with path.open("wb") as handle:  # sparse: 2 MiB of zeros that take no room
        handle.truncate(2 * files.MIB)
    return path


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    yield path
    server.close()


# ---------------------------------------------------------------- the reader itself


def test_reader_refuses_what_is_not_a_regular_file(fifo: Path, sock: Path, tmp_path: Path) -> None:
    for path, kind in ((fifo, "a FIFO"), (sock, "a socket"), (Path("/dev/zero"), "a character device")):
        with pytest.raises(UsageError) as caught:
            files.read_bytes(path, 100)
        assert str(caught.value) == f"{path}: cannot read {kind} (give a regular file)"
    with pytest.raises(UsageError, match="cannot read a folder"):
        files.read_text(tmp_path)


def test_reader_caps_what_it_reads(big: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="x: is longer than 1 MiB"):
        files.read_bytes(big, files.MIB, where="x")
    assert files.read_bytes(big, 10, truncate=True, offset=5) == bytes(10)
    assert files.read_bytes("/dev/zero", 7, devices=True, truncate=True) == bytes(7)
    with pytest.raises(UsageError, match="is longer than 16 bytes"):  # a file that does not know its size
        files.read_bytes("/proc/self/status", 16)
    text = tmp_path / "t"
    text.write_bytes("caf\u00e9\n".encode())
    assert files.read_text(text) == "caf\u00e9\n"
    text.write_bytes(b"caf\xe9")
    with pytest.raises(UsageError, match="byte 0xe9 at offset 3 is not UTF-8"):
        files.read_text(text)
    with pytest.raises(FileNotFoundError):
        files.read_bytes(tmp_path / "missing", 10)


# ---------------------------------------------------------------- every reader of a named file

FILE_OPTIONS = {
    "cmdline parse --file": lambda p: ["cmdline", "parse", "--file", p],
    "--from-json": lambda p: ["generate", "cmdline", "--from-json", p],
    "ibft build --from-json": lambda p: ["ibft", "build", "--from-json", p, "-o", "table.bin"],
    "--password-file": lambda p: ["generate", "cmdline", *TARGET, "--username", "u", "--password-file", p],
    "discover --password-file": lambda p: [
        "discover",
        "--portal",
        "127.0.0.1:9",
        "--username",
        "u",
        "--password-file",
        p,
    ],
    "doctor --extlinux": lambda p: ["doctor", "--extlinux", p],
    "ibft show": lambda p: ["ibft", "show", p],
}


@pytest.mark.parametrize("option", FILE_OPTIONS)
def test_a_fifo_is_refused_not_waited_on(option: str, fifo: Path, tmp_path: Path) -> None:
    refused(iscsiboot(*FILE_OPTIONS[option](str(fifo)), cwd=tmp_path), f"{fifo}: cannot read a FIFO")


@pytest.mark.parametrize("option", FILE_OPTIONS)
def test_dev_zero_is_refused_not_read_without_end(option: str, tmp_path: Path) -> None:
    result = iscsiboot(*FILE_OPTIONS[option]("/dev/zero"), cwd=tmp_path)
    refused(result, "/dev/zero: cannot read a character device")


@pytest.mark.parametrize("option", [o for o in FILE_OPTIONS if o != "ibft show"])
def test_a_huge_file_is_refused(option: str, big: Path, tmp_path: Path) -> None:
    refused(iscsiboot(*FILE_OPTIONS[option](str(big)), cwd=tmp_path), f"{big}: is longer than")


def test_stdin_is_still_read_where_it_was() -> None:
    line = b"boot=ISCSI=auto,LABEL=System disk=LABEL=Storage"
    assert iscsiboot("cmdline", "parse", "--file", "-", stdin=line).returncode == 0
    model = iscsiboot("cmdline", "parse", "--json", "--file", "-", stdin=line).stdout
    result = iscsiboot("generate", "cmdline", "--from-json", "-", stdin=model.encode())
    assert result.returncode == 0 and "boot=ISCSI=auto" in result.stdout, result.stderr
    refused(iscsiboot("cmdline", "parse", "--file", "-", stdin=b"x" * (files.MIB + 1)), "longer than 1 MiB")


def test_a_sysfs_attribute_is_at_most_a_page_and_never_a_device(tmp_path: Path) -> None:
    tree = write_sysfs_tree(tmp_path / "ibft", parse_table(NOCHAP.read_bytes()).table)
    assert iscsiboot("ibft", "show", "--source", "sysfs", tree).returncode == 0
    name = tree / "target0" / "target-name"
    name.unlink()
    name.symlink_to("/dev/zero")
    refused(iscsiboot("ibft", "show", "--source", "sysfs", tree), "cannot read a character device")
    name.unlink()
    name.write_text("iqn.2003-01.org.example:" + "x" * files.PAGE)
    refused(iscsiboot("ibft", "show", "--source", "sysfs", tree), f"{name}: is longer than 4 KiB")


def test_a_memory_dump_may_be_a_device_but_not_a_fifo(fifo: Path) -> None:
    result = iscsiboot("ibft", "show", "--source", "memory", "/dev/zero")
    assert result.returncode == 1 and "no iBFT signature" in result.stderr, result.stderr
    refused(iscsiboot("ibft", "show", "--source", "memory", fifo), "cannot read a FIFO")
    refused(iscsiboot("ibft", "show", "--source", "devmem", fifo), "cannot read a FIFO")
