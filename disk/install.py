"""``iscsiboot install``: partition and fill a LUN or a disk image.

The layout comes from :func:`iscsiboot.disk.layout.plan_layout`; this module
only carries it out: an MBR written by ``sfdisk`` with syslinux's ``mbr.bin``
as boot code, a bootable System ext4 holding KERNEL, SYSTEM, the optional
initrd and extlinux.conf (``extlinux --install``), and a Storage ext4 over the
rest.  Each partition is reached through its own loop device
(``losetup -o OFFSET --sizelimit SIZE``), so neither udev nor partition device
nodes are needed.  Every loop device, mount and temporary directory is removed
on every path out, and an image this command created is removed again when
the installation fails.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from iscsiboot.disk.ext4 import Ext4, Ext4Error
from iscsiboot.disk.layout import MBR_LIMIT, GiB, Layout, MiB, format_size, plan_layout
from iscsiboot.disk.probe import (
    FsInfo,
    ProbeError,
    ReadAt,
    probe_filesystem,
    read_partition_table,
)
from iscsiboot.disk.readers import file_reader
from iscsiboot.errors import EnvironmentProblem, IscsibootError, UsageError
from iscsiboot.model import BootConfig
from iscsiboot.output import warn
from iscsiboot.proc import run, which
from iscsiboot.secret import Secret, mask

MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
BOOT_CODE_SIZE = 440
DEFAULT_IMAGE_SIZE = 4 * GiB
DEFAULT_SYSTEM_SIZE = 256 * MiB
SECRET_WARNING = "extlinux.conf holds CHAP secrets, so it is written with mode 0600"
SECRET_READABLE = (
    "CHAP secrets on the kernel command line are readable by every local user of the booted "
    "machine (/proc/cmdline); prefer the iBFT (--auto)"
)
# syslinux up to 6.03 (OpenELEC's era) cannot read 64-bit group descriptors; System is small anyway
SYSTEM_MKFS_OPTIONS = ("-O", "^64bit")


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
class InstallReport:
    target: str
    kind: str  # "image" | "device"
    size: int
    created: bool
    partitions: tuple[WrittenPartition, ...]
    files: tuple[WrittenFile, ...]
    boot_code: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
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
            "boot_code": self.boot_code,
            "warnings": list(self.warnings),
        }

    def lines(self) -> list[str]:
        out = [f"{self.kind} {self.target}: {format_size(self.size)}, MBR with syslinux boot code"]
        for p in self.partitions:
            flag = ", bootable" if p.bootable else ""
            out.append(
                f"  partition {p.number}: {p.fs} LABEL={p.label} UUID={p.uuid} "
                f"at {p.start} ({format_size(p.size)}{flag})"
            )
        for f in self.files:
            out.append(f"  System{f.path}: {f.size} bytes, mode {f.mode:04o}")
        return out


@dataclass(frozen=True)
class Extlinux:
    """The extlinux.conf text and the secrets it carries (never printed)."""

    text: str
    secrets: tuple[Secret | str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass
class _Plan:
    target: Path
    is_image: bool
    size: int
    layout: Layout
    created: bool = False
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ extlinux.conf


def raw_extlinux(append: str, *, initrd: bool, serial: bool) -> str:
    """extlinux.conf for a kernel command line given as it is (no boot model)."""
    words = append.split()
    if serial and not any(w.startswith("console=ttyS0") for w in words):
        words.append("console=ttyS0,115200")
    lines = []
    if serial:
        lines.append("SERIAL 0 115200")
    lines += ["DEFAULT linux", "PROMPT 0", "TIMEOUT 0", "", "LABEL linux", "  KERNEL /KERNEL"]
    if initrd:
        lines.append("  INITRD /initrd")
    if words:
        lines.append("  APPEND " + " ".join(words))
    return "\n".join(lines) + "\n"


def model_extlinux(cfg: BootConfig, *, initrd: bool, serial: bool, append: str | None) -> Extlinux:
    """extlinux.conf from the boot model, through ``iscsiboot generate``'s writer.

    ``append`` (extra kernel arguments) replaces the writer's default extras
    when given.
    """
    from iscsiboot.cmdline import generate  # noqa: PLC0415 (the install command alone needs it)

    initrd_path = "/initrd" if initrd else None
    if append is None:
        done = generate.extlinux(cfg, kernel="/KERNEL", initrd=initrd_path, serial=serial)
    else:
        done = generate.extlinux(
            cfg, kernel="/KERNEL", initrd=initrd_path, append_extra=tuple(append.split()), serial=serial
        )
    return Extlinux(done.text, tuple(done.secrets), tuple(done.warnings))


# ------------------------------------------------------------------- helpers


def _device_size(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def existing_data(read: ReadAt, size: int) -> str | None:
    """What the start of a disk already holds, in words, or None when it looks empty."""
    try:
        table = read_partition_table(read, size=size)
    except ProbeError as exc:
        return f"a damaged partition table ({exc.what})"
    if table is not None:
        return f"an {table.scheme.upper()} partition table with {len(table.partitions)} partition(s)"
    found = probe_filesystem(read)
    if found is not None:
        label = f" labelled {found.label!r}" if found.label else ""
        return f"a file system ({found.fs}){label}"
    if read(510, 2) == b"\x55\xaa":
        return "a boot sector"
    return None


def _mounted_from(device: Path) -> list[str]:
    real = str(device.resolve())
    out = []
    with open("/proc/mounts", encoding="utf-8") as handle:
        for line in handle:
            source = line.split(" ", 1)[0]
            if source == real or (source.startswith(real) and source[len(real) :].lstrip("p").isdigit()):
                out.append(source)
    return out


def _write_boot_code(target: Path, mbr_bin: Path) -> bytes:
    code = mbr_bin.read_bytes()[:BOOT_CODE_SIZE]
    if len(code) < BOOT_CODE_SIZE // 2:
        raise EnvironmentProblem(f"{mbr_bin} is too short to be syslinux's MBR boot code")
    fd = os.open(target, os.O_WRONLY)
    try:
        os.pwrite(fd, code, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    return code


def _flush(target: Path) -> None:
    """Push what the loop devices wrote through the target's page cache to the disk (or LUN)."""
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _zero(target: Path, offset: int, length: int) -> None:
    fd = os.open(target, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes(length), offset)
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _loop(target: Path, offset: int, size: int, what: str) -> Iterator[Path]:
    """A loop device over one partition; attached and registered with signals held back."""
    device: Path | None = None
    try:
        with _uninterrupted():
            done = run(
                [which("losetup", hint="install util-linux"), "--find", "--show", "-o", str(offset),
                 "--sizelimit", str(size), str(target)],
                what=f"attach the {what} partition to a loop device",
                fix="load the loop module (modprobe loop) and run as root",
            )  # fmt: skip
            device = Path(done.stdout.strip())
        yield device
    finally:
        if device is not None:
            _cleanup(["losetup", "-d", str(device)], f"detach {device}")


@contextlib.contextmanager
def _mounted(device: Path) -> Iterator[Path]:
    """``device`` mounted on a new temporary directory; unmounted and removed on every path."""
    where = Path(tempfile.mkdtemp(prefix="iscsiboot-install-"))
    try:
        with _uninterrupted():
            run(
                [which("mount"), "-t", "ext4", str(device), str(where)],
                what=f"mount the System file system from {device}",
            )
        yield where
    finally:
        if os.path.ismount(where) and not _cleanup(["umount", str(where)], f"unmount {where}"):
            _cleanup(["umount", "-l", str(where)], f"lazily unmount {where}")
        with _uninterrupted(), contextlib.suppress(OSError):
            where.rmdir()


@contextlib.contextmanager
def _uninterrupted() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a clean-up step runs; they arrive right after."""
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _cleanup(argv: list[str], what: str) -> bool:
    """Run one clean-up step; a failure is a warning, never a second exception."""
    with _uninterrupted():
        try:
            run([which(argv[0]), *argv[1:]], what=what, timeout=120)
        except IscsibootError as exc:
            warn(f"clean-up: {exc}")
            return False
    return True


def _copy_into(source: Path, where: Path, name: str, *, mode: int = 0o644) -> None:
    dest = where / name
    try:
        shutil.copyfile(source, dest)
        os.chmod(dest, mode)
    except OSError as exc:
        raise IscsibootError(
            f"cannot copy {source} to System/{name}: {exc.strerror}",
            fix="give a larger --system-size" if exc.errno == 28 else None,
        ) from None


def _write_into(where: Path, name: str, text: str, mode: int) -> None:
    dest = where / name
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(dest, mode)
    except OSError as exc:
        raise IscsibootError(f"cannot write System/{name}: {exc.strerror}") from None


# ------------------------------------------------------------------- install


def install(
    *,
    kernel: Path,
    system: Path,
    image: Path | None = None,
    device: Path | None = None,
    size: int | None = None,
    system_size: int = DEFAULT_SYSTEM_SIZE,
    config: BootConfig | None = None,
    append: str | None = None,
    initrd: Path | None = None,
    serial: bool = False,
    label_system: str = "System",
    label_storage: str = "Storage",
    wipe: bool = False,
    secrets: Iterable[Secret | str] = (),
    mbr_bin: Path = MBR_BIN,
) -> InstallReport:
    """Partition and fill ``image`` (a file, created sparse when missing) or ``device``.

    With ``config`` the kernel command line comes from the boot model (as
    ``iscsiboot generate extlinux`` writes it) plus ``append``; without it
    ``append`` is the whole command line, and ``secrets`` names the values in
    it that must stay hidden.
    """
    if (image is None) == (device is None):
        raise UsageError("give exactly one of --device and --image")
    for path, what in ((kernel, "KERNEL"), (system, "SYSTEM"), (initrd, "initrd")):
        if path is not None and not path.is_file():
            raise UsageError(f"{what} file {path} does not exist or is not a regular file")
    if not mbr_bin.is_file():
        raise EnvironmentProblem(f"{mbr_bin} is missing", fix="install syslinux-common")
    for program, package in (("sfdisk", "fdisk"), ("mkfs.ext4", "e2fsprogs"), ("extlinux", "extlinux")):
        which(program, hint=f"install {package}")
    if os.geteuid() != 0:
        raise EnvironmentProblem("installing needs root (loop devices and mounts)", fix="run it as root")

    if config is not None:
        conf = model_extlinux(config, initrd=initrd is not None, serial=serial, append=append)
        hidden = [*conf.secrets, *config.secrets(), *secrets]
        conf = Extlinux(conf.text, tuple(hidden), conf.warnings)
    else:
        text = raw_extlinux(append or "", initrd=initrd is not None, serial=serial)
        conf = Extlinux(text, tuple(secrets))
    carries_secret = any((s.reveal() if isinstance(s, Secret) else s) in conf.text for s in conf.secrets if s)

    plan = _prepare(image=image, device=device, size=size, system_size=system_size,
                    label_system=label_system, label_storage=label_storage, wipe=wipe)  # fmt: skip
    plan.warnings.extend(mask(w, conf.secrets) for w in conf.warnings)
    if config is not None and not config.firmware and not config.targets:
        plan.warnings.append(
            "the command line names no iSCSI target: it boots System from a local disk "
            "(give --auto for the iBFT, or --target-name and --target-ip)"
        )
    if carries_secret:
        plan.warnings.append(SECRET_WARNING)
        if not any("/proc/cmdline" in w for w in plan.warnings):
            plan.warnings.append(SECRET_READABLE)
    try:
        files = _execute(plan, kernel=kernel, system=system, initrd=initrd, conf=conf,
                         secret_conf=carries_secret, mbr_bin=mbr_bin)  # fmt: skip
        return _verify(plan, files, mbr_bin)
    except BaseException:
        if plan.created:
            with contextlib.suppress(OSError):
                plan.target.unlink()
        raise


def install_image(
    path: Path,
    *,
    kernel: Path,
    system: Path,
    initrd: Path | None = None,
    append: str = "",
    system_label: str = "System",
    storage_label: str = "Storage",
    size_mb: int = 64,
    system_size_mb: int | None = None,
    serial: bool = False,
    wipe: bool = False,
    secrets: Iterable[Secret | str] = (),
) -> InstallReport:
    """Build a boot disk image from a finished kernel command line (the QEMU harness's way)."""
    system_mb = system_size_mb if system_size_mb is not None else max(8, size_mb // 2)
    return install(
        image=path,
        kernel=kernel,
        system=system,
        initrd=initrd,
        append=append,
        size=size_mb * MiB,
        system_size=system_mb * MiB,
        label_system=system_label,
        label_storage=storage_label,
        serial=serial,
        wipe=wipe,
        secrets=secrets,
    )


def _prepare(
    *,
    image: Path | None,
    device: Path | None,
    size: int | None,
    system_size: int,
    label_system: str,
    label_storage: str,
    wipe: bool,
) -> _Plan:
    """Check the target and plan the layout; create a missing image (sparse)."""
    if device is not None:
        if size is not None:
            raise UsageError("--size applies to --image only", fix="a device keeps its own size")
        if not device.exists() or not stat.S_ISBLK(device.stat().st_mode):
            raise UsageError(f"{device} is not a block device", fix="give /dev/sdX or use --image FILE")
        users = _mounted_from(device)
        if users:
            raise UsageError(f"{device} is in use: {', '.join(users)} is mounted", fix="unmount it first")
        target, is_image = device, False
        disk_size = _device_size(device)
    else:
        assert image is not None
        target, is_image = image, True
        if image.exists() and not image.is_file():
            raise UsageError(f"{image} exists and is not a regular file", fix="use --device for devices")
        disk_size = size if size is not None else (
            image.stat().st_size if image.exists() else DEFAULT_IMAGE_SIZE
        )  # fmt: skip
    if target.exists():
        current = _device_size(target) if not is_image else target.stat().st_size
        found = existing_data(file_reader(target), current) if current else None
        if found is not None and not wipe:
            raise UsageError(
                f"{target} already holds {found}",
                fix="pass --wipe to overwrite it (everything on it is lost)",
            )
    layout = plan_layout(disk_size, system_size, system_label=label_system, storage_label=label_storage)
    plan = _Plan(target, is_image, disk_size, layout)
    if disk_size > MBR_LIMIT:
        plan.warnings.append(
            f"an MBR reaches {format_size(MBR_LIMIT)}: "
            f"the {format_size(disk_size - MBR_LIMIT)} beyond stay unused"
        )
    if is_image:
        if not target.exists():
            plan.created = True
        try:
            with target.open("r+b" if target.exists() else "wb") as handle:
                handle.truncate(0 if wipe else handle.seek(0, os.SEEK_END))
                handle.truncate(disk_size)
        except OSError as exc:
            if plan.created:
                with contextlib.suppress(OSError):
                    target.unlink()
            raise UsageError(f"cannot create {target}: {exc.strerror}") from None
    else:
        # the old table at the start and a GPT backup at the end must not survive
        _zero(target, 0, min(MiB, disk_size))
        _zero(target, max(0, disk_size - MiB), min(MiB, disk_size))
    return plan


def _execute(
    plan: _Plan,
    *,
    kernel: Path,
    system: Path,
    initrd: Path | None,
    conf: Extlinux,
    secret_conf: bool,
    mbr_bin: Path,
) -> list[str]:
    layout = plan.layout
    if plan.is_image:
        _zero(plan.target, 0, min(MiB, plan.size))
    run(
        [which("sfdisk"), "--no-reread", "--no-tell-kernel", "-q", "-w", "always", str(plan.target)],
        what=f"write the partition table of {plan.target}",
        input_text=layout.sfdisk_script(),
    )
    table = read_partition_table(file_reader(plan.target), size=plan.size)
    if table is None or [(p.start, p.size) for p in table.partitions] != [
        (p.start, p.size) for p in layout.partitions
    ]:
        raise IscsibootError(f"the partition table sfdisk wrote on {plan.target} is not the planned one")
    _write_boot_code(plan.target, mbr_bin)
    files: list[str] = []
    with contextlib.ExitStack() as stack:
        sys_loop = stack.enter_context(_loop(plan.target, layout.system.start, layout.system.size, "System"))
        run(
            [which("mkfs.ext4"), "-F", "-q", *SYSTEM_MKFS_OPTIONS, "-L", layout.system.label, str(sys_loop)],
            what="format the System partition",
        )
        where = stack.enter_context(_mounted(sys_loop))
        _copy_into(kernel, where, "KERNEL")
        files.append("/KERNEL")
        _copy_into(system, where, "SYSTEM")
        files.append("/SYSTEM")
        if initrd is not None:
            _copy_into(initrd, where, "initrd")
            files.append("/initrd")
        _write_into(where, "extlinux.conf", conf.text, 0o600 if secret_conf else 0o644)
        files.append("/extlinux.conf")
        run([which("extlinux"), "--install", str(where)], what="install extlinux into System")
        files.append("/ldlinux.sys")
        if (where / "ldlinux.c32").exists():
            files.append("/ldlinux.c32")
    with _loop(plan.target, layout.storage.start, layout.storage.size, "Storage") as store_loop:
        run(
            [which("mkfs.ext4"), "-F", "-q", "-L", layout.storage.label, str(store_loop)],
            what="format the Storage partition",
        )
    _flush(plan.target)
    if not plan.is_image:
        # let the kernel see the new partitions (/dev/sdX1, /dev/sdX2); not needed by us
        with contextlib.suppress(IscsibootError):
            run([which("blockdev"), "--rereadpt", str(plan.target)], what="re-read the partition table")
    return files


def _verify(plan: _Plan, files: list[str], mbr_bin: Path) -> InstallReport:
    """Read back what was written with the project's own readers."""
    code = mbr_bin.read_bytes()[:BOOT_CODE_SIZE]
    if file_reader(plan.target)(0, len(code)) != code:
        raise IscsibootError(f"the boot code on {plan.target} is not syslinux's mbr.bin")
    parts: list[WrittenPartition] = []
    written: list[WrittenFile] = []
    for part in plan.layout.partitions:
        reader = file_reader(plan.target, part.start, part.size)
        info: FsInfo | None = probe_filesystem(reader)
        if info is None or info.label != part.label:
            raise IscsibootError(f"partition {part.number} does not hold the ext4 labelled {part.label!r}")
        parts.append(WrittenPartition(part.number, part.start, part.size, info.fs, info.label,
                                      info.uuid, part.bootable))  # fmt: skip
        if part is plan.layout.system:
            try:
                fs = Ext4(reader)
                for name in files:
                    st = fs.stat(name)
                    written.append(WrittenFile(name, st.size, stat.S_IMODE(st.mode)))
            except Ext4Error as exc:
                raise IscsibootError(f"System does not read back: {exc}") from None
    return InstallReport(
        target=str(plan.target),
        kind="image" if plan.is_image else "device",
        size=plan.size,
        created=plan.created,
        partitions=tuple(parts),
        files=tuple(written),
        boot_code=str(mbr_bin),
        warnings=tuple(plan.warnings),
    )
