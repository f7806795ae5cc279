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
import math
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeAlias

from iscsiboot.errors import EXIT_USAGE, UsageError
from iscsiboot.files import SECRET_LIMIT, decode_text, read_bytes
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


MAX_TIMEOUT = 86400.0  # a day: longer than any wait here, short enough for every clock and socket call
_TIMEOUT_RANGE = f"a number of seconds above 0 and at most {MAX_TIMEOUT:g}"


def _timeout_ok(value: float) -> bool:
    return math.isfinite(value) and 0 < value <= MAX_TIMEOUT  # nan, inf and 1e308 are floats too


def _timeout(text: str) -> float:
    try:
        value = float(text) if text.isascii() else math.nan  # float() takes digits of every script
    except ValueError:
        value = math.nan
    if not _timeout_ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {_TIMEOUT_RANGE}")
    return value


DIGESTS = ("none", "crc32c")


def add_digest(parser: Container) -> None:
    """``--digest none|crc32c``: ask the target for CRC32C header and data digests."""
    parser.add_argument(
        "--digest", choices=DIGESTS, default="none",
        help="header and data digests on the connection (default none; crc32c: the target must agree)",
    )  # fmt: skip


def digests_from_args(args: argparse.Namespace) -> bool:
    return getattr(args, "digest", "none") == "crc32c"


def add_timeout(parser: Container, default: float, help: str) -> None:
    parser.add_argument("--timeout", type=_timeout, default=default, metavar="SECONDS", help=help)


def positive_timeout(args: argparse.Namespace) -> float:
    """The ``--timeout`` of :func:`add_timeout`, checked again for a namespace built by hand."""
    value = float(args.timeout)
    if not _timeout_ok(value):
        raise UsageError(f"--timeout {value!r} is not {_TIMEOUT_RANGE}")
    return value


def number_type(hint: str = "") -> Callable[[str], int]:
    """An argparse type for an ASCII decimal or ``0x`` hex number; ``hint`` ends its error message."""
    suffix = f" ({hint})" if hint else ""

    def number(text: str) -> int:
        # ASCII only: int() would also take other scripts' digits, "_" and blanks.
        if re.fullmatch(r"[0-9]{1,20}|0[xX][0-9A-Fa-f]{1,16}", text) is None:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number{suffix}")
        return int(text, 0) if text[:2].lower() == "0x" else int(text, 10)

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


def read_secret(path: str | os.PathLike[str], option: str) -> Secret:
    """The secret on the first line of a file (a regular file of at most SECRET_LIMIT bytes).

    ``option`` names the file in errors (``--password-file``).  UsageError
    when it is not such a file, cannot be read, is not text or is empty.
    """
    where = f"{option} {os.fspath(path)}"
    try:
        data = read_bytes(path, SECRET_LIMIT, where=where)
    except OSError as exc:
        raise UsageError(
            f"cannot read it: {exc.strerror or exc}", where=where, fix="give a readable file"
        ) from None
    text = decode_text(data, where, fix="put the secret on the first line")
    lines = text.splitlines()
    value = lines[0] if lines else ""
    if not value:
        raise UsageError("is empty", where=where, fix="put the secret on the first line")
    return Secret(value)


def chap_from_args(args: argparse.Namespace) -> tuple[Chap | None, Chap | None]:
    """(one-way, mutual) CHAP from the options of :func:`add_login_options`."""
    chap = reverse = None
    if (args.username is None) != (args.password_file is None):
        raise UsageError("CHAP needs both --username and --password-file")
    if (args.reverse_username is None) != (args.reverse_password_file is None):
        raise UsageError("mutual CHAP needs both --reverse-username and --reverse-password-file")
    if args.username is not None:
        chap = Chap(args.username, read_secret(args.password_file, "--password-file"))
    if args.reverse_username is not None:
        if chap is None:
            raise UsageError("mutual CHAP needs the one-way --username and --password-file too")
        reverse = Chap(
            args.reverse_username, read_secret(args.reverse_password_file, "--reverse-password-file")
        )
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
