"""The test SYSTEM's check lines, its filler and the stand-in script's syntax."""

from __future__ import annotations

import re
import shutil
import subprocess
import zlib

import pytest
from iscsiboot.qemu.system import INIT_SCRIPT, TEST_MARKER, filler, parse_tests


def test_check_lines_are_found_also_inside_kernel_messages() -> None:
    console = "\n".join(
        [
            "[    5.1] random kernel line",
            f"{TEST_MARKER} persist wrote abc",
            f"[    6.0] nbd0: p1 p2{TEST_MARKER} daemon 123 @iscsiboot-nbd 9000",
            f"{TEST_MARKER} daemon 124 @other 100",
            f"{TEST_MARKER}",
        ]
    )
    assert parse_tests(console) == {
        "persist": ["wrote abc"],
        "daemon": ["123 @iscsiboot-nbd 9000", "124 @other 100"],
    }
    assert parse_tests("no checks here") == {}


def test_the_filler_is_the_same_every_time_and_does_not_compress() -> None:
    one = filler(1)
    assert one == filler(1) and len(one) == 1024 * 1024
    assert len(zlib.compress(one, 9)) > len(one) * 0.99


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox is not installed")
def test_the_stand_in_init_is_valid_busybox_shell() -> None:
    subprocess.run(["busybox", "sh", "-n"], input=INIT_SCRIPT.encode(), check=True)
    assert re.search(r"@[A-Z_]+@", INIT_SCRIPT) is None  # every @NAME@ was filled in
