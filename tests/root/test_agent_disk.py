"""Disk and label phases: sysfs walks, waiting on uevents, superblock labels, ambiguity."""

from __future__ import annotations

import os
from pathlib import Path

from agent_support import MIB, loop_device, need_root_tools
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.phases.disk import (
    Uevents,
)
from iscsiboot.disk.readers import file_reader


def test_uevents_wake_on_a_real_block_device(tmp_path: Path) -> None:
    """A loop device attach sends a kernel block uevent: the waiter wakes without polling."""
    need_root_tools("losetup")
    image = tmp_path / "x.img"
    image.write_bytes(b"\0" * MIB)
    events = Uevents()  # bound before the attach: the kernel queues its events for us
    try:
        assert events.wait(0.05) is False
        with loop_device(image) as device:
            deadline = Deadline(10)
            woke = False
            while not woke and not deadline.expired():  # bdi/queue events may come first
                woke = events.wait(deadline.remaining())
            assert woke and deadline.elapsed() < 5
            assert any(os.path.basename(device) in seen for seen in events.seen)
            assert file_reader(device)(0, 16) == b"\0" * 16
    finally:
        events.close()
