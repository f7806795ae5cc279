"""The real overlay (zstd, as LibreELEC's kernel takes it) over a LibreELEC-shaped base."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from initramfs_support import KernelUnpack, libreelec_shaped, materialize, test_kernel
from iscsiboot.agent import layout
from iscsiboot.initramfs import cpio
from iscsiboot.initramfs.build import build, decompress

BASE_INIT = b"#!/bin/sh\necho the base's init\n"
CHROOT = shutil.which("chroot", path="/usr/sbin:/sbin:/usr/bin:/bin") or "chroot"


def test_overlay_over_a_libreelec_shaped_base(tmp_path: Path) -> None:
    kernel = test_kernel()
    base = libreelec_shaped(BASE_INIT)
    overlay = build(kernel=kernel, overlay=True, compression="zstd", cache=None)
    assert overlay.archive[:4] == b"\x28\xb5\x2f\xfd"
    members = cpio.read_newc(decompress(overlay.archive))
    prefix = layout.PREFIX.lstrip("/")
    outside = [m.entry.path for m in members if not m.entry.path.startswith(prefix)]
    assert outside == [], outside
    root = KernelUnpack()
    root.unpack(base.archive)
    before = dict(root.nodes)
    root.unpack(decompress(overlay.archive))
    assert root.lost == [] and root.mode_changes == []
    assert {p for p, node in before.items() if root.nodes.get(p) != node} == set()
    for path, digest in base.digests.items():
        node = root.nodes[path]
        assert hashlib.sha256(node.data).hexdigest() == digest, path
    # on disk: the base's dynamic busybox runs with its own loader and C library, and the
    # overlay's interpreter with its own (the base's /usr/lib has a different libc.so.6)
    tree = tmp_path / "root"
    materialize(root, tree)
    env = {"PATH": "/usr/bin:/bin", "HOME": "/"}
    shell = subprocess.run(
        [CHROOT, str(tree), "/bin/sh", "-c", "readlink /lib64; echo base-ok"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert shell.stdout.split() == ["usr/lib", "base-ok"], shell.stderr
    agent = subprocess.run(
        [CHROOT, str(tree), layout.PYTHON, "-c", "import sys, iscsiboot.agent.init; print(sys.prefix)"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert agent.stdout.strip() == layout.PREFIX, agent.stderr
    cli = subprocess.run(
        [CHROOT, str(tree), f"{layout.BIN}/iscsiboot", "--version"],
        capture_output=True, text=True, check=False, env=env,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
