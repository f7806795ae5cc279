"""The command line's words: the keys each form knows, how the kernel splits a line into
words, and how a message quotes a word (its secret fields as ``***``).

Pure and small: the boot agent imports it on its critical path.
"""

from __future__ import annotations

from iscsiboot.cmdline.rootpath import PREFIX as ROOT_PREFIX
from iscsiboot.cmdline.rootpath import redact_root_path
from iscsiboot.secret import MASK

#: OpenELEC spec keys (also Debian's separate tokens) -> field.
SPEC_KEYS: dict[str, str] = {
    "iscsi_initiator": "initiator",
    "iscsi_target_name": "name",
    "iscsi_target_ip": "address",
    "iscsi_target_port": "port",
    "iscsi_target_group": "group",
    "iscsi_username": "username",
    "iscsi_password": "password",
    "iscsi_in_username": "in_username",
    "iscsi_in_password": "in_password",
}
#: dracut's ``rd.iscsi.*`` parameters that carry a value -> field.
DRACUT_KEYS: dict[str, str] = {
    "rd.iscsi.initiator": "initiator",
    "rd.iscsi.target.name": "name",
    "rd.iscsi.target.ip": "address",
    "rd.iscsi.target.port": "port",
    "rd.iscsi.target.group": "group",
    "rd.iscsi.username": "username",
    "rd.iscsi.password": "password",
    "rd.iscsi.in.username": "in_username",
    "rd.iscsi.in.password": "in_password",
}
DRACUT_FLAGS = ("rd.iscsi.firmware", "rd.iscsi.ibft")
# dracut options that exist but do not change the model.
DRACUT_OTHER = ("rd.iscsi.waitnet", "rd.iscsi.testroute", "rd.iscsi.transport", "rd.iscsi.param")
DEBIAN_FLAGS = ("iscsi_auto", "iscsi_firmware")
SECRET_KEYS = ("iscsi_password", "iscsi_in_password")
PASSWORD_FIELDS = ("password", "in_password")
#: Keys whose values a message may quote: every known key but the passwords, and the
#: parameters of other parts of the line.  Any other key's value is shown as ***.
SHOWN_KEYS = frozenset(
    [k for k, f in (*SPEC_KEYS.items(), *DRACUT_KEYS.items()) if f not in PASSWORD_FIELDS]
    + [*DRACUT_FLAGS, *DEBIAN_FLAGS, "rd.iscsi.waitnet", "rd.iscsi.testroute", "rd.iscsi.transport"]
    + ["ip", "BOOTIF", "nameserver", "vlan", "boot", "disk", "root", "netroot", "LABEL", "UUID"]
)


def tokenize(text: str) -> tuple[str, ...]:
    """Split like the kernel: white space separates, double quotes group and go away.

    Everything after a lone ``--`` belongs to init and is dropped.
    """
    tokens: list[str] = []
    current: list[str] = []
    started = False
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            started = True
        elif ch.isspace() and not quoted:
            if started:
                tokens.append("".join(current))
            current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        tokens.append("".join(current))
    if "--" in tokens:
        tokens = tokens[: tokens.index("--")]
    return tuple(tokens)


def redact(text: str) -> str:
    """A token (or an item of an OpenELEC spec) as a message may quote it: secret fields as ``***``.

    ``key=value`` keeps its value only for the keys of :data:`SHOWN_KEYS`;
    a root path keeps all but its credentials; an OpenELEC spec is redacted
    item by item, and the items that follow a hidden value up to the next
    known key are dropped (they are the rest of a value that held a comma).
    A value that holds white space (a quoted token) is redacted piece by
    piece the same way: a quote may have swallowed other parameters.
    """
    key, sep, value = text.partition("=")
    if not sep:
        return text
    if key in ("root", "netroot") and value.startswith(ROOT_PREFIX):
        return f"{key}={_redact_pieces(redact_root_path(value))}"
    if key in ("boot", "disk") and value.startswith("ISCSI="):
        return f"{key}=ISCSI={_redact_spec(value[len('ISCSI=') :])}"
    if key in SHOWN_KEYS:
        return f"{key}={_redact_pieces(value)}"
    return f"{key}={MASK}"


def _redact_pieces(value: str) -> str:
    pieces = value.split()
    if len(pieces) < 2 and not value[:1].isspace():
        return value
    first = "" if value[:1].isspace() else pieces.pop(0)
    out = [first]
    hiding = False
    for piece in pieces:
        key, sep, _rest = piece.partition("=")
        if hiding and not (sep and key in SHOWN_KEYS):
            continue
        shown = redact(piece)
        hiding = shown != piece
        out.append(shown)
    return " ".join(out)


def is_locator(item: str) -> bool:
    return item.startswith(("LABEL=", "UUID=", "/"))


def _redact_spec(body: str) -> str:
    items = body.split(",")
    out: list[str] = []
    hiding = False
    for i, item in enumerate(items):
        key, sep, _value = item.partition("=")
        if hiding and not (sep and key in SPEC_KEYS) and not (i == len(items) - 1 and is_locator(item)):
            continue
        shown = _redact_pieces(item) if is_locator(item) else redact(item)
        hiding = shown != item
        out.append(shown)
    return ",".join(out)
