"""The NBD overlay (zstd) appended to a LibreELEC-shaped base boots System and Storage over iSCSI.

The base is usr-merged with its own C library in /usr/lib and a dynamic busybox, as
LibreELEC's initramfs is.  Its /init runs once the kernel has unpacked both archives: it
reports the digest of each of its files and the targets of its links (with its own
busybox, which must still run), then hands over to the overlay's agent.  One boot, shared
by the assertions.
"""

from __future__ import annotations

import pytest
from initramfs_support import LIBREELEC_LINKS, ShapedBase, libreelec_shaped, test_kernel
from iscsiboot.agent import layout
from iscsiboot.initramfs.build import build
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import GUEST_NIC_MODULES, ScenarioOptions
from iscsiboot.secret import Secret
from vm_support import BOOT_TIMEOUT, boot, expect_success, require_vm

CHECKED = ("usr/bin/busybox", "usr/lib/libc.so.6", "usr/lib/ld-linux-x86-64.so.2", "etc/os-release")


def base_init() -> bytes:
    """The base's /init: its digests and links on the console, then the overlay's agent as PID 1."""
    links = " ".join(f"/{name}" for name in LIBREELEC_LINKS)
    files = " ".join(f"/{path}" for path in CHECKED)
    return (
        "#!/bin/sh\n"
        f'sha256sum {files} | while read sum path; do echo "BASE-SUM $sum $path"; done\n'
        f'for link in {links}; do echo "BASE-LINK $link $(readlink $link)"; done\n'
        f'exec {layout.PREFIX}/init "$@"\n'
    ).encode()


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ShapedBase, Outcome]:
    require_vm()
    folder = tmp_path_factory.mktemp("libreelec")
    base = libreelec_shaped(base_init())
    # as for LibreELEC's kernel: no kernel iSCSI in the overlay, the LUN over NBD; no NIC driver in the base
    overlay = build(
        kernel=test_kernel(),
        overlay=True,
        compression="zstd",
        extra_modules=GUEST_NIC_MODULES,
        transport="nbd",
    )
    image = folder / "initrd.img"
    image.write_bytes(base.archive + overlay.archive)
    artifacts = prepare(initrd=image)
    options = ScenarioOptions(username="htpc", password=Secret("htpc-secret-12"), timeout=BOOT_TIMEOUT)
    return base, boot("libreelec-shaped base", options, artifacts, folder)


def test_boot_reaches_system_with_system_and_storage(booted: tuple[ShapedBase, Outcome]) -> None:
    _base, outcome = booted
    expect_success(outcome, "libreelec-shaped base")
    assert outcome.result is not None and outcome.result.transport == "nbd", outcome.result


def test_base_files_are_unchanged_and_its_busybox_runs(booted: tuple[ShapedBase, Outcome]) -> None:
    base, outcome = booted
    sums: dict[str, str] = {}
    links: dict[str, str] = {}
    for line in outcome.console.splitlines():
        words = line.strip().split()
        if len(words) == 3 and words[0] == "BASE-SUM":
            sums[words[2].lstrip("/")] = words[1]
        elif len(words) == 3 and words[0] == "BASE-LINK":
            links[words[1].lstrip("/")] = words[2]
    assert sums == {path: base.digests[path] for path in CHECKED}, outcome.console[-3000:]
    assert links == LIBREELEC_LINKS
