"""Helpers for the agent tests: network namespaces with dnsmasq, fake sysfs trees, disk images."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def need_root_tools(*programs: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for program in programs:
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin:/sbin") is None:
            pytest.skip(f"needs {program}")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, capture_output=True, text=True)


@dataclass
class NetLab:
    """Two namespaces joined by a veth pair: ``srv`` (10.77.0.1/24, dnsmasq) and ``cli`` (the agent)."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    dnsmasq: subprocess.Popen[str] | None = None
    log: Path | None = None

    @property
    def srv(self) -> str:
        return f"isb-s-{self.tag}"

    @property
    def cli(self) -> str:
        return f"isb-c-{self.tag}"

    cli_if: str = "eth0"
    srv_if: str = "veth-srv"

    def create(self, *, peer_up: bool = True, cli_mac: str = "02:00:00:00:00:01") -> None:
        sh("ip", "netns", "add", self.srv)
        sh("ip", "netns", "add", self.cli)
        sh(
            "ip", "link", "add", "name", self.cli_if, "netns", self.cli, "address", cli_mac,
            "type", "veth", "peer", "name", self.srv_if, "netns", self.srv,
        )  # fmt: skip
        sh("ip", "-n", self.srv, "addr", "add", "10.77.0.1/24", "dev", self.srv_if)
        sh("ip", "-n", self.cli, "link", "set", "lo", "up")
        sh("ip", "-n", self.srv, "link", "set", "lo", "up")
        if peer_up:
            self.peer_up()

    def peer_up(self) -> None:
        sh("ip", "-n", self.srv, "link", "set", self.srv_if, "up")

    def start_dnsmasq(self, tmp: Path, *extra: str) -> None:
        self.log = tmp / "dnsmasq.log"
        pid = tmp / "dnsmasq.pid"
        argv = [
            "ip", "netns", "exec", self.srv, "dnsmasq", "--no-daemon", "--no-ping", "--port=0",
            "--dhcp-range=10.77.0.50,10.77.0.99,255.255.255.0,1h", f"--pid-file={pid}",
            "--conf-file=/dev/null", f"--interface={self.srv_if}", "--bind-interfaces",
            "--dhcp-leasefile=" + str(tmp / "leases"), "--dhcp-option=3,10.77.0.1",
            "--dhcp-option=6,10.77.0.1", "--dhcp-option=17,iscsi:10.77.0.1::3260:1:iqn.2024-01.test:t0",
            "--log-dhcp", *extra,
        ]  # fmt: skip
        handle = self.log.open("w")
        self.dnsmasq = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, text=True)

    def run_agent(self, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run Python ``code`` in the client namespace (the agent's side)."""
        return subprocess.run(
            ["ip", "netns", "exec", self.cli, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
        )

    def run_cli(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.cli, sys.executable, "-m", "iscsiboot", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
        )

    def destroy(self) -> None:
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            self.dnsmasq.send_signal(signal.SIGTERM)
            try:
                self.dnsmasq.wait(5)
            except subprocess.TimeoutExpired:
                self.dnsmasq.kill()
                self.dnsmasq.wait()
        for ns in (self.cli, self.srv):
            sh("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def netlab(**kwargs: object) -> Iterator[NetLab]:
    need_root_tools("ip", "dnsmasq")
    lab = NetLab()
    try:
        lab.create(**kwargs)  # type: ignore[arg-type]
        yield lab
    finally:
        lab.destroy()


# ------------------------------------------------------------------ fake sysfs


def fake_iscsi_sysfs(
    root: Path,
    *,
    sessions: dict[int, str],
    disks: list[tuple[int, int, int, str, int, list[int]]],
) -> Path:
    """A sysfs tree: sessions {sid: target}; disks (sid, host, lun, name, size in bytes, partitions)."""
    sysfs = root / "sys"
    for sid, target in sessions.items():
        host = 2 + sid
        dev = sysfs / f"devices/platform/host{host}/session{sid}"
        cls = dev / f"iscsi_session/session{sid}"
        cls.mkdir(parents=True)
        (cls / "targetname").write_text(target + "\n")
        (cls / "device").symlink_to(dev)
        link = sysfs / "class/iscsi_session" / f"session{sid}"
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(cls)
    for sid, host, lun, name, size, parts in disks:
        dev = sysfs / f"devices/platform/host{host}/session{sid}"
        lun_dir = dev / f"target{host}:0:0/{host}:0:0:{lun}"
        block = lun_dir / "block" / name
        block.mkdir(parents=True)
        (lun_dir / "type").write_text("0\n")
        (block / "size").write_text(f"{size // 512}\n")
        (block / "dev").write_text(f"8:{lun * 16}\n")
        link = sysfs / "class/block" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(block)
        for number in parts:
            part = block / f"{name}{number}"
            part.mkdir()
            (part / "partition").write_text(f"{number}\n")
            (part / "dev").write_text(f"8:{lun * 16 + number}\n")
    return sysfs


# ------------------------------------------------------------------ disk images

MIB = 1024 * 1024


def make_ext4(path: Path, size_mib: int, label: str, files: dict[str, bytes | Path] | None = None) -> None:
    """An ext4 image with ``files`` in it (mkfs.ext4 -d, no root needed)."""
    content = path.parent / f"{path.name}.d"
    content.mkdir()
    for name, data in (files or {}).items():
        target = content / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            shutil.copy(data, target)
        else:
            target.write_bytes(data)
    with path.open("wb") as handle:
        handle.truncate(size_mib * MIB)
    sh("mkfs.ext4", "-q", "-F", "-L", label, "-d", str(content), str(path))
    shutil.rmtree(content)


def make_squashfs(path: Path, tree: dict[str, bytes | None]) -> None:
    """A squashfs image; ``None`` values are directories."""
    content = path.parent / f"{path.name}.d"
    content.mkdir()
    for name, data in tree.items():
        target = content / name
        if data is None:
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(0o755)
    sh("mksquashfs", str(content), str(path), "-quiet", "-noappend", "-all-root")
    shutil.rmtree(content)


def system_tree() -> dict[str, bytes | None]:
    """A tiny OpenELEC-like SYSTEM: /flash, /storage, an init."""
    return {
        "flash": None,
        "storage": None,
        "dev": None,
        "proc": None,
        "sys": None,
        "run": None,
        "usr/lib/systemd/systemd": b"#!/bin/sh\necho booted\n",
    }


def make_disk(path: Path, parts: list[Path]) -> list[tuple[int, int]]:
    """An MBR disk holding the given partition images; returns (offset, size) of each."""
    start = 1 * MIB
    layout: list[tuple[int, int]] = []
    for part in parts:
        size = part.stat().st_size
        layout.append((start, size))
        start += size
    with path.open("wb") as handle:
        handle.truncate(start + MIB)
    script = "label: dos\n" + "".join(
        f"start={off // 512}, size={size // 512}, type=83{', bootable' if i == 0 else ''}\n"
        for i, (off, size) in enumerate(layout)
    )
    subprocess.run(["sfdisk", "-q", str(path)], input=script, text=True, check=True, capture_output=True)
    with path.open("r+b") as handle:
        for part, (off, _size) in zip(parts, layout, strict=True):
            handle.seek(off)
            handle.write(part.read_bytes())
    return layout


@contextlib.contextmanager
def loop_device(image: Path, offset: int = 0, size: int | None = None) -> Iterator[str]:
    """``losetup`` an image (or a slice of it); detaches exactly that device afterwards."""
    argv = ["losetup", "-f", "--show", "-o", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    device = sh(*argv, str(image)).stdout.strip()
    try:
        yield device
    finally:
        sh("losetup", "-d", device, check=False)


def mounted_at(path: Path) -> list[str]:
    """Mount options of every mount at ``path`` (from /proc/self/mountinfo)."""
    found = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            if fields[4] == str(path):
                found.append(fields[5])
    return found


def unmount_all_under(path: Path) -> None:
    points = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            point = line.split()[4]
            if point == str(path) or point.startswith(str(path) + "/"):
                points.append(point)
    for point in sorted(points, key=len, reverse=True):
        sh("umount", "-l", point, check=False)
