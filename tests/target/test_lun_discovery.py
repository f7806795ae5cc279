"""``generate ipxe --lun-from-target``: the disk LUN asked of tgt (1) and istgt (0), not assumed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from doctor_support import run_main
from iscsiboot.qemu.istgt import Istgt
from iscsiboot.qemu.scenario import Account, TargetSpec
from iscsiboot.secret import Secret
from targets_support import password_file
from tgt_support import tgtd_or_skip

IQN = "iqn.2026-11.org.iscsiboot.test:lun"
ME = "iqn.2026-11.org.iscsiboot.test:box"
USER, SECRET = "boxuser", "lun-secret-0001"


def _generate(
    capsys: pytest.CaptureFixture[str], port: int, secret: Path, *extra: str
) -> tuple[int, str, str]:
    return run_main(
        capsys,
        *("generate", "ipxe", "--lun-from-target", "--initiator", ME, "--target-ip", "127.0.0.1"),
        *("--target-port", str(port), "--target-name", IQN, "--username", USER),
        *("--password-file", str(secret), *extra),
    )


def test_tgt_answers_lun_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4 << 20))
    with tgtd_or_skip(tmp_path / "tgt") as tgtd:
        tgtd.add_target(1, IQN, [image])
        tgtd.add_account(USER, Secret(SECRET))
        tgtd.bind_account(1, USER)
        code, out, err = _generate(capsys, tgtd.port, password_file(tmp_path, "pw", SECRET))
        assert code == 0, err
        assert f"sanboot iscsi:127.0.0.1::{tgtd.port}:1:{IQN}" in out, out
        assert "serves its first disk at LUN 1 (IET VIRTUAL-DISK, tgt)" in err, err
        assert "no LUN given" not in err and SECRET not in out + err
        wrong = password_file(tmp_path, "bad", "wrong-secret-99")
        code, out, err = _generate(capsys, tgtd.port, wrong)
        assert code == 1 and "authentication failure" in err and "wrong-secret-99" not in err, err
        code, _, err = _generate(capsys, tgtd.port, wrong, "--lun", "1")
        assert code == 2 and "--lun and --lun-from-target" in err, err


def test_istgt_answers_lun_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() != 0 or shutil.which("istgt") is None:
        pytest.skip("istgt needs root and the Debian package istgt")
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4 << 20))
    spec = TargetSpec(1, IQN, 0, image, (Account(USER, Secret(SECRET), outgoing=False),), 0.0)
    with Istgt(tmp_path / "istgt") as server:
        server.serve(spec, initiator=ME)
        code, out, err = _generate(capsys, server.port, password_file(tmp_path, "pw", SECRET))
        assert code == 0, err
        assert f"sanboot iscsi:127.0.0.1::{server.port}:0:{IQN}" in out, out
        assert "serves its first disk at LUN 0 (FreeBSD iSCSI DISK, istgt)" in err, err
