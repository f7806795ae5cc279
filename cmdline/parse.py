"""Read a whole kernel command line into the boot model.

One parser for every form in use, all into one :class:`~iscsiboot.model.BootConfig`:

* OpenELEC/LibreELEC: ``boot=ISCSI=<spec>`` and ``disk=ISCSI=<spec>``.  The
  spec is split at its last comma: the tail is the locator (``LABEL=``,
  ``UUID=``, ``/dev/...``), the head is ``auto`` (use the iBFT) or
  comma-separated ``key=value`` with the keys of :data:`SPEC_KEYS`.  Plain
  ``boot=LABEL=...`` and ``disk=LABEL=...`` (also ``UUID=``, devices) too.
* Debian initramfs-tools: bare ``iscsi_auto`` and the same ``iscsi_*=`` keys
  as separate tokens.
* RFC 4173 root paths in ``root=iscsi:...`` and ``netroot=iscsi:...``
  (see :mod:`iscsiboot.cmdline.rootpath`), with dracut's ``rd.iscsi.*``.
* The target from the DHCP server's root path: ``netroot=dhcp``,
  ``root=dhcp``, ``boot=ISCSI=dhcp,<locator>`` (see
  :mod:`iscsiboot.cmdline.dhcproot`); dracut's ``root=/dev/root`` names no locator.
* ``ip=`` (see :mod:`iscsiboot.cmdline.ipconf`), ``BOOTIF=`` (pxelinux, gives
  the MAC) and ``nameserver=``.

Choices:

* ``targets[0]`` is the boot= target, then the disk= target, then Debian's,
  then dracut's, then the root paths; identical targets are kept once (one
  login per distinct target).  ``disk=ISCSI=`` sets ``storage_on_iscsi``.
* Sources mix as a union: ``boot=ISCSI=auto`` with ``root=iscsi:...`` gives
  the firmware flag and the target.  Conflicting initiator names are an error.
* Strict where the shell init scripts were sloppy: unknown keys (with the
  nearest valid key), duplicates, missing keys, non-numeric or out-of-range
  numbers, a spec without a locator, reverse CHAP without one-way CHAP and
  empty values are each a one-line :class:`~iscsiboot.errors.ParseError`
  that names the token and says how to fix it.  A message quotes a token
  through :func:`redact`, which knows the fields: the value of a password
  key, of a key this parser does not know (a mistyped password key) and the
  credentials of a root path are shown as ``***``.  No message is searched
  for a secret's text.
* ``boot=`` names the system file system; ``root=LABEL=``/``UUID=``/device
  (Debian, dracut) names it only when there is no ``boot=``.
* The OpenELEC and Debian forms carry no LUN: the boot finds its file system
  by label on any LUN of the target.
* Tokens that have nothing to do with the boot are ignored.

Pure: no I/O and no heavy imports (``cmdline parse`` stays fast).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from iscsiboot.cmdline.dhcproot import dhcp_network, refuse_dracut_keys
from iscsiboot.cmdline.ipconf import parse_ip
from iscsiboot.cmdline.rootpath import PREFIX as ROOT_PREFIX
from iscsiboot.cmdline.rootpath import parse_root_path
from iscsiboot.cmdline.words import (
    DEBIAN_FLAGS,
    DRACUT_FLAGS,
    DRACUT_KEYS,
    DRACUT_OTHER,
    SECRET_KEYS,
    SHOWN_KEYS,
    SPEC_KEYS,
    is_locator,
    redact,
    tokenize,
)
from iscsiboot.errors import ParseError, UsageError
from iscsiboot.model import DEFAULT_GROUP, DEFAULT_PORT, BootConfig, Chap, Locator, Network, Target
from iscsiboot.secret import MASK, Secret

__all__ = [
    "DRACUT_KEYS",
    "SPEC_KEYS",
    "Parsed",
    "parse",
    "redact",
    "tokenize",
]

_LOCATOR_FIX = "end the spec with a comma and the locator, e.g. ,LABEL=System"
_BOOTIF = re.compile(r"^01-([0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5})$")


@dataclass(frozen=True)
class Parsed:
    """The model and the warnings (secrets masked) of one command line."""

    config: BootConfig
    warnings: tuple[str, ...] = ()


def _suggest(key: str, valid: list[str]) -> str:
    import difflib  # noqa: PLC0415  (only a bad key needs it; the boot agent parses on its critical path)

    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]}?"
    return "valid keys: " + ", ".join(valid)


def _comma_in_secret(previous: str | None, where: str) -> None:
    """Raise when an item follows a password: the password held a comma (never echo it)."""
    if previous in SECRET_KEYS:
        raise ParseError(
            f"the value of {previous} in {where} seems to contain a comma",
            where=f"{previous}={MASK}",
            fix="OpenELEC values cannot contain commas: choose another secret or use auto mode (iBFT)",
        )


def _items(body: str, where: str) -> dict[str, tuple[str, str]]:
    """OpenELEC ``key=value,key=value`` -> key -> (value, item), checked key by key."""
    out: dict[str, tuple[str, str]] = {}
    previous: str | None = None
    for item in body.split(","):
        key, sep, value = item.partition("=")
        if not sep or key not in SPEC_KEYS:
            _comma_in_secret(previous, where)
        if sep and key in SPEC_KEYS and key in SHOWN_KEYS and any(c.isspace() for c in value):
            raise ParseError(
                f"the value of {key} in {where} holds white space",
                where=redact(item),
                fix="close the double quote that opened before it, or remove the white space",
            )
        if not sep:
            raise ParseError(
                f"{item!r} in {where} is not key=value",
                where=redact(item) or where,
                fix="separate key=value items with commas (values cannot contain commas or spaces)",
            )
        _check_key(key, item, list(SPEC_KEYS))
        previous = key
        if key in out:
            raise ParseError(f"duplicate key {key} in {where}", where=redact(item), fix="give each key once")
        if not value:
            raise ParseError(f"empty value for {key} in {where}", where=redact(item), fix="give a value")
        out[key] = (value, item)
    return out


def _check_key(key: str, item: str, valid: list[str]) -> None:
    if key not in valid:
        raise ParseError(f"unknown key {key!r}", where=redact(item), fix=_suggest(key, valid))


def is_number(value: str) -> bool:
    """ASCII digits only, and few enough for int()."""
    return re.fullmatch(r"[0-9]{1,12}", value) is not None


def _number(value: str, item: str, key: str, low: int, high: int) -> int:
    if not is_number(value) or not low <= int(value) <= high:
        raise ParseError(
            f"{key} must be a number in {low}-{high}",
            where=redact(item),
            fix=f"write {key}=<number> or leave it out",
        )
    return int(value)


def _group(value: str, item: str, key: str, name: tuple[str, str] | None) -> int:
    if is_number(value):
        return _number(value, item, key, 0, 65535)
    if re.search(r"[A-Za-z]", value):
        if name is not None:
            fix = (
                f"the target IQN was split at the wrong place: write {name[0]}={name[1]}:{value} "
                f"and leave {key} out (default {DEFAULT_GROUP})"
            )
        else:
            fix = (
                f"this looks like the end of the target IQN split at the wrong place: put it back "
                f"after the colon of the target name and leave {key} out (default {DEFAULT_GROUP})"
            )
        raise ParseError(f"{key} must be a portal group number, not a name", where=redact(item), fix=fix)
    return _number(value, item, key, 0, 65535)


def _target(
    keys: dict[str, tuple[str, str]],
    fields: dict[str, str],
    where: str,
    *,
    require_initiator: bool,
) -> tuple[str | None, Target | None]:
    """Build (initiator, target) from checked keys; ``fields`` maps key -> field."""
    by_field = {fields[k]: (k, v, item) for k, (v, item) in keys.items()}
    name_of = {f: k for k, f in fields.items()}

    def get(field: str) -> str | None:
        entry = by_field.get(field)
        return entry[1] if entry else None

    initiator = get("initiator")
    if require_initiator and initiator is None:
        raise ParseError(
            f"missing required key {name_of['initiator']} in {where}",
            where=where,
            fix=f"add {name_of['initiator']}=<initiator IQN> (iscsistart needs it)",
        )
    target_fields = set(by_field) - {"initiator"}
    if not target_fields:
        return initiator, None
    for required in ("name", "address"):
        if required not in by_field:
            raise ParseError(
                f"missing required key {name_of[required]} in {where}",
                where=where,
                fix=f"add {name_of[required]}=<{'target IQN' if required == 'name' else 'address'}>",
            )
    port = DEFAULT_PORT
    if "port" in by_field:
        key, value, item = by_field["port"]
        port = _number(value, item, key, 1, 65535)
    group = DEFAULT_GROUP
    if "group" in by_field:
        key, value, item = by_field["group"]
        name_entry = by_field["name"]
        group = _group(value, item, key, (name_entry[0], name_entry[1]))
    chap = _chap(by_field, name_of, "username", "password", where)
    reverse = _chap(by_field, name_of, "in_username", "in_password", where)
    if reverse is not None and chap is None:
        given = " and ".join(by_field[f][0] for f in ("in_username", "in_password"))
        raise ParseError(
            f"{given} (reverse, mutual CHAP) given without one-way CHAP in {where}",
            where=where,
            fix=f"add {name_of['username']} and {name_of['password']}, or drop {given}",
        )
    address = by_field["address"][1]
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    try:
        target = Target(
            name=by_field["name"][1],
            address=address,
            port=port,
            group=group,
            chap=chap,
            reverse_chap=reverse,
        )
    except UsageError as exc:
        raise ParseError(exc.what, where=where, fix=exc.fix) from None
    return initiator, target


def _chap(
    by_field: dict[str, tuple[str, str, str]], name_of: dict[str, str], user: str, password: str, where: str
) -> Chap | None:
    if user not in by_field and password not in by_field:
        return None
    for have, missing in ((user, password), (password, user)):
        if missing not in by_field:
            raise ParseError(
                f"missing required key {name_of[missing]} in {where}",
                where=where,
                fix=f"{name_of[have]} needs {name_of[missing]}",
            )
    return Chap(by_field[user][1], Secret(by_field[password][1]))


def _locator(text: str, where: str) -> Locator:
    try:
        return Locator.parse(text)
    except UsageError as exc:
        raise ParseError(exc.what, where=where, fix=exc.fix) from None


class _Builder:
    def __init__(self) -> None:
        self.seen: dict[str, str] = {}
        self.firmware = False
        self.initiators: list[tuple[str, str]] = []
        self.spec_targets: list[Target] = []
        self.system: Locator | None = None
        self.storage: Locator | None = None
        self.storage_on_iscsi = False
        self.debian: dict[str, tuple[str, str]] = {}
        self.dracut: dict[str, tuple[str, str]] = {}
        self.root_targets: list[Target] = []
        self.root_locator: Locator | None = None
        self.dhcp_token: str | None = None  # the first token that takes the target from DHCP
        self.dhcp6 = False
        self.network: Network | None = None
        self.mac: str | None = None
        self.nameservers: list[str] = []
        self.warnings: list[str] = []

    # -- one token
    def once(self, param: str, token: str) -> None:
        if param in self.seen:
            raise ParseError(
                f"{param}= is given twice",
                where=redact(token),
                fix=f"keep one {param}= (the other was {redact(self.seen[param])})",
            )
        self.seen[param] = token

    def token(self, token: str) -> None:
        key, sep, value = token.partition("=")
        after_credentials = value.rpartition("@")[2] if key in ("root", "netroot") else value
        # a locator may hold white space (LABEL="My Disk"), but only where a locator stands
        blank = any(c.isspace() for c in after_credentials) and not (key == "root" and is_locator(value))
        if sep and blank and key in SHOWN_KEYS and key not in ("boot", "disk"):
            raise ParseError(
                f"the value of {key}= holds white space",
                where=redact(token),
                fix="close the double quote that opened before it, or remove the white space",
            )
        if not sep:
            if token in DEBIAN_FLAGS or token in DRACUT_FLAGS:
                self.firmware = True
            elif token in SPEC_KEYS or token in DRACUT_KEYS:
                raise ParseError(f"{token} needs a value", where=token, fix=f"write {token}=<value>")
            elif token.startswith("iscsi_"):
                _check_key(token, token, [*SPEC_KEYS, *DEBIAN_FLAGS])
            elif token.startswith("rd.iscsi."):
                self.check_dracut_key(token, token)
            return
        if key in ("boot", "disk"):
            self.once(key, token)
            self.boot_disk(key, value, token)
        elif key.startswith("iscsi_"):
            if key in DEBIAN_FLAGS:
                raise ParseError(f"{key} takes no value", where=redact(token), fix=f"write {key} alone")
            _check_key(key, token, list(SPEC_KEYS))
            self.keyed(self.debian, key, value, token)
        elif key.startswith("rd.iscsi."):
            if key in DRACUT_FLAGS:
                if value not in ("1", "0", "yes", "no", "on", "off"):
                    raise ParseError(f"{key} takes 1 or 0", where=redact(token), fix=f"write {key}=1")
                self.firmware = self.firmware or value in ("1", "yes", "on")
            elif key not in DRACUT_OTHER:
                self.check_dracut_key(key, token)
                self.keyed(self.dracut, key, value, token)
        elif key in ("root", "netroot"):
            self.root(key, value, token)
        elif key == "ip":
            self.once(key, token)
            self.network = parse_ip(value)
        elif key == "BOOTIF":
            self.once(key, token)
            match = _BOOTIF.match(value)
            if not match:
                raise ParseError(
                    "BOOTIF= is not of the form 01-aa-bb-cc-dd-ee-ff",
                    where=token,
                    fix="write 01-<MAC with ->",
                )
            self.mac = match.group(1).replace("-", ":").lower()
        elif key == "nameserver":
            stripped = value[1:-1] if value.startswith("[") and value.endswith("]") else value
            try:
                Network(dns=(stripped,))
            except UsageError as exc:
                raise ParseError(exc.what, where=token, fix="write nameserver=<IP address>") from None
            self.nameservers.append(stripped)
        elif key == "vlan":
            self.warnings.append(
                f"{redact(token)}: a VLAN on the command line is not part of the model; ignored"
            )

    def check_dracut_key(self, key: str, token: str) -> None:
        valid = [*DRACUT_KEYS, *DRACUT_FLAGS, *DRACUT_OTHER]
        _check_key(key, token, valid)

    def keyed(self, store: dict[str, tuple[str, str]], key: str, value: str, token: str) -> None:
        if key in store:
            raise ParseError(f"duplicate key {key}", where=redact(token), fix="give each key once")
        if not value:
            raise ParseError(f"empty value for {key}", where=redact(token), fix="give a value")
        store[key] = (value, token)

    def boot_disk(self, param: str, value: str, token: str) -> None:
        if not value:
            raise ParseError(f"empty value for {param}=", where=token, fix=f"write {param}=LABEL=<label>")
        if value.startswith("ISCSI="):
            initiator, target, locator = self.spec(param, value[len("ISCSI=") :], token)
            if initiator is not None:
                self.initiators.append((initiator, token))
            if target is not None:
                self.spec_targets.append(target)
            if param == "disk":
                self.storage_on_iscsi = True
        elif value.startswith(("LABEL=", "UUID=", "/")):
            locator = _locator(value, redact(token))
        elif re.match(r"^[A-Z]+=", value):
            self.warnings.append(f"{redact(token)}: not an iSCSI or local {param}=; ignored")
            return
        else:
            raise ParseError(
                f"{param}= value is not a locator",
                where=redact(token),
                fix="write LABEL=<label>, UUID=<uuid> or /dev/<device>",
            )
        if param == "boot":
            self.system = locator
        else:
            self.storage = locator

    def spec(self, param: str, body: str, token: str) -> tuple[str | None, Target | None, Locator]:
        where = f"{param}=ISCSI="
        head, comma, tail = body.rpartition(",")
        if not comma:
            if body in ("auto", "dhcp") or "=" not in body or body.startswith("iscsi_"):
                raise ParseError(
                    f"no locator after the last comma of {where}", where=redact(token), fix=_LOCATOR_FIX
                )
            head, tail = "", body
        if not tail.startswith(("LABEL=", "UUID=", "/")):
            if re.match(r"^[A-Za-z_.]+=", tail):
                # The tail is a key: check every key first (to name the real mistake), then say so.
                items = _items(body, where)
                _target(items, SPEC_KEYS, where, require_initiator=False)
                raise ParseError(
                    f"no locator after the last comma of {where}", where=redact(token), fix=_LOCATOR_FIX
                )
            _comma_in_secret(head.rpartition(",")[2].partition("=")[0], where)
            if head and head != "auto":
                _items(head, where)  # an unknown key before it (a mistyped password key) comes first
            raise ParseError(
                f"the last item of {where} is not a locator", where=redact(token), fix=_LOCATOR_FIX
            )
        locator = _locator(tail, redact(token))
        if head == "auto":
            self.firmware = True
            return None, None, locator
        if head == "dhcp":
            self.dhcp_token = self.dhcp_token or token
            return None, None, locator
        if not head:
            raise ParseError(
                f"empty iSCSI options in {where}",
                where=redact(token),
                fix=f"write {where}auto,<locator> or the iscsi_* keys before the locator",
            )
        items = _items(head, where)
        initiator, target = _target(items, SPEC_KEYS, where, require_initiator=True)
        if target is None:
            raise ParseError(
                f"missing required keys iscsi_target_name and iscsi_target_ip in {where}",
                where=redact(token),
                fix="add iscsi_target_name=<IQN>,iscsi_target_ip=<address>, or use auto",
            )
        return initiator, target, locator

    def root(self, param: str, value: str, token: str) -> None:
        if not value:
            raise ParseError(f"empty value for {param}=", where=token, fix=f"give {param}= a value")
        if value.startswith(ROOT_PREFIX):
            self.root_targets.append(parse_root_path(value, where=redact(token)))
            return
        if param == "root":
            self.once("root", token)
            if value.startswith(("LABEL=", "UUID=", "/")) and value != "/dev/root":
                self.root_locator = _locator(value, redact(token))
        if value in ("dhcp", "dhcp6"):
            self.dhcp_token = self.dhcp_token or token
            self.dhcp6 = self.dhcp6 or value == "dhcp6"

    # -- the whole line
    def finish(self) -> Parsed:
        targets = list(self.spec_targets)
        if self.debian:
            initiator, target = _target(self.debian, SPEC_KEYS, "the iscsi_* keys", require_initiator=False)
            if initiator is not None:
                self.initiators.append((initiator, self.debian["iscsi_initiator"][1]))
            if target is not None:
                targets.append(target)
        targets += self.dracut_targets()
        targets += self.root_targets
        seen: list[Target] = []
        for target in targets:
            if target not in seen:
                seen.append(target)
        initiator = None
        for value, token in self.initiators:
            if initiator is not None and value != initiator:
                raise ParseError(
                    f"conflicting initiator names {initiator!r} and {value!r}",
                    where=redact(token),
                    fix="give one initiator name",
                )
            initiator = value
        # boot= names the system; root= (Debian, dracut) only when there is no boot=
        system = self.system if self.system is not None else self.root_locator
        network = self.network or Network()
        if self.mac is not None or self.nameservers:
            try:
                network = dataclasses.replace(
                    network,
                    mac=self.mac if self.mac is not None else network.mac,
                    dns=(*network.dns, *self.nameservers),
                )
            except UsageError as exc:
                raise ParseError(exc.what, where="ip=", fix=exc.fix) from None
        if self.dhcp_token is not None:
            network = dhcp_network(network, redact(self.dhcp_token), dhcp6=self.dhcp6)
        try:
            cfg = BootConfig(
                firmware=self.firmware,
                initiator=initiator,
                targets=tuple(seen),
                network=network,
                system=system,
                storage=self.storage,
                storage_on_iscsi=self.storage_on_iscsi,
                target_from_dhcp=self.dhcp_token is not None,
            )
        except UsageError as exc:
            raise ParseError(exc.what, where=redact(self.dhcp_token or ""), fix=exc.fix) from None
        for target in cfg.targets:
            if not target.name.startswith(("iqn.", "eui.", "naa.")):
                self.warnings.append(
                    f"target name {target.name!r} does not start with iqn., eui. or naa. (is it split?)"
                )
        if cfg.secrets():
            self.warnings.append(
                "the command line carries CHAP secrets: every local user can read them in /proc/cmdline "
                "(prefer the iBFT: auto mode)"
            )
        return Parsed(cfg, tuple(self.warnings))

    def dracut_targets(self) -> list[Target]:
        keys = self.dracut
        if not keys:
            return []
        where = "the rd.iscsi.* keys"
        has_target = "rd.iscsi.target.name" in keys or "rd.iscsi.target.ip" in keys
        if self.dhcp_token is not None and not has_target:
            refuse_dracut_keys(keys)
        if has_target or not self.root_targets:
            initiator, target = _target(keys, DRACUT_KEYS, where, require_initiator=False)
            if initiator is not None:
                self.initiators.append((initiator, keys["rd.iscsi.initiator"][1]))
            if target is None:
                return []
            if "rd.iscsi.target.name" not in keys:
                raise ParseError(
                    f"missing required key rd.iscsi.target.name in {where}",
                    where=where,
                    fix="add rd.iscsi.target.name=<IQN> or a netroot=iscsi:... root path",
                )
            return [target]
        # Credentials and group for the root paths.
        if "rd.iscsi.initiator" in keys:
            self.initiators.append((keys["rd.iscsi.initiator"][0], keys["rd.iscsi.initiator"][1]))
        extra = {k: v for k, v in keys.items() if k != "rd.iscsi.initiator"}
        if not extra:
            return []
        name = self.root_targets[0]
        probe = dict(extra)
        probe["rd.iscsi.target.name"] = (name.name, "netroot")
        probe["rd.iscsi.target.ip"] = (name.address, "netroot")
        _none, template = _target(probe, DRACUT_KEYS, where, require_initiator=False)
        assert template is not None
        updated = []
        for target in self.root_targets:
            changes: dict[str, object] = {}
            if "rd.iscsi.target.group" in keys:
                changes["group"] = template.group
            if target.chap is None and template.chap is not None:
                changes["chap"] = template.chap
                changes["reverse_chap"] = template.reverse_chap
            updated.append(dataclasses.replace(target, **changes))  # type: ignore[arg-type]
        self.root_targets = updated
        return []


def _cut_root_path(token: str, following: tuple[str, ...]) -> bool:
    """Whether ``token`` may be a root path cut where white space stood in its credentials.

    A later token has an ``@``: the message about it then quotes neither,
    since either may hold a piece of the secret.
    """
    key, _sep, value = token.partition("=")
    return (
        key in ("root", "netroot")
        and value.startswith(ROOT_PREFIX)
        and any("@" in piece for piece in following)
    )


def parse(text: str) -> Parsed:
    """Parse a whole kernel command line (raise ParseError only; messages quote tokens redacted)."""
    builder = _Builder()
    tokens = tokenize(text)
    for index, token in enumerate(tokens):
        try:
            builder.token(token)
        except ParseError:
            if not _cut_root_path(token, tokens[index + 1 :]):
                raise
            key = token.partition("=")[0]
            raise ParseError(
                f"the {key}= root path does not parse, and a later token holds an '@'",
                where=f"{key}={ROOT_PREFIX}{MASK}",
                fix=f"write {key}=iscsi:[user:pass@]<server>:<proto>:<port>:<LUN>:<targetname> as one "
                "token: CHAP secrets cannot hold white space",
            ) from None
    return builder.finish()
