"""Mount and hand-off phases for real: loop devices, ext4 System/Storage, the SYSTEM squashfs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_support import (
    loop_device,
    make_ext4,
    make_squashfs,
    mounted_at,
    need_root_tools,
    system_tree,
    unmount_all_under,
)
from iscsiboot.agent import sysc
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.phases.handoff import choose_init, markers, mounted_points, move_mounts, write_markers
from iscsiboot.agent.phases.mount import Mounter
from iscsiboot.agent.plan import mount_plan


@pytest.fixture
def images(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    need_root_tools("losetup", "mkfs.ext4", "mksquashfs")
    squash = tmp_path / "SYSTEM"
    make_squashfs(squash, system_tree())
    system = tmp_path / "system.img"
    make_ext4(system, 16, "System", {"KERNEL": b"kernel", "SYSTEM": squash})
    storage = tmp_path / "storage.img"
    make_ext4(storage, 16, "Storage", {".kodi/keep": b"x"})
    broken = tmp_path / "broken.img"
    make_ext4(broken, 16, "System", {"KERNEL": b"kernel"})
    root = tmp_path / "root"
    root.mkdir()
    try:
        yield system, storage, broken
    finally:
        unmount_all_under(root)


def _fsck() -> str | None:
    for path in ("/usr/sbin/e2fsck", "/sbin/e2fsck"):
        if os.path.exists(path):
            return path
    return None


def test_mounts_system_ro_squashfs_root_and_storage_rw(
    tmp_path: Path, images: tuple[Path, Path, Path]
) -> None:
    system, storage, _broken = images
    root = tmp_path / "root"
    said: list[str] = []
    with loop_device(system) as sys_dev, loop_device(storage) as sto_dev:
        mounter = Mounter(root=str(root), say=said.append, fsck=_fsck())
        steps = mount_plan(sys_dev, "ext4", sto_dev, "ext4", "/sysroot")
        try:
            done = mounter.run(steps, Deadline(60))
            assert [rw for _t, _s, rw in done] == [False, False, True]
            assert "ro" in mounted_at(root / "flash")[0].split(",")
            assert "ro" in mounted_at(root / "sysroot")[0].split(",")
            assert "rw" in mounted_at(root / "storage")[0].split(",")
            assert (root / "flash/KERNEL").read_bytes() == b"kernel"
            assert (root / "sysroot/usr/lib/systemd/systemd").exists()
            assert (root / "storage/.kodi/keep").exists()
            assert any("checking" in s for s in said) == (_fsck() is not None)
            # hand-off: init, markers, and /flash + /storage moved into the new root
            assert choose_init(str(root / "sysroot"), None) == "/usr/lib/systemd/systemd"
            with pytest.raises(PhaseError, match="no init"):
                choose_init(str(root / "sysroot"), "/sbin/nothere")
            dev = tmp_path / "devdir"
            dev.mkdir()
            write_markers(str(dev), {"device": "eth0", "address": "10.0.2.15", "gateway": None})
            assert (dev / ".kernel_ipconfig").read_text() == "DEVICE=eth0\nADDRESS=10.0.2.15\n"
            assert (dev / ".storage_netboot").exists()
            moved = move_mounts(str(root / "sysroot"), mounted_points(), said.append, root=str(root))
            assert moved == ["/flash", "/storage"]
            assert (root / "sysroot/flash/KERNEL").exists()
            assert (root / "sysroot/storage/.kodi/keep").exists()
            assert "rw" in mounted_at(root / "sysroot/storage")[0].split(",")
        finally:
            unmount_all_under(root)


def test_failure_rolls_back_and_never_leaves_storage_rw(
    tmp_path: Path, images: tuple[Path, Path, Path]
) -> None:
    _system, storage, broken = images
    root = tmp_path / "root"
    with loop_device(broken) as sys_dev, loop_device(storage) as sto_dev:
        mounter = Mounter(root=str(root), fsck=None)
        # Storage first here, so that the failure comes after a read-write mount
        steps = tuple(reversed(mount_plan(sys_dev, "ext4", sto_dev, "ext4", "/sysroot")))
        with pytest.raises(PhaseError) as info:
            mounter.run((steps[0], steps[2]), Deadline(30))
        assert info.value.phase == "mount" and "no SYSTEM" in info.value.what
        assert "KERNEL" in (info.value.evidence or "")
        assert mounted_at(root / "storage") == [] and mounted_at(root / "flash") == []
        assert mounter.done == []


def _fake_fsck(tmp_path: Path, code: int) -> tuple[str, Path]:
    """An e2fsck stand-in that holds until System is mounted (or 20 s pass), then exits with ``code``."""
    flag = tmp_path / "root/flash/KERNEL"
    script = tmp_path / "fsck.sh"
    script.write_text(
        "#!/bin/sh\n"
        f"i=0; while [ ! -e {flag} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\n"
        f"[ -e {flag} ] && echo 'System was mounted meanwhile'\n"
        f"exit {code}\n"
    )
    script.chmod(0o755)
    return str(script), flag


@pytest.mark.parametrize("code", [0, 4])
def test_storage_check_runs_while_system_is_mounted(
    tmp_path: Path, images: tuple[Path, Path, Path], code: int
) -> None:
    """e2fsck starts at once: System and SYSTEM mount while it runs; its verdict still gates Storage."""
    system, storage, _broken = images
    root = tmp_path / "root"
    fsck, _flag = _fake_fsck(tmp_path, code)
    said: list[str] = []
    with loop_device(system) as sys_dev, loop_device(storage) as sto_dev:
        mounter = Mounter(root=str(root), say=said.append, fsck=fsck)
        steps = mount_plan(sys_dev, "ext4", sto_dev, "ext4", "/sysroot")
        try:
            if code == 0:
                done = mounter.run(steps, Deadline(60))
                assert [rw for _t, _s, rw in done] == [False, False, True]
            else:
                with pytest.raises(PhaseError, match="cannot fix unattended") as info:
                    mounter.run(steps, Deadline(60))
                assert "System was mounted meanwhile" in (info.value.evidence or "")
                assert mounter.done == [] and mounted_at(root / "storage") == []
                assert mounted_at(root / "flash") == []  # rolled back
            checking = next(i for i, s in enumerate(said) if s.startswith("checking"))
            flash = next(i for i, s in enumerate(said) if s.startswith("mounted") and "/flash" in s)
            assert checking < flash  # the check began before System was mounted
        finally:
            unmount_all_under(root)


def test_markers_without_network() -> None:
    assert markers(None) == {".kernel_ipconfig": "", ".storage_netboot": ""}


def test_switch_root_frees_only_the_old_root(tmp_path: Path) -> None:
    """switch_root's clean-up removes the initramfs files but not other mounts or the new root."""
    old = tmp_path / "old"
    (old / "usr/lib").mkdir(parents=True)
    (old / "usr/lib/x.pyc").write_bytes(b"x")
    (old / "init").write_text("#!/bin/sh\n")
    (old / "keep").mkdir()
    (old / "sysroot").mkdir()
    sysc.mount("tmpfs", str(old / "keep"), "tmpfs")
    sysc.mount("tmpfs", str(old / "sysroot"), "tmpfs")
    try:
        (old / "keep/data").write_text("other file system")
        (old / "sysroot/new").write_text("new root")
        sysc._remove_tree(str(old), os.stat(old).st_dev, skip=str(old / "sysroot"))
        assert sorted(os.listdir(old)) == ["keep", "sysroot"]
        assert (old / "keep/data").exists() and (old / "sysroot/new").exists()
    finally:
        sysc.umount(str(old / "keep"))
        sysc.umount(str(old / "sysroot"))
