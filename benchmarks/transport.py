#!/usr/bin/env python3
"""The two transports side by side: kernel iSCSI (``iscsi_tcp``) and NBD served by the agent's daemon.

In one run, the same kernel, disk layout, large test SYSTEM, tgtd target and QEMU settings
(iPXE ``sanboot`` with mutual CHAP, the iBFT from iPXE) boot ``--runs`` times with each
transport's image, interleaved.  In each booted guest the test SYSTEM measures, on the guest's
clock and past the page cache (``O_DIRECT``):

* ``seqread``: 64 MiB read from the disk in 1 MiB requests (MiB/s),
* ``randread``: 200 reads of 4 KiB at pseudo-random places of the disk's first 64 MiB (IOPS),
* ``daemon``: the resident memory of the NBD daemon once the root runs (NBD only),

and the agent reports when System and Storage were mounted (kernel clock).  Targets: NBD's
sequential read at least 0.5x kernel iSCSI's, the daemon's resident memory at most 40 MiB.

Run as root (tgtd, loop devices)::

    .venv/bin/python benchmarks/transport.py --runs 3 --write-report --json

``--write-report`` rewrites ``TRANSPORT.md`` beside this file with the numbers.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iscsiboot.output import write_atomic
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts, run_scenario
from iscsiboot.qemu.outcome import find_result
from iscsiboot.qemu.scenario import ScenarioOptions
from iscsiboot.qemu.system import parse_tests
from iscsiboot.secret import Secret

HERE = Path(__file__).resolve().parent
REPORT = HERE / "TRANSPORT.md"
TRANSPORTS = ("kernel", "nbd")
FILLER_MB = 72  # the same large SYSTEM for both
TESTS = "iscsiboot.test=seqread,randread,daemon"
SEQ_BYTES = 64 * 1024 * 1024
SEQ_RATIO_TARGET = 0.5
RSS_TARGET_MIB = 40.0
JSON_KEYS = ("runs", "transports", "nbd_seq_ratio", "nbd_rand_ratio", "daemon_rss_mib", "targets_met")


# ------------------------------------------------------------------ pure parts


@dataclass
class Run:
    """One boot's figures (None: that figure is missing from the console)."""

    mounted_s: float | None = None  # kernel clock: System and Storage mounted
    seq_mib_s: float | None = None
    rand_iops: float | None = None
    daemon_rss_mib: float | None = None
    error: str | None = None


def seconds(start: str, end: str) -> float | None:
    span = float(end) - float(start)
    return span if span > 0 else None


def parse_run(console: str) -> Run:
    """The figures of one boot from its console (pure)."""
    lines = console.splitlines()
    found = find_result(lines)
    if found is None or not found.ok:
        error = "no result" if found is None else f"{found.phase}: {found.error}"
        return Run(error=error)
    run = Run()
    clock = found.clock or {}
    mounted = clock.get("result")
    run.mounted_s = None if mounted is None else float(mounted)
    tests = parse_tests(console)
    for words in tests.get("seqread", [])[:1]:
        _disk, size, t0, t1, *_requests = words.split()  # then the read requests and max_sectors_kb
        span = seconds(t0, t1)
        run.seq_mib_s = None if span is None else int(size) / span / (1024 * 1024)
    for words in tests.get("randread", [])[:1]:
        _disk, count, t0, t1 = words.split()
        span = seconds(t0, t1)
        run.rand_iops = None if span is None else int(count) / span
    for words in tests.get("daemon", [])[:1]:
        _pid, _argv, rss_kib = words.split()
        run.daemon_rss_mib = int(rss_kib) / 1024
    return run


def _round(value: object) -> object:
    return round(value, 3) if isinstance(value, float) else value


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(float(statistics.median(present)), 3) if present else None


@dataclass
class Summary:
    runs: list[Run] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mounted_median_s": median([r.mounted_s for r in self.runs]),
            "seq_read_mib_s": median([r.seq_mib_s for r in self.runs]),
            "rand_read_iops": median([r.rand_iops for r in self.runs]),
            "daemon_rss_mib": median([r.daemon_rss_mib for r in self.runs]),
            "failed": [r.error for r in self.runs if r.error is not None],
            "boots": [{k: _round(v) for k, v in vars(r).items()} for r in self.runs],
        }


def summarize(by_transport: dict[str, Summary], runs: int) -> dict[str, Any]:
    transports = {name: s.to_dict() for name, s in by_transport.items()}
    kernel, nbd = transports.get("kernel", {}), transports.get("nbd", {})

    def ratio(key: str) -> float | None:
        a, b = nbd.get(key), kernel.get(key)
        return None if a is None or not b else round(a / b, 3)

    seq = ratio("seq_read_mib_s")
    rss = nbd.get("daemon_rss_mib")
    return {
        "runs": runs,
        "transports": transports,
        "nbd_seq_ratio": seq,
        "nbd_rand_ratio": ratio("rand_read_iops"),
        "daemon_rss_mib": rss,
        "targets_met": (seq or 0.0) >= SEQ_RATIO_TARGET and rss is not None and rss <= RSS_TARGET_MIB,
    }


def render(out: dict[str, Any], command: str) -> str:
    """TRANSPORT.md from a run's numbers (pure)."""
    t = out["transports"]
    rows = [
        ("System and Storage mounted (kernel clock, s)", "mounted_median_s"),
        ("sequential read, 1 MiB O_DIRECT (MiB/s)", "seq_read_mib_s"),
        ("random read, 4 KiB O_DIRECT (IOPS)", "rand_read_iops"),
        ("resident memory of the '@' daemon: NBD server, session keeper (MiB)", "daemon_rss_mib"),
    ]
    lines = [
        "# Transport benchmark",
        "",
        "`benchmarks/transport.py` boots the same sanboot scenario (Debian kernel, iPXE `sanboot` with",
        "mutual CHAP from `tgtd`, the iBFT from iPXE, QEMU TCG, a SYSTEM of "
        f"{FILLER_MB} MiB and more) with kernel iSCSI",
        "(`iscsi_tcp`) and with the NBD transport (the agent's daemon serving `/dev/nbd0`), interleaved.",
        "The test SYSTEM reads the disk past the page cache; medians of the boots. This file is written",
        "by the benchmark itself.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}.",
        "",
        f"Command (as root): `{command}`",
        "",
        "| figure | " + " | ".join(TRANSPORTS) + " |",
        "|---|" + "---|" * len(TRANSPORTS),
    ]
    for label, key in rows:
        cells = [str(t.get(name, {}).get(key)) for name in TRANSPORTS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    per_boot = (
        ("sequential reads per boot (MiB/s)", "seq_mib_s"),
        ("random reads per boot (IOPS)", "rand_iops"),
    )
    for label, key in per_boot:
        cells = [", ".join(str(b.get(key)) for b in t.get(name, {}).get("boots", [])) for name in TRANSPORTS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"NBD/kernel sequential read: **{out['nbd_seq_ratio']}** (target: at least {SEQ_RATIO_TARGET}); "
        f"NBD/kernel random read: **{out['nbd_rand_ratio']}**; daemon resident memory: "
        f"**{out['daemon_rss_mib']} MiB** (target: at most {RSS_TARGET_MIB:g} MiB).",
        "",
        "Failed boots: "
        + (
            "; ".join(f"{name}: {e}" for name in TRANSPORTS for e in t.get(name, {}).get("failed", []))
            or "none"
        )
        + ".",
        "",
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ boots


def boot_once(artifacts: Artifacts) -> str:
    options = ScenarioOptions(
        username="client",
        password=Secret("client-secret1"),
        reverse_username="target",
        reverse_password=Secret("target-secret1"),
        extra_append=(TESTS,),
        timeout=240.0,
    )
    return run_scenario(options, artifacts, keep_log=False).console


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3, help="boots of each transport (default 3)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--write-report", action="store_true", help=f"rewrite {REPORT.name} with the numbers")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default ~/.cache/iscsiboot)")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="no boots: render an earlier --json run's numbers (with --write-report: rewrite the report)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.runs < 1:
        print("transport.py: --runs must be at least 1", file=sys.stderr)
        return 2
    if args.from_json is not None:
        out = json.loads(args.from_json.read_text())
        command = f"python benchmarks/transport.py --runs {out['runs']} --write-report --json"
        if args.write_report:
            write_atomic(REPORT, render(out, command).encode())
        print(render(out, command))
        return 0 if out["targets_met"] else 1
    images = {name: prepare(args.cache, transport=name, filler_mb=FILLER_MB) for name in TRANSPORTS}
    found: dict[str, Summary] = {name: Summary() for name in TRANSPORTS}
    for n in range(args.runs):
        for name in TRANSPORTS:
            run = parse_run(boot_once(images[name]))
            found[name].runs.append(run)
            print(f"transport.py: {name} boot {n + 1}/{args.runs}: {vars(run)}", file=sys.stderr)
    out = summarize(found, args.runs)
    if args.write_report:
        command = "python benchmarks/transport.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_atomic(REPORT, render(out, command.strip()).encode())
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(render(out, "").split("Command")[0].rstrip())
    return 0 if out["targets_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
