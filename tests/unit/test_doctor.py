"""``iscsiboot doctor`` / ``discover``: options, input handling and the pure checks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from doctor_support import ME, OPEN, SECRET, TARGET_SECRET, run_main
from iscsiboot.cli import common_options
from iscsiboot.doctor.checks import compare_append
from iscsiboot.doctor.cli import register, settings_from_args
from iscsiboot.doctor.report import CHECKS, Settings
from iscsiboot.model import BootConfig, Chap, Locator, Target
from iscsiboot.qemu.tgt import free_tcp_port
from iscsiboot.secret import Secret

# ------------------------------------------------------------------ input handling (no target needed)


@pytest.mark.parametrize(
    "argv",
    [
        ["doctor"],
        ["doctor", "--portal", "127.0.0.1"],
        ["doctor", "--portal", "not a host", "--target", OPEN],
        ["doctor", "--portal", "127.0.0.1:99999", "--target", OPEN],
        ["doctor", "--portal", "127.0.0.1", "--target", OPEN, "--username", "u"],
        [
            "doctor",
            "--portal",
            "127.0.0.1",
            "--target",
            OPEN,
            "--username",
            "u",
            "--password-file",
            "/nonexistent",
        ],
        ["doctor", "--cmdline", "boot=ISCSI=bogus_key=1,LABEL=System"],
        ["doctor", "--cmdline", "quiet"],
        ["doctor", "--extlinux", "/nonexistent/extlinux.conf"],
        ["doctor", "--ibft", "/nonexistent/ibft.bin"],
        ["doctor", "--portal", "127.0.0.1", "--target", OPEN, "--lun", "xyz"],
        ["discover"],
        ["discover", "--portal", "[::1"],
    ],
)
def test_bad_input_exits_2_with_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_main(capsys, *argv)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if "warning" not in line]
    assert len(lines) == 1 and lines[0].startswith("iscsiboot: error:"), err
    assert "Traceback" not in err


def test_unreachable_portal_is_a_failed_check(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_tcp_port()
    code, out, _ = run_main(capsys, "doctor", "--json", "--portal", f"127.0.0.1:{port}", "--target", OPEN)
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert report["checks"][0]["name"] == "portal" and not report["checks"][0]["ok"]
    assert "refused" in report["checks"][0]["detail"] and report["checks"][0]["fix"]
    assert report["not_checked"] == list(CHECKS[1:])


def test_discover_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, "discover", "--portal", f"127.0.0.1:{free_tcp_port()}", "--timeout", "2")
    assert code == 1 and "refused" in err


def test_compare_append_names_differences_without_secrets() -> None:
    want = Settings(
        BootConfig(
            initiator=ME,
            targets=(Target(OPEN, "127.0.0.1", 3260, chap=Chap("u", Secret(SECRET))),),
            system=Locator.parse("LABEL=System"),
        )
    )
    same = f"boot=ISCSI=iscsi_initiator={ME},iscsi_target_name={OPEN},iscsi_target_ip=127.0.0.1,"
    same += f"iscsi_username=u,iscsi_password={SECRET},LABEL=System"
    assert compare_append(want, same) == []
    other = same.replace(SECRET, "other-secret-77").replace("LABEL=System", "LABEL=Other")
    diffs = compare_append(want, other)
    assert any("secret differs" in d for d in diffs) and any("LABEL=Other" in d for d in diffs)
    assert not any(SECRET in d or "other-secret-77" in d for d in diffs)
    assert compare_append(want, "boot=ISCSI=auto,LABEL=System")  # iBFT vs direct settings


# ------------------------------------------------------------------ against tgtd and an installed image


def _args(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"), common_options())
    return settings_from_args(parser.parse_args(["doctor", *argv]))


def test_settings_from_a_cmdline_with_overrides(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(SECRET + "\n")
    cmdline = (
        f"boot=ISCSI=iscsi_initiator={ME},iscsi_target_name={OPEN},iscsi_target_ip=10.0.0.2,LABEL=System"
    )
    s = _args("--cmdline", cmdline)
    assert (s.source, s.initiator, s.target.address, s.target.port, s.target.lun) == (
        "cmdline",
        ME,
        "10.0.0.2",
        3260,
        None,
    )
    s = _args("--cmdline", cmdline, "--portal", "[fd00::2]:3261", "--lun", "1", "--username", "u",
              "--password-file", str(secret), "--storage", "UUID=0a0b", "--initiator", "iqn.x:y")  # fmt: skip
    t = s.target
    assert (t.address, t.port, t.lun, t.name) == ("fd00::2", 3261, 1, OPEN)
    assert t.chap is not None and t.chap.password.reveal() == SECRET  # the newline is not part of it
    assert str(s.storage) == "UUID=0a0b" and s.initiator == "iqn.x:y"


def test_settings_from_options_default_locators() -> None:
    s = _args("--portal", "192.0.2.1", "--target", OPEN)
    assert s.source == "options" and str(s.system) == "LABEL=System" and s.storage is None
    assert s.initiator.startswith("iqn.")


def test_secrets_never_reach_the_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_tcp_port()
    cmdline = (
        f"boot=ISCSI=iscsi_initiator={ME},iscsi_target_name={OPEN},iscsi_target_ip=127.0.0.1,"
        f"iscsi_target_port={port},iscsi_username=u,iscsi_password={SECRET},"
        f"iscsi_in_username=t,iscsi_in_password={TARGET_SECRET},LABEL=System"
    )
    for extra in ([], ["--json"]):
        code, out, err = run_main(capsys, "doctor", "--cmdline", cmdline, *extra)
        assert code == 1
        assert SECRET not in out + err and TARGET_SECRET not in out + err
    code, out, err = run_main(capsys, "doctor", "--cmdline", cmdline.replace("LABEL=System", ""))
    assert code == 2 and SECRET not in out + err
    pw = tmp_path / "pw"
    pw.write_text(SECRET)
    code, out, err = run_main(
        capsys, "discover", "--portal", f"127.0.0.1:{port}", "--username", "u", "--password-file", str(pw)
    )
    assert code == 1 and SECRET not in out + err
