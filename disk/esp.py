"""The ``libreelec`` layout carried out without mounting anything.

LibreELEC's ``scripts/mkimage`` fills its FAT System with mtools, and so does
this module: ``mkfs.vfat --offset`` formats the partition inside the disk or
image, ``mcopy -i TARGET@@OFFSET`` copies the files in, ``syslinux --install
--offset`` writes the BIOS loader (ldlinux.sys), and syslinux's EFI loader
goes to ``EFI/BOOT/bootx64.efi`` (the path UEFI firmware starts from a
removable disk, and the one iPXE's ``sanboot`` starts) beside its
``ldlinux.e64``.  Storage is formatted in place too (``mkfs.ext4 -E
offset=``): no loop device and no kernel FAT driver are needed.

One ``syslinux.cfg`` at the root serves both loaders: syslinux.efi looks in
its own folder first, then in ``/boot/syslinux``, ``/syslinux`` and ``/``.

On a disk of 4096-byte sectors the FAT counts sectors of 4096 bytes (Linux
refuses to mount a FAT whose sectors are smaller than the device's, and
syslinux.efi reads the FAT in the disk's own blocks), with clusters small
enough for FAT16's cluster count, and Storage gets blocks of 4096 bytes (ext4
cannot have blocks smaller than the device's sectors).  syslinux's BIOS
loader reads 512-byte sectors only (``syslinux --install`` refuses such a
FAT), so that disk has no ldlinux.sys; UEFI firmware reads its GPT and FAT
and starts ``EFI/BOOT/bootx64.efi``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.disk.layout import Layout
from iscsiboot.errors import EnvironmentProblem, IscsibootError
from iscsiboot.proc import run, which

GPTMBR_BIN = Path("/usr/lib/syslinux/mbr/gptmbr.bin")
SYSLINUX_EFI = Path("/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi")
LDLINUX_E64 = Path("/usr/lib/syslinux/modules/efi64/ldlinux.e64")
EFI_DIR = "EFI/BOOT"
EFI_LOADER = f"/{EFI_DIR}/bootx64.efi"
EFI_LDLINUX = f"/{EFI_DIR}/ldlinux.e64"
CONF_NAME = "syslinux.cfg"
# mtools' own check of the boot sector's geometry means nothing for a partition inside a disk
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "MTOOLS_NO_VFAT": "0"}
# what each program is in, for the hint when it is missing (the GPT is written by iscsiboot.disk.gpt)
PROGRAMS = (("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"), ("mmd", "mtools"), ("syslinux", "syslinux"),
            ("mkfs.ext4", "e2fsprogs"))  # fmt: skip
BIOS_SECTOR = 512  # the only sector size syslinux's BIOS loader (and gptmbr.bin) reads
FAT16_MAX_CLUSTERS = 65524
EXT4_BLOCK = 4096
LOADERS = ((GPTMBR_BIN, "syslinux-common"), (SYSLINUX_EFI, "syslinux-efi"), (LDLINUX_E64, "syslinux-common"))
FAT_SECRET_WARNING = (
    "syslinux.cfg holds CHAP secrets, and FAT has no permissions: anyone who mounts System reads "
    "them; prefer the iBFT (--auto)"
)


@dataclass(frozen=True)
class FatFiles:
    """What goes into the FAT System."""

    kernel: Path
    system: Path
    initrd: Path | None
    conf_text: str


def check_host() -> None:
    """Every program and loader the ``libreelec`` layout needs, or the package to install."""
    for program, package in PROGRAMS:
        which(program, hint=f"install {package}")
    for path, package in LOADERS:
        if not path.is_file():
            raise EnvironmentProblem(f"{path} is missing", fix=f"install {package}")


def _env() -> dict[str, str]:
    return {**os.environ, **MTOOLS_ENV}


def bios_boots(sector_size: int) -> bool:
    """Whether syslinux's BIOS loader can boot a disk of ``sector_size``-byte sectors."""
    return sector_size == BIOS_SECTOR


def sectors_per_cluster(size: int, sector_size: int) -> int:
    """Sectors per cluster for a FAT16 of ``size`` bytes in sectors larger than 512 bytes.

    The smallest power of two whose clusters leave at most 65524 of them: a
    16 MiB System gets clusters of one 4096-byte sector (4087 clusters, above
    FAT12's 4084), a 1 GiB one clusters of 32 KiB.  (At 512 bytes mkfs.fat's
    own choice stays.)
    """
    cluster = sector_size
    while size // cluster > FAT16_MAX_CLUSTERS:
        cluster *= 2
    return cluster // sector_size


def fat_options(layout: Layout) -> list[str]:
    """mkfs.vfat's sector options and ``--offset`` (which counts its own sectors) for System."""
    size, system = layout.sector_size, layout.system
    if size == BIOS_SECTOR:
        return ["--offset", str(system.start // size)]
    spc = sectors_per_cluster(system.size, size)
    return ["-S", str(size), "-s", str(spc), "--offset", str(system.start // size)]


def fill(
    target: Path, layout: Layout, files: FatFiles, *, scratch: Path, storage_options: tuple[str, ...] = ()
) -> list[str]:
    """Format System (FAT16) and Storage (ext4) of ``layout`` on ``target``; the paths written on System.

    ``scratch``: an empty folder of the caller's for the configuration file on its way in.
    ``storage_options``: more extended options (``-E``) for Storage's ``mkfs.ext4``.
    """
    system, storage = layout.system, layout.storage
    run(
        [which("mkfs.vfat"), "-F", "16", "-n", system.label, *fat_options(layout),
         str(target), str(system.size // 1024)],
        what="format the System partition (FAT16)",
    )  # fmt: skip
    image = f"{target}@@{system.start}"
    written: list[str] = []

    def copy(source: Path, dest: str) -> None:
        run(
            [which("mcopy"), "-o", "-i", image, str(source), f"::{dest}"],
            what=f"copy {source} to System{dest}",
            env=_env(),
            fix="give a larger --system-size",
        )
        written.append(dest)

    run([which("mmd"), "-i", image, "::/EFI", f"::/{EFI_DIR}"], what="make System/EFI/BOOT", env=_env())
    copy(files.kernel, "/KERNEL")
    copy(files.system, "/SYSTEM")
    if files.initrd is not None:
        copy(files.initrd, "/initrd")
    conf = scratch / CONF_NAME
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(files.conf_text)
    copy(conf, f"/{CONF_NAME}")
    copy(SYSLINUX_EFI, EFI_LOADER)
    copy(LDLINUX_E64, EFI_LDLINUX)
    if bios_boots(layout.sector_size):
        run(
            [which("syslinux"), "--install", "--offset", str(system.start), str(target)],
            what="install syslinux (BIOS) into System",
            env=_env(),
        )
        written.append("/ldlinux.sys")
    block = [] if layout.sector_size == BIOS_SECTOR else ["-b", str(max(EXT4_BLOCK, layout.sector_size))]
    run(
        [which("mkfs.ext4"), "-F", "-q", *block, "-L", storage.label,
         "-E", ",".join((f"offset={storage.start}", *storage_options)), str(target),
         f"{storage.size // 1024}k"],
        what="format the Storage partition",
    )  # fmt: skip
    return written


def boot_code(path: Path = GPTMBR_BIN) -> bytes:
    """The 440 bytes of boot code the protective MBR gets."""
    code = path.read_bytes()[:440]
    if len(code) < 220:
        raise IscsibootError(f"{path} is too short to be syslinux's gptmbr.bin")
    return code
