"""The ``iscsiboot`` console script: one parser, subcommands imported lazily.

Each subcommand lives in its folder's ``cli`` module, which provides
``register(subparsers)``.  Only the module of the command being run is
imported, so ``iscsiboot cmdline parse`` does not pay for pyroute2 or QEMU
code.  Every :class:`~iscsiboot.errors.IscsibootError` becomes one line on
stderr and its exit code; ``--debug`` shows the traceback instead.  A value
that cannot be encoded (bytes that were not UTF-8, given on the command
line) is one line too, with exit code 2.  Every error line is
:func:`~iscsiboot.output.printable`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Callable, Sequence

from iscsiboot import __version__
from iscsiboot.errors import EXIT_USAGE, EnvironmentProblem, IscsibootError
from iscsiboot.output import PROG, printable

# command name -> (module that registers it, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "cmdline": ("iscsiboot.cmdline.cli", "read kernel command lines into the boot model"),
    "generate": ("iscsiboot.cmdline.cli", "write command lines, extlinux.conf, iPXE, dnsmasq, root-path"),
    "ibft": ("iscsiboot.ibft.cli", "read, explain and build the iSCSI Boot Firmware Table"),
    "install": ("iscsiboot.disk.cli", "partition and fill a LUN or image with System and Storage"),
    "initramfs": ("iscsiboot.initramfs.cli", "build the initramfs or overlay that carries the agent"),
    "agent": ("iscsiboot.agent.cli", "the boot-time agent (runs in the initramfs)"),
    "qemu": ("iscsiboot.qemu.cli", "boot scenarios in QEMU through iPXE sanboot and tgtd"),
    "doctor": ("iscsiboot.doctor.cli", "check every link of an iSCSI boot from any Linux machine"),
    "discover": ("iscsiboot.doctor.cli", "list the targets of a portal (SendTargets), without root"),
}

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{PROG}: error: {printable(message)} (see '{self.prog} --help')\n")


def common_options() -> argparse.ArgumentParser:
    """Options every subcommand accepts (a parent parser)."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show a traceback on errors"
    )
    return parent


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="The client side of diskless iSCSI network boot.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help="show a traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    if command is not None:
        try:
            module = importlib.import_module(COMMANDS[command][0])
        except ModuleNotFoundError as exc:
            if exc.name != COMMANDS[command][0]:
                raise
            raise EnvironmentProblem(f"the {command!r} command is not part of this build") from None
        module.register(sub, common_options())
    for name, (_module, summary) in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def _command_of(argv: Sequence[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        command = _command_of(args_list)
        parser = build_parser(command)
        args = parser.parse_args(args_list)
        handler: Handler | None = getattr(args, "func", None)
        if handler is None:
            if command is None and args.command is None:
                parser.print_help(sys.stderr)
                return EXIT_USAGE
            parser.parse_args([*args_list, "--help"])
            return EXIT_USAGE
        return handler(args)
    except IscsibootError as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{PROG}: error: {printable(str(exc))}\n")
        return exc.exit_code
    except UnicodeEncodeError as exc:  # a value from undecodable bytes, bound for a file or the terminal
        if debug:
            traceback.print_exc()
        bad = printable(exc.object[exc.start : exc.end])  # only the characters: the text may hold a secret
        sys.stderr.write(
            f"{PROG}: error: a value holds {bad}, which cannot be written as {exc.encoding} "
            "(give names and values as UTF-8 text)\n"
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
