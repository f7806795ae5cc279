"""iBFT sources on real files: table files, ACPI trees, memory dumps, sysfs trees, auto."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ibft_support import (
    MUTUAL,
    write_sysfs_tree,
)
from iscsiboot.ibft.parse import parse_table


def _show_as_nobody(tree: Path) -> subprocess.CompletedProcess[str]:
    return _as_nobody("-m", "iscsiboot", "ibft", "show", "--source", "sysfs", str(tree))


def _as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """This Python with ``args``, run as user nobody."""
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, *args],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def test_sysfs_as_non_root_says_so(tmp_path: Path) -> None:
    """The kernel refuses reads without CAP_SYS_ADMIN; an unreadable file stands in for that."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to drop to another user")
    probe = _as_nobody("-c", "import iscsiboot")
    if probe.returncode != 0:  # e.g. a checkout below a 0700 folder (mktemp -d)
        pytest.skip(f"user nobody cannot run this checkout's Python: {probe.stderr.strip()[-200:]}")
    top = Path(tempfile.mkdtemp(prefix="ibft-sysfs-"))  # a place the other user can reach
    try:
        top.chmod(0o755)
        tree = write_sysfs_tree(top / "ibft", parse_table(MUTUAL.read_bytes()).table)
        for path in tree.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o400)
        done = _show_as_nobody(tree)
    finally:
        shutil.rmtree(top)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "CAP_SYS_ADMIN" in done.stderr and "run as root" in done.stderr
    # a tree the user cannot even enter gives the same clear answer
    done = _show_as_nobody(tmp_path / "ibft")
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and "run as root" in done.stderr
