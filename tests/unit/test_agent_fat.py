"""The agent meets a FAT System: its label from the FAT itself, vfat and its code pages loaded."""

from __future__ import annotations

import os
from pathlib import Path

from disk_support import tool
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.phases.label import candidates_of_disk, resolve
from iscsiboot.agent.phases.mount import Mounter
from iscsiboot.agent.plan import FS_HELPERS, FS_MODULES
from iscsiboot.disk.install import install_image
from iscsiboot.disk.layout import LayoutKind, MiB
from iscsiboot.disk.readers import file_reader
from iscsiboot.initramfs.modules import COMMON_MODULES, default_modules
from iscsiboot.model import Locator


def test_the_label_phase_finds_a_fat_system(tmp_path: Path) -> None:
    for name in ("mkfs.vfat", "mcopy", "syslinux"):
        tool(name)
    kernel = tmp_path / "KERNEL"
    kernel.write_bytes(os.urandom(10_000))
    image = tmp_path / "disk.img"
    install_image(image, kernel=kernel, system=kernel, append="x", size_mb=64, layout=LayoutKind.LIBREELEC)
    found = candidates_of_disk("nbd0", 64 * MiB, file_reader(image), {1: "nbd0p1", 2: "nbd0p2"})
    system = resolve("System", Locator.parse("LABEL=System"), found)
    assert (system.device, system.fs) == ("/dev/nbd0p1", "vfat")
    storage = resolve("Storage", Locator.parse("LABEL=Storage"), found)
    assert (storage.device, storage.fs) == ("/dev/nbd0p2", "ext4")


def test_vfat_and_its_code_pages_are_in_every_image() -> None:
    assert FS_MODULES["vfat"] == "vfat"
    for transport in ("auto", "kernel", "nbd"):
        wanted = default_modules(overlay=True, transport=transport)
        assert {"vfat", *FS_HELPERS["vfat"]} <= set(wanted)
    assert "nls_cp437" in COMMON_MODULES


def test_the_mount_loads_the_code_pages_and_lives_without_a_missing_one() -> None:
    asked: list[str] = []
    said: list[str] = []

    def ensure(name: str) -> None:
        asked.append(name)
        if name == "nls_iso8859_1":
            raise PhaseError("modules", "kernel module 'nls_iso8859_1' is not in /lib/modules")

    mounter = Mounter(say=said.append, ensure_fs=ensure)
    mounter._helpers("vfat")
    assert asked == list(FS_HELPERS["vfat"])
    assert any("nls_iso8859_1" in line for line in said)
    asked.clear()
    mounter._helpers("ext4")
    assert asked == []
