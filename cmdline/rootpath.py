"""RFC 4173 iSCSI root paths (DHCP option 17, ``root=iscsi:``, ``netroot=iscsi:``).

``iscsi:[<user>:<pass>[:<ruser>:<rpass>]@]<server>:<proto>:<port>:<LUN>:<targetname>``

* ``<server>``: IPv4 address, host name, or IPv6 address in brackets (an
  IPv6 address without brackets is refused, not read as a host and a port).
* ``<proto>``: empty or ``6`` (TCP); ``<port>``: empty means 3260.
* ``<LUN>``: hexadecimal as RFC 4173 says, up to four ``-``-separated levels;
  empty means "not given" (``Target.lun`` None).
* ``<targetname>``: everything after the fourth colon (IQNs have colons).
* The credentials prefix is dracut's extension, split off as dracut does:
  what stands before the first ``@`` is credentials when four colons or more
  follow that ``@``.  An empty credentials part (``iscsi:@<server>:...``) is
  dracut's way to write a target name that holds ``@``, which RFC 3722 does
  not allow but some targets use; :func:`format_root_path` writes that form
  for such a name.  Elsewhere than in the target name an ``@`` is refused.
  Messages quote a root path through :func:`redact_root_path`: its
  credentials are never shown.

Pure functions; the portal group is not part of the root path (dracut takes
it from ``rd.iscsi.target.group``).
"""

from __future__ import annotations

import ipaddress
import re

from iscsiboot.cmdline.chap import check_credential
from iscsiboot.errors import ParseError, RepresentError, UsageError
from iscsiboot.model import DEFAULT_PORT, Chap, Target, lun_from_text, lun_to_text
from iscsiboot.secret import MASK, Secret

PREFIX = "iscsi:"
_FORM = "iscsi:[user:pass@]<server>:<proto>:<port>:<LUN>:<targetname>"
# Characters that no field of a root path (or a kernel token) can carry.
_UNSAFE = frozenset('"@') | frozenset(" \t\n\r\v\f")


def redact_root_path(text: str) -> str:
    """``text`` for a message: whatever stands before the last ``@`` is credentials, shown masked.

    The user names of a well-formed ``user:pass`` or ``user:pass:ruser:rpass`` prefix stay;
    any other prefix is masked whole.  The empty-authentication form
    (``iscsi:@...``) whose other ``@`` stand in the target name is shown
    whole.  The secrets' text is never searched for.
    """
    if not text.startswith(PREFIX) or "@" not in text:
        return text
    body = text[len(PREFIX) :]
    if body.startswith("@") and _at_only_in_name(body[1:]):
        return text
    auth, _at, rest = text[len(PREFIX) :].rpartition("@")
    parts = auth.split(":")
    if len(parts) in (2, 4) and all(parts) and "@" not in auth:
        shown = ":".join(MASK if i % 2 else part for i, part in enumerate(parts))
    else:
        shown = MASK
    return f"{PREFIX}{shown}@{rest}"


def split_credentials(body: str) -> tuple[str | None, str]:
    """(credentials, the rest) of a root path after ``iscsi:``, split as dracut splits them.

    What stands before the first ``@`` is credentials when four colons or more
    follow it; an empty credentials part gives ``""``.  Else there are none
    (``None``) and any ``@`` belongs to the target name.
    """
    auth, at, after = body.partition("@")
    if at and after.count(":") >= 4:
        return auth, after
    return None, body


def name_start(rest: str) -> int | None:
    """Where the target name starts in ``rest`` (a root path after its credentials): after the
    fourth colon outside ``[...]``; None when there are fewer."""
    depth = 0
    colons = 0
    for index, char in enumerate(rest):
        if char == "[":
            depth += 1
        elif char == "]":
            depth = max(0, depth - 1)
        elif char == ":" and depth == 0:
            colons += 1
            if colons == 4:
                return index + 1
    return None


def _at_only_in_name(rest: str) -> bool:
    """Whether every ``@`` of ``rest`` (after the credentials) stands in the target name."""
    start = name_start(rest)
    return start is not None and "@" not in rest[:start]


def _unbracketed_ipv6(text: str) -> bool:
    """Whether ``text`` starts with an IPv6 address (two colons or more) followed by ':' or its end."""
    for at in [*[i for i, c in enumerate(text) if c == ":"][1:], len(text)]:
        try:
            ipaddress.IPv6Address(text[:at])
        except ValueError:
            continue
        return True
    return False


def parse_root_path(text: str, *, where: str | None = None, group: int = 1) -> Target:
    """Parse an RFC 4173 root path into a :class:`Target` (raise ParseError; credentials never shown)."""
    where = where or redact_root_path(text)
    if not text.startswith(PREFIX):
        raise ParseError("a root path starts with 'iscsi:'", where=where, fix=f"write {_FORM}")
    chap: Chap | None = None
    reverse: Chap | None = None
    auth, rest = split_credentials(text[len(PREFIX) :])
    if auth:
        parts = auth.split(":")
        if len(parts) not in (2, 4) or not all(parts):
            raise ParseError(
                "the credentials before '@' must be user:password or user:password:ruser:rpassword",
                where=where,
                fix="no field may be empty or contain ':'; a target name with '@' needs dracut's "
                "empty credentials part: iscsi:@<server>:<proto>:<port>:<LUN>:<targetname>",
            )
        chap = Chap(parts[0], Secret(parts[1]))
        if len(parts) == 4:
            reverse = Chap(parts[2], Secret(parts[3]))
    if name_start(rest) is None and ("@" in rest or rest.count("[") <= rest.count("]")):
        raise ParseError(
            f"too few fields ({rest.count(':') + 1} of 5)",
            where=where,
            fix=f"write {_FORM}; empty fields take defaults",
        )
    if "@" in rest and not _at_only_in_name(rest):
        raise ParseError(
            "an '@' stands before the target name: a root path has one '@', after the credentials",
            where=where,
            fix="credentials cannot contain '@': choose another secret or use iSCSI firmware (iBFT)",
        )
    try:
        return _fields(rest, where, group, chap, reverse)
    except ParseError as exc:
        if "@" not in rest:
            raise
        # an '@' after the credentials may be part of a secret: no field of such a root path is quoted
        raise ParseError(
            "the root path does not parse (with an '@' after the credentials, its fields are not shown)",
            where=where,
            fix=exc.fix or f"write {_FORM}",
        ) from None


def _fields(rest: str, where: str, group: int, chap: Chap | None, reverse: Chap | None) -> Target:
    """The target of the root path's fields after its credentials (raise ParseError)."""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise ParseError("unclosed '[' around the IPv6 address", where=where, fix=f"write {_FORM}")
        server, rest = rest[1:end], rest[end + 1 :]
        if not rest.startswith(":"):
            raise ParseError("a ':' must follow the bracketed address", where=where, fix=f"write {_FORM}")
        rest = rest[1:]
    else:
        unbracketed = rest
        server, sep, rest = rest.partition(":")
        if not sep:
            raise ParseError("too few fields", where=where, fix=f"write {_FORM}")
        if _unbracketed_ipv6(unbracketed) and not _plain_fields(rest):
            raise ParseError(
                "an IPv6 address in a root path must be in brackets",
                where=where,
                fix="write iscsi:[<IPv6 address>]:<proto>:<port>:<LUN>:<targetname> (RFC 4173)",
            )
    fields = rest.split(":", 3)
    if len(fields) < 4:
        raise ParseError(
            f"too few fields ({len(fields) + 1} of 5)",
            where=where,
            fix=f"write {_FORM}; empty fields take defaults",
        )
    proto, port_text, lun_text, name = fields
    if not server:
        raise ParseError("the server field is empty", where=where, fix=f"write {_FORM}")
    if proto not in ("", "6"):
        raise ParseError(f"protocol {proto!r} is not TCP", where=where, fix="leave it empty or write 6")
    port = DEFAULT_PORT
    if port_text:
        if re.fullmatch(r"[0-9]{1,5}", port_text) is None or not 1 <= int(port_text) <= 65535:
            raise ParseError(f"port {port_text!r} is not a number in 1-65535", where=where)
        port = int(port_text)
    lun: int | None = None
    if lun_text:
        try:
            lun = lun_from_text(lun_text)
        except ValueError:
            raise ParseError(
                f"LUN {lun_text!r} is not hexadecimal",
                where=where,
                fix="RFC 4173 LUNs are hex, up to four levels joined by '-', e.g. 1 or 4752-3a4f",
            ) from None
    if not name:
        raise ParseError("the target name is empty", where=where, fix="end the root path with the target IQN")
    try:
        return Target(
            name=name, address=server, port=port, group=group, lun=lun, chap=chap, reverse_chap=reverse
        )
    except UsageError as exc:
        raise ParseError(exc.what, where=where, fix=exc.fix) from None


def _plain_fields(rest: str) -> bool:
    """Whether the fields after an unbracketed server read well: TCP, a port, a LUN and an iSCSI name.

    A host name made of hex letters (``cafe``) followed by ``::3260`` also
    reads as an IPv6 address; such a root path stays valid when its fields do.
    """
    fields = rest.split(":", 3)
    return (
        len(fields) == 4
        and fields[0] in ("", "6")
        and re.fullmatch(r"[0-9]{0,5}", fields[1]) is not None
        and re.fullmatch(r"[0-9A-Fa-f-]*", fields[2]) is not None
        and fields[3].lower().startswith(("iqn.", "eui.", "naa."))
    )


def _field(value: str, what: str) -> str:
    check_credential(value, what)
    if not value or ":" in value or any(c in _UNSAFE for c in value):
        raise RepresentError(
            f"the {what} cannot go in a root path (empty, or contains ':', '@', a quote or white space)",
            fix="use iSCSI firmware (iBFT, auto mode) or choose another value",
        )
    return value


def format_root_path(target: Target, *, credentials: bool = False, empty_auth: bool = True) -> str:
    """The RFC 4173 string of ``target``; with ``credentials`` in dracut's ``user:pass@`` form.

    The port is written only when it is not 3260 and the LUN only when given
    (in hex).  The portal group is not part of the string.  A target name
    with ``@`` is written after dracut's empty credentials part
    (``iscsi:@<server>:...``) unless ``empty_auth`` is False (iPXE does not
    know that form: it reads the plain one, and its credentials come apart).
    """
    if any(c in _UNSAFE - {"@"} for c in target.name):
        raise RepresentError(
            f"target name {target.name!r} has a character a root path cannot carry",
            fix="iSCSI names use letters, digits, '.', '-' and ':'",
        )
    host = f"[{target.address}]" if ":" in target.address else target.address
    port = "" if target.port == DEFAULT_PORT else str(target.port)
    lun = "" if target.lun is None else lun_to_text(target.lun)
    auth = ""
    if credentials and target.chap is not None:
        parts = [
            _field(target.chap.username, "CHAP user name"),
            _field(target.chap.password.reveal(), "CHAP secret"),
        ]
        if target.reverse_chap is not None:
            parts += [
                _field(target.reverse_chap.username, "reverse CHAP user name"),
                _field(target.reverse_chap.password.reveal(), "reverse CHAP secret"),
            ]
        auth = ":".join(parts) + "@"
    elif "@" in target.name and empty_auth:
        auth = "@"
    return f"{PREFIX}{auth}{host}::{port}:{lun}:{target.name}"
