"""``iscsiboot qemu boot`` (one scenario from options) and ``iscsiboot qemu demo``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iscsiboot.cliargs import add_command, add_json, add_timeout, sigterm_interrupts
from iscsiboot.errors import EXIT_FAILURE, EXIT_OK, UsageError
from iscsiboot.output import print_json
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import describe, run_scenario, stderr_progress
from iscsiboot.qemu.outcome import timeline_text
from iscsiboot.qemu.scenario import (
    DEFAULT_INITIATOR,
    DEFAULT_TARGET,
    BootVia,
    Firmware,
    Mode,
    ScenarioOptions,
)
from iscsiboot.qemu.targets import TargetKind
from iscsiboot.secret import Secret

DEMO_USER = "htpc"
DEMO_PASSWORD = "htpc-secret-12"
DEMO_REVERSE_USER = "nas"
DEMO_REVERSE_PASSWORD = "nas-secret-345"


def _target_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        choices=[kind.value for kind in TargetKind],
        default=TargetKind.TGT.value,
        help="the target that serves the disk: tgt (the default: tgtd on 127.0.0.1), lio (the Linux "
        "kernel's target, set up through configfs in a small target VM) or istgt (on 127.0.0.1)",
    )


def _machine_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("machine and output")
    g.add_argument("--kvm", action="store_true", help="use KVM instead of TCG (opt-in; TCG is the default)")
    g.add_argument("--memory", type=int, default=1024, metavar="MB", help="guest memory (default 1024)")
    add_timeout(g, 120.0, "kill QEMU after this")
    g.add_argument(
        "--cache", type=Path, metavar="DIR", help="kernel/initramfs cache (default ~/.cache/iscsiboot)"
    )
    g.add_argument(
        "--kernel", type=Path, metavar="FILE", help="boot this kernel instead of the cached Debian one"
    )
    g.add_argument("--initrd", type=Path, metavar="FILE", help="boot this initramfs instead of building one")
    g.add_argument(
        "--overlay",
        action="store_true",
        help="boot the overlay initramfs appended to a minimal busybox initramfs",
    )
    g.add_argument(
        "--backend",
        choices=("native", "iscsistart"),
        default="native",
        help="the agent's login backend: native (the default: NETLINK_ISCSI, image without "
        "iscsistart) or iscsistart (image with open-iscsi's tool, iscsiboot.backend=iscsistart)",
    )
    g.add_argument(
        "--transport",
        choices=("auto", "kernel", "nbd"),
        default="auto",
        help="the image's transport: auto (the default: kernel iSCSI and NBD, the agent picks kernel "
        "iSCSI when it can), kernel, or nbd (no kernel iSCSI module at all: the agent serves the LUN "
        "as /dev/nbdN, as on a stock LibreELEC kernel)",
    )
    g.add_argument(
        "--firmware",
        choices=[f.value for f in Firmware],
        default=Firmware.BIOS.value,
        help="bios (the default: SeaBIOS, iPXE's legacy ROM, an MBR disk with ext4 System) or uefi "
        "(OVMF, iPXE's EFI driver, LibreELEC's own layout: GPT, FAT System, EFI/BOOT/bootx64.efi)",
    )
    g.add_argument("--log-dir", type=Path, metavar="DIR", help="where a failed run's console log is kept")
    g.add_argument("--keep-log", action="store_true", help="keep the console log also when the boot works")
    g.add_argument("--console", action="store_true", help="stream the guest console (secrets masked)")
    add_json(g, "print the agent's ISCSIBOOT-RESULT object")
    g.add_argument("--show-plan", action="store_true", help="print the plan (QEMU argv, APPEND) first")


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], parent: argparse.ArgumentParser
) -> None:
    qemu = add_command(
        sub,
        "qemu",
        parent,
        "boot scenarios in QEMU through iPXE sanboot and tgtd",
        "Boot scenarios in QEMU (TCG) from a tgtd on loopback.",
    )
    qsub = qemu.add_subparsers(dest="qemu_command", metavar="ACTION", required=True)

    boot = add_command(
        qsub,
        "boot",
        parent,
        "run one boot scenario",
        "Build a disk, serve it with tgtd on loopback, boot it in QEMU and report the "
        "agent's result.  Exit 0 only when the boot reached the SYSTEM root.",
    )
    boot.add_argument(
        "--mode",
        choices=["ibft", "cmdline", "dhcp"],
        default="ibft",
        help="ibft: iPXE sanboot and the iBFT; cmdline: direct kernel boot with explicit boot=ISCSI= "
        "options; "
        "dhcp: direct kernel boot with netroot=dhcp, the target from dnsmasq's root path (option 17) "
        "in a network namespace of its own",
    )
    boot.add_argument(
        "--boot-via",
        choices=[via.value for via in BootVia],
        default=BootVia.ROM.value,
        help="how the guest gets to iPXE (--mode ibft): rom (the default: the NIC's iPXE ROM, QEMU's own "
        "DHCP and TFTP) or dnsmasq (the PXE chain in a network namespace of its own: the firmware's PXE "
        "client gets Debian's undionly.kpxe or ipxe.efi from dnsmasq's TFTP, then the script; under UEFI "
        "the NIC has no ROM) or usb (BIOS: the stick of generate usb as a USB disk, a NIC without a "
        "boot ROM)",
    )
    _target_option(boot)
    boot.add_argument("--target-name", default=None, metavar="IQN")
    boot.add_argument("--initiator", default=None, metavar="IQN")
    boot.add_argument("--username", help="one-way CHAP user (the target checks it)")
    boot.add_argument("--password", help="one-way CHAP secret (12-16 characters)")
    boot.add_argument("--reverse-username", help="mutual CHAP: the target's user")
    boot.add_argument("--reverse-password", help="mutual CHAP: the target's secret")
    boot.add_argument("--system-label", default="System", metavar="LABEL")
    boot.add_argument("--storage-label", default="Storage", metavar="LABEL")
    faults = boot.add_argument_group("fault injection")
    faults.add_argument("--client-password", help="give the client this password instead of --password")
    faults.add_argument(
        "--target-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start the target this long after the guest's network is up",
    )
    faults.add_argument("--acpi-ibft", action="store_true", help="inject the iBFT with -acpitable (no iPXE)")
    faults.add_argument(
        "--no-root-path", action="store_true", help="--mode dhcp: dnsmasq sends no root path (option 17)"
    )
    faults.add_argument(
        "--lun-block-size",
        type=int,
        metavar="BYTES",
        help="--mode cmdline: tgt serves the disk in blocks of this size (the NBD path takes 512 or 4096)",
    )
    faults.add_argument("--empty-lun", action="store_true", help="--mode cmdline: tgt serves 0 bytes")
    faults.add_argument(
        "--disk-storage-label",
        metavar="LABEL",
        help="label the Storage file system on the disk differently (the label is then missing)",
    )
    _machine_options(boot)
    boot.set_defaults(func=cmd_boot)

    demo = add_command(
        qsub,
        "demo",
        parent,
        "iPXE sanboot with the iBFT and mutual CHAP, end to end, with the phase timeline",
        "The main job: a diskless PC boots in QEMU through iPXE sanboot from a real "
        "tgtd with mutual CHAP; the agent reads the iBFT, mounts System and Storage and starts SYSTEM.",
    )
    _machine_options(demo)
    demo.set_defaults(func=cmd_demo)

    fleet = add_command(
        qsub,
        "fleet",
        parent,
        "several HTPCs boot at once from one NAS through the dnsmasq chain",
        "Boot N guests at the same time from one tgtd (a target, a disk and a CHAP account each), "
        "each with its own MAC and initiator name, through dnsmasq's per-client tags and scripts "
        "(generate dnsmasq/ipxe --clients).  Each writes a marker to its Storage; then the host checks "
        "that every disk holds exactly its own.  Exit 0 only when every client booted its own disk.",
    )
    fleet.add_argument("--clients", type=int, default=3, metavar="N", help="how many HTPCs (default 3)")
    add_timeout(fleet, 300.0, "give up on the clients that have not finished by then")
    fleet.add_argument("--cache", type=Path, metavar="DIR", help="kernel/initramfs cache")
    fleet.add_argument("--log-dir", type=Path, metavar="DIR", help="keep every client's console log here")
    add_json(fleet, "per client ok, time to Storage mounted and own-marker check, and the median")
    fleet.set_defaults(func=cmd_fleet)

    soak = add_command(
        qsub,
        "soak",
        parent,
        "the target goes away while the guest writes: the session recovers, nothing is lost",
        "Boot the sanboot scenario (mutual CHAP); the test SYSTEM writes checksummed blocks to "
        "Storage with fsync while the host takes the target away and brings it back, cycle after "
        "cycle; then the guest reads every block back.  Exit 0 only when no I/O failed and every "
        "byte was read back as written.",
    )
    soak.add_argument(
        "--fault",
        required=True,
        choices=["target-restart", "target-restore", "link-down"],
        help="target-restart: stop the target (tgtd: SIGKILL; istgt: SIGTERM; lio: the target VM) and "
        "start it again with the same target; "
        "target-restore: the same, but the target's server is up 3 s before its target and accounts "
        "(tgtd listens and refuses logins meanwhile, as a NAS restoring its configuration); "
        "link-down: cut the guest NIC's link (QMP set_link)",
    )
    soak.add_argument("--down", type=float, default=15.0, metavar="SECONDS", help="each outage (default 15)")
    soak.add_argument("--cycles", type=int, default=3, metavar="N", help="outages in a row (default 3)")
    soak.add_argument(
        "--append",
        action="append",
        default=[],
        metavar="OPTION",
        help="one more kernel option, e.g. iscsiboot.keeper=no or iscsiboot.recovery_timeout=10",
    )
    _target_option(soak)
    _machine_options(soak)
    soak.set_defaults(func=cmd_soak, timeout=150.0)


def _secret(value: str | None) -> Secret | None:
    return Secret(value) if value is not None else None


def options_from_args(args: argparse.Namespace) -> ScenarioOptions:
    return ScenarioOptions(
        mode=Mode(args.mode),
        target=TargetKind(args.target),
        target_name=args.target_name or DEFAULT_TARGET,
        initiator=args.initiator or DEFAULT_INITIATOR,
        username=args.username,
        password=_secret(args.password),
        reverse_username=args.reverse_username,
        reverse_password=_secret(args.reverse_password),
        system_label=args.system_label,
        storage_label=args.storage_label,
        client_password=_secret(args.client_password),
        target_delay=args.target_delay,
        acpi_ibft=args.acpi_ibft,
        no_root_path=args.no_root_path,
        lun_block_size=args.lun_block_size,
        empty_lun=args.empty_lun,
        disk_storage_label=args.disk_storage_label,
        kvm=args.kvm,
        memory_mb=args.memory,
        timeout=args.timeout,
        extra_append=backend_append(args.backend),
        firmware=Firmware(args.firmware),
        boot_via=BootVia(args.boot_via),
    )


def backend_append(backend: str) -> tuple[str, ...]:
    """The kernel option that picks the agent's login backend (none for its default)."""
    return () if backend == "native" else (f"iscsiboot.backend={backend}",)


def _run(args: argparse.Namespace, options: ScenarioOptions, *, demo: bool) -> int:
    if args.memory < 256:
        raise UsageError("--memory must be at least 256 MB")
    with sigterm_interrupts():
        stderr_progress("preparing kernel, initramfs and SYSTEM (cached)")
        artifacts = prepare(
            args.cache,
            kernel=args.kernel,
            initrd=args.initrd,
            overlay=args.overlay,
            iscsistart=args.backend == "iscsistart",
            transport=args.transport,
        )
        if args.show_plan:
            sys.stderr.write(describe(options, artifacts) + "\n")
        outcome = run_scenario(
            options,
            artifacts,
            progress=stderr_progress,
            console=sys.stderr if args.console else None,
            log_dir=args.log_dir,
            keep_log=True if args.keep_log else None,
        )
    if args.json:
        print_json(outcome.to_json())
    else:
        out = sys.stdout
        verdict = "SYSTEM root reached" if outcome.ok else f"FAILED in phase {outcome.phase}: {outcome.error}"
        out.write(f"boot: {verdict}\n")
        if outcome.result is not None and outcome.result.transport:
            out.write(f"transport: {outcome.result.transport}\n")
        if outcome.result is not None:
            out.write(f"system: {outcome.result.system}\nstorage: {outcome.result.storage}\n")
        lines = timeline_text(outcome.result)
        if lines:
            out.write("timeline (guest seconds since the agent started):\n")
            out.write("\n".join(lines) + "\n")
        out.write(f"boot time: {outcome.boot_seconds:.1f} s (QEMU start to result), ")
        out.write(f"total {outcome.total_seconds:.1f} s\n")
        if outcome.log_path is not None:
            out.write(f"console log: {outcome.log_path}\n")
        if demo and outcome.ok:
            firmware = "UEFI (OVMF), " if options.firmware is Firmware.UEFI else ""
            out.write(
                f"demo: {firmware}iPXE sanboot, iBFT, mutual CHAP: "
                "System and Storage mounted, SYSTEM started\n"
            )
    return EXIT_OK if outcome.ok else EXIT_FAILURE


def cmd_boot(args: argparse.Namespace) -> int:
    return _run(args, options_from_args(args), demo=False)


def cmd_demo(args: argparse.Namespace) -> int:
    options = ScenarioOptions(
        mode=Mode.IBFT,
        username=DEMO_USER,
        password=Secret(DEMO_PASSWORD),
        reverse_username=DEMO_REVERSE_USER,
        reverse_password=Secret(DEMO_REVERSE_PASSWORD),
        kvm=args.kvm,
        memory_mb=args.memory,
        timeout=args.timeout,
        extra_append=backend_append(args.backend),
        firmware=Firmware(args.firmware),
    )
    return _run(args, options, demo=True)


def cmd_soak(args: argparse.Namespace) -> int:
    from iscsiboot.qemu.soak import Cycle, Fault, run_soak, text_report  # noqa: PLC0415

    if args.cycles < 1 or args.down <= 0:
        raise UsageError("--cycles must be 1 or more and --down above 0")
    options = ScenarioOptions(
        mode=Mode.IBFT,
        target=TargetKind(args.target),
        username=DEMO_USER,
        password=Secret(DEMO_PASSWORD),
        reverse_username=DEMO_REVERSE_USER,
        reverse_password=Secret(DEMO_REVERSE_PASSWORD),
        kvm=args.kvm,
        memory_mb=args.memory,
        timeout=args.timeout,
        extra_append=(*backend_append(args.backend), *args.append),
        firmware=Firmware(args.firmware),
    )
    cycles = tuple(Cycle(Fault(args.fault), args.down) for _ in range(args.cycles))
    with sigterm_interrupts():
        stderr_progress("preparing kernel, initramfs and SYSTEM (cached)")
        artifacts = prepare(
            args.cache, kernel=args.kernel, initrd=args.initrd, overlay=args.overlay, transport=args.transport
        )
        if args.show_plan:
            sys.stderr.write(describe(options, artifacts) + "\n")
        result, outcome = run_soak(
            cycles,
            artifacts,
            options,
            progress=stderr_progress,
            console=sys.stderr if args.console else None,
            log_dir=args.log_dir,
            keep_log=True if args.keep_log else None,
        )
    if args.json:
        print_json(result.to_json())
    else:
        sys.stdout.write(text_report(result))
        if outcome.log_path is not None:
            sys.stdout.write(f"console log: {outcome.log_path}\n")
    return EXIT_OK if result.ok else EXIT_FAILURE


def cmd_fleet(args: argparse.Namespace) -> int:
    from iscsiboot.qemu.fleet import run_fleet, text_report  # noqa: PLC0415

    with sigterm_interrupts():
        stderr_progress("preparing kernel, initramfs and SYSTEM (cached)")
        artifacts = prepare(args.cache)
        result = run_fleet(
            args.clients, artifacts, timeout=args.timeout, progress=stderr_progress, keep_dir=args.log_dir
        )
    if args.json:
        print_json(result.to_json())
    else:
        sys.stdout.write(text_report(result))
    return EXIT_OK if result.ok else EXIT_FAILURE
