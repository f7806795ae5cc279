"""istgt (FreeBSD's user-space target, Debian's package) on 127.0.0.1: the harness's
configuration, the disk LUN found by asking, and the doctor against libiscsi."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from iscsiboot.disk.install import install_image
from iscsiboot.qemu.istgt import Istgt
from iscsiboot.qemu.scenario import Account, TargetSpec
from iscsiboot.qemu.targets import disk_lun
from iscsiboot.secret import Secret
from targets_support import assert_doctor_matches_libiscsi, doctor_json, password_file

IQN = "iqn.2026-11.org.iscsiboot.test:istgt"
ME = "iqn.2026-11.org.iscsiboot.test:box"
USER, SECRET = "boxuser", "istgt-secret-01"
TARGET_USER, TARGET_SECRET = "nasuser", "istgt-target-02"


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "istgt needs root"
    if shutil.which("istgt") is None and not Path("/usr/sbin/istgt").exists():
        return "istgt not installed (Debian package istgt)"
    return None


def _spec(image: Path, *, mutual: bool) -> TargetSpec:
    accounts = [Account(USER, Secret(SECRET), outgoing=False)]
    if mutual:
        accounts.append(Account(TARGET_USER, Secret(TARGET_SECRET), outgoing=True))
    return TargetSpec(tid=1, iqn=IQN, lun=0, image=image, accounts=tuple(accounts), delay=0.0)


@pytest.fixture(scope="module")
def istgt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Istgt, Path]]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("istgt")
    (work / "KERNEL").write_bytes(b"\x7fkernel" * 1000)
    (work / "SYSTEM").write_bytes(b"hsqs" + bytes(4096))
    image = work / "disk.img"
    install_image(image, kernel=work / "KERNEL", system=work / "SYSTEM", append="boot=ISCSI=auto", size_mb=48)
    with Istgt(work / "istgt") as server:
        server.serve(_spec(image, mutual=True), initiator=ME)
        yield server, work


def test_disk_is_lun_0_and_the_doctor_matches_libiscsi(
    istgt: tuple[Istgt, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, work = istgt
    assert disk_lun(_spec(work / "disk.img", mutual=True), port=server.port, initiator=ME) == 0
    code, report = doctor_json(
        capsys,
        *("--portal", f"127.0.0.1:{server.port}", "--target", IQN, "--initiator", ME, "--lun", "0"),
        *("--username", USER, "--password-file", str(password_file(work, "pw", SECRET))),
        *("--reverse-username", TARGET_USER),
        *("--reverse-password-file", str(password_file(work, "rpw", TARGET_SECRET))),
    )
    checks = {c["name"]: c for c in report["checks"]}  # type: ignore[attr-defined]
    assert checks["login"]["ok"] and "mutual" in checks["login"]["detail"], report
    assert checks["luns"]["ok"] and checks["capacity"]["ok"], report
    assert "(istgt)" in checks["capacity"]["detail"]  # the product, named from INQUIRY
    assert checks["partition table"]["ok"] and checks["bootable partition"]["ok"], report
    url = (
        f"iscsi://{USER}%{SECRET}@127.0.0.1:{server.port}/{IQN}/0"
        f"?target_user={TARGET_USER}&target_password={TARGET_SECRET}"
    )
    assert_doctor_matches_libiscsi(report, url, ME, 0)
    assert SECRET not in str(report) and TARGET_SECRET not in str(report)
    assert code in (0, 1)  # the APPEND of this image names no target: only the last check may fail


def test_tgt_lun_1_is_refused_with_the_istgt_advice(
    istgt: tuple[Istgt, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    server, work = istgt
    code, report = doctor_json(
        capsys,
        *("--portal", f"127.0.0.1:{server.port}", "--target", IQN, "--initiator", ME, "--lun", "1"),
        *("--username", USER, "--password-file", str(password_file(work, "pw", SECRET))),
        *("--reverse-username", TARGET_USER),
        *("--reverse-password-file", str(password_file(work, "rpw", TARGET_SECRET))),
    )
    luns = next(c for c in report["checks"] if c["name"] == "luns")  # type: ignore[attr-defined]
    assert code == 1 and not luns["ok"]
    assert "the disk here is LUN 0" in luns["fix"] and "istgt" in luns["fix"], luns


def test_one_way_chap_is_refused_where_mutual_is_set(
    istgt: tuple[Istgt, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """istgt's ``AuthMethod CHAP Mutual`` refuses an initiator that does not ask for mutual CHAP."""
    server, work = istgt
    code, report = doctor_json(
        capsys,
        *("--portal", f"127.0.0.1:{server.port}", "--target", IQN, "--initiator", ME),
        *("--username", USER, "--password-file", str(password_file(work, "pw", SECRET))),
    )
    login = next(c for c in report["checks"] if c["name"] == "login")  # type: ignore[attr-defined]
    assert code == 1 and not login["ok"] and "authentication failure" in login["detail"], login
    assert "CHAP Mutual" in login["fix"], login  # the fix says why one-way CHAP may be refused


def test_wrong_secret_names_the_cause(istgt: tuple[Istgt, Path], capsys: pytest.CaptureFixture[str]) -> None:
    server, work = istgt
    wrong = "not-the-secret-9"
    code, report = doctor_json(
        capsys,
        *("--portal", f"127.0.0.1:{server.port}", "--target", IQN, "--initiator", ME),
        *("--username", USER, "--password-file", str(password_file(work, "bad", wrong))),
        *("--reverse-username", TARGET_USER),
        *("--reverse-password-file", str(password_file(work, "rpw", TARGET_SECRET))),
    )
    login = next(c for c in report["checks"] if c["name"] == "login")  # type: ignore[attr-defined]
    assert code == 1 and not login["ok"]
    assert "authentication failure with CHAP user 'boxuser'" in login["detail"], login
    assert wrong not in str(report)
