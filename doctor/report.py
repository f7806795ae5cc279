"""What the doctor reports: the plan of checks, their results, the LUNs seen, and the settings.

Plain data with its JSON form (:meth:`Report.to_dict`) and its terminal form
(:func:`human`); no I/O.  Details and fixes arrive here without secrets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from iscsiboot.model import BootConfig, Locator, LocatorKind, Target, lun_to_text
from iscsiboot.output import printable

DEFAULT_INITIATOR = "iqn.2026-11.org.iscsiboot:doctor"
DEFAULT_SYSTEM = Locator(LocatorKind.LABEL, "System")
DEFAULT_STORAGE = Locator(LocatorKind.LABEL, "Storage")
ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"

#: The plan: every check in order.
CHECKS = (
    "portal",
    "discovery",
    "login",
    "luns",
    "capacity",
    "partition table",
    "bootable partition",
    "file systems",
    "system files",
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PartitionReport:
    number: int
    start: int
    size: int
    type: str
    bootable: bool
    fs: str | None
    label: str | None
    uuid: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LunReport:
    lun: int
    vendor: str
    product: str
    revision: str
    device_type: str
    capacity_bytes: int | None
    block_size: int | None
    scheme: str | None = None
    partitions: tuple[PartitionReport, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "partitions": [p.to_dict() for p in self.partitions]}


@dataclass(frozen=True)
class Report:
    target: str
    portal: str
    initiator: str
    checks: tuple[Check, ...]
    luns: tuple[LunReport, ...] = ()
    complete: bool = True  # False when a failed check stopped the run

    @property
    def ok(self) -> bool:
        return self.complete and all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "portal": self.portal,
            "initiator": self.initiator,
            "checks": [c.to_dict() for c in self.checks],
            "not_checked": [name for name in CHECKS if name not in {c.name for c in self.checks}],
            "luns": [lun.to_dict() for lun in self.luns],
        }


@dataclass(frozen=True)
class Settings:
    """What the box would use: the boot model, and the APPEND line it came from (if any)."""

    config: BootConfig
    source: str = "options"  # "cmdline" | "extlinux" | "ibft" | "options"
    from_dhcp: bool = False  # the target is a DHCP root path's (--dhcp-root-path)

    @property
    def target(self) -> Target:
        return self.config.targets[0]

    @property
    def initiator(self) -> str:
        return self.config.initiator or DEFAULT_INITIATOR

    @property
    def system(self) -> Locator:
        return self.config.system or DEFAULT_SYSTEM

    @property
    def storage(self) -> Locator | None:
        return self.config.storage


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def human(report: Report) -> str:
    """The report as the terminal shows it (the caller masks secrets).

    Every value that came from the target or the disk (names, INQUIRY
    strings, labels) is :func:`~iscsiboot.output.printable`: one line each.
    """
    e = printable
    lines = [f"doctor: {e(report.target)} at {e(report.portal)} as {e(report.initiator)}"]
    for check in report.checks:
        mark = "ok    " if check.ok else "FAILED"
        lines.append(f"  {mark} {check.name}: {e(check.detail)}")
        if not check.ok and check.fix:
            lines.append(f"         fix: {e(check.fix)}")
    for name in report.to_dict()["not_checked"]:
        lines.append(f"  -      {name}: not checked (an earlier check failed)")
    for lun in report.luns:
        size = f", {lun.capacity_bytes} bytes ({lun.block_size}-byte blocks)" if lun.capacity_bytes else ""
        inquiry = e(f"{lun.device_type} {lun.vendor} {lun.product} {lun.revision}")
        lines.append(f"LUN {lun_to_text(lun.lun)}: {inquiry}{size}")
        for p in lun.partitions:
            flags = " bootable" if p.bootable else ""
            fs = (
                f" {e(p.fs)} label={e(p.label or '-')} uuid={e(p.uuid or '-')}"
                if p.fs
                else " (no file system found)"
            )
            lines.append(f"  {p.number}: start {p.start} size {p.size} type {e(p.type)}{flags}{fs}")
    lines.append("all checks passed" if report.ok else "a check failed")
    return "\n".join(lines)
