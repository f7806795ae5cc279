"""Golden files for every generated format, written through the real CLI with -o FILE.

Set ISCSIBOOT_UPDATE_GOLDEN=1 to rewrite the files after a deliberate change.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cmdline_support import GOLDEN, run_cli
from iscsiboot.proc import run, which

HOWTO = [
    "--initiator",
    "iqn.2010-04.org.whatever:mybox",
    "--target-name",
    "iqn.2000-01.com.synology:pandora.openelec",
    "--target-ip",
    "192.168.1.14",
    "--username",
    "username",
    "--password",
    "password",
    "--reverse-username",
    "username_in",
    "--reverse-password",
    "password_in",
]
LAB = [
    "--initiator",
    "iqn.2024-01.lab.iscsiboot:htpc",
    "--target-name",
    "iqn.2024-01.lab.iscsiboot:disk",
    "--target-ip",
    "10.0.2.2",
    "--lun",
    "1",
    "--username",
    "htpc",
    "--password",
    "htpc-chap-secret",
]

CASES: dict[str, list[str]] = {
    "cmdline-auto.txt": ["cmdline", "--auto"],
    "cmdline-explicit.txt": ["cmdline", *HOWTO],
    "cmdline-storage-on-iscsi.txt": ["cmdline", *LAB, "--storage-on-iscsi", "--ip", "eth0:dhcp"],
    "extlinux-auto.conf": ["extlinux", "--auto"],
    "extlinux-explicit-serial.conf": ["extlinux", *HOWTO, "--serial", "--initrd", "/initrd.img"],
    "ipxe-chain.ipxe": ["ipxe", *HOWTO],
    "ipxe-embedded.ipxe": ["ipxe", *LAB, "--embedded"],
    "dnsmasq.conf": [
        "dnsmasq",
        *LAB,
        "--interface",
        "br-boot",
        "--dhcp-range",
        "10.9.0.100,10.9.0.150,1h",
        "--no-dns",
    ],
    "root-path.txt": ["root-path", *LAB],
    "root-path-ipv6.txt": [
        "root-path",
        "--target-name",
        "iqn.2024-01.lab:d",
        "--target-ip",
        "fec0::2",
        "--target-port",
        "3261",
        "--lun",
        "4752-3a4f",
    ],
    "dracut.txt": ["dracut", *LAB, "--ip", "ibft"],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str, tmp_path: Path) -> None:
    kind, *options = CASES[name]
    out = tmp_path / name
    args = ["generate", kind, *options, "-o", str(out)]
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    # the iPXE make command names the script's real path; the golden file has a fixed one
    text = out.read_text().replace(str(out), f"/srv/tftp/{name}")
    golden = GOLDEN / name
    if os.environ.get("ISCSIBOOT_UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
    secret_bearing = any(o.startswith("--password") for o in options) and kind not in ("dnsmasq", "root-path")
    assert stat.S_IMODE(out.stat().st_mode) == (0o600 if secret_bearing else 0o644)


def test_golden_dnsmasq_passes_dnsmasq_test() -> None:
    result = run(
        [which("dnsmasq"), "--test", f"--conf-file={GOLDEN / 'dnsmasq.conf'}"], what="check", check=False
    )
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr + result.stdout


def test_extlinux_auto_is_the_howto_layout() -> None:
    text = (GOLDEN / "extlinux-auto.conf").read_text()
    assert text.splitlines() == [
        "DEFAULT linux",
        "PROMPT 0",
        "",
        "LABEL linux",
        "  KERNEL /KERNEL",
        "  APPEND ip=dhcp boot=ISCSI=auto,LABEL=System disk=LABEL=Storage quiet",
    ]


PARSE_LINE = (
    "BOOT_IMAGE=/KERNEL ip=192.168.1.20::192.168.1.1:255.255.255.0:htpc:eth0:off:192.168.1.1 "
    "BOOTIF=01-52-54-00-12-34-56 boot=ISCSI=iscsi_initiator=iqn.2010-04.org.whatever:mybox,"
    "iscsi_target_name=iqn.2000-01.com.synology:pandora.openelec,iscsi_target_ip=fd00::14,"
    "iscsi_username=username,iscsi_password=password,LABEL=System disk=ISCSI=auto,LABEL=Storage "
    "root=iscsi:10.0.2.2:::1:iqn.2024-01.lab:x quiet -- single"
)


@pytest.mark.parametrize(("name", "extra"), [("parse.txt", []), ("parse.json", ["--json"])])
def test_golden_parse_output(name: str, extra: list[str]) -> None:
    result = run_cli("cmdline", "parse", *extra, PARSE_LINE)
    assert result.returncode == 0, result.stderr
    golden = GOLDEN / name
    if os.environ.get("ISCSIBOOT_UPDATE_GOLDEN"):
        golden.write_text(result.stdout)
    assert result.stdout == golden.read_text()
    assert "/proc/cmdline" in result.stderr
