"""The one model of "what to boot", shared by cmdline/, ibft/ and agent/.

Everything here is pure: frozen dataclasses, validation, and the JSON form
(``to_dict``/``from_dict``) that ``iscsiboot cmdline parse --json`` prints and
``--from-json`` reads back.

LUN numbers: ``Target.lun`` is an int that holds the 8-byte SAM LUN as four
16-bit levels, the first level in the low 16 bits.  So LUN 1 (what tgt, iPXE
and RFC 4173's ``:1:`` mean) is ``1``, and the RFC 4173 text ``4752-3A4F`` is
``0x3A4F_4752``.  :func:`lun_to_sam` and :func:`lun_from_sam` convert to and
from the 8 bytes on the wire and in the iBFT.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from iscsiboot.errors import ParseError, UsageError
from iscsiboot.secret import MASK, Secret

DEFAULT_PORT = 3260
DEFAULT_GROUP = 1
LUN_MAX = (1 << 64) - 1
#: Longest iSCSI name (RFC 3720 section 3.2.6.1), in bytes of its UTF-8 encoding.
ISCSI_NAME_MAX = 223
#: The characters of an iSCSI name that every consumer reads the same way: the ASCII part of
#: RFC 3722's profile (letters, digits, '-', '.', ':'; upper case as given).
ISCSI_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.:")

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
_SCOPE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _plain_text(value: str, what: str) -> None:
    """Refuse a NUL character (C strings end there, so no consumer reads what follows) and
    bytes that were not UTF-8 (kept by the decoder as lone surrogates: no file can hold them)."""
    if "\0" in value:
        raise UsageError(f"the {what} has a NUL character", fix="remove it")
    bad = next((c for c in value if "\ud800" <= c <= "\udfff"), None)
    if bad is not None:
        shown = f"byte 0x{ord(bad) - 0xDC00:02x}" if ord(bad) >= 0xDC80 else f"U+{ord(bad):04X}"
        raise UsageError(f"the {what} is not UTF-8 text ({shown})", fix="write it in UTF-8")


def _utf8_size(text: str) -> int:
    """Bytes of ``text`` in UTF-8 (bytes a decoder kept as lone surrogates count as one)."""
    try:
        return len(text.encode("utf-8", "surrogateescape"))
    except UnicodeEncodeError:
        return len(text.encode("utf-8", "surrogatepass"))


def iscsi_name_problem(name: str, *, at_sign: bool = False) -> str | None:
    """Why ``name`` is not an iSCSI name every generated format carries, or None.

    Length: at most :data:`ISCSI_NAME_MAX` bytes.  Characters: :data:`ISCSI_NAME_CHARS`,
    and ``@`` too with ``at_sign``: RFC 3722 refuses it, but dracut reads a target
    name with ``@`` from its empty-authentication root path (``iscsi:@<server>:...``).
    The model itself checks only the length (and NUL); the generators that write a
    name into another program's syntax check the characters too.
    """
    size = _utf8_size(name)
    if size > ISCSI_NAME_MAX:
        return f"has {size} bytes; iSCSI names have at most {ISCSI_NAME_MAX}"
    allowed = ISCSI_NAME_CHARS | {"@"} if at_sign else ISCSI_NAME_CHARS
    bad = sorted({c for c in name if c not in allowed})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:3])
        return f"has characters outside RFC 3722's letters, digits, '-', '.' and ':' ({shown})"
    return None


def _iscsi_name(name: str, what: str) -> None:
    _plain_text(name, what)
    size = _utf8_size(name)
    if size > ISCSI_NAME_MAX:
        raise UsageError(
            f"the {what} has {size} bytes; iSCSI names have at most {ISCSI_NAME_MAX} (RFC 3720)",
            fix="use a shorter name",
        )


class LocatorKind(enum.Enum):
    LABEL = "LABEL"
    UUID = "UUID"
    PATH = "PATH"


@dataclass(frozen=True)
class Locator:
    """Where a file system is: ``LABEL=System``, ``UUID=...`` or ``/dev/sda1``."""

    kind: LocatorKind
    value: str

    def __post_init__(self) -> None:
        if not self.value:
            raise UsageError("empty locator value", fix="write LABEL=<label>, UUID=<uuid> or /dev/<device>")
        _plain_text(self.value, "locator")
        if self.kind is LocatorKind.PATH and not self.value.startswith("/"):
            raise UsageError(f"device path {self.value!r} is not absolute", fix="write /dev/<device>")

    @classmethod
    def parse(cls, text: str) -> Locator:
        if text.startswith("LABEL="):
            return cls(LocatorKind.LABEL, text[6:])
        if text.startswith("UUID="):
            return cls(LocatorKind.UUID, text[5:])
        if text.startswith("/"):
            return cls(LocatorKind.PATH, text)
        raise ParseError(
            f"{text!r} is not a locator",
            fix="write LABEL=<label>, UUID=<uuid> or /dev/<device>",
        )

    def __str__(self) -> str:
        if self.kind is LocatorKind.PATH:
            return self.value
        return f"{self.kind.value}={self.value}"


@dataclass(frozen=True)
class Chap:
    """CHAP credentials: the name sent as CHAP_N and its secret."""

    username: str
    password: Secret

    def __post_init__(self) -> None:
        if not self.username:
            raise UsageError("empty CHAP user name")
        if not isinstance(self.password, Secret):
            raise TypeError("Chap.password must be a Secret")
        if not self.password.reveal():
            raise UsageError(f"empty CHAP password for user {self.username!r}")
        _plain_text(self.username, "CHAP user name")
        _plain_text(self.password.reveal(), "CHAP secret")


def _scope(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, text: str) -> None:
    """Refuse an IPv6 zone (``%eth0``) that is not an interface name or number."""
    scope = ip.scope_id if isinstance(ip, ipaddress.IPv6Address) else None
    if scope is not None and not _SCOPE.fullmatch(scope):
        raise UsageError(
            f"the zone of {text!r} is not an interface name or number", fix="write ADDRESS%eth0 or ADDRESS%2"
        )


def address_kind(address: str) -> str:
    """``"ipv4"``, ``"ipv6"`` or ``"hostname"``; raise UsageError for anything else."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        if _HOSTNAME.fullmatch(address) and not re.fullmatch(r"[0-9.]+", address):
            return "hostname"
        raise UsageError(f"{address!r} is not an IPv4 or IPv6 address or a host name") from None
    _scope(ip, address)
    return "ipv4" if ip.version == 4 else "ipv6"


@dataclass(frozen=True)
class Target:
    """One iSCSI target: its name, portal, portal group, LUN and credentials."""

    name: str
    address: str
    port: int = DEFAULT_PORT
    group: int = DEFAULT_GROUP
    lun: int | None = None
    chap: Chap | None = None
    reverse_chap: Chap | None = None

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise UsageError(f"target name {self.name!r} is empty or has white space")
        _iscsi_name(self.name, "target name")
        address_kind(self.address)
        if not 1 <= self.port <= 65535:
            raise UsageError(f"port {self.port} is out of range", fix="use 1-65535 (default 3260)")
        if not 0 <= self.group <= 65535:
            raise UsageError(f"portal group {self.group} is out of range", fix="use 0-65535 (default 1)")
        if self.lun is not None and not 0 <= self.lun <= LUN_MAX:
            raise UsageError(f"LUN {self.lun} is out of range")
        if self.reverse_chap is not None and self.chap is None:
            raise UsageError(
                "reverse_chap (mutual CHAP) given without chap (one-way CHAP)",
                fix="give chap (the one-way user name and password) too, or drop reverse_chap",
            )

    @property
    def portal(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(c.password for c in (self.chap, self.reverse_chap) if c is not None)


class NetMode(enum.Enum):
    UNSET = "unset"  # the command line says nothing about the network
    DHCP = "dhcp"  # DHCP for IPv4
    DHCP6 = "dhcp6"  # DHCP for IPv6 (dracut's ip=dhcp6)
    AUTO6 = "auto6"  # IPv6 stateless autoconfiguration (dracut's ip=auto6)
    STATIC = "static"
    OFF = "off"
    FIRMWARE = "firmware"  # take the network settings from the iBFT


@dataclass(frozen=True)
class Network:
    """How the boot brings up its network interface."""

    mode: NetMode = NetMode.UNSET
    device: str | None = None
    mac: str | None = None
    address: str | None = None
    prefix: int | None = None
    gateway: str | None = None
    server: str | None = None
    hostname: str | None = None
    dns: tuple[str, ...] = ()
    vlan: int | None = None

    def __post_init__(self) -> None:
        for text, what in ((self.device, "network device"), (self.hostname, "host name")):
            if text is not None:
                _plain_text(text, what)
        if self.mac is not None and not _MAC.fullmatch(self.mac):
            raise UsageError(f"MAC address {self.mac!r} is not of the form aa:bb:cc:dd:ee:ff (lower case)")
        for name in ("address", "gateway", "server"):
            value = getattr(self, name)
            if value is not None:
                _ip(value, name)
        for value in self.dns:
            _ip(value, "dns")
        if self.prefix is not None:
            limit = 128 if self.address is not None and ":" in self.address else 32
            if not 0 <= self.prefix <= limit:
                raise UsageError(f"prefix length {self.prefix} is out of range (0-{limit})")
        if self.vlan is not None and not 1 <= self.vlan <= 4094:
            raise UsageError(f"VLAN {self.vlan} is out of range", fix="use 1-4094")
        if self.mode is NetMode.STATIC and (self.address is None or self.prefix is None):
            raise UsageError("a static network needs an address and a prefix length")


def _ip(value: str, what: str) -> None:
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise UsageError(f"{what} {value!r} is not an IP address") from None
    _scope(ip, value)


@dataclass(frozen=True)
class BootConfig:
    """What to boot.

    ``firmware``: targets, initiator and network come from the iBFT (OpenELEC's
    ``ISCSI=auto``, Debian's ``iscsi_auto``, dracut's ``rd.iscsi.firmware``).
    ``target_from_dhcp``: the boot target is the RFC 4173 root path that the
    DHCP server sends in option 17 (dracut's ``netroot=dhcp`` and ``root=dhcp``,
    ``boot=ISCSI=dhcp``); ``targets`` then holds none.
    ``targets[0]`` is the target of ``boot=``; ``storage_on_iscsi`` says that
    ``disk=`` used the ``ISCSI=`` form, naming ``targets[1]`` when there is a
    second target and the boot target otherwise.
    """

    firmware: bool = False
    initiator: str | None = None
    targets: tuple[Target, ...] = ()
    network: Network = field(default_factory=Network)
    system: Locator | None = None
    storage: Locator | None = None
    storage_on_iscsi: bool = False
    target_from_dhcp: bool = False

    def __post_init__(self) -> None:
        if self.initiator is not None:
            _iscsi_name(self.initiator, "initiator name")
        if self.target_from_dhcp and (self.targets or self.firmware):
            raise UsageError(
                "the target comes from the DHCP root path, and the settings name "
                + ("targets too" if self.targets else "the iBFT too"),
                fix="give one source of the target: the DHCP root path, the iBFT or explicit targets",
            )

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(s for t in self.targets for s in t.secrets())


# ---------------------------------------------------------------- LUN helpers


def lun_to_sam(lun: int) -> bytes:
    """The 8 SAM bytes of ``lun`` (first level first, each level big-endian)."""
    return b"".join(((lun >> (16 * i)) & 0xFFFF).to_bytes(2, "big") for i in range(4))


def lun_from_sam(data: bytes) -> int:
    if len(data) != 8:
        raise ValueError("a SAM LUN has 8 bytes")
    return sum(int.from_bytes(data[2 * i : 2 * i + 2], "big") << (16 * i) for i in range(4))


def lun_to_text(lun: int) -> str:
    """RFC 4173 form: ``1`` for LUN 1, ``4752-3a4f`` for two levels."""
    levels = [(lun >> (16 * i)) & 0xFFFF for i in range(4)]
    while len(levels) > 1 and levels[-1] == 0:
        levels.pop()
    return "-".join(f"{level:x}" for level in levels)


def lun_from_text(text: str) -> int:
    """Parse the RFC 4173 LUN: up to four ``-``-separated hexadecimal levels."""
    parts = text.split("-")
    if len(parts) > 4 or not all(re.fullmatch(r"[0-9A-Fa-f]{1,4}", p) for p in parts):
        raise ValueError(text)
    return sum(int(p, 16) << (16 * i) for i, p in enumerate(parts))


# ---------------------------------------------------------------- JSON form


def _chap_dict(chap: Chap | None, show_secrets: bool) -> dict[str, str] | None:
    if chap is None:
        return None
    return {"username": chap.username, "password": chap.password.shown(show_secrets)}


def target_to_dict(t: Target, *, show_secrets: bool = False) -> dict[str, Any]:
    return {
        "name": t.name,
        "address": t.address,
        "port": t.port,
        "group": t.group,
        "lun": t.lun,
        "chap": _chap_dict(t.chap, show_secrets),
        "reverse_chap": _chap_dict(t.reverse_chap, show_secrets),
    }


def network_to_dict(n: Network) -> dict[str, Any]:
    return {
        "mode": n.mode.value,
        "device": n.device,
        "mac": n.mac,
        "address": n.address,
        "prefix": n.prefix,
        "gateway": n.gateway,
        "server": n.server,
        "hostname": n.hostname,
        "dns": list(n.dns),
        "vlan": n.vlan,
    }


def to_dict(cfg: BootConfig, *, show_secrets: bool = False) -> dict[str, Any]:
    """The JSON contract of ``cmdline parse --json`` (passwords ``***`` unless shown)."""
    return {
        "firmware": cfg.firmware,
        "initiator": cfg.initiator,
        "targets": [target_to_dict(t, show_secrets=show_secrets) for t in cfg.targets],
        "network": network_to_dict(cfg.network),
        "system": str(cfg.system) if cfg.system else None,
        "storage": str(cfg.storage) if cfg.storage else None,
        "storage_on_iscsi": cfg.storage_on_iscsi,
        "target_from_dhcp": cfg.target_from_dhcp,
    }


def _get(
    obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, default: Any = None
) -> Any:
    value = obj.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and kind is int:
        raise ParseError(f"{key} must be a number, not a boolean", where=where)
    if not isinstance(value, kind):
        raise ParseError(f"{key} has the wrong type ({type(value).__name__})", where=where)
    return value


def _chap_from(obj: Any, where: str) -> Chap | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise ParseError("credentials must be an object {username, password}", where=where)
    user = _get(obj, "username", str, where)
    password = _get(obj, "password", str, where)
    if user is None or password is None:
        raise ParseError("credentials need both username and password", where=where)
    if password == MASK:
        raise ParseError(
            "the password is masked (***)",
            where=where,
            fix="produce the JSON with --show-secrets, or give the password as an option",
        )
    return Chap(user, Secret(password))


def from_dict(obj: Any) -> BootConfig:
    """Read the JSON contract back into a model; errors name the field."""
    if not isinstance(obj, dict):
        raise ParseError("the model must be a JSON object")
    try:
        targets = []
        for i, t in enumerate(_get(obj, "targets", list, "targets", [])):
            where = f"targets[{i}]"
            if not isinstance(t, dict):
                raise ParseError("a target must be an object", where=where)
            name = _get(t, "name", str, where)
            address = _get(t, "address", str, where)
            if not name or not address:
                raise ParseError("a target needs a name and an address", where=where)
            targets.append(
                Target(
                    name=name,
                    address=address,
                    port=_get(t, "port", int, where, DEFAULT_PORT),
                    group=_get(t, "group", int, where, DEFAULT_GROUP),
                    lun=_get(t, "lun", int, where),
                    chap=_chap_from(t.get("chap"), f"{where}.chap"),
                    reverse_chap=_chap_from(t.get("reverse_chap"), f"{where}.reverse_chap"),
                )
            )
        net = _get(obj, "network", dict, "network", {})
        try:
            mode = NetMode(_get(net, "mode", str, "network", "unset"))
        except ValueError:
            raise ParseError(
                f"unknown network mode {net.get('mode')!r}",
                where="network.mode",
                fix="use one of " + ", ".join(m.value for m in NetMode),
            ) from None
        dns = _get(net, "dns", list, "network", [])
        if not all(isinstance(d, str) for d in dns):
            raise ParseError("dns must be a list of addresses", where="network.dns")
        network = Network(
            mode=mode,
            device=_get(net, "device", str, "network"),
            mac=_get(net, "mac", str, "network"),
            address=_get(net, "address", str, "network"),
            prefix=_get(net, "prefix", int, "network"),
            gateway=_get(net, "gateway", str, "network"),
            server=_get(net, "server", str, "network"),
            hostname=_get(net, "hostname", str, "network"),
            dns=tuple(dns),
            vlan=_get(net, "vlan", int, "network"),
        )
        system = _get(obj, "system", str, "system")
        storage = _get(obj, "storage", str, "storage")
        return BootConfig(
            firmware=bool(_get(obj, "firmware", bool, "firmware", False)),
            initiator=_get(obj, "initiator", str, "initiator"),
            targets=tuple(targets),
            network=network,
            system=Locator.parse(system) if system is not None else None,
            storage=Locator.parse(storage) if storage is not None else None,
            storage_on_iscsi=bool(_get(obj, "storage_on_iscsi", bool, "storage_on_iscsi", False)),
            target_from_dhcp=bool(_get(obj, "target_from_dhcp", bool, "target_from_dhcp", False)),
        )
    except ParseError:
        raise
    except UsageError as exc:
        raise ParseError(exc.what, where=exc.where or "model", fix=exc.fix) from None
