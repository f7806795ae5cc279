"""``iscsiboot install``: write System and Storage onto a LUN or a disk image."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from iscsiboot.cliargs import add_command, add_digest, add_json, digests_from_args, sigterm_interrupts
from iscsiboot.errors import EXIT_OK, UsageError

if TYPE_CHECKING:
    from iscsiboot.disk.installreport import InstallReport


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
    where.add_argument(
        "--portal", metavar="HOST[:PORT]",
        help="write straight onto a LUN of this portal with iscsiboot's own initiator (no root, no "
        "open-iscsi); with --target, --lun and the CHAP options, which the boot settings default to",
    )  # fmt: skip
    parser.add_argument("--target", metavar="IQN", help="with --portal: the target whose LUN is written")
    add_digest(parser)
    parser.add_argument("--kernel", metavar="KERNEL", type=Path, help="the kernel, copied as /KERNEL")
    parser.add_argument(
        "--system", dest="system_file", metavar="SYSTEM", type=Path,
        help="the SYSTEM squashfs, copied as /SYSTEM",
    )  # fmt: skip
    parser.add_argument(
        "--release", metavar="FILE", type=Path,
        help="a LibreELEC release as downloaded, .tar or .img.gz (KERNEL and SYSTEM from it, "
        "their .md5 files checked); instead of --kernel and --system",
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
    from iscsiboot.disk.undo import Undo  # noqa: PLC0415
    from iscsiboot.output import print_json, warn  # noqa: PLC0415

    with sigterm_interrupts(), Undo() as undo:
        args.workdir = undo.folder("iscsiboot-release-")  # a release's files; gone on every way out
        with undo.interruptible():
            report = _install_lun(args) if args.portal is not None else _install(args)
    for message in report.warnings:
        warn(message)
    if args.json:
        print_json(report.to_dict())
    else:
        print("\n".join(report.lines()))
    return EXIT_OK


def _inputs(args: argparse.Namespace) -> tuple[Path, Path]:
    """KERNEL and SYSTEM: given as files, or taken from ``--release`` (into ``args.workdir``)."""
    from iscsiboot.disk.release import open_release  # noqa: PLC0415

    if args.release is not None:
        if args.kernel is not None or args.system_file is not None:
            raise UsageError(
                "--release given together with --kernel or --system", fix="give one or the other"
            )
        found = open_release(args.release, Path(args.workdir))
        return found.kernel, found.system
    if args.kernel is None or args.system_file is None:
        raise UsageError("install needs --kernel and --system, or --release", fix="give --release FILE")
    return args.kernel, args.system_file


def _system_size(args: argparse.Namespace) -> int:
    from iscsiboot.disk.install import DEFAULT_SIZES  # noqa: PLC0415
    from iscsiboot.disk.layout import LayoutKind, parse_size  # noqa: PLC0415

    if args.system_size is not None:
        return parse_size(args.system_size, what="--system-size")
    return DEFAULT_SIZES[LayoutKind(args.layout)]


def _install(args: argparse.Namespace) -> InstallReport:
    from iscsiboot.cmdline.options import model_from_args  # noqa: PLC0415
    from iscsiboot.disk.install import install  # noqa: PLC0415
    from iscsiboot.disk.layout import LayoutKind, parse_size  # noqa: PLC0415

    if args.target is not None or args.digest != "none":
        raise UsageError("--target and --digest go with --portal", fix="give --portal HOST[:PORT]")
    if args.model_system is None and getattr(args, "model_from_json", None) is None:
        args.model_system = f"LABEL={args.label_system}"
    config = model_from_args(args)
    layout = LayoutKind(args.layout)
    kernel, system = _inputs(args)
    return install(
        kernel=kernel,
        system=system,
        image=args.image,
        device=args.device,
        size=parse_size(args.size, what="--size") if args.size is not None else None,
        system_size=_system_size(args),
        config=config,
        append=args.append,
        initrd=args.initrd,
        serial=args.serial,
        label_system=args.label_system,
        label_storage=args.label_storage,
        wipe=args.wipe,
        layout=layout,
    )


LUN_INITIATOR = "iqn.2026-11.org.iscsiboot:install"  # the initiator name without --initiator


def _install_lun(args: argparse.Namespace) -> InstallReport:
    """``--portal``: build the layout for the LUN's size and send it with the project's initiator."""
    import copy  # noqa: PLC0415

    from iscsiboot.cmdline.options import model_from_args  # noqa: PLC0415
    from iscsiboot.disk import lunplan  # noqa: PLC0415
    from iscsiboot.disk.install import install  # noqa: PLC0415
    from iscsiboot.disk.layout import LayoutKind  # noqa: PLC0415
    from iscsiboot.disk.lun import LUN_STORAGE_OPTIONS, LunAccess, install_lun  # noqa: PLC0415
    from iscsiboot.doctor.cli import parse_portal  # noqa: PLC0415
    from iscsiboot.model import DEFAULT_PORT  # noqa: PLC0415

    if args.target is None:
        raise UsageError("--portal needs --target IQN", fix="give the target whose LUN is written")
    if args.size is not None:
        raise UsageError("--size applies to --image only", fix="a LUN keeps its own size")
    if getattr(args, "model_from_json", None) is not None:
        raise UsageError("--from-json cannot be used with --portal", fix="give the boot settings as options")
    host, port = parse_portal(args.portal)
    # the connection: --target, --lun and the CHAP options, as the boot settings would name them
    conn = copy.copy(args)
    conn.model_auto = None
    conn.model_target_name, conn.model_target_ip = args.target, host
    conn.model_target_port = port
    conn.model_system = None
    link = model_from_args(conn).targets[0]
    initiator = args.model_initiator or LUN_INITIATOR
    if args.model_auto:  # the iBFT names the target on the box: the login options are the connection's only
        for dest in ("model_lun", "model_username", "model_password", "model_password_file",
                     "model_reverse_username", "model_reverse_password", "model_reverse_password_file",
                     "model_initiator"):  # fmt: skip
            setattr(args, dest, None)
    elif args.model_target_name is None and args.model_target_ip is None:
        args.model_target_name, args.model_target_ip = args.target, host
        if port != DEFAULT_PORT and args.model_target_port is None:
            args.model_target_port = port
    if args.model_system is None:
        args.model_system = f"LABEL={args.label_system}"
    config = model_from_args(args)
    layout = LayoutKind(args.layout)
    system_size = _system_size(args)
    access = LunAccess(
        lunplan.LunName(host, port, args.target, link.lun),
        initiator,
        link.chap,
        link.reverse_chap,
        digests=digests_from_args(args),
    )
    kernel, system = _inputs(args)

    def build(image: Path, size: int) -> InstallReport:  # in the LUN's sectors (install_lun)
        return install(
            kernel=kernel, system=system, image=image, size=size, system_size=system_size,
            config=config, append=args.append, initrd=args.initrd, serial=args.serial,
            label_system=args.label_system, label_storage=args.label_storage, layout=layout,
            storage_options=LUN_STORAGE_OPTIONS,
        )  # fmt: skip

    def room(name: lunplan.LunName, size: int, block_size: int) -> None:
        lunplan.check_room(name, capacity=size, block_size=block_size, kind=layout, system_size=system_size)

    return install_lun(access, build, wipe=args.wipe, check_room=room, workdir=args.workdir)
