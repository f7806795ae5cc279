"""An overlay appended to a usr-merged base (LibreELEC's shape) changes nothing the base has."""

from __future__ import annotations

from pathlib import Path

from initramfs_support import KernelUnpack, Node, libreelec_base
from iscsiboot.agent import layout
from iscsiboot.initramfs import cpio
from iscsiboot.initramfs.plan import PlanInputs, Variant, archive_parents, make_plan

BASE_FILES = {
    "init": b"#!/bin/sh\n# the base's init\n",
    "usr/bin/busybox": b"\x7fELF base busybox",
    "usr/bin/sh": b"\x7fELF base sh",
    "usr/lib/ld-linux-x86-64.so.2": b"\x7fELF base loader",
    "usr/lib/libc.so.6": b"\x7fELF base libc",
    "usr/lib/modules/6.16.0/modules.dep": b"kernel/fs/x.ko:\n",
    "etc/os-release": b"NAME=LibreELEC\n",
}


def _overlay(replace_init: bool = False) -> bytes:
    here = Path("/usr/bin/env")
    inputs = PlanInputs(
        kernel_version="6.16.0",
        python=here,
        python_files=[(f"{layout.STDLIB.lstrip('/')}/os.pyc", Path("/usr/lib/python3.11/os.py"), True)],
        libraries=[("libc.so.6", here), ("ld-linux-x86-64.so.2", here)],
        modules=[("kernel/drivers/block/nbd.ko", here)],
        module_index=[("modules.dep", here)],
        load_order=("nbd",),
        crc32c=(),
        busybox=here,
        e2fsck=here,
        variant=Variant.OVERLAY,
        replace_init=replace_init,
        transport="nbd",
    )
    entries = [
        cpio.Entry(i.path, i.kind, i.mode, i.content or b"overlay:" + i.path.encode(), i.rdev)
        for i in make_plan(inputs)
    ]
    return cpio.write_newc(entries, existing_parents=archive_parents(Variant.OVERLAY))


def _unpacked(*archives: bytes) -> KernelUnpack:
    root = KernelUnpack()
    for archive in archives:
        root.unpack(archive)
    return root


def test_the_model_follows_the_bases_links_as_the_kernel_does() -> None:
    """An overlay of the old shape (the standard loader path, a lib64 folder) breaks such a base."""
    base = libreelec_base(BASE_FILES)
    loader = cpio.Entry.file("lib64/ld-linux-x86-64.so.2", b"debian loader")
    old = cpio.write_newc([loader], existing_parents=frozenset({"lib64"}))
    root = _unpacked(base, old)
    assert root.nodes["usr/lib/ld-linux-x86-64.so.2"].data == b"debian loader"  # through lib64 -> usr/lib
    root = _unpacked(base, cpio.write_newc([loader]))  # with its parent as a folder member
    assert root.nodes["lib64"].kind is cpio.Kind.DIR  # the base's link is gone
    assert root.follow("lib64/libc.so.6") is None
    assert root.nodes["usr/lib/ld-linux-x86-64.so.2"].data == b"\x7fELF base loader"


def test_overlay_paths_stay_under_the_prefix() -> None:
    for replace_init in (False, True):
        paths = [m.entry.path for m in cpio.read_newc(_overlay(replace_init))]
        prefix = layout.PREFIX.lstrip("/")
        outside = [p for p in paths if p != prefix and not p.startswith(f"{prefix}/")]
        assert outside == (["init"] if replace_init else []), outside
        assert not {"usr", "usr/lib"} & set(paths)


def test_overlay_leaves_a_usr_merged_base_as_it_was() -> None:
    base = libreelec_base(BASE_FILES)
    before = dict(_unpacked(base).nodes)
    for replace_init in (False, True):
        root = _unpacked(base, _overlay(replace_init))
        assert root.lost == [] and root.mode_changes == []
        changed = {p for p, node in before.items() if root.nodes.get(p) != node}
        assert changed == ({"init"} if replace_init else set()), changed
        # the base still runs its own programs with its own loader, through its links
        assert root.follow("lib64/ld-linux-x86-64.so.2") == Node(
            cpio.Kind.FILE, 0o755, b"\x7fELF base loader"
        )
        assert root.follow("bin/busybox") == before["usr/bin/busybox"]
        # and the overlay's runtime is where its launch scripts look
        for path in (layout.LOADER, layout.BUSYBOX, layout.PYTHON_ELF, f"{layout.PREFIX}/init"):
            assert root.follow(path.lstrip("/")) is not None, path
