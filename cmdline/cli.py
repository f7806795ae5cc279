"""``iscsiboot cmdline parse`` and ``iscsiboot generate <kind>``.

``cmdline parse [--json] [--show-secrets] [TEXT... | --file F | --proc]``
reads a whole kernel command line (TEXT words are joined with spaces;
``--file -`` reads stdin) and prints the model as readable text or, with
``--json``, the object of :func:`iscsiboot.model.to_dict` plus ``warnings``.

``generate {cmdline,extlinux,ipxe,dnsmasq,root-path,dracut,usb} [model options |
--from-json FILE] [-o FILE]`` writes a format from the model.  Generated text
that contains a secret is written for real into ``-o FILE`` (mode 0600,
atomically); on stdout the secret shows as ``***`` unless ``--show-secrets``,
with a warning on stderr that it was masked.

The parse path imports only the pure parser (no construct, no pyroute2).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable
from pathlib import Path

from iscsiboot.cliargs import add_command, add_json, add_output, add_show_secrets, help_handler, number_type
from iscsiboot.cmdline import clients, usb
from iscsiboot.cmdline import generate as g
from iscsiboot.cmdline.options import add_model_options, model_from_args
from iscsiboot.cmdline.parse import parse
from iscsiboot.errors import EXIT_OK, UsageError
from iscsiboot.files import read_text
from iscsiboot.model import BootConfig, Chap, lun_to_text, to_dict
from iscsiboot.output import check_output, info, print_json, warn, write_output, write_text
from iscsiboot.secret import MASK, Secret

LOGIN_TIMEOUT = 10.0  # seconds per step of --lun-from-target's login

PROC_CMDLINE = "/proc/cmdline"


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    parser_class = sub._parser_class
    cmd = add_command(sub, "cmdline", parent, "read kernel command lines into the boot model")
    csub = cmd.add_subparsers(dest="cmdline_action", metavar="ACTION", parser_class=parser_class)
    cmd.set_defaults(func=help_handler(cmd, sys.stderr))
    p = add_command(
        csub,
        "parse",
        parent,
        "parse a kernel command line (OpenELEC, Debian, dracut, RFC 4173, ip=)",
        "Parse a whole kernel command line into the boot model.",
    )
    p.add_argument("text", nargs="*", metavar="TEXT", help="the command line (words are joined)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--file", metavar="F", help="read the command line from F (- for stdin)")
    src.add_argument("--proc", action="store_true", help=f"read {PROC_CMDLINE}")
    add_json(p, "print the model as JSON")
    add_show_secrets(p, "show CHAP passwords instead of ***")
    p.set_defaults(func=_parse_command)

    gen = add_command(
        sub,
        "generate",
        parent,
        "write command lines, extlinux.conf, iPXE, dnsmasq, root-path",
        "Write a boot format from the model (options or --from-json).",
    )
    gsub = gen.add_subparsers(dest="kind", metavar="KIND", parser_class=parser_class)
    gen.set_defaults(func=help_handler(gen, sys.stderr))
    kinds: dict[str, str] = {
        "cmdline": "the ip=/boot=ISCSI=/disk= fragment for the kernel command line",
        "extlinux": "a complete extlinux.conf in OpenELEC's layout",
        "ipxe": "the iPXE sanboot script (chain-loaded, or --embedded)",
        "dnsmasq": "a dnsmasq DHCP+TFTP configuration for iPXE boot",
        "root-path": "the RFC 4173 root path (DHCP option 17)",
        "dracut": "dracut's rd.iscsi.*/netroot= form",
        "usb": "a boot stick image (Debian's ipxe.lkrn, syslinux, the embedded script) to dd",
    }
    for kind, summary in kinds.items():
        k = add_command(gsub, kind, parent, summary)
        add_model_options(k)
        out = k.add_argument_group("output")
        add_output(out, "write to FILE (secrets in clear, mode 0600)")
        add_show_secrets(out, "show secrets on stdout instead of ***")
        add_json(out, "print {kind, text, warnings} as JSON")
        if kind == "extlinux":
            out.add_argument("--kernel", default="/KERNEL", help="kernel path (default /KERNEL)")
            out.add_argument("--initrd", help="initrd path (an INITRD line)")
            out.add_argument(
                "--serial", action="store_true", help="serial console (SERIAL 0 115200, console=ttyS0)"
            )
            out.add_argument(
                "--append",
                action="append",
                metavar="TOKEN",
                help="extra kernel parameter (repeatable; default: quiet)",
            )
        if kind in ("ipxe", "dnsmasq"):
            out.add_argument(
                "--clients",
                metavar="FILE",
                help="several HTPCs: one line each (MAC NAME TARGET-OR-LUN [CREDENTIALS-FILE]); ipxe "
                "writes NAME.ipxe per client into the folder -o names, dnsmasq one configuration with a "
                "tag per client",
            )
        if kind == "ipxe":
            out.add_argument(
                "--embedded", action="store_true", help="the form built into a ROM (own dhcp retry)"
            )
            out.add_argument(
                "--attempts",
                type=number_type(),
                metavar="N",
                help="try sanboot N times, then exit with failure (default: retry for ever)",
            )
            out.add_argument(
                "--lun-from-target",
                action="store_true",
                help="log in to the target as the box would (its initiator name and CHAP) and boot the "
                "first disk LUN it reports: tgt's LUN 1, LIO's and istgt's LUN 0 (without it or --lun, "
                "iPXE uses LUN 0)",
            )
        elif kind == "dnsmasq":
            out.add_argument("--interface", help="serve only this interface")
            out.add_argument(
                "--dhcp-range",
                metavar="RANGE",
                help="dnsmasq dhcp-range value, e.g. 10.0.0.100,10.0.0.200,12h",
            )
            out.add_argument("--tftp-root", default="/srv/tftp", help="TFTP root (default /srv/tftp)")
            out.add_argument(
                "--script", default="boot.ipxe", help="the iPXE script file name (default boot.ipxe)"
            )
            out.add_argument("--no-dns", action="store_true", help="port=0: no DNS service")
        elif kind == "usb":
            out.add_argument(
                "--firmware",
                choices=[f.value for f in usb.StickFirmware],
                default=usb.StickFirmware.BIOS.value,
                help="bios (the default); uefi and both are refused: " + usb.NO_UEFI,
            )
            out.add_argument(
                "--attempts",
                type=number_type(),
                metavar="N",
                help="try sanboot N times, then exit with failure (default: retry for ever)",
            )
        elif kind == "root-path":
            out.add_argument(
                "--with-credentials",
                action="store_true",
                help="include user:password@ (dracut's form; not for DHCP)",
            )
        k.set_defaults(func=_generate_command)


# ---------------------------------------------------------------- cmdline parse


def _read_text(args: argparse.Namespace) -> str:
    if args.text and (args.file is not None or args.proc):
        raise UsageError("TEXT given together with --file/--proc", fix="give one source")
    if args.proc:
        path = PROC_CMDLINE
    elif args.file is not None:
        path = args.file
    elif args.text:
        return " ".join(args.text)
    else:
        raise UsageError("no command line given", fix="give TEXT, --file F or --proc")
    try:
        return read_text(path, where=path, fix="give a kernel command line, which is text", stdin=True)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", fix="give a readable file") from None


def _parse_command(args: argparse.Namespace) -> int:
    parsed = parse(_read_text(args))
    cfg = parsed.config
    for warning in parsed.warnings:
        warn(warning)
    if args.json:
        obj = to_dict(cfg, show_secrets=args.show_secrets)
        obj["warnings"] = list(parsed.warnings)
        print_json(obj)
    else:
        write_text(describe(cfg, show_secrets=args.show_secrets))
    return EXIT_OK


def describe(cfg: BootConfig, *, show_secrets: bool = False) -> str:
    """The model as readable text (secrets masked unless ``show_secrets``)."""
    lines: list[str] = []

    def row(key: str, value: str) -> None:
        lines.append(f"{key + ':' if key else '':<12}{value}")

    if cfg.firmware:
        mode = "iSCSI, from the firmware (iBFT)"
        if cfg.targets:
            mode += " and explicit targets"
    elif cfg.target_from_dhcp:
        mode = "iSCSI, the target from the DHCP server's root path (option 17)"
    elif cfg.targets:
        mode = "iSCSI, explicit targets"
    else:
        mode = "no iSCSI"
    row("boot", mode)
    row("initiator", cfg.initiator or ("(from the iBFT)" if cfg.firmware else "(not given)"))
    for i, t in enumerate(cfg.targets, 1):
        lun = "any" if t.lun is None else lun_to_text(t.lun)
        row(f"target {i}", f"{t.name} at {t.portal}, portal group {t.group}, LUN {lun}")
        if t.chap is not None:
            row("", f"CHAP user {t.chap.username}, secret {t.chap.password.shown(show_secrets)}")
        if t.reverse_chap is not None:
            rsecret = t.reverse_chap.password.shown(show_secrets)
            row("", f"reverse CHAP user {t.reverse_chap.username}, secret {rsecret}")
    net = cfg.network
    parts = [net.mode.value]
    if net.address is not None:
        parts.append(f"{net.address}/{net.prefix}")
    for key in ("device", "mac", "gateway", "server", "hostname", "vlan"):
        value = getattr(net, key)
        if value is not None:
            parts.append(f"{key} {value}")
    if net.dns:
        parts.append("dns " + ",".join(net.dns))
    row("network", ", ".join(parts))
    # disk=LABEL=... names no device: the label is looked for on every disk, the LUN included
    where_storage = "on iSCSI" if cfg.storage_on_iscsi else "on any disk, the LUN included"
    on_iscsi = cfg.targets or cfg.firmware or cfg.target_from_dhcp
    row(
        "system",
        f"{cfg.system} ({'on iSCSI' if on_iscsi else 'on any disk'})" if cfg.system else "(not given)",
    )
    row("storage", f"{cfg.storage} ({where_storage})" if cfg.storage else "(not given)")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- generate


def _masked(cfg: BootConfig) -> BootConfig:
    """``cfg`` with every CHAP secret replaced by the mask: stdout shows the secret fields as ***."""

    def hide(chap: Chap | None) -> Chap | None:
        return None if chap is None else dataclasses.replace(chap, password=Secret(MASK))

    targets = tuple(
        dataclasses.replace(t, chap=hide(t.chap), reverse_chap=hide(t.reverse_chap)) for t in cfg.targets
    )
    return dataclasses.replace(cfg, targets=targets)


def _generate_command(args: argparse.Namespace) -> int:
    if getattr(args, "clients", None):
        return _clients_command(args, model_from_args(args))
    if args.output:
        check_output(args.output)
    cfg = model_from_args(args)
    kind: str = args.kind
    if getattr(args, "lun_from_target", False):
        if g.model_has_uid(cfg):
            raise UsageError(
                "--lun-from-target logs in as one machine, and @UID@ names none",
                fix="give --lun (or the model without @UID@)",
            )
        from iscsiboot.doctor.ask import with_target_lun  # noqa: PLC0415  (the one generator that logs in)

        cfg, note = with_target_lun(cfg, timeout=LOGIN_TIMEOUT)
        info(note)
    if kind == "usb":
        return _usb_command(args, cfg)
    makers: dict[str, Callable[[BootConfig], g.Generated]] = {
        "cmdline": g.cmdline,
        "dracut": g.dracut,
        "extlinux": lambda c: g.extlinux(
            c,
            kernel=args.kernel,
            initrd=args.initrd,
            append_extra=tuple(args.append) if args.append is not None else ("quiet",),
            serial=args.serial,
        ),
        "ipxe": lambda c: g.ipxe(
            c,
            embedded=args.embedded,
            embed_path=os.path.abspath(args.output) if args.output else "boot.ipxe",
            attempts=args.attempts,
        ),
        "dnsmasq": lambda c: g.dnsmasq(
            c,
            interface=args.interface,
            dhcp_range=args.dhcp_range,
            tftp_root=args.tftp_root,
            script=args.script,
            dns=not args.no_dns,
        ),
        "root-path": lambda c: g.root_path(c, credentials=args.with_credentials),
    }
    result = makers[kind](cfg)
    for warning in result.warnings:
        warn(warning)
    if args.output:
        data = result.text if result.text.endswith("\n") else result.text + "\n"
        write_output(args.output, data, mode=0o600 if result.secrets else 0o644)
        if args.json:
            print_json({"kind": kind, "output": args.output, "warnings": list(result.warnings)})
        else:
            info(f"wrote {args.output}" + (" (mode 0600: it holds secrets)" if result.secrets else ""))
        return EXIT_OK
    text = result.text
    if result.secrets and not args.show_secrets:
        text = makers[kind](_masked(cfg)).text
        warn("secrets are masked as *** on stdout; use -o FILE or --show-secrets for the real text")
    if args.json:
        print_json({"kind": kind, "text": text, "warnings": list(result.warnings)})
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _usb_command(args: argparse.Namespace, cfg: BootConfig) -> int:
    """``generate usb -o FILE``: the stick image, mode 0600 (it carries the CHAP secrets)."""
    if not args.output:
        raise UsageError("the stick is an image file", where="generate usb", fix="add -o stick.img")
    script = g.ipxe(cfg, embedded=True, embed_path=usb.SCRIPT_NAME, attempts=args.attempts)
    for warning in script.warnings:
        warn(warning)
    size = usb.write_stick(Path(args.output), usb.stick_files(script.text, usb.StickFirmware(args.firmware)))
    if args.json:
        print_json({"kind": "usb", "output": args.output, "bytes": size, "warnings": list(script.warnings)})
    else:
        info(f"wrote {args.output} ({size // (1024 * 1024)} MiB, mode 0600)")
        if script.secrets:
            info("the stick carries the CHAP secrets in clear: keep it (and the image file) safe")
        info(f"write it to the stick with: dd if={args.output} of=/dev/sdX bs=4M conv=fsync")
    return EXIT_OK


def _clients_command(args: argparse.Namespace, cfg: BootConfig) -> int:
    """``generate ipxe|dnsmasq --clients FILE``: a script per client, or one dnsmasq configuration."""
    listed = clients.parse_clients(read_text(args.clients), where=args.clients)
    base = Path(args.clients).parent
    chaps = {
        c.credentials: clients.parse_credentials(
            read_text(base / c.credentials), where=str(base / c.credentials)
        )
        for c in listed
        if c.credentials is not None
    }
    configs = clients.client_configs(cfg, listed, chaps)
    if args.kind == "dnsmasq":
        result = clients.dnsmasq(
            configs,
            interface=args.interface,
            dhcp_range=args.dhcp_range,
            tftp_root=args.tftp_root,
            script=args.script,
            dns=not args.no_dns,
        )
        for warning in result.warnings:
            warn(warning)
        if args.output:
            check_output(args.output)
            write_output(args.output, result.text)
            info(f"wrote {args.output} ({len(listed)} clients)")
        else:
            sys.stdout.write(result.text)
        return EXIT_OK
    if not args.output or not Path(args.output).is_dir():
        raise UsageError(
            "a script per client goes into a folder", where="--clients", fix="give -o DIR (it must exist)"
        )
    for client, config in configs:
        script = g.ipxe(config, embedded=args.embedded, attempts=args.attempts)
        for warning in script.warnings:
            warn(f"{client.name}: {warning}")
        write_output(Path(args.output) / client.script, script.text, mode=0o600)
    info(f"wrote {len(configs)} scripts into {args.output} (mode 0600: they hold the CHAP secrets)")
    return EXIT_OK
