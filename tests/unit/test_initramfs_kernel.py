"""The kernel fetcher: apt-cache parsing (pure) and a real download (root tier)."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.errors import UsageError
from iscsiboot.initramfs import kernel

DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
"""

CONCRETE = """linux-image-6.1.0-56-amd64
  Depends: kmod
  Depends: linux-base
 |Depends: initramfs-tools
  Depends: <linux-initramfs-tool>
    initramfs-tools
  Recommends: firmware-linux-free
"""


def test_parse_depends_lists_targets() -> None:
    assert kernel.parse_depends(DEPENDS) == ["linux-image-6.1.0-56-amd64"]
    assert kernel.parse_depends(CONCRETE) == ["kmod", "linux-base", "initramfs-tools", "linux-initramfs-tool"]


def test_pick_image() -> None:
    assert kernel.pick_image("linux-image-amd64", kernel.parse_depends(DEPENDS)) == (
        "linux-image-6.1.0-56-amd64"
    )
    assert kernel.pick_image("linux-image-6.1.0-56-amd64", ["kmod"]) == "linux-image-6.1.0-56-amd64"
    assert kernel.pick_image("linux-image-amd64", []) is None
    assert kernel.pick_image("linux-image-amd64", ["linux-base"]) is None


def test_default_cache_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ISCSIBOOT_CACHE", str(tmp_path))
    assert kernel.default_cache() == tmp_path
    monkeypatch.delenv("ISCSIBOOT_CACHE")
    assert kernel.default_cache() == Path.home() / ".cache" / "iscsiboot"


def test_incomplete_tree_is_not_used(tmp_path: Path) -> None:
    final = tmp_path / "linux-image-9.9.9-1-amd64"
    (final / "lib" / "modules" / "9.9.9-1-amd64").mkdir(parents=True)
    (final / "boot").mkdir()
    (final / "boot" / "vmlinuz-9.9.9-1-amd64").write_bytes(b"x")
    assert kernel._load_cached(final) is None  # no marker: never used


def test_bad_package_name_is_usage_error() -> None:

    with pytest.raises(UsageError):
        kernel.fetch_kernel(Path("/nonexistent"), package="linux image; rm")
