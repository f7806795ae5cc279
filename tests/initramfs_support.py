"""Shared helpers for tests that need a kernel or a built initramfs (used by the QEMU tests too).

``test_kernel()`` fetches (once, then cached) the Debian kernel; ``built_image()``
builds the initramfs into a cache folder keyed by the options and reuses it
within one test session.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from iscsiboot.initramfs.build import BuildResult, build
from iscsiboot.initramfs.kernel import KernelTree, fetch_kernel

_built: dict[tuple[object, ...], BuildResult] = {}


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (apt-get download, depmod, chroot)")


def test_kernel(package: str = "linux-image-amd64") -> KernelTree:
    """The cached Debian kernel (downloaded on first use; needs root and the Debian archive)."""
    need_root()
    for tool in ("apt-get", "dpkg", "depmod"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            pytest.skip(f"{tool} is not installed")
    return fetch_kernel(package=package)


test_kernel.__test__ = False  # type: ignore[attr-defined]


def built_image(
    out_dir: Path, *, overlay: bool = False, compression: str = "xz", iscsistart: bool = True
) -> BuildResult:
    """Build (or reuse, within the session) an initramfs for the test kernel into ``out_dir``."""
    kernel = test_kernel()
    key = (kernel.root, overlay, compression, iscsistart)
    done = _built.get(key)
    if done is not None and done.output is not None and done.output.is_file():
        return done
    name = ("overlay" if overlay else "initramfs") + ("" if iscsistart else "-noiscsistart")
    out_dir.mkdir(parents=True, exist_ok=True)
    result = build(
        kernel=kernel,
        output=out_dir / f"{name}.cpio.{compression}",
        overlay=overlay,
        compression=compression,
        iscsistart=iscsistart,
    )
    _built[key] = result
    return result


def unpack(archive: bytes, dest: Path) -> None:
    """Unpack an uncompressed newc archive with the real cpio."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
        input=archive,
        cwd=dest,
        check=True,
        capture_output=True,
    )
