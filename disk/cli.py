"""``iscsiboot install``: write System and Storage onto a LUN or a disk image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from iscsiboot.cliargs import add_command, add_json, sigterm_interrupts
from iscsiboot.errors import EXIT_OK

if TYPE_CHECKING:
    from iscsiboot.disk.install import InstallReport


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    from iscsiboot.cmdline.options import add_model_options  # noqa: PLC0415 (lazy: only for install)
    from iscsiboot.disk.install import DEFAULT_IMAGE_SIZE, DEFAULT_SIZES  # noqa: PLC0415
    from iscsiboot.disk.layout import LayoutKind, format_size  # noqa: PLC0415

    parser = add_command(
        sub,
        "install",
        parent,
        "partition and fill a LUN or image with System and Storage",
        (
            "--layout libreelec (the default) writes what LibreELEC's installer writes, one disk for BIOS "
            "and UEFI: GPT with syslinux's gptmbr.bin, a FAT16 System (EFI System partition, "
            "legacy-BIOS-bootable) holding KERNEL, SYSTEM, syslinux.cfg, ldlinux.sys and "
            "EFI/BOOT/bootx64.efi, filled with mtools (no mount), and an ext4 Storage over the rest. "
            "--layout seed writes an MBR with syslinux boot code, a bootable ext4 System holding KERNEL, "
            "SYSTEM and extlinux.conf (extlinux installed), and an ext4 Storage. "
            "Writes a device, or an image file that holds data (whatever its format), only with --wipe; "
            "never writes over one of its own input files."
        ),
        conflict_handler="resolve",
    )
    add_model_options(parser)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--device", metavar="DEV", type=Path, help="a block device, e.g. a logged-in LUN /dev/sdX"
    )
    where.add_argument(
        "--image", metavar="FILE", type=Path, help="a disk image file (created sparse if missing)"
    )
    parser.add_argument(
        "--kernel", metavar="KERNEL", type=Path, required=True, help="the kernel, copied as /KERNEL"
    )
    parser.add_argument(
        "--system", dest="system_file", metavar="SYSTEM", type=Path, required=True,
        help="the SYSTEM squashfs, copied as /SYSTEM",
    )  # fmt: skip
    parser.add_argument(
        "--system-locator", dest="model_system", metavar="LOCATOR",
        help="the system= locator on the command line (default LABEL=<--label-system>)",
    )  # fmt: skip
    parser.add_argument("--initrd", metavar="FILE", type=Path, help="an initramfs, copied as /initrd")
    parser.add_argument(
        "--size", metavar="SIZE", help=f"size of a new image (default {format_size(DEFAULT_IMAGE_SIZE)})"
    )
    parser.add_argument(
        "--layout", choices=[k.value for k in LayoutKind], default=LayoutKind.LIBREELEC.value,
        help="libreelec: GPT, FAT16 System, boots BIOS and UEFI (the default); seed: MBR, ext4 System, BIOS",
    )  # fmt: skip
    sizes = ", ".join(f"{format_size(size)} for {kind.value}" for kind, size in DEFAULT_SIZES.items())
    parser.add_argument(
        "--system-size", metavar="SIZE", help=f"size of the System partition (default {sizes})"
    )
    parser.add_argument("--serial", action="store_true", help="boot console on ttyS0 (115200 baud)")
    parser.add_argument("--append", metavar="ARGS", help="extra kernel arguments (default: quiet)")
    parser.add_argument(
        "--label-system", metavar="LABEL", default="System", help="label of System (default %(default)s)"
    )
    parser.add_argument(
        "--label-storage", metavar="LABEL", default="Storage", help="label of Storage (default %(default)s)"
    )
    parser.add_argument(
        "--wipe",
        action="store_true",
        help="overwrite a device, or an image that holds data (all of it is lost)",
    )
    add_json(parser, "report as JSON")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from iscsiboot.output import print_json, warn  # noqa: PLC0415

    with sigterm_interrupts():
        report = _install(args)
    for message in report.warnings:
        warn(message)
    if args.json:
        print_json(report.to_dict())
    else:
        print("\n".join(report.lines()))
    return EXIT_OK


def _install(args: argparse.Namespace) -> InstallReport:
    from iscsiboot.cmdline.options import model_from_args  # noqa: PLC0415
    from iscsiboot.disk.install import DEFAULT_SIZES, install  # noqa: PLC0415
    from iscsiboot.disk.layout import LayoutKind, parse_size  # noqa: PLC0415

    if args.model_system is None and getattr(args, "model_from_json", None) is None:
        args.model_system = f"LABEL={args.label_system}"
    config = model_from_args(args)
    layout = LayoutKind(args.layout)
    return install(
        kernel=args.kernel,
        system=args.system_file,
        image=args.image,
        device=args.device,
        size=parse_size(args.size, what="--size") if args.size is not None else None,
        system_size=parse_size(args.system_size, what="--system-size")
        if args.system_size is not None
        else DEFAULT_SIZES[layout],
        config=config,
        append=args.append,
        initrd=args.initrd,
        serial=args.serial,
        label_system=args.label_system,
        label_storage=args.label_storage,
        wipe=args.wipe,
        layout=layout,
    )
