"""Shared helpers for tests that run a real tgtd on loopback (marker ``target``).

``tgtd_or_skip`` gives a started :class:`~iscsiboot.qemu.tgt.Tgtd` (stopped again
by the caller's context), or skips with a reason when tgtd or root is missing.
``make_disk_image`` builds a partitioned disk image without root: sfdisk writes
the MBR, ``mkfs.ext4 -d`` fills each file system from a folder at an offset.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from iscsiboot.qemu.tgt import Tgtd

MIB = 1024 * 1024


def tgtd_missing() -> str | None:
    """Why a tgtd cannot run here, or None."""
    if os.geteuid() != 0:
        return "tgtd needs root"
    for program in ("tgtd", "tgtadm"):
        if shutil.which(program) is None and not Path("/usr/sbin", program).exists():
            return f"{program} not installed (Debian package tgt)"
    return None


@contextmanager
def tgtd_or_skip(workdir: Path) -> Iterator[Tgtd]:
    reason = tgtd_missing()
    if reason:
        pytest.skip(reason)
    with Tgtd(workdir) as tgtd:
        yield tgtd


@dataclass(frozen=True)
class Fs:
    """One ext4 partition: its size, label, UUID and the files to put in it."""

    size_mib: int
    label: str
    uuid: str | None = None
    files: Mapping[str, bytes] = field(default_factory=dict)
    bootable: bool = False


def make_disk_image(path: Path, parts: list[Fs], *, scheme: str = "dos") -> Path:
    """A disk image with one ext4 file system per entry of ``parts`` (no root needed)."""
    total = 1 + sum(p.size_mib for p in parts) + 1
    with open(path, "wb") as handle:
        handle.truncate(total * MIB)
    lines = [f"label: {scheme}"]
    start = 1
    for p in parts:
        boot = ", bootable" if p.bootable and scheme == "dos" else ""
        kind = "83" if scheme == "dos" else "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
        lines.append(f"start={start * MIB // 512}, size={p.size_mib * MIB // 512}, type={kind}{boot}")
        start += p.size_mib
    subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(path)],
        input="\n".join(lines) + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    start = 1
    for number, p in enumerate(parts, start=1):
        tree = path.parent / f"{path.name}.p{number}"
        tree.mkdir(exist_ok=True)
        for name, data in p.files.items():
            target = tree / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        argv = ["mkfs.ext4", "-q", "-F", "-L", p.label, "-d", str(tree)]
        if p.uuid:
            argv += ["-U", p.uuid]
        argv += ["-E", f"offset={start * MIB}", str(path), f"{p.size_mib * 1024}k"]
        subprocess.run(argv, check=True, capture_output=True)
        start += p.size_mib
    return path


def libiscsi_tool(name: str) -> str:
    """The path of a libiscsi-bin tool, or skip."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package libiscsi-bin)")
    return path


def run_tool(argv: list[str], *, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def tool_fields(text: str) -> dict[str, str]:
    """``Key:Value`` lines (iscsi-inq, iscsi-readcapacity16) as a dict; first value wins."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key not in fields:
            fields[key.strip()] = value.strip()
    return fields
