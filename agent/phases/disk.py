# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Find the SCSI disk of each iSCSI session through sysfs, woken by kernel uevents.

sysfs path: ``/sys/class/iscsi_session/sessionN/device`` is the session's
device directory under its SCSI host; below it ``target H:C:T/H:C:T:L/block/sdX``
is the disk of LUN L.  The phase waits (on NETLINK_KOBJECT_UEVENT, never by
sleeping) until the disk has a size, its device node exists and every
partition of its partition table shows up as ``sdXN``.
"""

from __future__ import annotations

import errno
import os
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.iscsi.scsi import DISK_TYPES


@dataclass(frozen=True)
class Session:
    sid: str  # "session1"
    target: str  # the target's IQN
    device: Path  # the session's device directory (under hostN)


@dataclass(frozen=True)
class ScsiDisk:
    name: str  # "sda"
    hctl: str  # "2:0:0:1"
    lun: int
    session: str
    target: str


def list_sessions(sysfs: str = "/sys") -> list[Session]:
    out: list[Session] = []
    base = Path(sysfs, "class/iscsi_session")
    for entry in sorted(base.glob("session*"), key=lambda p: int(p.name[7:] or 0)):
        try:
            target = (entry / "targetname").read_text().strip()
            device = (entry / "device").resolve()
        except OSError:
            continue
        out.append(Session(entry.name, target, device))
    return out


def session_disks(session: Session) -> list[ScsiDisk]:
    """Disks (SCSI type 0) of a session, by LUN."""
    out: list[ScsiDisk] = []
    for lun_dir in session.device.glob("target*/*:*:*:*"):
        try:
            kind = (lun_dir / "type").read_text().strip()
        except OSError:
            kind = "0"
        if not kind.isdigit() or int(kind) not in DISK_TYPES:
            continue
        for block in sorted((lun_dir / "block").glob("*")):
            out.append(
                ScsiDisk(
                    block.name, lun_dir.name, int(lun_dir.name.rsplit(":", 1)[1]), session.sid, session.target
                )
            )
    return sorted(out, key=lambda d: d.lun)


def pick_disk(disks: list[ScsiDisk], lun: int | None) -> ScsiDisk | None:
    """The disk of ``lun``, or the lowest-numbered disk when no LUN was given."""
    if lun is None:
        return disks[0] if disks else None
    for disk in disks:
        if disk.lun == lun:
            return disk
    return None


def disk_size(sysfs: str, name: str) -> int:
    try:
        return int(Path(sysfs, "class/block", name, "size").read_text()) * 512
    except (OSError, ValueError):
        return 0


def sysfs_partitions(sysfs: str, name: str) -> dict[int, str]:
    """Partition number -> kernel name (``sda1``) as the kernel sees them."""
    out: dict[int, str] = {}
    for part in Path(sysfs, "class/block", name).glob(f"{name}*"):
        try:
            out[int((part / "partition").read_text())] = part.name
        except (OSError, ValueError):
            continue
    return out


NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1  # the kernel's own uevents (udevd re-sends on group 2)
WAKE_SUBSYSTEMS: frozenset[str] = frozenset({"block", "scsi", "scsi_disk", "iscsi_session", "scsi_device"})


def parse_uevent(datagram: bytes) -> dict[str, str] | None:
    """The ``KEY=VALUE`` fields of a kernel uevent (``ACTION@DEVPATH\\0KEY=VALUE\\0...``); None otherwise.

    udevd's re-sent events start with ``libudev`` and a binary header: not ours.
    """
    head, _sep, rest = datagram.partition(b"\0")
    if b"@" not in head or head.startswith(b"libudev"):
        return None
    fields: dict[str, str] = {}
    for item in rest.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key:
            fields[key.decode("ascii", "replace")] = value.decode("utf-8", "replace")
    return fields


class Uevents:
    """Kernel uevents as a wake-up source: a NETLINK_KOBJECT_UEVENT socket, no udevd needed.

    The disk phase reads the disks' state from sysfs; an event only says "look
    again".  The socket is the standard library's: a library here would bring
    asyncio into PID 1 (about half a second of a slow guest's CPU) to split
    ``KEY=VALUE`` strings.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        try:
            self.sock.bind((0, KERNEL_GROUP))
        except OSError:
            self.sock.close()
            raise
        self.seen: list[str] = []

    def wait(self, timeout: float) -> bool:
        """True when a block or SCSI uevent arrived within ``timeout`` seconds."""
        ready, _w, _x = select.select([self.sock], [], [], max(0.0, timeout))
        if not ready:
            return False
        hit = False
        while True:
            try:
                data, (sender, _groups) = self.sock.recvfrom(65536, socket.MSG_DONTWAIT)  # drain the queue
            except BlockingIOError:
                break
            fields = parse_uevent(data) if sender == 0 else None  # 0: the kernel itself
            if fields is not None and fields.get("SUBSYSTEM") in WAKE_SUBSYSTEMS:
                self.seen.append(f"{fields.get('ACTION')} {fields.get('DEVPATH')}")
                hit = True
        return hit

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class ReadyDisk:
    disk: ScsiDisk
    size: int
    partitions: dict[int, str]  # number -> kernel name


def disk_ready(
    disk: ScsiDisk, sysfs: str, dev: str, table_of: Callable[[str, int], list[int] | None]
) -> ReadyDisk | None:
    size = disk_size(sysfs, disk.name)
    node = f"{dev}/{disk.name}"
    if size <= 0:
        return None
    if not os.path.exists(node):
        from iscsiboot.agent.sysc import ensure_node

        try:
            ensure_node(node, f"{sysfs}/class/block/{disk.name}/dev")
        except OSError:
            return None
    try:
        numbers = table_of(node, size)
    except OSError as exc:
        # The node and the size are there before the disk is live (its "add" uevent comes
        # after): until then open() fails with ENXIO.  The uevent wakes the next look.
        if exc.errno in (errno.ENXIO, errno.ENODEV):
            return None
        raise
    parts = sysfs_partitions(sysfs, disk.name)
    if numbers is not None and any(n not in parts for n in numbers):
        return None
    for name in parts.values():
        if not os.path.exists(f"{dev}/{name}"):
            from iscsiboot.agent.sysc import ensure_node

            try:
                ensure_node(f"{dev}/{name}", f"{sysfs}/class/block/{disk.name}/{name}/dev")
            except OSError:
                return None
    return ReadyDisk(disk, size, parts)


def partition_numbers(node: str, size: int) -> list[int] | None:
    from iscsiboot.disk.probe import read_partition_table
    from iscsiboot.disk.readers import file_reader

    table = read_partition_table(file_reader(node), size=size)
    return None if table is None else [p.number for p in table.partitions]


Look = Callable[[], tuple[list[ReadyDisk], list[str]]]  # (the disks ready, what is still missing)


def _wait(
    look: Look, deadline: Deadline, wait: Callable[[float], bool], say: Callable[[str], None]
) -> tuple[list[ReadyDisk], list[str]]:
    """Look again at each uevent until nothing is missing or the deadline passes."""
    last_say = -1
    while True:
        ready, missing = look()
        if not missing or deadline.expired():
            return ready, missing
        elapsed = int(deadline.elapsed())
        if elapsed >= 1 and elapsed != last_say:
            last_say = elapsed
            say(f"waiting for the disk of {', '.join(missing)} ({elapsed} s of {deadline.seconds:.0f})")
        wait(min(1.0, deadline.remaining()))


def wait_for_nbd_disks(
    served: list[ScsiDisk],
    deadline: Deadline,
    *,
    sysfs: str = "/sys",
    dev: str = "/dev",
    wait: Callable[[float], bool],
    say: Callable[[str], None] = lambda _t: None,
    table_of: Callable[[str, int], list[int] | None] = partition_numbers,
) -> list[ReadyDisk]:
    """Wait until each device an NBD daemon serves has its size, node and partitions."""

    def look() -> tuple[list[ReadyDisk], list[str]]:
        ready: list[ReadyDisk] = []
        missing: list[str] = []
        for disk in served:
            found = disk_ready(disk, sysfs, dev, table_of)
            if found is None:
                missing.append(f"{disk.target} LUN {disk.lun} ({dev}/{disk.name})")
            else:
                ready.append(found)
        return ready, missing

    ready, missing = _wait(look, deadline, wait, say)
    if not missing:
        return ready
    raise PhaseError(
        "disk",
        f"no disk appeared for {', '.join(missing)} within {deadline.seconds:.0f} s",
        cause="no-disk",
        evidence="the NBD daemon reported the device ready, but the kernel shows no size or partitions",
        fix="see the kernel log (dmesg) for nbd errors",
    )


def wait_for_disks(
    wanted: list[tuple[str, int | None]] | None,
    deadline: Deadline,
    *,
    sysfs: str = "/sys",
    dev: str = "/dev",
    wait: Callable[[float], bool],
    say: Callable[[str], None] = lambda _t: None,
    table_of: Callable[[str, int], list[int] | None] = partition_numbers,
) -> list[ReadyDisk]:
    """Wait until each (target, LUN) has a ready disk; ``None`` means every session's disks."""

    def look() -> tuple[list[ReadyDisk], list[str]]:
        sessions = list_sessions(sysfs)
        ready: list[ReadyDisk] = []
        missing: list[str] = []
        if wanted is None:
            for session in sessions:
                for disk in session_disks(session):
                    found = disk_ready(disk, sysfs, dev, table_of)
                    if found is None:
                        missing.append(disk.name)
                    else:
                        ready.append(found)
            if not ready:
                missing.append("a disk of the iBFT sessions")
        else:
            for target, lun in wanted:
                chosen = None
                for session in sessions:
                    if session.target == target:
                        chosen = pick_disk(session_disks(session), lun)
                        if chosen is not None:
                            break
                found = disk_ready(chosen, sysfs, dev, table_of) if chosen else None
                if found is None:
                    lun_text = "" if lun is None else f" LUN {lun}"
                    missing.append(f"{target}{lun_text}")
                else:
                    ready.append(found)
        return ready, missing

    ready, missing = _wait(look, deadline, wait, say)
    if not missing:
        return ready
    sessions_text = (
        ", ".join(f"{s.sid}={s.target}" for s in list_sessions(sysfs)) or "no iSCSI session in sysfs"
    )
    raise PhaseError(
        "disk",
        f"no disk appeared for {', '.join(missing)} within {deadline.seconds:.0f} s",
        cause="no-disk",
        evidence=sessions_text,
        fix="check that the target maps a disk LUN to this initiator (tgt's LUN 0 is a controller; "
        "the disk is LUN 1), and that sd_mod is loaded",
    )
