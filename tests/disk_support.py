"""Helpers for the disk tests: images made by real tools, readers over files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest


def tool(name: str) -> str:
    """The path of ``name`` or a skip naming the missing package."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        pytest.skip(f"{name} not installed")
    return path


def sh(*argv: str | os.PathLike[str], input_text: str | None = None) -> str:
    """Run a tool for a test (not product code) and return its stdout."""
    done = subprocess.run(
        [str(a) for a in argv], input=input_text, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{argv} exited {done.returncode}: {done.stderr}")
    return done.stdout


def sparse(path: Path, size: int) -> Path:
    with path.open("wb") as handle:
        handle.truncate(size)
    return path


def blkid(path: Path, offset: int = 0) -> dict[str, str]:
    """``blkid -p`` (low-level probe) of a file, as a dict of its export lines."""
    argv = [tool("blkid"), "-p", "-o", "export"]
    if offset:
        argv += ["-O", str(offset)]
    done = subprocess.run([*argv, str(path)], capture_output=True, text=True, check=False)
    out: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        out[key] = value
    return out


def need_root_and_loops() -> None:
    """Skip, saying why, unless this is root with loop devices and syslinux's mbr.bin."""
    from iscsiboot.disk.install import MBR_BIN  # noqa: PLC0415 (the unit tier imports this module too)

    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, mounts)")
    if not Path("/dev/loop-control").exists():
        pytest.skip("no loop device support")
    if not MBR_BIN.exists():
        pytest.skip("syslinux-common (mbr.bin) not installed")
