"""``iscsiboot ibft show`` and ``iscsiboot ibft build``."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from iscsiboot.cliargs import add_command, add_json, add_output, add_show_secrets, number_type
from iscsiboot.cmdline.options import add_model_options, load_json, model_from_args
from iscsiboot.errors import EXIT_OK, RepresentError, TableError, UsageError
from iscsiboot.ibft import sources
from iscsiboot.ibft.build import build_table
from iscsiboot.ibft.codec import mac_to_bytes, pci_parse
from iscsiboot.ibft.mapping import model_to_table, table_to_model
from iscsiboot.ibft.parse import parse_table
from iscsiboot.ibft.render import explain, is_table_dict, table_from_dict, table_to_dict
from iscsiboot.ibft.sysfs import to_sysfs
from iscsiboot.ibft.types import QEMU_PCI, Table
from iscsiboot.model import BootConfig, from_dict, to_dict
from iscsiboot.output import check_output, info, print_json, printable, warn, write_output, write_text

SOURCES = ("auto", "file", "acpi", "memory", "devmem", "sysfs")


_int = number_type("decimal or 0x hex")


def _pci(text: str) -> int:

    try:
        return pci_parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a PCI location like 00:03.0") from None


def register(sub: argparse._SubParsersAction[Any], parent: argparse.ArgumentParser) -> None:
    ibft = add_command(
        sub,
        "ibft",
        parent,
        "read, explain and build the iSCSI Boot Firmware Table",
        "Read, explain and build the iSCSI Boot Firmware Table (iBFT).",
    )
    ibft_sub = ibft.add_subparsers(dest="ibft_command", metavar="SUBCOMMAND", parser_class=type(ibft))

    show = add_command(
        ibft_sub,
        "show",
        parent,
        "explain an iBFT (or print it as JSON or as the kernel's sysfs view)",
        "Read an iBFT and explain it. Without SOURCE (or with --source auto) the table is "
        "looked for in ACPI, then low memory through /dev/mem, then /sys/firmware/ibft.",
    )
    mode = show.add_mutually_exclusive_group()
    add_json(mode, "the full parse, every field, as JSON")
    mode.add_argument(
        "--sysfs", action="store_true", help="<dir>/<attr>=<value> lines as Linux shows /sys/firmware/ibft"
    )
    add_show_secrets(show, "print CHAP secrets instead of ***")
    show.add_argument(
        "--lenient", action="store_true", help="read a table with a bad checksum (with a warning)"
    )
    show.add_argument(
        "--source",
        choices=SOURCES,
        help="what SOURCE is: a table file (default when SOURCE is given), the root of the ACPI "
        "lookup, a memory dump, a /dev/mem device, a /sys/firmware/ibft tree, or the root for auto",
    )
    show.add_argument(
        "--base",
        type=_int,
        default=0,
        metavar="ADDR",
        help="physical address of a memory dump's first byte (default 0)",
    )
    show.add_argument("--model", action="store_true", help="also show the boot model the table describes")
    show.add_argument("source_path", nargs="?", metavar="SOURCE", help="where to read the table")
    show.set_defaults(func=_show)

    build = add_command(
        ibft_sub,
        "build",
        parent,
        "build a valid iBFT from a boot model (iPXE's layout)",
        "Build an iBFT (checksum, alignment, heap) in iPXE's layout, for tests and for "
        "QEMU's -acpitable file=TABLE. The NIC MAC must match the guest's NIC.",
    )

    add_model_options(build)
    add_output(build, "file to write", required=True, metavar="TABLE")
    build.add_argument("--mac", help="NIC MAC address (default: the model's, else QEMU's 52:54:00:12:34:56)")
    build.add_argument(
        "--pci", type=_pci, default=None, metavar="BB:DD.F", help="NIC PCI location (default 00:03.0)"
    )
    build.add_argument("--oem-id", default="FENSYS", help="ACPI OEM ID (default FENSYS)")
    build.add_argument("--oem-table-id", default="iPXE", help="ACPI OEM table ID (default iPXE)")
    build.add_argument("--signature", default="iBFT", choices=("iBFT", "IBFT", "BIFT"), help="default iBFT")
    add_json(build, "print what was written as JSON")
    build.set_defaults(func=_build)
    ibft.set_defaults(func=lambda args: _missing(ibft))


def _missing(parser: argparse.ArgumentParser) -> int:
    parser.error("give a subcommand: show or build")
    return 2


def _find(args: argparse.Namespace) -> Any:

    kind = args.source or ("file" if args.source_path else "auto")
    path = args.source_path
    lenient = args.lenient
    if kind == "file":
        if path is None:
            raise UsageError("--source file needs a SOURCE path")
        p = Path(path)
        if p.is_dir():
            return sources.read_sysfs_found(p)
        return sources.read_file(p, lenient=lenient)
    if kind == "acpi":
        return sources.read_acpi(path or "/", lenient=lenient)
    if kind == "memory":
        if path is None:
            raise UsageError("--source memory needs a SOURCE dump file")
        return sources.read_memory_dump(path, args.base, lenient=lenient)
    if kind == "devmem":
        return sources.read_devmem(path or "/dev/mem", lenient=lenient)
    if kind == "sysfs":
        return sources.read_sysfs_found(path or sources.SYSFS_ROOT)
    return sources.find_auto(path or "/", lenient=lenient)


def _show(args: argparse.Namespace) -> int:

    found = _find(args)
    table = found.parsed.table
    warnings = found.parsed.warnings
    show = args.show_secrets
    model_warnings: tuple[str, ...] = ()
    model = None
    if args.model or args.json:
        model, model_warnings = table_to_model(table)
    if args.json:
        obj = table_to_dict(table, show_secrets=show)
        out = {
            "source": found.source,
            "table": obj,
            "sysfs": to_sysfs(table, show_secrets=show),
            "model": to_dict(model, show_secrets=show) if model is not None else None,
            "warnings": [*warnings, *model_warnings],
        }
        print_json(out)
        return EXIT_OK
    if args.sysfs:
        info(f"source: {found.source}")
        for w in warnings:
            warn(w)
        lines = [f"{k}={printable(v)}" for k, v in to_sysfs(table, show_secrets=show).items()]
        write_text("\n".join(lines) + "\n")
        return EXIT_OK
    text = explain(table, source=found.source, warnings=warnings, show_secrets=show)
    if model is not None:
        dumped = json.dumps(to_dict(model, show_secrets=show), indent=2)
        text += "\nboot model\n" + "".join(f"  {line}\n" for line in dumped.splitlines())
        text += "".join(f"  warning: {printable(w)}\n" for w in model_warnings)
    write_text(text)
    return EXIT_OK


def _model_options_given(args: argparse.Namespace) -> list[str]:

    probe = argparse.ArgumentParser(add_help=False)
    add_model_options(probe)
    defaults = probe.parse_args([])
    return [
        "--" + dest[len("model_") :].replace("_", "-")
        for dest, value in vars(defaults).items()
        if dest != "model_from_json" and getattr(args, dest, value) != value
    ]


def _table_of(cfg: BootConfig, args: argparse.Namespace) -> Table:
    """The iBFT of a boot model, with the NIC and ACPI header the options give."""
    return model_to_table(
        cfg,
        mac=args.mac,
        pci=QEMU_PCI if args.pci is None else args.pci,
        oem_id=args.oem_id,
        oem_table_id=args.oem_table_id,
        signature=args.signature,
    )


def _build(args: argparse.Namespace) -> int:
    check_output(args.output)
    if args.mac is not None:
        try:
            mac_to_bytes(args.mac.lower())
        except ValueError:
            raise UsageError(f"--mac {args.mac!r} is not of the form aa:bb:cc:dd:ee:ff") from None
    if args.model_from_json is not None:
        others = _model_options_given(args)
        if others:
            raise UsageError(f"--from-json given together with {', '.join(others)}", fix="leave one out")
        obj = load_json(args.model_from_json)
        if isinstance(obj, dict) and is_table_dict(obj.get("table")):
            obj = obj["table"]  # the whole output of 'ibft show --json'
        if is_table_dict(obj):
            table = table_from_dict(obj)
            if args.mac is not None or args.pci is not None:
                nics = tuple(
                    replace(
                        n,
                        mac=args.mac.lower() if args.mac is not None else n.mac,
                        pci_bdf=args.pci if args.pci is not None else n.pci_bdf,
                    )
                    for n in table.nics
                )
                table = replace(table, nics=nics)
        else:
            table = _table_of(from_dict(obj), args)
    else:
        cfg = model_from_args(args)
        if cfg.firmware or not cfg.targets:
            raise UsageError(
                "the model names no target (an iBFT needs one)",
                fix="give --target-name and --target-ip, or --from-json",
            )
        table = _table_of(cfg, args)
    data = build_table(table)
    try:
        check = parse_table(data).table
    except TableError as exc:  # a table that does not read back: the input was not representable
        raise RepresentError(f"the built table does not read back: {exc}") from None
    mode = 0o600 if check.secrets() else 0o644
    write_output(args.output, data, mode=mode)
    if args.json:
        print_json({"output": args.output, "length": len(data), "checksum": data[9], "mode": oct(mode)})
    return EXIT_OK
