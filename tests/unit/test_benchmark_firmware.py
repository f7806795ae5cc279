"""The pure parts of benchmarks/firmware.py: the clock of console lines, medians, the report text."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "firmware.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_firmware", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_firmware"] = module
    spec.loader.exec_module(module)
    return module


bench = _load()


def test_the_clock_counts_from_qemu_start() -> None:
    clock = bench.HostClock()
    clock.write("iPXE 1.0.0 -- Open Source Network Boot Firmware\n")
    clock.progress("boot QEMU (TCG, sanboot)")
    assert clock.started is not None
    start = clock.started
    clock.lines += [
        (start + 15.5, "\x1b[0m[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)"),
        (start + 20.0, "iscsiboot: mounted /dev/sda1 on /flash (ro)"),
        (start + 21.25, "iscsiboot: mounted /dev/sda2 on /storage (rw)"),
    ]
    assert clock.first(bench.KERNEL_LINE) == 15.5
    assert clock.first(bench.MOUNTED) == 21.25
    assert bench.HostClock().first(bench.MOUNTED) is None  # QEMU never started


def test_medians_and_the_report() -> None:
    assert bench.median([3.0, None, 1.0, 2.0]) == 2.0
    assert bench.median([None]) is None

    def row(kernel: float, mounted: float, agent: float) -> dict[str, object]:
        return {"ok": 1, "kernel_median_s": kernel, "mounted_median_s": mounted, "agent_median_s": agent,
                "mounted_s": [mounted]}  # fmt: skip

    out = {"runs": 1, "variants": {"bios-seed": row(9.0, 14.0, 2.1), "uefi-libreelec": row(16.0, 22.0, 2.2)}}
    text = bench.render(out, "python benchmarks/firmware.py --runs 1")
    assert "| uefi-libreelec | 1/1 | 16.0 s | 22.0 s | 2.2 s |" in text
    args = bench.build_parser().parse_args(["--runs", "3", "--ovmf-pxe"])
    assert args.runs == 3 and args.ovmf_pxe
