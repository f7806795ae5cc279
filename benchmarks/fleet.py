#!/usr/bin/env python3
"""Several HTPCs on one NAS: time to Storage mounted with one client against N at once.

``iscsiboot qemu fleet`` boots the clients through the dnsmasq chain (NIC PXE
ROM, dnsmasq's per-client tag and script, sanboot with each client's CHAP
account from one tgtd) and checks every disk holds only its own marker.  This
runs a fleet of 1 and a fleet of ``--clients`` (default 3), ``--runs`` times
each, interleaved, and reports the medians of the per-client times (host
seconds from QEMU's start to the agent's line that Storage is mounted).

Run as root (tgtd, loop devices, network namespaces)::

    .venv/bin/python benchmarks/fleet.py --runs 1 --clients 3 --write-report --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.fleet import FleetResult, run_fleet

REPORT = Path(__file__).resolve().parent / "FLEET.md"


def summary(results: dict[int, list[FleetResult]]) -> dict[str, Any]:
    """Per fleet size: every client's time to Storage, their median, and whether all were ok."""
    out: dict[str, Any] = {}
    for size, runs in sorted(results.items()):
        times = [c.mounted_s for r in runs for c in r.clients if c.mounted_s is not None]
        out[str(size)] = {
            "ok": all(r.ok for r in runs),
            "mounted_s": [round(t, 2) for t in times],
            "median_mounted_s": round(statistics.median(times), 2) if times else None,
            "runs": len(runs),
        }
    return out


def report_text(data: dict[str, Any]) -> str:
    lines = [
        "# Fleet: one NAS, several HTPCs booting at once",
        "",
        "Written by `benchmarks/fleet.py` (QEMU TCG, the dnsmasq chain, one tgtd). Seconds from",
        "QEMU's start to the agent's line that Storage is mounted, per client.",
        "",
        "| clients at once | runs | median | all times | every disk its own marker |",
        "|---|---|---|---|---|",
    ]
    for size, row in data.items():
        times = ", ".join(f"{t:.1f}" for t in row["mounted_s"])
        median = "-" if row["median_mounted_s"] is None else f"{row['median_mounted_s']:.1f} s"
        lines.append(f"| {size} | {row['runs']} | {median} | {times} | {'yes' if row['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1, help="fleets of each size (default 1)")
    parser.add_argument("--clients", type=int, default=3, help="the larger fleet (default 3)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--write-report", action="store_true", help=f"write {REPORT.name}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    artifacts = prepare()
    results: dict[int, list[FleetResult]] = {1: [], args.clients: []}
    for _ in range(args.runs):
        for size in (1, args.clients):
            results[size].append(run_fleet(size, artifacts, timeout=300.0, progress=_progress))
    data = summary(results)
    if args.write_report:
        REPORT.write_text(report_text(data))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(report_text(data))
    return 0 if all(row["ok"] for row in data.values()) else 1


def _progress(text: str) -> None:
    sys.stderr.write(f"fleet: {text}\n")


if __name__ == "__main__":
    sys.exit(main())
