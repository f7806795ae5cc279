"""``iscsiboot install``: partition and fill a LUN or a disk image.

The layout comes from :func:`iscsiboot.disk.layout.plan_layout`; this module
only carries it out, in the target's sectors (an image: 512 bytes unless the
caller says otherwise, as the LUN installer does for a LUN of 4096-byte
blocks; a device: its logical block size).  ``libreelec`` (a GPT written by
:mod:`iscsiboot.disk.gpt`, FAT16 System filled with mtools, no mount and no
loop device) is done by :mod:`iscsiboot.disk.esp`.
``seed``: an MBR written by ``sfdisk`` with syslinux's ``mbr.bin``
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
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from iscsiboot.cmdline.syntax import check_text
from iscsiboot.disk import esp, gpt
from iscsiboot.disk.fat import open_filesystem
from iscsiboot.disk.installreport import InstallReport, WrittenFile, WrittenPartition
from iscsiboot.disk.layout import (
    IMAGE_SECTOR_SIZE,
    MBR_LIMIT,
    SECTOR,
    GiB,
    Layout,
    LayoutKind,
    MiB,
    format_size,
    plan_layout,
)
from iscsiboot.disk.probe import (
    FsInfo,
    probe_filesystem,
    read_partition_table,
)
from iscsiboot.disk.readers import file_reader
from iscsiboot.disk.target import device_size, logical_sector_size, mounted_from, refuse_overwrite
from iscsiboot.disk.undo import Undo, removed
from iscsiboot.errors import EnvironmentProblem, IscsibootError, ParseError, UsageError
from iscsiboot.model import BootConfig
from iscsiboot.output import warn
from iscsiboot.proc import run, which
from iscsiboot.secret import Secret, mask

MBR_BIN = Path("/usr/lib/syslinux/mbr/mbr.bin")
BOOT_CODE_SIZE = 440
DEFAULT_IMAGE_SIZE = 4 * GiB
DEFAULT_SYSTEM_SIZE = 256 * MiB
DEFAULT_SIZES = {LayoutKind.LIBREELEC: 1024 * MiB, LayoutKind.SEED: DEFAULT_SYSTEM_SIZE}  # of System
SECRET_WARNING = "extlinux.conf holds CHAP secrets, so it is written with mode 0600"
SECRET_READABLE = (
    "CHAP secrets on the kernel command line are readable by every local user of the booted "
    "machine (/proc/cmdline); prefer the iBFT (--auto)"
)
# syslinux up to 6.03 (OpenELEC's era) cannot read 64-bit group descriptors; System is small anyway
SYSTEM_MKFS_OPTIONS = ("-O", "^64bit")


def large_sector_warning(target: object, sector_size: int) -> str:
    """What a libreelec disk of ``sector_size``-byte sectors (not 512) does not do, in words.

    Its layout is right for Linux (the VM tier boots such a LUN directly and
    mounts both file systems), and OVMF reads its GPT and FAT and starts
    EFI/BOOT/bootx64.efi; but Debian's syslinux.efi (6.04) stopped with a CPU
    exception there (OVMF, iPXE sanboot), and BIOS loaders read 512-byte sectors.
    """
    return (
        f"{target} has {sector_size}-byte sectors: the layout counts them, so Linux finds System and "
        "Storage, but syslinux does not boot from it (its BIOS loader reads 512-byte sectors: gptmbr.bin "
        "and ldlinux.sys are left out; syslinux.efi 6.04 stopped on such a disk under OVMF); "
        "to sanboot it, serve it with 512-byte blocks"
    )


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
    """extlinux.conf for a kernel command line given as it is (no boot model).

    White space (line breaks included) only separates words; any other control
    character is refused (the line may hold a password, so it is not shown).
    """
    words = [check_text(w, "kernel command line (--append)", secret=True) for w in append.split()]
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


def _cleanup(argv: list[str], what: str) -> bool:
    """Run one clean-up step; a failure is a warning, never a second exception."""
    try:
        run([which(argv[0]), *argv[1:]], what=what, timeout=120)
    except IscsibootError as exc:
        warn(f"clean-up: {exc}")
        return False
    return True


def _attach(undo: Undo, target: Path, offset: int, size: int, what: str) -> Path:
    """A loop device over one partition, its detach registered with it (no signal in between)."""
    with undo.held():
        done = run(
            [which("losetup", hint="install util-linux"), "--find", "--show", "-o", str(offset),
             "--sizelimit", str(size), str(target)],
            what=f"attach the {what} partition to a loop device",
            fix="load the loop module (modprobe loop) and run as root",
        )  # fmt: skip
        device = Path(done.stdout.strip())
        undo.push(f"detach {device}", lambda: _cleanup(["losetup", "-d", str(device)], f"detach {device}"))
    return device


def _mount(undo: Undo, device: Path) -> Path:
    """``device`` mounted on a new temporary folder; its unmount and removal registered first."""
    with undo.held():
        where = Path(tempfile.mkdtemp(prefix="iscsiboot-install-"))
        undo.push(f"remove {where}", lambda: removed(where, where.rmdir))
        undo.push(f"unmount {where}", lambda: _unmount(where))
        run([which("mount"), "-t", "ext4", str(device), str(where)],
            what=f"mount the System file system from {device}")  # fmt: skip
    return where


def _unmount(where: Path) -> bool:
    if not os.path.ismount(where):
        return True
    return _cleanup(["umount", str(where)], f"unmount {where}") or _cleanup(
        ["umount", "-l", str(where)], f"lazily unmount {where}"
    )


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
    layout: LayoutKind = LayoutKind.SEED,
    storage_options: tuple[str, ...] = (),
    sector_size: int | None = None,
) -> InstallReport:
    """Partition and fill ``image`` (a file, created sparse when missing) or ``device``.

    With ``config`` the kernel command line comes from the boot model (as
    ``iscsiboot generate extlinux`` writes it) plus ``append``; without it
    ``append`` is the whole command line, and ``secrets`` names the values in
    it that must stay hidden.  ``storage_options`` are more extended options
    (``-E``) for Storage's ``mkfs.ext4``.  ``layout`` picks LibreELEC's own disk layout
    (GPT, FAT16 System, one disk for BIOS and UEFI) or the seed's (MBR, ext4).
    ``sector_size``: the sectors the table counts on an image (by default
    :data:`~iscsiboot.disk.layout.IMAGE_SECTOR_SIZE`: 512, or the block size
    of the LUN the image is built for); a device's own is read from it.
    """
    fat = layout is LayoutKind.LIBREELEC
    if fat:
        mbr_bin = esp.GPTMBR_BIN
    if (image is None) == (device is None):
        raise UsageError("give exactly one of --device and --image")
    for path, what in ((kernel, "KERNEL"), (system, "SYSTEM"), (initrd, "initrd")):
        if path is not None and not path.is_file():
            raise UsageError(f"{what} file {path} does not exist or is not a regular file")
    if fat:
        esp.check_host()
    elif not mbr_bin.is_file():
        raise EnvironmentProblem(f"{mbr_bin} is missing", fix="install syslinux-common")
    for program, package in (("sfdisk", "fdisk"), ("mkfs.ext4", "e2fsprogs"), ("extlinux", "extlinux")):
        if not fat:
            which(program, hint=f"install {package}")
    if not fat and os.geteuid() != 0:
        raise EnvironmentProblem("installing needs root (loop devices and mounts)", fix="run it as root")

    if config is not None:
        conf = model_extlinux(config, initrd=initrd is not None, serial=serial, append=append)
        hidden = [*conf.secrets, *config.secrets(), *secrets]
        conf = Extlinux(conf.text, tuple(hidden), conf.warnings)
    else:
        text = raw_extlinux(append or "", initrd=initrd is not None, serial=serial)
        conf = Extlinux(text, tuple(secrets))
    carries_secret = any((s.reveal() if isinstance(s, Secret) else s) in conf.text for s in conf.secrets if s)

    inputs = [("KERNEL", kernel), ("SYSTEM", system), ("initrd", initrd), ("boot code", mbr_bin)]
    with Undo() as undo:
        plan = _prepare(undo, image=image, device=device, size=size, system_size=system_size,
                        label_system=label_system, label_storage=label_storage, wipe=wipe,
                        inputs=[(what, path) for what, path in inputs if path is not None],
                        kind=layout, sector_size=sector_size)  # fmt: skip
        plan.warnings.extend(mask(w, conf.secrets) for w in conf.warnings)
        if config is not None and not config.firmware and not config.targets:
            plan.warnings.append(
                "the command line names no iSCSI target: it boots System from a local disk "
                "(give --auto for the iBFT, or --target-name and --target-ip)"
            )
        if carries_secret:
            plan.warnings.append(esp.FAT_SECRET_WARNING if fat else SECRET_WARNING)
            if not any("/proc/cmdline" in w for w in plan.warnings):
                plan.warnings.append(SECRET_READABLE)
        if not esp.bios_boots(plan.layout.sector_size):
            plan.warnings.append(large_sector_warning(plan.target, plan.layout.sector_size))
        files = _execute(plan, undo, kernel=kernel, system=system, initrd=initrd, conf=conf,
                         secret_conf=carries_secret, mbr_bin=mbr_bin,
                         storage_options=storage_options)  # fmt: skip
        with undo.interruptible():
            report = _verify(plan, files, mbr_bin if esp.bios_boots(plan.layout.sector_size) else None)
    return report


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
    layout: LayoutKind = LayoutKind.SEED,
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
        layout=layout,
    )


def _prepare(
    undo: Undo,
    *,
    image: Path | None,
    device: Path | None,
    size: int | None,
    system_size: int,
    label_system: str,
    label_storage: str,
    wipe: bool,
    inputs: list[tuple[str, Path]],
    kind: LayoutKind = LayoutKind.SEED,
    sector_size: int | None = None,
) -> _Plan:
    """Check the target and plan the layout; create a missing image (sparse).

    Nothing is written unless the target is new or holds nothing (an empty or
    wholly sparse file), or ``wipe`` is given; an input file is never the target.
    """
    if device is not None:
        if size is not None:
            raise UsageError("--size applies to --image only", fix="a device keeps its own size")
        if not device.exists() or not stat.S_ISBLK(device.stat().st_mode):
            raise UsageError(f"{device} is not a block device", fix="give /dev/sdX or use --image FILE")
        users = mounted_from(device)
        if users:
            raise UsageError(f"{device} is in use: {', '.join(users)} is mounted", fix="unmount it first")
        target, is_image = device, False
        disk_size = device_size(device)
        sector_size = logical_sector_size(device)
    else:
        assert image is not None
        target, is_image = image, True
        if image.exists() and not image.is_file():
            raise UsageError(f"{image} exists and is not a regular file", fix="use --device for devices")
        current = image.stat().st_size if image.exists() else 0
        disk_size = size if size is not None else current or DEFAULT_IMAGE_SIZE
        sector_size = sector_size or IMAGE_SECTOR_SIZE.get()
    before = refuse_overwrite(target, is_image=is_image, wipe=wipe, inputs=inputs)
    layout = plan_layout(
        disk_size,
        system_size,
        system_label=label_system,
        storage_label=label_storage,
        kind=kind,
        sector_size=sector_size or SECTOR,
    )
    plan = _Plan(target, is_image, disk_size, layout)
    if kind is LayoutKind.SEED and disk_size > MBR_LIMIT:
        plan.warnings.append(
            f"an MBR reaches {format_size(MBR_LIMIT)}: "
            f"the {format_size(disk_size - MBR_LIMIT)} beyond stay unused"
        )
    if is_image:
        plan.created = _open_image(undo, target, disk_size, before)
    else:
        # the old table at the start and a GPT backup at the end must not survive
        _zero(target, 0, min(MiB, disk_size))
        _zero(target, max(0, disk_size - MiB), min(MiB, disk_size))
    return plan


def _open_image(undo: Undo, target: Path, size: int, before: os.stat_result | None) -> bool:
    """Make ``target`` a sparse file of ``size`` bytes; True when this call created it.

    A file created here is removed again unless the whole installation
    succeeds; an existing one must still be the file that was checked.
    """
    try:
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        fd = os.open(target, os.O_RDWR | os.O_CLOEXEC)
        created = False
    except OSError as exc:
        raise UsageError(f"cannot create {target}: {exc.strerror}") from None
    else:
        created = True
        undo.keep(undo.push(f"remove {target}", lambda: removed(target, target.unlink), only_if_clean=True))
    try:
        now = os.fstat(fd)
        if not created and (before is None or (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino)):
            raise UsageError(f"{target} changed while it was checked", fix="run the command again")
        os.ftruncate(fd, 0)
        os.ftruncate(fd, size)
    except (OSError, OverflowError) as exc:
        raise UsageError(
            f"cannot make {target} {format_size(size)} long: {getattr(exc, 'strerror', None) or exc}",
            fix="give a smaller --size",
        ) from None
    finally:
        os.close(fd)
    return created


def _execute(
    plan: _Plan,
    undo: Undo,
    *,
    kernel: Path,
    system: Path,
    initrd: Path | None,
    conf: Extlinux,
    secret_conf: bool,
    mbr_bin: Path,
    storage_options: tuple[str, ...] = (),
) -> list[str]:
    layout = plan.layout
    with undo.interruptible():
        if plan.is_image:
            _zero(plan.target, 0, min(MiB, plan.size))
        if layout.scheme == "gpt":
            _write_gpt(plan.target, layout)
        else:
            run(
                [which("sfdisk"), "--no-reread", "--no-tell-kernel", "-q", "-w", "always", str(plan.target)],
                what=f"write the partition table of {plan.target}",
                input_text=layout.sfdisk_script(),
            )
        table = read_partition_table(file_reader(plan.target), size=plan.size, sector_size=layout.sector_size)
        if table is None or [(p.start, p.size) for p in table.partitions] != [
            (p.start, p.size) for p in layout.partitions
        ]:
            raise IscsibootError(f"the partition table written on {plan.target} is not the planned one")
        if esp.bios_boots(layout.sector_size):
            _write_boot_code(plan.target, mbr_bin)
    if layout.kind is LayoutKind.LIBREELEC:
        with undo.scope():
            scratch = undo.folder("iscsiboot-install-")
            with undo.interruptible():
                written = esp.fill(
                    plan.target,
                    layout,
                    esp.FatFiles(kernel, system, initrd, conf.text),
                    scratch=scratch,
                    storage_options=storage_options,
                )
                _settle(plan)
        return written
    files: list[str] = []
    with undo.scope():
        sys_loop = _attach(undo, plan.target, layout.system.start, layout.system.size, "System")
        with undo.interruptible():
            mkfs = [which("mkfs.ext4"), "-F", "-q", *SYSTEM_MKFS_OPTIONS, "-L", layout.system.label]
            run([*mkfs, str(sys_loop)], what="format the System partition")
        where = _mount(undo, sys_loop)
        with undo.interruptible():
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
    with undo.scope():
        store_loop = _attach(undo, plan.target, layout.storage.start, layout.storage.size, "Storage")
        with undo.interruptible():
            run(
                [
                    which("mkfs.ext4"),
                    "-F",
                    "-q",
                    "-L",
                    layout.storage.label,
                    *(["-E", ",".join(storage_options)] if storage_options else []),
                    str(store_loop),
                ],
                what="format the Storage partition",
            )
    with undo.interruptible():
        _settle(plan)
    return files


def _write_gpt(target: Path, layout: Layout) -> None:
    """The layout's GPT, in the target's sectors (:mod:`iscsiboot.disk.gpt`), written in place."""
    entries = [
        gpt.Entry(p.start, p.size, p.type, p.name or p.label, gpt.LEGACY_BIOS_BOOTABLE if p.bootable else 0)
        for p in layout.partitions
    ]
    table = gpt.build(layout.disk_size, layout.sector_size, entries)
    fd = os.open(target, os.O_WRONLY)
    try:
        for offset, data in table.pieces:
            os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def _settle(plan: _Plan) -> None:
    """Flush what was written; let the kernel see a device's new partitions (not needed by us)."""
    _flush(plan.target)
    if not plan.is_image:
        with contextlib.suppress(IscsibootError):
            run([which("blockdev"), "--rereadpt", str(plan.target)], what="re-read the partition table")


def _verify(plan: _Plan, files: list[str], mbr_bin: Path | None) -> InstallReport:
    """Read back what was written with the project's own readers (``mbr_bin``: the boot code written)."""
    if mbr_bin is not None:
        code = mbr_bin.read_bytes()[:BOOT_CODE_SIZE]
        if file_reader(plan.target)(0, len(code)) != code:
            raise IscsibootError(f"the boot code on {plan.target} is not syslinux's {mbr_bin.name}")
    parts: list[WrittenPartition] = []
    written: list[WrittenFile] = []
    for part in plan.layout.partitions:
        reader = file_reader(plan.target, part.start, part.size)
        info: FsInfo | None = probe_filesystem(reader)
        if info is None or info.label != part.label or info.fs != part.fs:
            raise IscsibootError(
                f"partition {part.number} does not hold the {part.fs} labelled {part.label!r}"
            )
        parts.append(WrittenPartition(part.number, part.start, part.size, info.fs, info.label,
                                      info.uuid, part.bootable))  # fmt: skip
        if part is plan.layout.system:
            try:
                fs = open_filesystem(reader, part.fs)
                for name in files:
                    st = fs.stat(name)
                    written.append(WrittenFile(name, st.size, stat.S_IMODE(st.mode)))
            except ParseError as exc:
                raise IscsibootError(f"System does not read back: {exc}") from None
    return InstallReport(
        target=str(plan.target),
        kind="image" if plan.is_image else "device",
        size=plan.size,
        created=plan.created,
        partitions=tuple(parts),
        files=tuple(written),
        boot_code=str(mbr_bin) if mbr_bin is not None else None,
        warnings=tuple(plan.warnings),
        scheme=plan.layout.scheme,
        sector_size=plan.layout.sector_size,
    )
