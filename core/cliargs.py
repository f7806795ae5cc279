"""The options and pieces every subcommand shares, written once.

Each ``cli`` module builds its parser with these helpers, so an option that
several commands accept (``--json``, ``--show-secrets``, ``-o/--output``,
``--timeout``, the portal and CHAP options) is spelled, typed and checked
the same way everywhere.  Only the help text, which names what the command
does with it, differs.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeAlias

from iscsiboot.errors import EXIT_USAGE, UsageError
from iscsiboot.model import Chap
from iscsiboot.secret import Secret

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Container: TypeAlias = argparse.ArgumentParser | argparse._ArgumentGroup | argparse._MutuallyExclusiveGroup
Handler = Callable[[argparse.Namespace], int]


def add_command(
    sub: Subparsers,
    name: str,
    parent: argparse.ArgumentParser,
    summary: str,
    description: str | None = None,
    **kwargs: Any,
) -> argparse.ArgumentParser:
    """A subcommand that takes the common options; its description defaults to the summary as a sentence."""
    if description is None:
        description = summary[0].upper() + summary[1:] + "."
    parser: argparse.ArgumentParser = sub.add_parser(
        name, parents=[parent], help=summary, description=description, **kwargs
    )
    return parser


def help_handler(parser: argparse.ArgumentParser, stream: TextIO | None = None) -> Handler:
    """The handler of a command given without its action: the help, and exit code 2."""

    def handler(_args: argparse.Namespace) -> int:
        parser.print_help(stream if stream is not None else sys.stdout)
        return EXIT_USAGE

    return handler


def add_json(parser: Container, help: str) -> None:
    parser.add_argument("--json", action="store_true", help=help)


def add_show_secrets(parser: Container, help: str) -> None:
    parser.add_argument("--show-secrets", action="store_true", help=help)


def add_output(parser: Container, help: str, **kwargs: Any) -> None:
    kwargs.setdefault("metavar", "FILE")
    parser.add_argument("-o", "--output", help=help, **kwargs)


def add_timeout(parser: Container, default: float, help: str) -> None:
    parser.add_argument("--timeout", type=float, default=default, metavar="SECONDS", help=help)


def positive_timeout(args: argparse.Namespace) -> float:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return float(args.timeout)


def number_type(hint: str = "") -> Callable[[str], int]:
    """An argparse type for a decimal or ``0x`` hex number; ``hint`` ends its error message."""
    suffix = f" ({hint})" if hint else ""

    def number(text: str) -> int:
        try:
            return int(text, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number{suffix}") from None

    return number


# ---------------------------------------------------------------- a portal and its CHAP accounts


def add_login_options(parser: argparse.ArgumentParser) -> None:
    """The initiator name and CHAP options of a login; secrets come from files (not shown by ps)."""
    parser.add_argument("--initiator", metavar="IQN", help="the initiator name to log in as")
    parser.add_argument("--username", help="CHAP user name")
    parser.add_argument("--password-file", metavar="FILE", type=Path, help="file holding the CHAP secret")
    parser.add_argument("--reverse-username", help="the target's CHAP user name (mutual CHAP)")
    parser.add_argument(
        "--reverse-password-file", metavar="FILE", type=Path, help="file holding the target's secret"
    )


def read_secret(path: Path, what: str) -> Secret:
    """The secret in a file (its first line, without the newline); UsageError when unreadable or empty."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read the {what} file: {getattr(exc, 'strerror', None) or exc}", where=str(path)
        ) from None
    value = raw.rstrip("\r\n")
    if not value:
        raise UsageError(f"the {what} file is empty", where=str(path))
    return Secret(value)


def chap_from_args(args: argparse.Namespace) -> tuple[Chap | None, Chap | None]:
    """(one-way, mutual) CHAP from the options of :func:`add_login_options`."""
    chap = reverse = None
    if (args.username is None) != (args.password_file is None):
        raise UsageError("CHAP needs both --username and --password-file")
    if (args.reverse_username is None) != (args.reverse_password_file is None):
        raise UsageError("mutual CHAP needs both --reverse-username and --reverse-password-file")
    if args.username is not None:
        chap = Chap(args.username, read_secret(args.password_file, "password"))
    if args.reverse_username is not None:
        if chap is None:
            raise UsageError("mutual CHAP needs the one-way --username and --password-file too")
        reverse = Chap(args.reverse_username, read_secret(args.reverse_password_file, "reverse password"))
    return chap, reverse


# ---------------------------------------------------------------- the process


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # unwinds through the clean-up like Ctrl-C


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within: SIGTERM raises KeyboardInterrupt, so a killed command cleans up like one stopped by Ctrl-C."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
