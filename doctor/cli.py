"""``iscsiboot doctor`` and ``iscsiboot discover``.

The settings come the way the box sees them: its APPEND line (``--cmdline``),
its extlinux.conf (``--extlinux``), an iBFT (``--ibft``), or explicit options.
Passwords come from files (``--password-file``): a command line shows in
``ps``.  Nothing here prints a secret.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from iscsiboot.cliargs import (
    add_command,
    add_digest,
    add_json,
    add_login_options,
    add_timeout,
    chap_from_args,
    digests_from_args,
    positive_timeout,
)
from iscsiboot.cmdline.dhcproot import with_root_path
from iscsiboot.cmdline.generate import DHCP_OPTION_MAX
from iscsiboot.cmdline.parse import parse
from iscsiboot.disk.inspect import parse_extlinux
from iscsiboot.doctor.checks import login_cause, run_checks
from iscsiboot.doctor.report import DEFAULT_INITIATOR, Settings, human
from iscsiboot.errors import EXIT_FAILURE, EXIT_OK, IscsibootError, ParseError, UsageError
from iscsiboot.files import TEXT_LIMIT, read_bytes
from iscsiboot.ibft import sources
from iscsiboot.ibft.mapping import table_to_model
from iscsiboot.iscsi.login import parse_target_address
from iscsiboot.iscsi.session import DiscoveredTarget, Session
from iscsiboot.model import (
    DEFAULT_PORT,
    BootConfig,
    Locator,
    Target,
    address_kind,
    lun_from_text,
)
from iscsiboot.output import print_json, printable, warn, write_text
from iscsiboot.secret import mask

DEFAULT_TIMEOUT = 10.0


def register(sub: argparse._SubParsersAction[Any], parent: argparse.ArgumentParser) -> None:
    doctor = add_command(
        sub,
        "doctor",
        parent,
        "check every link of an iSCSI boot from any Linux machine",
        "Check, in order: portal reachable, discovery lists the target, login (CHAP, mutual), "
        "LUNs, capacity, partition table, a bootable partition, file systems matching the System/Storage "
        "locators, and that System (ext4 or FAT) holds KERNEL, SYSTEM and an extlinux.conf or syslinux.cfg "
        "whose APPEND line matches (on FAT also EFI/BOOT/bootx64.efi, for UEFI). "
        "Read-only: it never writes to the target. Exit 0 when all pass, 1 when one fails, 2 on bad input.",
    )
    src = doctor.add_mutually_exclusive_group()
    src.add_argument("--cmdline", metavar="TEXT", help="the box's kernel command line (its APPEND line)")
    src.add_argument("--extlinux", metavar="FILE", type=Path, help="the box's extlinux.conf")
    src.add_argument(
        "--ibft",
        metavar="SOURCE",
        help="an iBFT: a table file, a /sys/firmware/ibft tree, or 'auto' (this machine)",
    )
    doctor.add_argument(
        "--dhcp-root-path",
        metavar="STRING",
        help="the RFC 4173 root path the DHCP server sends (option 17), checked as a box with "
        "netroot=dhcp would use it (with --cmdline/--extlinux: that line must take its target from DHCP)",
    )
    _target_options(doctor, with_target=True)
    doctor.add_argument("--system", metavar="LOCATOR", help="the System file system (default LABEL=System)")
    doctor.add_argument("--storage", metavar="LOCATOR", help="the Storage file system (e.g. LABEL=Storage)")
    add_json(doctor, "print the report as JSON")
    doctor.set_defaults(func=run_doctor)

    discover = add_command(
        sub,
        "discover",
        parent,
        "list the targets of a portal (SendTargets), without root",
        "SendTargets discovery, like iscsiadm -m discovery -t st, without root or iscsid.",
    )
    _target_options(discover, with_target=False)
    add_json(discover, "print the targets as JSON")
    discover.set_defaults(func=run_discover)


def _target_options(p: argparse.ArgumentParser, *, with_target: bool) -> None:
    p.add_argument("--portal", metavar="HOST[:PORT]", required=not with_target, help="the target portal")
    if with_target:
        p.add_argument("--target", metavar="IQN", help="the target name")
        p.add_argument("--lun", metavar="LUN", help="the boot LUN (RFC 4173 hex form, e.g. 1)")
    add_login_options(p)
    add_digest(p)
    add_timeout(p, DEFAULT_TIMEOUT, "per step (default 10)")


# ---------------------------------------------------------------- inputs


def parse_portal(text: str) -> tuple[str, int]:
    """``HOST[:PORT]`` with IPv6 in brackets; UsageError on anything else."""
    try:
        host, port, tpgt = parse_target_address(text)
    except IscsibootError:
        raise UsageError(
            f"portal {text!r} is not HOST[:PORT]", fix="e.g. 192.168.1.2:3260 or [fd00::2]:3260"
        ) from None
    if tpgt is not None:
        raise UsageError(f"portal {text!r} has a portal group; give HOST[:PORT]")
    address_kind(host)
    return host, port


def _append_of_extlinux(path: Path) -> str:
    try:
        text = read_bytes(path, TEXT_LIMIT, where=f"--extlinux {path}").decode("utf-8", errors="replace")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    entry = parse_extlinux(text).entry()
    if entry is None or not entry.append:
        raise ParseError(
            "no APPEND line in the default entry", where=str(path), fix="point --extlinux at the box's file"
        )
    return entry.append


def _config_from_ibft(source: str) -> BootConfig:
    if source == "auto":
        found = sources.find_auto("/")
    else:
        path = Path(source)
        if not path.exists():
            raise UsageError(
                f"no iBFT at {source}", fix="give a table file, a /sys/firmware/ibft tree or 'auto'"
            )
        found = sources.read_sysfs_found(path) if path.is_dir() else sources.read_file(path)
    for line in found.parsed.warnings:
        warn(line)
    config, warnings = table_to_model(found.parsed.table)
    for line in warnings:
        warn(line)
    return config


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The doctor's :class:`~iscsiboot.doctor.report.Settings` from the options."""
    chap, reverse = chap_from_args(args)
    source = "options"
    if args.cmdline is not None or args.extlinux is not None:
        text = args.cmdline if args.cmdline is not None else _append_of_extlinux(args.extlinux)
        parsed = parse(text)
        for line in parsed.warnings:
            warn(line)
        config = parsed.config
        source = "cmdline" if args.cmdline is not None else "extlinux"
    elif args.ibft is not None:
        config = _config_from_ibft(args.ibft)
        source = "ibft"
    elif args.dhcp_root_path is not None:
        config = BootConfig(target_from_dhcp=True)
    else:
        if args.portal is None or args.target is None:
            raise UsageError(
                "say where the settings come from",
                fix="give --cmdline, --extlinux, --ibft, --dhcp-root-path, or --portal and --target",
            )
        config = BootConfig()
    config = _with_dhcp_root_path(config, args.dhcp_root_path)
    targets = list(config.targets)
    if args.portal is not None or args.target is not None:
        if not targets and (args.portal is None or args.target is None):
            raise UsageError("--portal and --target go together when the settings name no target")
        base = targets[0] if targets else None
        host, port = parse_portal(args.portal) if args.portal else (base.address, base.port)  # type: ignore[union-attr]
        name = args.target or base.name  # type: ignore[union-attr]
        target = Target(
            name=name,
            address=host,
            port=port,
            group=base.group if base else 1,
            lun=base.lun if base else None,
            chap=base.chap if base else None,
            reverse_chap=base.reverse_chap if base else None,
        )
        targets = [target, *targets[1:]]
    if not targets:
        if config.firmware:
            raise UsageError(
                "the settings take the target from the iBFT",
                fix="give --ibft SOURCE, or --portal and --target",
            )
        raise UsageError("the settings name no iSCSI target", fix="give --portal and --target")
    first = targets[0]
    lun = first.lun
    if getattr(args, "lun", None) is not None:
        try:
            lun = lun_from_text(args.lun)
        except ValueError:
            raise UsageError(f"LUN {args.lun!r} is not in RFC 4173 form", fix="e.g. 1 or 0-1") from None
    if chap is not None or reverse is not None or lun != first.lun:
        first = Target(
            name=first.name,
            address=first.address,
            port=first.port,
            group=first.group,
            lun=lun,
            chap=chap or first.chap,
            reverse_chap=reverse or (first.reverse_chap if chap is None else None),
        )
    targets[0] = first
    system = Locator.parse(args.system) if args.system else config.system
    storage = Locator.parse(args.storage) if args.storage else config.storage
    config = BootConfig(
        firmware=config.firmware,
        initiator=args.initiator or config.initiator,
        targets=tuple(targets),
        network=config.network,
        system=system,
        storage=storage,
        storage_on_iscsi=config.storage_on_iscsi,
    )
    return Settings(config, source=source, from_dhcp=args.dhcp_root_path is not None)


def _with_dhcp_root_path(config: BootConfig, root_path: str | None) -> BootConfig:
    """``config`` with the target of ``root_path``, as the box's agent takes it from its lease."""
    if root_path is None:
        if config.target_from_dhcp:
            raise UsageError(
                "the settings take the target from the DHCP root path (netroot=dhcp)",
                fix="give --dhcp-root-path STRING: what the DHCP server sends in option 17",
            )
        return config
    if not config.target_from_dhcp:
        raise UsageError(
            "--dhcp-root-path given, but the settings do not take their target from DHCP",
            fix="the box uses the root path with netroot=dhcp, root=dhcp or boot=ISCSI=dhcp only",
        )
    size = len(root_path.encode("utf-8", "surrogateescape"))
    if size > DHCP_OPTION_MAX:
        warn(f"the root path has {size} bytes; DHCP option 17 holds at most {DHCP_OPTION_MAX}")
    config = with_root_path(config, root_path)
    if config.secrets():
        warn("the root path carries CHAP credentials: DHCP sends them in clear to every client")
    return config


# ---------------------------------------------------------------- doctor


def run_doctor(args: argparse.Namespace) -> int:
    timeout = positive_timeout(args)
    settings = settings_from_args(args)
    report = run_checks(settings, timeout=timeout, digests=digests_from_args(args))
    hidden = settings.config.secrets()
    if args.json:
        print_json(report.to_dict())
    else:
        write_text(mask(human(report), hidden) + "\n")
    return EXIT_OK if report.ok else EXIT_FAILURE


# ---------------------------------------------------------------- discover


def run_discover(args: argparse.Namespace) -> int:
    timeout = positive_timeout(args)
    host, port = parse_portal(args.portal)
    chap, reverse = chap_from_args(args)
    initiator = args.initiator or DEFAULT_INITIATOR
    try:
        session = Session.login(
            host,
            port,
            initiator=initiator,
            chap=chap,
            reverse_chap=reverse,
            timeout=timeout,
            digests=digests_from_args(args),
        )
        with session:
            found = session.send_targets()
    except IscsibootError as exc:
        hidden = [c.password for c in (chap, reverse) if c is not None]
        probe = Target(name="(discovery)", address=host, port=port, chap=chap, reverse_chap=reverse)
        cause, fix = login_cause(exc, probe, initiator)
        raise IscsibootError(mask(f"discovery at {probe.portal} failed: {cause}", hidden), fix=fix) from None
    for line in elsewhere(found, host, port):
        warn(line)
    if args.json:
        print_json(
            {
                "portal": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
                "initiator": initiator,
                "targets": [{"name": t.name, "addresses": list(t.addresses)} for t in found],
            }
        )
        return EXIT_OK
    for t in found:  # names and addresses as the target sent them: escaped for the terminal
        for address in t.addresses or (f"{host}:{port},1",):
            write_text(f"{printable(address)} {printable(t.name)}\n")
    return EXIT_OK


def elsewhere(found: tuple[DiscoveredTarget, ...], host: str, port: int) -> list[str]:
    """Warnings for targets listed only at addresses other than the portal asked.

    LIO lists the address its portal listens on as it sees it, so a target
    behind NAT or port forwarding (LIO in a VM, a NAS behind a router) names an
    address the client may not reach; the portal that answered is the one to use.
    """
    asked = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    out: list[str] = []
    for t in found:
        listed = [a.rsplit(",", 1)[0] for a in t.addresses]
        if listed and asked not in listed:
            out.append(
                f"{printable(t.name)} is listed at {printable(', '.join(listed))}, not at {asked}, "
                f"where discovery answered: if the client cannot reach the listed address, use {asked}"
            )
    return out


__all__ = ["DEFAULT_PORT", "parse_portal", "register", "settings_from_args"]
