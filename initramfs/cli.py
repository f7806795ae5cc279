"""``iscsiboot initramfs build``: the complete initramfs or the overlay for a distribution image."""

from __future__ import annotations

import argparse
from pathlib import Path

from iscsiboot.cliargs import add_command, add_json, add_output, help_handler
from iscsiboot.errors import UsageError
from iscsiboot.output import check_output, info, print_json, warn


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    top = add_command(
        sub,
        "initramfs",
        parent,
        "build the initramfs or overlay that carries the agent",
        "Build the initramfs (or an overlay to append to a distribution initramfs).",
    )
    actions = top.add_subparsers(dest="action", metavar="ACTION")
    b = add_command(
        actions,
        "build",
        parent,
        "build a reproducible cpio (newc) initramfs",
        (
            "Build a cpio (newc) initramfs with Python, the agent, e2fsck, busybox and the "
            "kernel modules of the iSCSI boot path.  With --overlay: an archive to append to an existing "
            "initramfs (cat base.img overlay.img > new.img)."
        ),
    )
    b.add_argument("--kernel-version", metavar="VER", help="kernel release, e.g. 6.1.0-56-amd64")
    b.add_argument(
        "--modules-root", metavar="DIR", type=Path, help="folder holding lib/modules/VER (or lib/modules)"
    )
    b.add_argument(
        "--kernel-root",
        metavar="DIR",
        type=Path,
        help="an unpacked kernel package (dpkg -x): version and modules are taken from it",
    )
    add_output(b, "where to write the archive", type=Path)
    b.add_argument("--overlay", action="store_true", help="build the overlay for a distribution initramfs")
    b.add_argument("--replace-init", action="store_true", help="with --overlay: also provide /init")
    b.add_argument(
        "--compress",
        choices=("zstd", "xz", "gzip", "none"),
        default="zstd",
        help="zstd (the default, as Debian's initramfs-tools: unpacks fastest at boot), "
        "xz (smallest), gzip or none",
    )
    b.add_argument(
        "--module",
        action="append",
        default=[],
        metavar="NAME",
        help="an extra kernel module (repeatable), e.g. a NIC driver: the full image carries "
        "virtio_net and e1000, an overlay no NIC driver (the initramfs it is appended to, or the "
        "kernel, brings them)",
    )
    b.add_argument(
        "--backend",
        choices=("native", "iscsistart"),
        default="native",
        help="the login backend the image is for: native (the default) needs no iscsistart; "
        "iscsistart adds open-iscsi's tool and its libraries, and the kernel option "
        "iscsiboot.backend=iscsistart makes the agent use it",
    )
    b.add_argument(
        "--transport",
        choices=("auto", "kernel", "nbd"),
        default="auto",
        help="how the LUN reaches the kernel: auto (the default) carries kernel iSCSI's modules and the "
        "NBD client's, and the agent picks at boot (kernel iSCSI where the kernel or the image has it, "
        "else NBD), so one image boots both kinds of kernel; kernel: only kernel iSCSI; nbd: no kernel "
        "iSCSI module at all, the agent's initiator serves the LUN as /dev/nbdN (for kernels without "
        "iSCSI, such as LibreELEC's)",
    )
    b.add_argument(
        "--lean",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="leave out TLS (ssl, _hashlib, libssl: the agent never uses it, hashlib's MD5/SHA are "
        "built into Debian's interpreter) and put small stand-ins for modules the libraries import "
        "but never call at boot (unittest, pdb, pickle, multiprocessing); on by default",
    )
    b.add_argument(
        "--optimize",
        type=int,
        choices=(0, 2),
        default=2,
        help="2 (the default): compile without docstrings and asserts (about 1 MiB less before "
        "compression), and the standard library and the libraries without line numbers (their "
        "tracebacks say line -1; the agent's own code keeps its lines); 0 keeps them all",
    )
    b.add_argument(
        "--fsck",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="carry e2fsck and its libraries (the agent checks Storage with it before mounting it "
        "read-write); by default the full image does and --overlay does not: the distribution "
        "initramfs it is appended to brings its own",
    )
    b.add_argument(
        "--busybox",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="carry a static busybox as the shell of the image's scripts; by default the full "
        "image does and --overlay does not: the initramfs it is appended to brings a /bin/sh "
        "(and its modprobe and udhcpc where it has them)",
    )
    b.add_argument("--verbose", action="store_true", help="show the largest contributors")
    add_json(b, "print the result as JSON")
    b.set_defaults(func=_build)
    top.set_defaults(func=help_handler(top))


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def wants_iscsistart(args: argparse.Namespace) -> bool:
    """Whether the image gets iscsistart (only for ``--backend iscsistart``)."""
    return bool(args.backend == "iscsistart")


def _build(args: argparse.Namespace) -> int:
    from iscsiboot.initramfs.build import build  # noqa: PLC0415 (heavy; only for this command)
    from iscsiboot.initramfs.kernel import tree_from_dir  # noqa: PLC0415

    if args.replace_init and not args.overlay:
        raise UsageError("--replace-init only applies to --overlay", where="--replace-init")
    kernel = None
    if args.kernel_root is not None:
        if not args.kernel_root.is_dir():
            raise UsageError(f"{args.kernel_root} is not a folder", where="--kernel-root")
        kernel = tree_from_dir(args.kernel_root)
        if args.kernel_version and args.kernel_version != kernel.version:
            raise UsageError(
                f"{args.kernel_root} holds kernel {kernel.version}, not {args.kernel_version}",
                where="--kernel-version",
            )
    elif not (args.kernel_version and args.modules_root):
        raise UsageError(
            "the kernel is not named",
            where="--kernel-version/--modules-root",
            fix="give --kernel-root DIR, or --kernel-version VER and --modules-root DIR",
        )
    elif not args.modules_root.is_dir():
        raise UsageError(f"{args.modules_root} is not a folder", where="--modules-root")
    output = args.output
    if output is None:
        suffix = {"xz": ".cpio.xz", "zstd": ".cpio.zst", "gzip": ".cpio.gz", "none": ".cpio"}[args.compress]
        output = Path(("iscsiboot-overlay" if args.overlay else "iscsiboot-initramfs") + suffix)
    if output.parent and not output.parent.is_dir():
        raise UsageError(f"folder {output.parent} does not exist", where="--output")
    check_output(output)
    result = build(
        kernel_version=args.kernel_version,
        modules_root=args.modules_root,
        kernel=kernel,
        output=output,
        overlay=args.overlay,
        compression=args.compress,
        extra_modules=args.module,
        iscsistart=wants_iscsistart(args),
        fsck=args.fsck,
        busybox=args.busybox,
        replace_init=args.replace_init,
        transport=args.transport,
        lean=args.lean,
        optimize=args.optimize,
    )
    if args.json:
        print_json(result.to_dict())
        return 0
    for text in result.warnings:
        warn(text)
    print(
        f"{output}: {_mib(result.size)} ({result.compression}), {_mib(result.uncompressed)} cpio, "
        f"{result.files} entries, {len(result.modules)} kernel modules for {result.kernel_version}, "
        f"{result.seconds:.1f} s"
    )
    if args.overlay:
        print(
            f"append it to a distribution initramfs: cat BASE {output} > NEW"
            " (hook mode: see /usr/lib/iscsiboot/README in the image)"
        )
    if args.verbose:
        print("contributors (uncompressed):")
        for group, size in result.groups.items():
            print(f"  {size / 2**20:8.2f} MiB  {group}")
        print("largest files:")
        for path, size in result.largest:
            print(f"  {size / 2**20:8.2f} MiB  /{path}")
        info(f"sha256 {result.sha256}")
    return 0
