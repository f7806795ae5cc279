"""Disk and label phases: sysfs walks, waiting on uevents, superblock labels, ambiguity."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from agent_support import MIB, fake_iscsi_sysfs, make_disk, make_ext4
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.phases.disk import (
    ScsiDisk,
    list_sessions,
    parse_uevent,
    pick_disk,
    session_disks,
    wait_for_disks,
    wait_for_nbd_disks,
)
from iscsiboot.agent.phases.label import Candidate, candidates_of_disk, resolve
from iscsiboot.disk.readers import file_reader
from iscsiboot.model import Locator

T0, T1 = "iqn.2024-01.test:t0", "iqn.2024-01.test:t1"


def test_sysfs_walk_session_to_disk(tmp_path: Path) -> None:
    sysfs = fake_iscsi_sysfs(
        tmp_path,
        sessions={1: T0, 2: T1},
        disks=[(1, 3, 1, "sda", 64 * MIB, [1, 2]), (2, 4, 0, "sdb", 8 * MIB, [])],
    )
    sessions = list_sessions(str(sysfs))
    assert [(s.sid, s.target) for s in sessions] == [("session1", T0), ("session2", T1)]
    disks = session_disks(sessions[0])
    assert disks == [ScsiDisk("sda", "3:0:0:1", 1, "session1", T0)]
    assert (
        pick_disk(disks, 1) == disks[0] and pick_disk(disks, 2) is None and pick_disk(disks, None) == disks[0]
    )


def test_wait_for_disks_finds_partitions(tmp_path: Path) -> None:
    sysfs = fake_iscsi_sysfs(tmp_path, sessions={1: T0}, disks=[(1, 3, 1, "sda", 64 * MIB, [1, 2])])
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("sda", "sda1", "sda2"):
        (dev / name).write_bytes(b"")
    ready = wait_for_disks(
        [(T0, 1)],
        Deadline(2),
        sysfs=str(sysfs),
        dev=str(dev),
        wait=lambda _t: False,
        table_of=lambda _n, _s: [1, 2],
    )
    assert ready[0].disk.name == "sda" and ready[0].partitions == {1: "sda1", 2: "sda2"}
    assert ready[0].size == 64 * MIB


def test_wait_for_disks_wakes_on_events_until_partitions_appear(tmp_path: Path) -> None:
    sysfs = fake_iscsi_sysfs(tmp_path, sessions={1: T0}, disks=[(1, 3, 1, "sda", 64 * MIB, [1])])
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("sda", "sda1", "sda2"):
        (dev / name).write_bytes(b"")
    calls: list[float] = []

    def wait(timeout: float) -> bool:  # the second partition shows up on the 2nd event
        calls.append(timeout)
        if len(calls) == 2:
            part = sysfs / "devices/platform/host3/session1/target3:0:0/3:0:0:1/block/sda/sda2"
            part.mkdir()
            (part / "partition").write_text("2\n")
        return True

    ready = wait_for_disks(
        [(T0, 1)], Deadline(5), sysfs=str(sysfs), dev=str(dev), wait=wait, table_of=lambda _n, _s: [1, 2]
    )
    assert len(calls) == 2 and ready[0].partitions == {1: "sda1", 2: "sda2"}


def test_a_disk_not_live_yet_is_waited_for(tmp_path: Path) -> None:
    """/dev/sda and its size exist before the disk is live: open() then fails with ENXIO."""
    sysfs = fake_iscsi_sysfs(tmp_path, sessions={1: T0}, disks=[(1, 3, 1, "sda", 64 * MIB, [1])])
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("sda", "sda1"):
        (dev / name).write_bytes(b"")
    opened: list[str] = []

    def table_of(node: str, _size: int) -> list[int]:
        opened.append(node)
        if len(opened) == 1:
            raise OSError(errno.ENXIO, "No such device or address", node)
        return [1]

    ready = wait_for_disks(
        [(T0, 1)], Deadline(5), sysfs=str(sysfs), dev=str(dev), wait=lambda _t: True, table_of=table_of
    )
    assert len(opened) == 2 and ready[0].partitions == {1: "sda1"}

    def broken(node: str, _size: int) -> list[int]:
        raise OSError(errno.EIO, "Input/output error", node)

    with pytest.raises(OSError, match="Input/output"):  # a real read error is not waited away
        wait_for_disks(
            [(T0, 1)], Deadline(5), sysfs=str(sysfs), dev=str(dev), wait=lambda _t: True, table_of=broken
        )


def test_wait_for_disks_times_out_with_evidence(tmp_path: Path) -> None:
    sysfs = fake_iscsi_sysfs(tmp_path, sessions={1: T0}, disks=[])
    said: list[str] = []
    clock = [0.0]

    def wait(timeout: float) -> bool:
        clock[0] += timeout
        return False

    with pytest.raises(PhaseError) as info:
        wait_for_disks(
            [(T0, 1)],
            Deadline(3, lambda: clock[0]),
            sysfs=str(sysfs),
            dev=str(tmp_path),
            wait=wait,
            say=said.append,
        )
    assert info.value.phase == "disk" and "LUN 1" in info.value.what
    assert info.value.evidence == f"session1={T0}"
    assert any("waiting for the disk" in s and "of 3" in s for s in said)


@pytest.fixture(scope="module")
def disk_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    tmp = tmp_path_factory.mktemp("img")
    system, storage, other = tmp / "system.img", tmp / "storage.img", tmp / "other.img"
    make_ext4(system, 8, "System", {"KERNEL": b"k"})
    make_ext4(storage, 8, "Storage")
    make_ext4(other, 8, "System")  # a second "System": ambiguous
    disk = tmp / "disk.img"
    layout = make_disk(disk, [system, storage, other])
    return disk, layout


def test_label_candidates_from_superblocks(disk_image: tuple[Path, list[tuple[int, int]]]) -> None:
    disk, _layout = disk_image
    cands = candidates_of_disk(
        "sda", disk.stat().st_size, file_reader(disk), {1: "sda1", 2: "sda2", 3: "sda3"}
    )
    assert [(c.device, c.fs, c.label) for c in cands] == [
        ("/dev/sda1", "ext4", "System"),
        ("/dev/sda2", "ext4", "Storage"),
        ("/dev/sda3", "ext4", "System"),
    ]
    assert resolve("Storage", Locator.parse("LABEL=Storage"), cands).device == "/dev/sda2"
    with pytest.raises(PhaseError, match="2 file systems carry LABEL=System") as info:
        resolve("System", Locator.parse("LABEL=System"), cands)
    assert info.value.cause == "ambiguous" and info.value.evidence == "/dev/sda1, /dev/sda3"
    uid = cands[0].uuid
    assert uid is not None
    assert resolve("System", Locator.parse(f"UUID={uid.upper()}"), cands).device == "/dev/sda1"


def test_label_not_found_and_paths() -> None:
    cands = [
        Candidate("/dev/sda1", "ext4", "Sys", None, "sda"),
        Candidate("/dev/sda2", None, None, None, "sda"),
    ]
    with pytest.raises(PhaseError, match="no file system with LABEL=System") as info:
        resolve("System", Locator.parse("LABEL=System"), cands)
    assert "/dev/sda1 ext4 LABEL=Sys" in (info.value.evidence or "") and "e2label" in (info.value.fix or "")
    assert resolve("System", Locator.parse("/dev/sda1"), cands).label == "Sys"
    with pytest.raises(PhaseError, match="not a partition"):
        resolve("System", Locator.parse("/dev/sdb1"), cands)


def test_whole_disk_file_system(tmp_path: Path) -> None:
    image = tmp_path / "fs.img"
    make_ext4(image, 8, "Storage")
    cands = candidates_of_disk("sdb", image.stat().st_size, file_reader(image), {})
    assert [(c.device, c.label) for c in cands] == [("/dev/sdb", "Storage")]


def test_parse_uevent_reads_kernel_events_only() -> None:
    add = b"add@/devices/platform/host0/session1/target0:0:0/0:0:0:1/block/sda\0ACTION=add\0" \
        b"DEVPATH=/devices/platform/host0/session1/target0:0:0/0:0:0:1/block/sda\0SUBSYSTEM=block\0" \
        b"MAJOR=8\0MINOR=0\0DEVNAME=sda\0DEVTYPE=disk\0DISKSEQ=9\0SEQNUM=1234\0"  # fmt: skip
    fields = parse_uevent(add)
    assert fields is not None
    assert (fields["ACTION"], fields["SUBSYSTEM"], fields["DEVNAME"]) == ("add", "block", "sda")
    assert fields["SEQNUM"] == "1234" and len(fields) == 9
    assert parse_uevent(b"libudev\0\xfe\xed\xca\xfe" + b"\0" * 32 + b"ACTION=add\0") is None  # udevd's
    assert parse_uevent(b"") is None and parse_uevent(b"no header\0A=b\0") is None
    odd = parse_uevent(b"change@/x\0EMPTY=\0NOEQUALS\0=novalue\0NAME=caf\xc3\xa9\0")
    assert odd == {"EMPTY": "", "NAME": "caf\u00e9"}


def nbd_sysfs(root: Path, name: str, size: int, parts: list[int]) -> Path:
    """/sys/class/block/nbdN as the kernel shows a served device: its size and nbdNpM partitions."""
    sysfs = root / "sys"
    block = sysfs / "class/block" / name
    block.mkdir(parents=True)
    (block / "size").write_text(f"{size // 512}\n")
    for number in parts:
        part = block / f"{name}p{number}"
        part.mkdir()
        (part / "partition").write_text(f"{number}\n")
    return sysfs


def test_an_nbd_device_is_ready_with_its_partitions(tmp_path: Path) -> None:
    sysfs = nbd_sysfs(tmp_path, "nbd0", 64 * MIB, [1, 2])
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nbd0", "nbd0p1", "nbd0p2"):
        (dev / name).write_bytes(b"")
    served = [ScsiDisk("nbd0", "nbd", 1, "nbd daemon 42", T0)]
    ready = wait_for_nbd_disks(
        served, Deadline(2), sysfs=str(sysfs), dev=str(dev), wait=lambda _t: False,
        table_of=lambda _n, _s: [1, 2],
    )  # fmt: skip
    assert ready[0].disk == served[0] and ready[0].partitions == {1: "nbd0p1", 2: "nbd0p2"}
    assert ready[0].size == 64 * MIB


def test_an_nbd_device_without_its_partitions_times_out_with_the_cause(tmp_path: Path) -> None:
    sysfs = nbd_sysfs(tmp_path, "nbd0", 64 * MIB, [1])  # the table says 2 partitions, sysfs shows 1
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in ("nbd0", "nbd0p1"):
        (dev / name).write_bytes(b"")
    clock = [0.0]

    def wait(timeout: float) -> bool:
        clock[0] += timeout
        return False

    with pytest.raises(PhaseError) as info:
        wait_for_nbd_disks(
            [ScsiDisk("nbd0", "nbd", 1, "nbd daemon 42", T0)], Deadline(3, lambda: clock[0]),
            sysfs=str(sysfs), dev=str(dev), wait=wait, table_of=lambda _n, _s: [1, 2],
        )  # fmt: skip
    assert info.value.cause == "no-disk" and f"{T0} LUN 1" in info.value.what and "nbd0" in info.value.what
