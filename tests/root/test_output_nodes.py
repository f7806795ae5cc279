"""As root, -o on a device node (a private copy of /dev/null's) leaves the node as it was."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cmdline_support import run_cli

TARGET = ["--target-name", "iqn.2003-01.org.example:disk", "--target-ip", "10.0.0.9", "--lun", "1"]
NODES = {"character": (stat.S_IFCHR, os.makedev(1, 3)), "block": (stat.S_IFBLK, os.makedev(7, 0))}


@pytest.fixture(autouse=True)
def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (mknod)")


@pytest.mark.parametrize("kind", sorted(NODES))
@pytest.mark.parametrize(
    "command", [["generate", "cmdline", *TARGET], ["ibft", "build", *TARGET]], ids=["generate", "ibft"]
)
def test_output_refuses_a_device_node(tmp_path: Path, command: list[str], kind: str) -> None:
    node = tmp_path / "null"
    mode, rdev = NODES[kind]
    os.mknod(node, mode | 0o666, rdev)
    before = os.lstat(node)
    done = run_cli(*command, "-o", str(node))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"a {kind} device" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    after = os.lstat(node)
    assert (after.st_mode, after.st_rdev, after.st_ino) == (before.st_mode, before.st_rdev, before.st_ino)
    assert os.listdir(tmp_path) == ["null"]
