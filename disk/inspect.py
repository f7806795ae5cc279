"""What a boot disk holds, and what stops it from booting, read through a ReadAt.

Pure: ``iscsiboot doctor`` runs :func:`inspect_disk` over iSCSI reads of the
LUN, the install tests over image files.  It finds the partitions and their
file systems, reads System (KERNEL, SYSTEM, extlinux.conf or syslinux.cfg,
ldlinux.sys, and on FAT the EFI loader) with the ext or the FAT reader, parses
the boot configuration, and lists every problem in words with a fix.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from iscsiboot.disk.esp import EFI_LOADER
from iscsiboot.disk.fat import FileSystem, open_filesystem
from iscsiboot.disk.probe import (
    FsInfo,
    Partition,
    PartitionTable,
    ProbeError,
    ReadAt,
    probe_filesystem,
    read_partition_table,
)
from iscsiboot.disk.readers import window
from iscsiboot.errors import ParseError

EXT_FS = ("ext2", "ext3", "ext4")
SYSTEM_FS = (*EXT_FS, "vfat")  # what System may be: the readers of both are here
EXTLINUX_CONF_NAMES = ("/extlinux.conf", "/boot/extlinux/extlinux.conf", "/extlinux/extlinux.conf",
                       "/syslinux.cfg")  # fmt: skip
# syslinux (BIOS) and syslinux.efi on FAT: one root syslinux.cfg serves both; the EFI loader
# looks in its own folder first
SYSLINUX_CONF_NAMES = ("/syslinux.cfg", "/boot/syslinux/syslinux.cfg", "/syslinux/syslinux.cfg",
                       "/EFI/BOOT/syslinux.cfg", "/extlinux.conf")  # fmt: skip


def conf_names(fs: str) -> tuple[str, ...]:
    """Where the loader of a System of file system ``fs`` looks for its configuration, in order."""
    return SYSLINUX_CONF_NAMES if fs == "vfat" else EXTLINUX_CONF_NAMES


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str | None = None
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        return f"{self.what} ({self.fix})" if self.fix else self.what


@dataclass(frozen=True)
class PartitionView:
    partition: Partition
    fs: FsInfo | None


@dataclass(frozen=True)
class ExtlinuxLabel:
    name: str
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None


@dataclass(frozen=True)
class ExtlinuxConf:
    default: str | None
    serial: str | None
    labels: tuple[ExtlinuxLabel, ...]

    def entry(self) -> ExtlinuxLabel | None:
        """The entry that boots: DEFAULT's label, or the first one."""
        for label in self.labels:
            if label.name == self.default:
                return label
        if self.default and not self.labels:
            # "DEFAULT /KERNEL args" without labels names the kernel itself
            kernel, _, rest = self.default.partition(" ")
            return ExtlinuxLabel(self.default, kernel, None, rest or None)
        return self.labels[0] if self.labels else None


@dataclass(frozen=True)
class FileView:
    path: str
    kind: str | None  # None: missing
    size: int | None


@dataclass(frozen=True)
class SystemView:
    number: int
    files: tuple[FileView, ...]
    extlinux: ExtlinuxConf | None
    extlinux_path: str | None


@dataclass(frozen=True)
class DiskView:
    table: PartitionTable | None
    partitions: tuple[PartitionView, ...]
    system: SystemView | None
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def parse_extlinux(text: str) -> ExtlinuxConf:
    """The entries of an extlinux.conf (keywords are case-insensitive, ``#`` starts a comment)."""
    default: str | None = None
    serial: str | None = None
    labels: list[ExtlinuxLabel] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        key, value = key.upper(), value.strip()
        if key == "DEFAULT":
            default = value
        elif key == "SERIAL":
            serial = value
        elif key == "LABEL":
            labels.append(ExtlinuxLabel(value))
        elif labels and key in ("KERNEL", "LINUX"):
            labels[-1] = ExtlinuxLabel(labels[-1].name, value, labels[-1].initrd, labels[-1].append)
        elif labels and key == "INITRD":
            labels[-1] = ExtlinuxLabel(labels[-1].name, labels[-1].kernel, value, labels[-1].append)
        elif labels and key == "APPEND":
            labels[-1] = ExtlinuxLabel(labels[-1].name, labels[-1].kernel, labels[-1].initrd, value)
    return ExtlinuxConf(default, serial, tuple(labels))


def cached(read: ReadAt, *, chunk: int = 64 * 1024, capacity: int = 256) -> ReadAt:
    """A reader that fetches aligned chunks once (few round trips over iSCSI)."""
    cache: OrderedDict[int, bytes] = OrderedDict()

    def fetch(index: int) -> bytes:
        data = cache.get(index)
        if data is None:
            data = read(index * chunk, chunk)
            cache[index] = data
            if len(cache) > capacity:
                cache.popitem(last=False)
        else:
            cache.move_to_end(index)
        return data

    def inner(offset: int, length: int) -> bytes:
        if length <= 0 or offset < 0:
            return b""
        if length > chunk * capacity // 2:
            return read(offset, length)
        out = bytearray()
        pos = offset
        end = offset + length
        while pos < end:
            index, skip = divmod(pos, chunk)
            data = fetch(index)
            piece = data[skip : skip + (end - pos)]
            out += piece
            if len(data) < chunk or not piece:
                break  # the end of the device
            pos += len(piece)
        return bytes(out)

    return inner


def _file(fs: FileSystem, path: str) -> FileView:
    try:
        st = fs.stat(path)
    except ParseError:
        return FileView(path, None, None)
    return FileView(path, st.kind, st.size)


def inspect_disk(
    read: ReadAt,
    size: int,
    *,
    system_label: str = "System",
    storage_label: str | None = "Storage",
    boot_code: bytes | None = None,
    sector_size: int | None = None,
) -> DiskView:
    """Look at a boot disk the way SeaBIOS, syslinux and the boot agent will.

    ``boot_code`` (the first 440 bytes of syslinux's mbr.bin, if the caller has
    them) is compared with the MBR's boot code.  ``sector_size``: the disk's
    logical block size when known (a LUN's); else the table's place tells.
    On a disk of sectors larger than 512 bytes BIOS boot code and syslinux's
    ldlinux.sys (which read 512-byte sectors) are not asked for; a warning says
    that BIOS cannot boot it.
    """
    problems: list[Problem] = []
    try:
        table = read_partition_table(read, size=size, sector_size=sector_size)
    except ProbeError as exc:
        return DiskView(None, (), None, (Problem(f"the partition table is damaged: {exc}", "rewrite it"),))
    if table is None:
        whole = probe_filesystem(read)
        what = f"a bare {whole.fs} file system" if whole else "no partition table"
        return DiskView(
            None, (), None, (Problem(f"the disk holds {what}", "run iscsiboot install on the LUN"),)
        )
    views = tuple(PartitionView(p, probe_filesystem(window(read, p.start, p.size))) for p in table.partitions)
    if boot_code is not None and table.scheme == "mbr" and read(0, len(boot_code)) != boot_code:
        problems.append(Problem("the MBR boot code is not syslinux's mbr.bin", "run iscsiboot install"))
    named = [v for v in views if v.fs is not None and v.fs.label == system_label]
    if not named:
        problems.append(
            Problem(
                f"no file system labelled {system_label!r}",
                f"label the System partition (e2label DEVICE {system_label})",
            )
        )
    elif len(named) > 1:
        problems.append(
            Problem(f"{len(named)} file systems are labelled {system_label!r}", "relabel all but one")
        )
    if storage_label is not None and not any(v.fs is not None and v.fs.label == storage_label for v in views):
        problems.append(
            Problem(
                f"no file system labelled {storage_label!r} on this disk",
                "label the Storage partition, or point disk= at where Storage is",
                severity="warning",
            )
        )
    system = None
    if len(named) == 1:
        system = _inspect_system(read, named[0], table, problems)
    return DiskView(table, views, system, tuple(problems))


def _inspect_system(
    read: ReadAt, view: PartitionView, table: PartitionTable, problems: list[Problem]
) -> SystemView | None:
    part, info = view.partition, view.fs
    assert info is not None
    if table.scheme == "mbr" and not part.bootable:
        problems.append(
            Problem(f"System (partition {part.number}) is not marked bootable", "sfdisk --activate DISK N")
        )
    if info.fs not in SYSTEM_FS:
        problems.append(
            Problem(f"System is {info.fs}, not FAT or ext2/3/4", "format System as FAT16 or ext4")
        )
        return None
    fat = info.fs == "vfat"
    try:
        fs = open_filesystem(window(read, part.start, part.size), info.fs)
    except ParseError as exc:
        problems.append(Problem(f"System cannot be read: {exc}", "run fsck on it"))
        return None
    bios = table.sector_size == 512
    if not bios:
        problems.append(
            Problem(
                f"the disk has {table.sector_size}-byte sectors, which syslinux's BIOS loader cannot read",
                severity="warning",
            )
        )
    names = ["/KERNEL", "/SYSTEM", *(["/ldlinux.sys"] if bios else []),
             *([EFI_LOADER] if fat else ["/ldlinux.c32"])]  # fmt: skip
    required = len(names) if fat else len(names) - 1  # ldlinux.c32: extlinux may do without it
    files = [_file(fs, p) for p in names]
    conf: ExtlinuxConf | None = None
    conf_path: str | None = None
    for candidate in conf_names(info.fs):
        found = _file(fs, candidate)
        if found.kind == "file":
            conf_path = candidate
            try:
                conf = parse_extlinux(fs.read_file(candidate, limit=1 << 20).decode("utf-8", "replace"))
            except ParseError as exc:
                problems.append(Problem(f"{candidate} cannot be read: {exc}"))
            break
    installer = "syslinux --install" if fat else "extlinux --install on System"
    for f in files[:required]:
        if f.kind != "file":
            if f.path == EFI_LOADER:
                fix = (
                    f"copy syslinux.efi to System{EFI_LOADER} for UEFI (iscsiboot install --layout libreelec)"
                )
            else:
                fix = f"run {installer}" if "ldlinux" in f.path else f"copy {f.path[1:]} to System"
            problems.append(Problem(f"System has no {f.path[1:]}", fix))
    if conf_path is None:
        name = "syslinux.cfg" if fat else "extlinux.conf"
        problems.append(Problem(f"System has no {name}", f"iscsiboot generate extlinux > {name}"))
    elif conf is not None:
        entry = conf.entry()
        if entry is None or entry.kernel is None:
            problems.append(Problem(f"{conf_path} names no kernel", "add LABEL, KERNEL and APPEND lines"))
        else:
            base = conf_path.rsplit("/", 1)[0] or "/"
            for what, path in (("KERNEL", entry.kernel), ("INITRD", entry.initrd)):
                if path is None:
                    continue
                for item in path.split(","):
                    full = item if item.startswith("/") else f"{base.rstrip('/')}/{item}"
                    if not fs.exists(full):
                        problems.append(
                            Problem(f"{conf_path} {what} {item} is not on System", "copy it there")
                        )
                    else:
                        files.append(_file(fs, full))
    return SystemView(part.number, tuple(files), conf, conf_path)
