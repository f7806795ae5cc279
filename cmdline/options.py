"""Command-line options that describe a boot model, shared by every command that needs one.

``generate``, ``install``, ``ibft build`` and the QEMU harness call
:func:`add_model_options` on their parser and :func:`model_from_args` on the
parsed arguments::

    parser = argparse.ArgumentParser()
    add_model_options(parser)
    cfg = model_from_args(parser.parse_args())

Options (their ``dest`` names start with ``model_`` so they do not collide
with the caller's own options):

``--from-json FILE``
    the JSON of ``iscsiboot cmdline parse --json --show-secrets`` (``-`` reads
    stdin); excludes every other model option.
``--auto``
    firmware mode: the iBFT names the initiator, targets and network.
``--initiator IQN``, ``--target-name IQN``, ``--target-ip ADDR`` (IPv4, IPv6
or host name), ``--target-port N`` (3260), ``--target-group N`` (1),
``--lun LUN`` (decimal, ``0x`` hex, or RFC 4173 levels like ``4752-3a4f``)
    one explicit target; name and address go together.
``--username``, ``--password`` / ``--password-file``,
``--reverse-username``, ``--reverse-password`` / ``--reverse-password-file``
    CHAP; a password file holds the secret on its first line (safer than
    ``--password``, which every local user sees in the process list).
``--system LOCATOR`` (``LABEL=System``), ``--storage LOCATOR`` (``LABEL=Storage``),
``--storage-on-iscsi``
    the file systems; storage on the iSCSI target instead of a local disk.
``--ip VALUE``
    the value of ``ip=`` (default ``dhcp``; ``unset`` writes no ``ip=``).

Wrong combinations raise :class:`~iscsiboot.errors.UsageError` (exit 2).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from iscsiboot.cliargs import number_type, read_secret
from iscsiboot.cmdline.ipconf import parse_ip
from iscsiboot.errors import ParseError, UsageError
from iscsiboot.files import STDIN, TEXT_LIMIT, read_bytes, read_stdin
from iscsiboot.model import (
    DEFAULT_GROUP,
    DEFAULT_PORT,
    BootConfig,
    Chap,
    Locator,
    Network,
    Target,
    from_dict,
    lun_from_text,
)
from iscsiboot.secret import Secret

DEFAULT_SYSTEM = "LABEL=System"
DEFAULT_STORAGE = "LABEL=Storage"
DEFAULT_IP = "dhcp"

# option -> dest, for the "given together with" checks
_TARGET_OPTIONS = {
    "--target-name": "model_target_name",
    "--target-ip": "model_target_ip",
    "--target-port": "model_target_port",
    "--target-group": "model_target_group",
    "--lun": "model_lun",
    "--username": "model_username",
    "--password": "model_password",
    "--password-file": "model_password_file",
    "--reverse-username": "model_reverse_username",
    "--reverse-password": "model_reverse_password",
    "--reverse-password-file": "model_reverse_password_file",
}
_ALL_OPTIONS = {
    **_TARGET_OPTIONS,
    "--auto": "model_auto",
    "--initiator": "model_initiator",
    "--system": "model_system",
    "--storage": "model_storage",
    "--storage-on-iscsi": "model_storage_on_iscsi",
    "--ip": "model_ip",
}


_number = number_type()


def parse_lun(text: str) -> int:
    """``1``, ``0x10`` or RFC 4173 levels ``4752-3a4f`` -> the model's LUN int."""
    if "-" in text:
        try:
            return lun_from_text(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an RFC 4173 LUN (hex levels a-b-c-d)"
            ) from None
    value = _number(text)
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(
            f"LUN {value} is out of range 0-65535 (write levels as a-b for more)"
        )
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Add the boot model options (see the module docstring) to ``parser``."""
    g = parser.add_argument_group("boot model")
    g.add_argument(
        "--from-json",
        dest="model_from_json",
        metavar="FILE",
        help="the model as printed by 'cmdline parse --json --show-secrets' (- for stdin)",
    )
    g.add_argument(
        "--auto",
        dest="model_auto",
        action="store_true",
        default=None,
        help="firmware mode: the iBFT names initiator, target and network",
    )
    g.add_argument("--initiator", dest="model_initiator", metavar="IQN", help="initiator name")
    g.add_argument("--target-name", dest="model_target_name", metavar="IQN", help="target name")
    g.add_argument(
        "--target-ip", dest="model_target_ip", metavar="ADDR", help="target address: IPv4, IPv6 or host name"
    )
    g.add_argument(
        "--target-port",
        dest="model_target_port",
        metavar="N",
        type=_number,
        help=f"target TCP port (default {DEFAULT_PORT})",
    )
    g.add_argument(
        "--target-group",
        dest="model_target_group",
        metavar="N",
        type=_number,
        help=f"target portal group (default {DEFAULT_GROUP})",
    )
    g.add_argument(
        "--lun",
        dest="model_lun",
        metavar="LUN",
        type=parse_lun,
        help="LUN: decimal, 0x hex, or RFC 4173 levels (tgt serves its disk at LUN 1, LIO and istgt at 0)",
    )
    g.add_argument("--username", dest="model_username", metavar="NAME", help="CHAP user name")
    g.add_argument(
        "--password",
        dest="model_password",
        metavar="SECRET",
        help="CHAP secret (visible in the process list: prefer --password-file)",
    )
    g.add_argument(
        "--password-file",
        dest="model_password_file",
        metavar="FILE",
        help="file whose first line is the CHAP secret",
    )
    g.add_argument(
        "--reverse-username",
        dest="model_reverse_username",
        metavar="NAME",
        help="reverse (mutual) CHAP user name",
    )
    g.add_argument(
        "--reverse-password", dest="model_reverse_password", metavar="SECRET", help="reverse CHAP secret"
    )
    g.add_argument(
        "--reverse-password-file",
        dest="model_reverse_password_file",
        metavar="FILE",
        help="file whose first line is the reverse CHAP secret",
    )
    g.add_argument(
        "--system",
        dest="model_system",
        metavar="LOCATOR",
        help=f"system file system (default {DEFAULT_SYSTEM})",
    )
    g.add_argument(
        "--storage",
        dest="model_storage",
        metavar="LOCATOR",
        help=f"storage file system (default {DEFAULT_STORAGE})",
    )
    g.add_argument(
        "--storage-on-iscsi",
        dest="model_storage_on_iscsi",
        action="store_true",
        default=None,
        help="storage is on the iSCSI target too (disk=ISCSI=...)",
    )
    g.add_argument(
        "--ip",
        dest="model_ip",
        metavar="VALUE",
        help=f"the ip= value: dhcp, off, ibft or the kernel's long form (default {DEFAULT_IP}; "
        "'unset' for none)",
    )


def _given(args: argparse.Namespace, options: dict[str, str]) -> list[str]:
    return [opt for opt, dest in options.items() if getattr(args, dest, None) is not None]


def _secret(args: argparse.Namespace, prefix: str) -> Secret | None:
    option = f"--{prefix}password"
    value = getattr(args, f"model_{prefix.replace('-', '_')}password", None)
    path = getattr(args, f"model_{prefix.replace('-', '_')}password_file", None)
    if value is not None and path is not None:
        raise UsageError(f"{option} and {option}-file given together", fix="give one of them")
    if path is not None:
        return read_secret(path, f"{option}-file")
    if value is not None:
        if not value:
            raise UsageError(f"empty {option}", fix="give the secret")
        return Secret(value)
    return None


def _chap(args: argparse.Namespace, prefix: str) -> Chap | None:
    user = getattr(args, f"model_{prefix.replace('-', '_')}username", None)
    secret = _secret(args, prefix)
    if user is None and secret is None:
        return None
    if user is None:
        raise UsageError(f"--{prefix}password without --{prefix}username", fix=f"give --{prefix}username")
    if secret is None:
        raise UsageError(
            f"--{prefix}username without a secret", fix=f"give --{prefix}password-file or --{prefix}password"
        )
    return Chap(user, secret)


def load_json(path: str) -> Any:
    """The JSON of ``--from-json PATH`` (``-`` for stdin): UTF-8, at most TEXT_LIMIT bytes."""
    where = f"--from-json {path}"
    fix = "give the output of 'cmdline parse --json'"
    try:
        data = (
            read_stdin(TEXT_LIMIT, where=where)
            if path == STDIN
            else read_bytes(path, TEXT_LIMIT, where=where)
        )
    except OSError as exc:
        raise UsageError(f"cannot read it: {exc.strerror or exc}", where=where) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(
            f"not JSON text: byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8",
            where=where,
            fix=fix,
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"not JSON: {exc.msg} at line {exc.lineno}", where=where) from None
    except RecursionError:
        raise ParseError("nests arrays or objects too deeply for a model", where=where, fix=fix) from None
    except ValueError:  # an integer of more digits than int() converts from text
        raise ParseError("holds a number of thousands of digits", where=where, fix=fix) from None


def model_from_args(args: argparse.Namespace) -> BootConfig:
    """Build the :class:`BootConfig` that the options of :func:`add_model_options` describe."""
    if getattr(args, "model_from_json", None) is not None:
        others = _given(args, _ALL_OPTIONS)
        if others:
            raise UsageError(
                f"--from-json given together with {', '.join(others)}",
                fix="edit the JSON, or leave out --from-json",
            )
        return from_dict(load_json(args.model_from_json))
    auto = bool(getattr(args, "model_auto", None))
    target_opts = _given(args, _TARGET_OPTIONS)
    initiator = getattr(args, "model_initiator", None)
    if auto and target_opts:
        raise UsageError(
            f"--auto (the iBFT names the target) given together with {', '.join(target_opts)}",
            fix="drop --auto or the target options",
        )
    if auto and initiator is not None:
        raise UsageError("--auto given together with --initiator (the iBFT carries it)", fix="drop one")
    targets: tuple[Target, ...] = ()
    if target_opts:
        name = getattr(args, "model_target_name", None)
        address = getattr(args, "model_target_ip", None)
        if name is None or address is None:
            missing = "--target-name" if name is None else "--target-ip"
            raise UsageError(f"{', '.join(target_opts)} given without {missing}", fix=f"give {missing}")
        chap = _chap(args, "")
        reverse = _chap(args, "reverse-")
        if reverse is not None and chap is None:
            raise UsageError(
                "--reverse-username and a reverse secret (mutual CHAP) given without one-way CHAP",
                fix="give --username and --password-file (or --password) too, or drop the reverse ones",
            )
        port = getattr(args, "model_target_port", None)
        group = getattr(args, "model_target_group", None)
        address = address[1:-1] if address.startswith("[") and address.endswith("]") else address
        targets = (
            Target(
                name=name,
                address=address,
                port=DEFAULT_PORT if port is None else port,
                group=DEFAULT_GROUP if group is None else group,
                lun=getattr(args, "model_lun", None),
                chap=chap,
                reverse_chap=reverse,
            ),
        )
    ip = getattr(args, "model_ip", None) or DEFAULT_IP
    network = Network() if ip == "unset" else parse_ip(ip)
    system = getattr(args, "model_system", None) or DEFAULT_SYSTEM
    storage = getattr(args, "model_storage", None) or DEFAULT_STORAGE
    return BootConfig(
        firmware=auto,
        initiator=initiator,
        targets=targets,
        network=network,
        system=Locator.parse(system),
        storage=Locator.parse(storage),
        storage_on_iscsi=bool(getattr(args, "model_storage_on_iscsi", None)),
    )
