"""Capture iPXE's iBFT, and the guest kernel's view of it, into tests/data/ibft.

For each scenario QEMU boots iPXE (Debian's ipxe-qemu NIC ROM), which logs in
to a tgtd on this machine with ``sanhook``, writes its iBFT into base memory
and boots the Debian kernel with a busybox initramfs; the guest prints
/sys/firmware/ibft and low memory on its console
(:mod:`iscsiboot.qemu.ibftcapture`).  Written per scenario: ``NAME.bin`` (the
table's bytes, as iPXE wrote them) and ``NAME.sysfs.json`` (every attribute
the kernel showed, without its trailing newline), then ``README.md``.

Needs root (tgtd, the kernel download), qemu-system-x86, ipxe-qemu, tgt and
busybox-static.  Run from the checkout:

    sudo .venv/bin/python tools/capture-ibft.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import IscsibootError
from iscsiboot.ibft.build import build_table
from iscsiboot.ibft.sysfs import to_sysfs
from iscsiboot.initramfs.kernel import KernelTree, fetch_kernel
from iscsiboot.model import Chap
from iscsiboot.proc import run
from iscsiboot.qemu.ibftcapture import HOST, IpxeCapture, IpxeScenario, boot_ipxe
from iscsiboot.secret import MASK, Secret

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "data" / "ibft"
COMMAND = "sudo .venv/bin/python tools/capture-ibft.py"
PORT = 3260  # the iSCSI port: the tables hold what a real target's would
SECRET_ATTRS = ("chap-secret", "rev-chap-name-secret")


@dataclass(frozen=True)
class Named:
    name: str
    summary: str
    scenario: IpxeScenario


SCENARIOS = (
    Named(
        "ipxe-mutual",
        "mutual CHAP: iPXE's initiator name set by the script, one-way and reverse CHAP",
        IpxeScenario(
            target="iqn.2024-01.lab.iscsiboot:system",
            initiator="iqn.2024-01.lab.iscsiboot:htpc",
            chap=Chap("htpc", Secret("Sup3r-S3cret-pw")),
            reverse_chap=Chap("tgt", Secret("Rev3rse-S3cret")),
            port=PORT,
        ),
    ),
    Named(
        "ipxe-nochap",
        "no CHAP, no initiator name in the script: iPXE names itself after the SMBIOS UUID",
        IpxeScenario(target="iqn.2024-01.lab.iscsiboot:public", port=PORT),
    ),
)


def _version(package: str) -> str:
    done = run(["dpkg-query", "-W", "-f", "${Version}", package], what=f"ask dpkg for {package}", check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _check(named: Named, capture: IpxeCapture) -> None:
    """The capture is consistent: our parse reads it as the kernel showed it, and rebuilds it."""
    table = capture.parsed.table
    if capture.parsed.warnings:
        warnings = "; ".join(capture.parsed.warnings)
        raise SystemExit(f"{named.name}: the table parses with warnings: {warnings}")
    if to_sysfs(table, show_secrets=True) != capture.guest.sysfs():
        raise SystemExit(f"{named.name}: the kernel's view differs from the parsed table's")
    if build_table(table) != capture.table:
        raise SystemExit(f"{named.name}: the parsed table does not rebuild to iPXE's bytes")


def _scenario_text(named: Named, capture: IpxeCapture) -> list[str]:
    s = named.scenario
    table = capture.parsed.table
    lines = [
        f"## {named.name}",
        "",
        f"{named.summary}.",
        "",
        f"- target: `{s.target}`, LUN {s.lun}, portal {HOST}:{capture.port} (tgtd on the host's loopback)",
        f"- initiator name in the script: {f'`{s.initiator}`' if s.initiator else 'none'}",
        f"- CHAP: {f'user `{s.chap.username}`' if s.chap else 'none'}; reverse CHAP: "
        f"{f'user `{s.reverse_chap.username}`' if s.reverse_chap else 'none'}",
        f"- `{named.name}.bin`: {table.length} bytes, checksum 0x{table.checksum:02x}, found at physical "
        f"0x{capture.position:x}",
        "",
        "What the guest kernel showed under /sys/firmware/ibft (secrets masked here; the JSON holds them):",
        "",
        "```",
    ]
    for key, value in capture.guest.sysfs().items():
        shown = MASK if key.rsplit("/", 1)[-1] in SECRET_ATTRS else value
        lines.append(f"{key} = {shown}")
    return [*lines, "```", ""]


def _readme(kernel: KernelTree, done: list[tuple[Named, IpxeCapture]]) -> str:
    lines = [
        "# iBFT tables captured from iPXE",
        "",
        "Written by `tools/capture-ibft.py` (run from the checkout as root):",
        "",
        f"    {COMMAND}",
        "",
        "QEMU (TCG, machine `pc`, BIOS) boots iPXE, the virtio-net NIC ROM of Debian's",
        f"`ipxe-qemu` package {_version('ipxe-qemu')} (QEMU {_version('qemu-system-x86')}). An iPXE",
        "script from QEMU's TFTP server runs `sanhook` against a tgtd "
        f"(`tgt` {_version('tgt')}) on the host,",
        "so iPXE logs in and writes its iBFT into base memory, then boots the Debian kernel",
        f"{kernel.version} with a busybox initramfs (`qemu/ibft-guest.sh`): it loads `iscsi_ibft` and",
        "prints every /sys/firmware/ibft attribute and low memory 0x80000-0xFFFFF (/dev/mem).",
        "",
        "- `NAME.bin`: the table's bytes, cut out of the guest's memory at the signature",
        "  the kernel's scan finds.",
        "- `NAME.sysfs.json`: every attribute the kernel showed, without its trailing newline.",
        "",
        "The script checks each capture: the table parses without warnings, its sysfs view",
        "equals the kernel's, and it rebuilds to iPXE's bytes.",
        "",
    ]
    for named, capture in done:
        lines += _scenario_text(named, capture)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write (default {OUT})")
    parser.add_argument("--work", type=Path, help="keep the guests' files here (default: a temp folder)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("capture-ibft: needs root (tgtd, the kernel download); run: " + COMMAND, file=sys.stderr)
        return 1
    try:
        kernel = fetch_kernel()
        with tempfile.TemporaryDirectory(prefix="capture-ibft.") as tmp:
            work = args.work or Path(tmp)
            done: list[tuple[Named, IpxeCapture]] = []
            for named in SCENARIOS:
                print(f"capture-ibft: {named.name} ...", file=sys.stderr)
                capture = boot_ipxe(named.scenario, kernel, work / named.name)
                _check(named, capture)
                done.append((named, capture))
    except IscsibootError as exc:
        print(f"capture-ibft: {exc}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for named, capture in done:
        (args.out / f"{named.name}.bin").write_bytes(capture.table)
        text = json.dumps(capture.guest.sysfs(), indent=1, sort_keys=True) + "\n"
        (args.out / f"{named.name}.sysfs.json").write_text(text)
        print(f"capture-ibft: wrote {args.out / named.name}.bin and .sysfs.json", file=sys.stderr)
    (args.out / "README.md").write_text(_readme(kernel, done))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
