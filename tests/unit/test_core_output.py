"""Files named with -o/--output: only an absent path or a regular file is ever replaced."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cmdline_support import run_cli
from iscsiboot import output
from iscsiboot.errors import UsageError
from iscsiboot.output import check_output, new_file, new_folder, write_atomic, write_output
from iscsiboot.proc import find

TARGET = ["--target-name", "iqn.2003-01.org.example:disk", "--target-ip", "10.0.0.9", "--lun", "1"]
COMMANDS = {
    "generate": ["generate", "ipxe", *TARGET],
    "ibft build": ["ibft", "build", *TARGET],
}


def _fifo(folder: Path) -> Path:
    path = folder / "fifo"
    os.mkfifo(path)
    return path


def _symlink(folder: Path) -> Path:
    victim = folder / "victim"
    victim.write_text("precious\n")
    link = folder / "link"
    link.symlink_to(victim)
    return link


def _dangling(folder: Path) -> Path:
    link = folder / "dangling"
    link.symlink_to(folder / "nowhere")
    return link


def _folder(folder: Path) -> Path:
    path = folder / "sub"
    path.mkdir()
    return path


@pytest.fixture
def unix_socket(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(path))
        yield path


MAKERS = {"fifo": _fifo, "symlink": _symlink, "dangling symlink": _dangling, "folder": _folder}


def _identity(path: Path) -> tuple[int, int, int]:
    st = os.lstat(path)
    return (st.st_mode, st.st_ino, st.st_dev)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_write_atomic_refuses_what_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    path = MAKERS[kind](tmp_path)
    before = _identity(path)
    listing = sorted(os.listdir(tmp_path))
    with pytest.raises(OSError, match="only a regular file is replaced"):
        write_atomic(path, "data\n")
    assert _identity(path) == before
    assert sorted(os.listdir(tmp_path)) == listing  # no temporary file left
    with pytest.raises(UsageError, match=r"--output: cannot write .*only a regular file"):
        check_output(path)


def test_a_link_and_what_it_points_to_stay(tmp_path: Path) -> None:
    link = _symlink(tmp_path)
    with pytest.raises(UsageError) as caught:
        write_output(link, "new\n", option="-o")
    assert "symbolic link" in str(caught.value) and "points to" in str(caught.value)
    assert link.is_symlink() and (tmp_path / "victim").read_text() == "precious\n"


def test_write_atomic_refuses_a_socket(unix_socket: Path) -> None:
    with pytest.raises(OSError, match="a socket"):
        write_atomic(unix_socket, b"x")
    assert stat.S_ISSOCK(os.lstat(unix_socket).st_mode)


def test_write_atomic_replaces_a_regular_file_and_creates_a_new_one(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.write_text("before\n")
    write_atomic(old, "after\n", 0o600)
    assert old.read_text() == "after\n" and stat.S_IMODE(old.stat().st_mode) == 0o600
    new = tmp_path / "new"
    write_output(new, b"bytes")
    assert new.read_bytes() == b"bytes"
    check_output(tmp_path / "absent")


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_output_option_never_replaces_a_special_file(tmp_path: Path, command: str, kind: str) -> None:
    """A FIFO, link or folder given as -o stays as it was; one line, exit 2."""
    path = MAKERS[kind](tmp_path)
    before = _identity(path)
    listing = sorted(os.listdir(tmp_path))
    done = run_cli(*COMMANDS[command], "-o", str(path))
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "only a regular file is replaced" in lines[0], done.stderr
    assert _identity(path) == before
    assert sorted(os.listdir(tmp_path)) == listing


def test_new_file_and_new_folder_are_private_and_never_an_existing_name(tmp_path: Path) -> None:
    fd, name = new_file(str(tmp_path), ".x.")
    os.close(fd)
    folder = new_folder(str(tmp_path), "d.")
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert Path(name).parent == tmp_path and Path(name).name.startswith(".x.")
    names = {name, folder}
    for _ in range(50):
        fd, other = new_file(str(tmp_path), ".x.")
        os.close(fd)
        names.add(other)
    assert len(names) == 52  # each call a new name, every file created by that call


def test_new_file_gives_up_with_eexist_when_every_name_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = str(tmp_path / "taken")
    Path(taken).write_text("keep")
    monkeypatch.setattr(output, "_fresh_names", lambda folder, prefix: iter([taken] * output.TEMP_TRIES))
    with pytest.raises(FileExistsError):
        new_file(str(tmp_path), "t.")
    with pytest.raises(FileExistsError):
        new_folder(str(tmp_path), "t.")
    assert Path(taken).read_text() == "keep"  # never opened for writing, never truncated


def test_find_searches_path_then_the_system_folders_and_skips_what_cannot_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, runnable, folder = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (plain, runnable, folder):
        d.mkdir()
    (plain / "tool").write_text("#!/bin/sh\n")  # not executable
    (runnable / "tool").write_text("#!/bin/sh\n")
    (runnable / "tool").chmod(0o755)
    (folder / "tool").mkdir()  # a folder is not a program
    monkeypatch.setenv("PATH", os.pathsep.join([str(plain), str(folder), str(runnable)]))
    assert find("tool") == str(runnable / "tool")
    assert find(str(runnable / "tool")) == str(runnable / "tool")
    assert find(str(plain / "tool")) is None
    assert find("no-such-program-here") is None
    monkeypatch.setenv("PATH", str(plain))
    assert find("sh") in {"/usr/bin/sh", "/bin/sh"}  # not on $PATH: the system folders
