"""``iscsiboot doctor --dhcp-root-path``: a DHCP root path checked as a netroot=dhcp box uses it."""

from __future__ import annotations

import argparse
import json

import pytest
from doctor_support import ME, OPEN, SECRET, run_main
from iscsiboot.cli import common_options
from iscsiboot.doctor.checks import compare_append
from iscsiboot.doctor.cli import register, settings_from_args
from iscsiboot.doctor.report import Settings
from iscsiboot.model import Target
from iscsiboot.qemu.tgt import free_tcp_port


def _args(*argv: str) -> Settings:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"), common_options())
    return settings_from_args(parser.parse_args(["doctor", *argv]))


def test_the_root_path_names_the_target() -> None:
    s = _args("--dhcp-root-path", f"iscsi:10.0.0.2:::1:{OPEN}")
    assert s.from_dhcp and s.target == Target(OPEN, "10.0.0.2", lun=1) and s.source == "options"
    s = _args("--cmdline", f"root=/dev/root netroot=dhcp rd.iscsi.initiator={ME}", "--dhcp-root-path",
              f"iscsi:u:{SECRET}@[fd00::2]::3261::{OPEN}")  # fmt: skip
    assert s.source == "cmdline" and s.initiator == ME
    assert (s.target.address, s.target.port, s.target.lun) == ("fd00::2", 3261, None)
    assert s.target.chap is not None and s.target.chap.password.reveal() == SECRET


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--dhcp-root-path", ""], "the DHCP server sent no root path"),
        (["--cmdline", "netroot=dhcp"], "--dhcp-root-path"),
        (
            [
                "--cmdline",
                f"netroot=iscsi:10.0.0.2::::{OPEN}",
                "--dhcp-root-path",
                f"iscsi:10.0.0.2::::{OPEN}",
            ],
            "DHCP",
        ),
        (["--dhcp-root-path", f"iscsi:u:{SECRET}@10.0.0.2::0::{OPEN}"], "port '0'"),
        (["--dhcp-root-path", "10.0.0.2:/srv/nfs"], "starts with 'iscsi:'"),
    ],
)
def test_bad_root_paths_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run_main(capsys, "doctor", *argv)
    assert code == 2, (out, err)
    lines = [line for line in err.splitlines() if "warning" not in line]
    assert len(lines) == 1 and lines[0].startswith("iscsiboot: error:") and needle in lines[0], err
    assert SECRET not in out + err


def test_unreachable_portal_of_the_root_path(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_tcp_port()
    root_path = f"iscsi:u:{SECRET}@127.0.0.1::{port}:1:{OPEN}"
    code, out, err = run_main(capsys, "doctor", "--json", "--timeout", "2", "--dhcp-root-path", root_path)
    assert code == 1, err
    report = json.loads(out)
    assert report["checks"][0]["name"] == "portal" and not report["checks"][0]["ok"]
    assert report["portal"] == f"127.0.0.1:{port}"
    assert SECRET not in out + err and "in clear" in err


def test_an_append_line_with_netroot_dhcp_matches_root_path_settings() -> None:
    s = _args("--dhcp-root-path", f"iscsi:10.0.0.2:::1:{OPEN}")
    assert compare_append(s, f"netroot=dhcp rd.iscsi.initiator={ME} root=LABEL=System") == []
    direct = _args("--portal", "10.0.0.2", "--target", OPEN)
    assert compare_append(direct, "netroot=dhcp") == [
        "the APPEND line takes the target from the DHCP root path, the settings name one directly"
    ]
