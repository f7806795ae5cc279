#!/usr/bin/env python3
"""Throughput of ``iscsiboot install --portal`` onto a tgtd LUN on loopback.

A SYSTEM of ``--data-mb`` random bytes (random: nothing compresses or
dedups it) and a small KERNEL are written in the LibreELEC layout onto a
blank LUN of 512- and of 4096-byte blocks, then with header and data digests
(CRC32C) on the 512-byte LUN.  Each case reports the bytes sent against the
LUN's size, and the rate of the write and of the read-back.

Run as root (tgtd)::

    .venv/bin/python benchmarks/install.py --data-mb 300

``--json`` prints the numbers as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.disk import lunplan
from iscsiboot.disk.install import install
from iscsiboot.disk.installreport import InstallReport
from iscsiboot.disk.layout import LayoutKind, MiB
from iscsiboot.disk.lun import LUN_STORAGE_OPTIONS, LunAccess, install_lun
from iscsiboot.disk.progress import Progress
from iscsiboot.qemu.tgt import Tgtd

INITIATOR = "iqn.2026-11.org.iscsiboot.bench:installer"
CASES = (("512", 512, False), ("4096", 4096, False), ("512 + CRC32C digests", 512, True))


@dataclass(frozen=True)
class Result:
    case: str
    lun_size: int
    sent: int
    extents: int
    write_mib_s: float
    verify_mib_s: float


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-mb", type=int, default=300, help="size of the SYSTEM written (default 300)")
    p.add_argument("--no-digests", action="store_true", help="leave out the case with CRC32C digests")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    return p


def run_case(
    work: Path, tgtd: Tgtd, tid: int, case: tuple[str, int, bool], files: tuple[Path, Path]
) -> Result:
    name, block_size, digests = case
    system_size = (files[1].stat().st_size // MiB + 64) * MiB
    lun_size = 2 * system_size
    backing = work / f"lun{tid}.img"
    with open(backing, "wb") as handle:
        handle.truncate(lun_size)
    iqn = f"iqn.2026-11.org.iscsiboot.bench:lun{tid}"
    tgtd.add_target(tid, iqn, [backing], block_size=block_size)
    if digests:  # tgtd offers no digest unless told to
        tgtd.set_param(tid, "HeaderDigest", "CRC32C")
        tgtd.set_param(tid, "DataDigest", "CRC32C")

    def build(image: Path, size: int) -> InstallReport:
        return install(image=image, size=size, kernel=files[0], system=files[1], system_size=system_size,
                       append="quiet", layout=LayoutKind.LIBREELEC,
                       storage_options=LUN_STORAGE_OPTIONS)  # fmt: skip

    def room(n: lunplan.LunName, size: int, bs: int) -> None:
        lunplan.check_room(
            n, capacity=size, block_size=bs, kind=LayoutKind.LIBREELEC, system_size=system_size
        )

    access = LunAccess(
        lunplan.LunName("127.0.0.1", tgtd.port, iqn, 1), INITIATOR, digests=digests, timeout=60
    )
    report = install_lun(
        access, build, wipe=False, check_room=room, progress=Progress(bar=False), workdir=work
    )
    backing.unlink()
    t = report.transfer
    assert t is not None
    return Result(name, lun_size, t.sent, len(t.extents), t.sent / MiB / t.write_seconds,
                  t.sent / MiB / t.verify_seconds)  # fmt: skip


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="iscsiboot-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        kernel, system = work / "KERNEL", work / "SYSTEM"
        kernel.write_bytes(os.urandom(8 * MiB))
        with open(system, "wb") as handle:
            for _ in range(args.data_mb):
                handle.write(os.urandom(MiB))
        with Tgtd(work / "tgtd") as tgtd:
            cases = CASES[:2] if args.no_digests else CASES
            for tid, case in enumerate(cases, start=1):
                results.append(run_case(work, tgtd, tid, case, (kernel, system)))
    if args.json:
        print(json.dumps([r.__dict__ for r in results], indent=1))
        return 0
    print(f"{platform.node()}: {os.cpu_count()} CPUs, SYSTEM of {args.data_mb} MiB + KERNEL of 8 MiB")
    for r in results:
        print(f"{r.case:<22} LUN {r.lun_size // MiB} MiB, sent {r.sent / MiB:.1f} MiB "
              f"in {r.extents} extents: write {r.write_mib_s:.1f} MiB/s, "
              f"read back {r.verify_mib_s:.1f} MiB/s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
