"""The kernel fetcher: apt-cache parsing (pure) and a real download (root tier)."""

from __future__ import annotations

import os

import pytest
from iscsiboot.initramfs import kernel


def test_fetch_real_debian_kernel_then_cached() -> None:
    if os.geteuid() != 0:
        pytest.skip("apt-get download and depmod need root")
    tree = kernel.fetch_kernel()
    assert tree.vmlinuz.is_file() and tree.vmlinuz.stat().st_size > 1_000_000
    assert tree.modules == tree.root / "lib" / "modules" / tree.version
    assert (tree.modules / "modules.dep").stat().st_size > 0
    assert (tree.root / kernel.MARKER).is_file()
    assert tree.package.startswith("linux-image-")
    stamp = (tree.root / kernel.MARKER).stat().st_mtime_ns
    again = kernel.fetch_kernel()
    assert again == tree
    assert (tree.root / kernel.MARKER).stat().st_mtime_ns == stamp  # nothing redone
