"""Checks shared by the tests of the three targets (tgt, LIO, istgt): the doctor against libiscsi."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from iscsiboot.cli import main

LIBISCSI_TIMEOUT = 60.0


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian package libiscsi-bin)")
    return path


def fields(text: str) -> dict[str, str]:
    """``Key:Value`` lines (iscsi-inq, iscsi-readcapacity16) as a dict; the first value wins."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in out:
            out[key.strip()] = value.strip()
    return out


def libiscsi(name: str, url: str, initiator: str) -> dict[str, str]:
    """What libiscsi's ``name`` (iscsi-inq, iscsi-readcapacity16) reports for ``url``."""
    done = subprocess.run(
        [tool(name), "-i", initiator, url],
        capture_output=True,
        text=True,
        timeout=LIBISCSI_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{name} failed: {done.stdout}{done.stderr}"
    return fields(done.stdout)


def doctor_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, object]]:
    """``iscsiboot doctor --json ARGV`` in this process: (exit code, report)."""
    try:
        code = main(["doctor", "--json", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    try:
        return code, json.loads(out)
    except ValueError:
        pytest.fail(f"no JSON from the doctor (exit {code}): {out}{err}")


def password_file(folder: Path, name: str, value: str) -> Path:
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


def assert_doctor_matches_libiscsi(report: dict[str, object], url: str, initiator: str, lun: int) -> None:
    """The doctor's capacity, vendor and product of ``lun`` equal libiscsi's for ``url`` (that LUN)."""
    luns = {entry["lun"]: entry for entry in report["luns"]}  # type: ignore[attr-defined]
    disk = luns[lun]
    inq = libiscsi("iscsi-inq", url, initiator)
    cap = libiscsi("iscsi-readcapacity16", url, initiator)
    assert (disk["vendor"], disk["product"], disk["revision"]) == (
        inq["Vendor"],
        inq["Product"],
        inq["Revision"],
    )
    assert disk["capacity_bytes"] == int(cap["Total size"])
    assert disk["block_size"] == int(cap["LOGICAL BLOCK LENGTH IN BYTES"])
