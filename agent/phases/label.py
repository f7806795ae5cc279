# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Resolve ``LABEL=``/``UUID=`` by reading superblocks on the sessions' disks (no blkid, no udev)."""

from __future__ import annotations

from dataclasses import dataclass

from iscsiboot.agent.errors import PhaseError
from iscsiboot.disk.probe import ReadAt
from iscsiboot.model import Locator, LocatorKind


@dataclass(frozen=True)
class Candidate:
    device: str  # /dev/sda1
    fs: str | None
    label: str | None
    uuid: str | None
    disk: str  # sda


def candidates_of_disk(
    disk: str, size: int, read: ReadAt, part_names: dict[int, str], dev: str = "/dev"
) -> list[Candidate]:
    """File systems on a disk: each partition of its table, or the whole disk when it has none."""
    from iscsiboot.disk.probe import ProbeError, probe_filesystem, read_partition_table
    from iscsiboot.disk.readers import window

    out: list[Candidate] = []
    try:
        table = read_partition_table(read, size=size)
    except ProbeError:
        table = None
    if table is None:
        info = probe_filesystem(read)
        if info is not None:
            out.append(Candidate(f"{dev}/{disk}", info.fs, info.label, info.uuid, disk))
        return out
    for part in table.partitions:
        name = part_names.get(part.number, f"{disk}{part.number}")
        try:
            info = probe_filesystem(window(read, part.start, part.size))
        except ProbeError:
            info = None
        if info is None:
            out.append(Candidate(f"{dev}/{name}", None, None, None, disk))
        else:
            out.append(Candidate(f"{dev}/{name}", info.fs, info.label, info.uuid, disk))
    return out


def resolve(role: str, locator: Locator, candidates: list[Candidate]) -> Candidate:
    """The one candidate ``locator`` names; none or several is an error."""
    if locator.kind is LocatorKind.PATH:
        for cand in candidates:
            if cand.device == locator.value:
                return cand
        raise PhaseError(
            "label",
            f"{role} device {locator.value} is not a partition of the iSCSI disk",
            cause="not-found",
            evidence=_seen(candidates),
            fix=f"use LABEL={role} (device names change between boots)",
        )
    if locator.kind is LocatorKind.LABEL:
        hits = [c for c in candidates if c.label == locator.value]
    else:
        hits = [c for c in candidates if c.uuid is not None and c.uuid.lower() == locator.value.lower()]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise PhaseError(
            "label",
            f"no file system with {locator} for {role}",
            cause="not-found",
            evidence=_seen(candidates),
            fix=f"label the {role} partition (e2label DEVICE {role}, FAT: fatlabel DEVICE {role}) "
            "or correct the command line",
        )
    raise PhaseError(
        "label",
        f"{len(hits)} file systems carry {locator} for {role}",
        cause="ambiguous",
        evidence=", ".join(c.device for c in hits),
        fix="give each file system a unique label, or name the partition by UUID=",
    )


def _seen(candidates: list[Candidate]) -> str:
    if not candidates:
        return "no file system found on the iSCSI disk"
    return "; ".join(
        f"{c.device} {c.fs or 'unknown'}" + (f" LABEL={c.label}" if c.label else "") for c in candidates
    )
