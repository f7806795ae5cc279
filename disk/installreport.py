"""What ``iscsiboot install`` wrote, as the report it prints (lines or ``--json``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iscsiboot.disk import esp
from iscsiboot.disk.layout import format_size


@dataclass(frozen=True)
class WrittenPartition:
    number: int
    start: int
    size: int
    fs: str
    label: str | None
    uuid: str | None
    bootable: bool


@dataclass(frozen=True)
class WrittenFile:
    path: str  # inside System
    size: int
    mode: int


@dataclass(frozen=True)
class SentExtent:
    """One extent sent to a LUN: where, how long, and the SHA-256 it read back with."""

    offset: int
    length: int
    sha256: str


@dataclass(frozen=True)
class Transfer:
    """How the layout went to a LUN: the extents sent, and how fast."""

    block_size: int
    extents: tuple[SentExtent, ...]
    write_seconds: float
    verify_seconds: float
    digests: bool

    @property
    def sent(self) -> int:
        return sum(e.length for e in self.extents)

    def to_dict(self) -> dict[str, Any]:
        return {
            "block_size": self.block_size,
            "sent": self.sent,
            "write_seconds": round(self.write_seconds, 3),
            "verify_seconds": round(self.verify_seconds, 3),
            "digests": self.digests,
            "extents": [{"offset": e.offset, "length": e.length, "sha256": e.sha256} for e in self.extents],
        }


def _rate(size: int, seconds: float) -> str:
    return f"{size / seconds / (1 << 20):.1f} MiB/s" if seconds > 0 else "-"


@dataclass(frozen=True)
class InstallReport:
    target: str
    kind: str  # "image" | "device" | "lun"
    size: int
    created: bool
    partitions: tuple[WrittenPartition, ...]
    files: tuple[WrittenFile, ...]
    boot_code: str | None  # the file whose boot code the MBR got; None: none (no BIOS boot)
    warnings: tuple[str, ...] = ()
    transfer: Transfer | None = None
    scheme: str = "mbr"  # the partition table: "gpt" | "mbr"
    sector_size: int = 512  # the sectors the table counts

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device": self.target,
            "kind": self.kind,
            "size": self.size,
            "created": self.created,
            "partitions": [
                {
                    "number": p.number,
                    "start": p.start,
                    "size": p.size,
                    "fs": p.fs,
                    "label": p.label,
                    "uuid": p.uuid,
                    "bootable": p.bootable,
                }
                for p in self.partitions
            ],
            "files": [{"path": f.path, "size": f.size, "mode": f"{f.mode:04o}"} for f in self.files],
            "scheme": self.scheme,
            "sector_size": self.sector_size,
            "boot_code": self.boot_code,
            "warnings": list(self.warnings),
        }
        if self.transfer is not None:
            out["transfer"] = self.transfer.to_dict()
        return out

    def lines(self) -> list[str]:
        table = "GPT" if self.scheme == "gpt" else "MBR"
        if self.sector_size != 512:
            table += f" of {self.sector_size}-byte sectors"
        if self.boot_code is None:
            table += ", no BIOS boot code"
        elif self.boot_code == str(esp.GPTMBR_BIN):
            table += " with syslinux's gptmbr.bin boot code"
        else:
            table += " boot code"
        out = [f"{self.kind} {self.target}: {format_size(self.size)}, {table}"]
        for p in self.partitions:
            flag = ", bootable" if p.bootable else ""
            out.append(
                f"  partition {p.number}: {p.fs} LABEL={p.label} UUID={p.uuid} "
                f"at {p.start} ({format_size(p.size)}{flag})"
            )
        for f in self.files:
            out.append(f"  System{f.path}: {f.size} bytes, mode {f.mode:04o}")
        if self.transfer is not None:
            t = self.transfer
            out.append(
                f"  sent {t.sent} bytes in {len(t.extents)} extents of {t.block_size}-byte blocks "
                f"({_rate(t.sent, t.write_seconds)}), "
                f"read back and compared ({_rate(t.sent, t.verify_seconds)})"
            )
        return out
