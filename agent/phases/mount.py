# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Mount System read-only at /flash, its SYSTEM squashfs as the new root, Storage read-write.

As OpenELEC/LibreELEC's init: System (``boot=``, ext4 or FAT) at ``/flash`` read-only, which
must hold ``KERNEL`` and ``SYSTEM``; ``/flash/SYSTEM`` loop-mounted (squashfs,
read-only) at the new root; Storage (``disk=``) checked with ``e2fsck -p``
(started at once, so it runs while System and SYSTEM are mounted) and mounted
read-write at ``/storage``.  On any failure every mount made so far
is undone in reverse order, so Storage is never left mounted read-write.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.plan import MountStep

Say = Callable[[str], None]


@dataclass
class Mounter:
    root: str = "/"  # prefix of every mount point (tests use a scratch directory)
    dev: str = "/dev"
    say: Say = lambda _t: None
    fsck: str | None = None  # e2fsck's path, or None when absent
    ensure_fs: Callable[[str], None] = lambda _fs: None  # loads a file system module
    done: list[tuple[str, str, bool]] = field(default_factory=list)  # (target, source, read-write)

    def path(self, target: str) -> str:
        return os.path.join(self.root, target.lstrip("/"))

    def run(self, steps: tuple[MountStep, ...], deadline: Deadline) -> list[tuple[str, str, bool]]:
        """Mount ``steps`` in order; the file system checks start at once and run alongside."""
        checks = {
            step.source: Check(self, step.source, deadline).start()
            for step in steps
            if step.check and self.fsck is not None and not step.loop
        }
        try:
            for step in steps:
                self._one(step, deadline, checks.get(step.source))
        except BaseException:
            for check in checks.values():
                check.thread.join()  # never leave an e2fsck running on a device being given up
            self.rollback()
            raise
        return list(self.done)

    def _one(self, step: MountStep, deadline: Deadline, check: Check | None = None) -> None:
        from iscsiboot.agent import sysc

        target = self.path(step.target)
        os.makedirs(target, exist_ok=True)
        source = step.source
        loop_fd: int | None = None
        if step.loop:
            backing = self.path(step.source)
            try:
                source, loop_fd = sysc.loop_attach(backing, read_only=True, dev_dir=self.dev)
            except OSError as exc:
                raise PhaseError(
                    "mount",
                    f"cannot attach {step.source} to a loop device",
                    cause="loop",
                    evidence=str(exc),
                    fix="add the loop kernel module to the initramfs",
                ) from None
        try:
            if check is not None:
                check.result()
            elif step.check and self.fsck is not None:
                self._fsck(source, deadline)
            elif step.check:
                self.say(f"{source} is not checked: the initramfs has no e2fsck")
            self.ensure_fs(step.fstype)
            self._helpers(step.fstype)
            flags, data = sysc.split_options(step.options)
            sysc.mount(source, target, step.fstype, flags, data)
        except OSError as exc:
            pages = "(with nls_cp437 and its I/O character set) " if step.fstype == "vfat" else ""
            raise PhaseError(
                "mount",
                f"cannot mount {step.source} ({step.fstype}) on {step.target}",
                cause="mount",
                evidence=exc.strerror or str(exc),
                fix=f"check that {step.fstype} is in the kernel or the initramfs {pages}"
                "and the file system is intact",
            ) from None
        finally:
            if loop_fd is not None:
                os.close(loop_fd)  # the mount holds the loop device now; unmounting frees it
        read_write = not flags & sysc.MS_RDONLY
        self.done.append((target, step.source, read_write))
        self.say(f"mounted {step.source} on {step.target} ({'rw' if read_write else 'ro'})")
        if step.target == "/flash":
            missing = [
                name for name in ("KERNEL", "SYSTEM") if not os.path.isfile(os.path.join(target, name))
            ]
            if missing:
                present = ", ".join(sorted(os.listdir(target))[:12]) or "nothing"
                raise PhaseError(
                    "mount",
                    f"the System file system ({step.source}) has no {' and no '.join(missing)}",
                    cause="not-system",
                    evidence=f"/flash holds: {present}",
                    fix="copy KERNEL and SYSTEM of the OpenELEC/LibreELEC release onto System, "
                    "or point boot= at the right partition",
                )

    def _helpers(self, fstype: str) -> None:
        """Load what the mount of ``fstype`` asks for by name; the kernel's own default needs only one.

        Each is optional: a kernel has them built in, or lacks the ones its default does not
        use; a missing one shows as the mount's own error.
        """
        from iscsiboot.agent.plan import FS_HELPERS

        for helper in FS_HELPERS.get(fstype, ()):
            try:
                self.ensure_fs(helper)
            except PhaseError as exc:
                self.say(f"{helper} for {fstype}: {exc.what}")

    def _fsck(self, device: str, deadline: Deadline) -> None:
        from iscsiboot.proc import run

        self.say(f"checking {device} (e2fsck -p)")
        try:
            done = run(
                [self.fsck or "e2fsck", "-p", device],
                what=f"check {device}",
                check=False,
                timeout=max(1.0, deadline.remaining()),
            )
        except Exception as exc:
            raise PhaseError(
                "mount", f"file system check of {device} failed", cause="fsck", evidence=str(exc)
            ) from None
        if done.returncode >= 4:
            tail = (done.stdout + done.stderr).strip().splitlines()
            raise PhaseError(
                "mount",
                f"e2fsck found errors on {device} it cannot fix unattended (exit {done.returncode})",
                cause="fsck",
                evidence=tail[-1] if tail else "",
                fix=f"run e2fsck -f {device} by hand from the debug shell (break=mount)",
            )
        if done.returncode in (1, 2):
            self.say(f"e2fsck repaired {device} (exit {done.returncode})")

    def rollback(self) -> None:
        """Unmount everything this mounter mounted, newest first (lazily if busy)."""
        from iscsiboot.agent import sysc

        while self.done:
            target, source, _rw = self.done.pop()
            try:
                sysc.umount(target)
            except OSError:
                try:
                    sysc.umount(target, sysc.MNT_DETACH)
                except OSError as exc:
                    self.say(f"cannot unmount {target} ({source}): {exc.strerror}")
                    continue
            self.say(f"unmounted {target}")


class Check:
    """One ``e2fsck -p`` in a thread, so that it runs while the mounts before it are made."""

    def __init__(self, mounter: Mounter, device: str, deadline: Deadline) -> None:
        self.mounter = mounter
        self.device = device
        self.deadline = deadline
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"fsck {device}", daemon=True)

    def start(self) -> Check:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            self.mounter._fsck(self.device, self.deadline)
        except BaseException as exc:  # handed to the mount that needs the check
            self.error = exc

    def result(self) -> None:
        """Wait for the check; its PhaseError, if any, is raised here."""
        self.thread.join()
        if self.error is not None:
            raise self.error
