"""A boot stick without compiling: Debian's prebuilt iPXE and the embedded script on a FAT image.

iPXE's own way to embed a script (``make bin/ipxe.usb EMBED=boot.ipxe``)
needs its sources and a compiler.  Debian's ``ipxe`` package ships
``ipxe.lkrn``, an iPXE that boots like a Linux kernel and runs the script
it is given as its initrd.  The stick is one FAT file system over the whole
image (no partition table, as a BIOS boots a USB stick or SD card),
``syslinux`` in its boot sector, and a ``syslinux.cfg`` that starts
``ipxe.lkrn`` with ``boot.ipxe`` as its initrd.  The script is
``iscsiboot generate ipxe --embedded``: its own DHCP retry loop, the
credentials, the sanboot retry.

UEFI: Debian's EFI builds of iPXE (``ipxe.efi``, ``snponly.efi``, version
1.0.0+git-20190125) read no ``autoexec.ipxe`` and no script from their load
options, so a UEFI stick cannot hand them a script; only the BIOS stick is
written.

The file holds the CHAP secrets in clear: it is created mode 0600 and
renamed into place only when complete.
"""

from __future__ import annotations

import enum
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import EnvironmentProblem, RepresentError
from iscsiboot.proc import run, which

IPXE_LKRN = Path("/usr/lib/ipxe/ipxe.lkrn")  # Debian's ipxe package
STICK_MB = 16
LABEL = "IPXESTICK"
LKRN_NAME = "ipxe.lkrn"
SCRIPT_NAME = "boot.ipxe"
CONFIG_NAME = "syslinux.cfg"
#: Why a UEFI stick is not written (the error's text and the README's).
NO_UEFI = (
    "Debian's EFI iPXE (ipxe.efi, snponly.efi, 1.0.0+git-20190125) reads no autoexec.ipxe and no "
    "script from its load options: a UEFI stick cannot give it the script"
)


class StickFirmware(enum.Enum):
    """What the stick boots on (values are the CLI spellings)."""

    BIOS = "bios"
    UEFI = "uefi"
    BOTH = "both"


@dataclass(frozen=True)
class StickFiles:
    """What goes on the stick, by name (pure)."""

    script: str  # the embedded iPXE script, secrets in clear
    config: str  # syslinux.cfg


def syslinux_config() -> str:
    """syslinux starts Debian's ipxe.lkrn with the script as its initrd, at once."""
    return "\n".join(
        [
            "DEFAULT ipxe",
            "PROMPT 0",
            "TIMEOUT 0",
            "LABEL ipxe",
            f"  KERNEL /{LKRN_NAME}",
            f"  INITRD /{SCRIPT_NAME}",
            "",
        ]
    )


def stick_files(script: str, firmware: StickFirmware) -> StickFiles:
    """The stick's files for ``firmware``; RepresentError for a firmware no prebuilt iPXE serves."""
    if firmware is not StickFirmware.BIOS:
        raise RepresentError(NO_UEFI, fix="use --firmware bios (a UEFI machine boots iPXE over the network)")
    if not script.startswith("#!ipxe"):
        raise RepresentError("the stick's script is not an iPXE script", fix="generate it with --embedded")
    return StickFiles(script=script, config=syslinux_config())


def check_host() -> None:
    """EnvironmentProblem unless the stick can be written here."""
    if not IPXE_LKRN.is_file():
        raise EnvironmentProblem(f"{IPXE_LKRN} is missing", fix="install ipxe (Debian's prebuilt iPXE)")
    for program, package in (("mkfs.vfat", "dosfstools"), ("syslinux", "syslinux"), ("mcopy", "mtools")):
        which(program, hint=f"install {package}")


def write_stick(path: Path, files: StickFiles, *, size_mb: int = STICK_MB) -> int:
    """Write the stick image to ``path`` (mode 0600, atomically); return its size in bytes."""
    check_host()
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix=".stick-", dir=path.parent) as scratch:
        image = Path(scratch) / "stick.img"
        fd = os.open(image, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        try:
            os.ftruncate(fd, size_mb * 1024 * 1024)
        finally:
            os.close(fd)
        for name, text in ((SCRIPT_NAME, files.script), (CONFIG_NAME, files.config)):
            fd = os.open(Path(scratch) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        run(
            ["mkfs.vfat", "-F", "16", "-n", LABEL, str(image)],
            what="FAT file system on the stick",
            timeout=60,
        )
        run(["syslinux", "--install", str(image)], what="syslinux on the stick", timeout=60)
        env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
        for source, name in (
            (IPXE_LKRN, LKRN_NAME),
            (Path(scratch) / SCRIPT_NAME, SCRIPT_NAME),
            (Path(scratch) / CONFIG_NAME, CONFIG_NAME),
        ):
            run(
                ["mcopy", "-i", str(image), str(source), f"::/{name}"],
                what=f"copy {name}",
                env=env,
                timeout=60,
            )
        os.chmod(image, 0o600)
        os.replace(image, path)
    return path.stat().st_size
