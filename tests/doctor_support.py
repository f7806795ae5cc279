"""Names and the in-process runner shared by the doctor's unit and target tests."""

from __future__ import annotations

import pytest
from iscsiboot.cli import main

ME = "iqn.2026-11.org.iscsiboot.test:box"
OPEN = "iqn.2026-11.org.iscsiboot.test:doctor"
SECRET = "doctor-secret-0042"
TARGET_SECRET = "target-secret-0043"


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``iscsiboot ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
