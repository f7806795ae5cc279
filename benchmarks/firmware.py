#!/usr/bin/env python3
"""BIOS and UEFI boots side by side: QEMU start to the kernel, to System and Storage mounted.

The demo scenario (iPXE ``sanboot`` with mutual CHAP from ``tgtd``, the iBFT
from iPXE, the agent's initramfs, QEMU TCG) boots ``--runs`` times, interleaved,
as each of

* ``bios-seed``: SeaBIOS, iPXE's legacy ROM, the seed layout (MBR, ext4 System, extlinux);
* ``bios-libreelec``: SeaBIOS on LibreELEC's own layout (GPT with gptmbr.bin, FAT16 System);
* ``uefi-libreelec``: OVMF, iPXE's EFI driver, the same layout (syslinux.efi);
* ``uefi-ovmf-pxe`` (with ``--ovmf-pxe``): as ``uefi-libreelec`` but with OVMF's own
  PXE and HTTP boot left on, to show what switching them off saves.

Times are host seconds from QEMU's start, read as the console lines arrive
(the console file is polled every 50 ms): to the kernel's first line, and to
the agent's line that Storage is mounted.  The agent's own total (its
timeline, on the guest's clock) is given beside them.

Run as root (tgtd, loop devices)::

    .venv/bin/python benchmarks/firmware.py --runs 3 --ovmf-pxe --write-readme
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iscsiboot.disk.layout import LayoutKind
from iscsiboot.qemu import scenario
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import KERNEL_LINE, Artifacts, HostClock, run_scenario
from iscsiboot.qemu.scenario import Firmware, ScenarioOptions
from iscsiboot.secret import Secret

HERE = Path(__file__).resolve().parent
README = HERE / "FIRMWARE.md"
VARIANTS: dict[str, tuple[Firmware, LayoutKind]] = {
    "bios-seed": (Firmware.BIOS, LayoutKind.SEED),
    "bios-libreelec": (Firmware.BIOS, LayoutKind.LIBREELEC),
    "uefi-libreelec": (Firmware.UEFI, LayoutKind.LIBREELEC),
    "uefi-ovmf-pxe": (Firmware.UEFI, LayoutKind.LIBREELEC),
}


MOUNTED = re.compile(r"iscsiboot: mounted \S+ on /storage ")  # the agent's last mount


def boot_once(variant: str, artifacts: Artifacts) -> dict[str, float | None]:
    firmware, layout = VARIANTS[variant]
    options = ScenarioOptions(
        username="client",
        password=Secret("client-secret1"),
        reverse_username="target",
        reverse_password=Secret("target-secret1"),
        firmware=firmware,
        layout=layout,
        timeout=240.0,
    )
    clock = HostClock()
    knobs = scenario.OVMF_NET_OFF
    if variant == "uefi-ovmf-pxe":
        scenario.OVMF_NET_OFF = ()
    try:
        outcome = run_scenario(options, artifacts, progress=clock.progress, console=clock, keep_log=False)
    finally:
        scenario.OVMF_NET_OFF = knobs
    return {
        "ok": 1.0 if outcome.ok else 0.0,
        "kernel_s": clock.first(KERNEL_LINE, 2),
        "mounted_s": clock.first(MOUNTED, 2),
        "agent_s": None if outcome.result is None else round(outcome.result.total, 2),
    }


def median(values: Sequence[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return round(float(statistics.median(got)), 2) if got else None


def run(runs: int, variants: Sequence[str], say: Any) -> dict[str, Any]:
    artifacts = prepare()
    got: dict[str, list[dict[str, float | None]]] = {v: [] for v in variants}
    for i in range(runs):
        for variant in variants:
            say(f"boot {i + 1}/{runs}: {variant}")
            one = boot_once(variant, artifacts)
            say(
                f"{variant}: kernel {one['kernel_s']} s, mounted {one['mounted_s']} s, "
                f"agent {one['agent_s']} s"
            )
            got[variant].append(one)
    return {
        "runs": runs,
        "variants": {
            v: {
                "ok": int(sum(r["ok"] or 0 for r in rows)),
                "kernel_median_s": median([r["kernel_s"] for r in rows]),
                "mounted_median_s": median([r["mounted_s"] for r in rows]),
                "agent_median_s": median([r["agent_s"] for r in rows]),
                "mounted_s": [r["mounted_s"] for r in rows],
            }
            for v, rows in got.items()
        },
    }


def render(out: dict[str, Any], command: str) -> str:
    rows = out["variants"]
    lines = [
        "# BIOS and UEFI boot benchmark",
        "",
        "`benchmarks/firmware.py` boots the demo scenario (iPXE `sanboot` with mutual CHAP from `tgtd`,",
        "the iBFT from iPXE, the agent's initramfs, QEMU TCG) with SeaBIOS and with OVMF. Times are host",
        "seconds from QEMU's start (console lines as they arrive); the agent's own time is its timeline",
        "on the guest's clock. This file is written by the benchmark itself.",
        "",
        f"Command (as root): `{command}`",
        "",
        "| variant | boots ok | to the kernel | to mounted | agent's own |",
        "|---|---|---|---|---|",
        *(
            f"| {name} | {r['ok']}/{out['runs']} | {r['kernel_median_s']} s | {r['mounted_median_s']} s"
            f" | {r['agent_median_s']} s |"
            for name, r in rows.items()
        ),
        "",
        "Medians. `uefi-ovmf-pxe` leaves OVMF's own PXE and HTTP boot on (the `opt/org.tianocore`",
        "fw_cfg knobs the harness sets to `n`); the NIC's `bootindex=1` already sends OVMF to iPXE first.",
        "",
        "```json",
        json.dumps(out, indent=1),
        "```",
        "",
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="boots of each variant (default 3)")
    parser.add_argument("--ovmf-pxe", action="store_true", help="also boot UEFI with OVMF's own PXE left on")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--write-readme", action="store_true", help=f"write {README.name} with the numbers")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        build_parser().error("--runs must be at least 1")
    variants = [v for v in VARIANTS if v != "uefi-ovmf-pxe" or args.ovmf_pxe]

    def say(text: str) -> None:
        sys.stderr.write(f"bench: {text}\n")
        sys.stderr.flush()

    out = run(args.runs, variants, say)
    command = "python benchmarks/firmware.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(out, command.strip())
    if args.write_readme:
        README.write_text(text)
    print(json.dumps(out, indent=1) if args.json else text)
    return 0 if all(r["ok"] == args.runs for r in out["variants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
