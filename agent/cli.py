# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""``iscsiboot agent run``: the boot phases from a shell (hook mode, dry runs, tests)."""

from __future__ import annotations

import argparse
import json
import sys

from iscsiboot.agent import PHASES
from iscsiboot.agent.errors import PhaseError
from iscsiboot.cliargs import add_command, add_json, add_show_secrets
from iscsiboot.errors import ParseError
from iscsiboot.model import BootConfig


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:  # type: ignore[type-arg]
    agent = sub.add_parser("agent", parents=[parent], help="the boot-time agent (runs in the initramfs)")
    inner = agent.add_subparsers(dest="agent_command", metavar="ACTION", required=True)
    run = add_command(
        inner,
        "run",
        parent,
        "run the boot phases",
        "Run the boot phases from config to mount (hook mode) or a dry run of the plan.",
    )
    run.add_argument("--cmdline-file", metavar="FILE", help="read the kernel command line from FILE")
    run.add_argument(
        "--hook",
        metavar="RESULTFILE",
        help="stop after the label phase (or --last) and write KEY='value' lines for an init script",
    )
    run.add_argument("--last", choices=PHASES, help="the last phase to run (default: label with --hook)")
    add_json(run, "print the result as JSON")
    run.add_argument("--dry-run", action="store_true", help="read the configuration and print the plan only")
    add_show_secrets(run, "show CHAP passwords in the dry-run plan")
    run.add_argument("--sysfs", default="/sys", help=argparse.SUPPRESS)
    run.add_argument("--report", default=None, metavar="FILE", help="also write the JSON report to FILE")
    run.set_defaults(func=_run)


def _read(path: str | None) -> str:
    from iscsiboot.errors import UsageError

    if path is None:
        path = "/proc/cmdline"
    try:
        with open(path) as handle:
            return handle.read().strip()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", fix="give --cmdline-file FILE") from None


def _run(args: argparse.Namespace) -> int:
    from iscsiboot.agent.options import parse_options
    from iscsiboot.agent.report import Reporter, result_file
    from iscsiboot.agent.runner import Agent, Env

    text = _read(args.cmdline_file)
    options = parse_options(text)
    if args.dry_run:
        return _dry_run(text, args)
    console = sys.stderr if args.json else sys.stdout
    reporter = Reporter(console, kmsg=None, report_path=args.report, verbose=options.debugging)
    last = args.last or ("label" if args.hook else "handoff")
    agent = Agent(text, options, reporter, Env(sysfs=args.sysfs), last=last)
    result = agent.run()
    reporter.finish(result)
    if args.hook:
        from iscsiboot.output import write_atomic

        write_atomic(args.hook, reporter.mask(result_file(agent.hook_values(result))))
    if args.json:
        sys.stdout.write(reporter.mask(json.dumps(result.to_dict(), indent=2)) + "\n")
    return 0 if result.ok else 1


def _dry_run(text: str, args: argparse.Namespace) -> int:
    from iscsiboot.agent.phases.config import load_config
    from iscsiboot.agent.plan import locators, login_targets, mount_plan, needed_modules, net_plan
    from iscsiboot.model import target_to_dict, to_dict

    try:
        cfg, warnings = load_config(text, firmware=_no_firmware)
    except PhaseError as exc:
        if exc.cause != "cmdline":
            raise
        raise ParseError(exc.what, where="kernel command line", fix=exc.fix) from None
    first, rest = needed_modules(cfg)
    plan = net_plan(cfg.network)
    system, storage = locators(cfg)
    steps = mount_plan(
        str(system), "ext4", str(storage) if storage else None, "ext4" if storage else None, "/sysroot"
    )
    out = {
        "config": to_dict(cfg, show_secrets=args.show_secrets),
        "modules": {"network": list(first), "background": list(rest), "nic": "from PCI modaliases at boot"},
        "network": {
            "mode": plan.mode.value,
            "device": plan.device,
            "mac": plan.mac,
            "vlan": plan.vlan,
            "address": plan.address,
            "prefix": plan.prefix,
            "gateway": plan.gateway,
            "dns": list(plan.dns),
            "select": "first interface with carrier" if plan.pick_first_with_carrier else "named",
        },
        "login": [target_to_dict(t, show_secrets=args.show_secrets) for t in login_targets(cfg)]
        or ("iscsistart -b (the iBFT targets)" if cfg.firmware else []),
        "mounts": [f"{s.source} -> {s.target} ({s.options}{', loop' if s.loop else ''})" for s in steps],
        "warnings": warnings,
    }
    if args.json:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    else:
        for key, value in out.items():
            sys.stdout.write(f"{key}: {json.dumps(value)}\n")
    return 0


def _no_firmware() -> BootConfig:
    return BootConfig(firmware=True)
