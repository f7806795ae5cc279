"""The ``ip=`` kernel parameter, both ways.

Forms understood (pure functions, no I/O):

* ``dhcp``, ``on``, ``any``, ``bootp``, ``rarp``, ``both``:
  :attr:`NetMode.DHCP` (IPv4); dracut's ``dhcp6``: :attr:`NetMode.DHCP6` and
  ``auto6``: :attr:`NetMode.AUTO6` (IPv6, each its own mode: never read as
  IPv4 DHCP); ``off``, ``none``: :attr:`NetMode.OFF`; ``ibft`` (dracut):
  :attr:`NetMode.FIRMWARE`.
* The kernel's long form
  ``<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>[:<ntp0>]``.
  A client address with autoconf ``off``/``none``/empty is a static
  configuration and needs a netmask (dotted, or a prefix length as dracut
  allows).  IPv6 addresses go in brackets (dracut's extension).
* dracut's short form ``<device>:<autoconf>[:<mtu>[:<mac>]]`` and its
  ``<autoconf>:<mtu>[:<mac>]`` ending of the long form (the MAC, written with
  colons, goes to ``Network.mac``; the MTU is checked and not kept).

:func:`format_ip` writes the shortest of these forms that reads back to the
same :class:`~iscsiboot.model.Network` (the MAC goes to ``BOOTIF=`` and is
not part of ``ip=``).
"""

from __future__ import annotations

import ipaddress
import re

from iscsiboot.errors import ParseError, RepresentError, UsageError
from iscsiboot.model import NetMode, Network

DHCP_WORDS = frozenset({"dhcp", "on", "any", "bootp", "rarp", "both"})
#: dracut's IPv6 methods, each its own mode.
IPV6_WORDS: dict[str, NetMode] = {"dhcp6": NetMode.DHCP6, "auto6": NetMode.AUTO6}
OFF_WORDS = frozenset({"off", "none"})
FIRMWARE_WORDS = frozenset({"ibft"})
AUTOCONF_WORDS = DHCP_WORDS | OFF_WORDS | FIRMWARE_WORDS | frozenset(IPV6_WORDS)
_FIX_FORMS = "write ip=dhcp, ip=off or ip=<client>:<server>:<gw>:<netmask>:<hostname>:<device>:<autoconf>"


_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")


def _mtu(fields: list[str], where: str) -> None:
    """Check dracut's MTU field (the model does not keep it)."""
    for field in fields:
        if field and not (re.fullmatch(r"[0-9]{1,5}", field) and 68 <= int(field) <= 65535):
            raise ParseError(f"MTU {field!r} is not a number in 68-65535", where=where)


def split_fields(value: str) -> list[str]:
    """Split at colons that are not inside ``[...]`` (IPv6 addresses)."""
    fields: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in value:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == ":" and depth == 0:
            fields.append("".join(current))
            current = []
        else:
            current.append(ch)
    fields.append("".join(current))
    return fields


def _addr(field: str, what: str, where: str) -> str | None:
    if not field:
        return None
    text = field[1:-1] if field.startswith("[") and field.endswith("]") else field
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ParseError(
            f"{what} {field!r} is not an IP address", where=where, fix="IPv6 addresses go in [brackets]"
        ) from None


def _prefix(field: str, where: str, v6: bool) -> int | None:
    if not field:
        return None
    if re.fullmatch(r"[0-9]{1,3}", field):
        prefix = int(field)
        limit = 128 if v6 else 32
        if prefix > limit:
            raise ParseError(f"prefix length {prefix} is out of range (0-{limit})", where=where)
        return prefix
    try:
        net = ipaddress.IPv4Network(f"0.0.0.0/{field}")
    except ValueError:
        raise ParseError(
            f"netmask {field!r} is neither a dotted netmask nor a prefix length",
            where=where,
            fix="write 255.255.255.0 or 24",
        ) from None
    return net.prefixlen


def parse_ip(value: str) -> Network:
    """Parse the value of ``ip=`` into a :class:`Network` (raise ParseError)."""
    where = f"ip={value}"
    if not value:
        raise ParseError("empty value", where="ip=", fix=_FIX_FORMS)
    if value in DHCP_WORDS:
        return Network(mode=NetMode.DHCP)
    if value in IPV6_WORDS:
        return Network(mode=IPV6_WORDS[value])
    if value in OFF_WORDS:
        return Network(mode=NetMode.OFF)
    if value in FIRMWARE_WORDS:
        return Network(mode=NetMode.FIRMWARE)
    fields = split_fields(value)
    if len(fields) == 1:
        raise ParseError(f"unknown ip= value {value!r}", where=where, fix=_FIX_FORMS)
    # dracut ends both forms with [:<mtu>[:<mac>]], the MAC written with colons
    mac = None
    if len(fields) >= 8 and all(_HEX_PAIR.fullmatch(f) for f in fields[-6:]):
        mac = ":".join(fields[-6:]).lower()
        fields = fields[:-6]
    # dracut: <device>:<autoconf>[:<mtu>[:<mac>]]
    if 2 <= len(fields) <= 3 and fields[1] in AUTOCONF_WORDS and fields[0] and not _looks_ip(fields[0]):
        _mtu(fields[2:], where)
        mode = _mode_of(fields[1], None, where)
        return _network(mode, device=fields[0], mac=mac, where=where)
    if len(fields) > 10:
        raise ParseError(f"ip= has {len(fields)} fields, at most 10", where=where, fix=_FIX_FORMS)
    fields += [""] * (10 - len(fields))
    client, server, gateway, netmask, hostname, device, autoconf, dns0, dns1, _ntp = fields
    if mac is not None or re.fullmatch(r"[0-9]{1,5}", dns0):
        # dracut's <autoconf>:<mtu>[:<mac>] instead of the kernel's <dns0>:<dns1>
        _mtu([dns0], where)
        dns0 = dns1 = ""
    address = _addr(client, "client address", where)
    v6 = address is not None and ":" in address
    mode = _mode_of(autoconf, address, where)
    if mode is NetMode.STATIC and not netmask:
        raise ParseError(
            "a static address needs a netmask",
            where=where,
            fix="fill the fourth field, e.g. 255.255.255.0 or 24",
        )
    dns = tuple(d for d in (_addr(dns0, "dns0", where), _addr(dns1, "dns1", where)) if d is not None)
    return _network(
        mode,
        where=where,
        address=address,
        server=_addr(server, "server address", where),
        gateway=_addr(gateway, "gateway", where),
        prefix=_prefix(netmask, where, v6),
        hostname=hostname or None,
        device=device or None,
        mac=mac,
        dns=dns,
    )


def _looks_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def _mode_of(autoconf: str, address: str | None, where: str) -> NetMode:
    if autoconf in DHCP_WORDS:
        return NetMode.DHCP
    if autoconf in IPV6_WORDS:
        return IPV6_WORDS[autoconf]
    if autoconf in FIRMWARE_WORDS:
        return NetMode.FIRMWARE
    if autoconf in OFF_WORDS or autoconf == "":
        if address is not None:
            return NetMode.STATIC
        return NetMode.OFF if autoconf else NetMode.DHCP
    raise ParseError(
        f"unknown autoconf method {autoconf!r}",
        where=where,
        fix="use one of " + ", ".join(sorted(AUTOCONF_WORDS)),
    )


def _network(mode: NetMode, *, where: str, **fields: object) -> Network:
    try:
        return Network(mode=mode, **fields)  # type: ignore[arg-type]
    except UsageError as exc:
        raise ParseError(exc.what, where=where, fix=exc.fix) from None


def _bracket(address: str | None) -> str:
    if address is None:
        return ""
    return f"[{address}]" if ":" in address else address


def _netmask(prefix: int | None, v6: bool) -> str:
    if prefix is None:
        return ""
    if v6:
        return str(prefix)
    return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)


def _check_field(value: str | None, what: str) -> str:
    if value is None:
        return ""
    if not value or any(c.isspace() or c in ':"' for c in value):
        raise RepresentError(
            f"{what} {value!r} cannot go in ip= (it is empty or has a colon, a quote or white space)",
            fix=f"choose another {what}",
        )
    return value


def format_ip(net: Network) -> str | None:
    """The value for ``ip=`` (None when the mode is unset); raise RepresentError."""
    if net.vlan is not None:
        raise RepresentError(
            f"VLAN {net.vlan} cannot be given on the kernel command line",
            fix="use the iBFT (auto mode), which carries the VLAN",
        )
    detail = (
        net.address,
        net.prefix,
        net.gateway,
        net.server,
        net.hostname,
        net.device,
    )
    plain = all(v is None for v in detail) and not net.dns
    if net.mode is NetMode.UNSET:
        if not plain:
            raise RepresentError(
                "network settings without a mode cannot be written as ip=",
                fix="choose --ip dhcp, off or a static configuration",
            )
        return None
    if net.mode is NetMode.FIRMWARE:
        if not plain:
            raise RepresentError(
                "network settings given together with the iBFT network (ip=ibft)",
                fix="drop the settings or the firmware mode",
            )
        return "ibft"
    automatic = {NetMode.DHCP: "dhcp", NetMode.DHCP6: "dhcp6", NetMode.AUTO6: "auto6"}
    if plain:
        return automatic.get(net.mode, "off")
    v6 = net.address is not None and ":" in net.address
    if net.mode is NetMode.OFF and net.address is not None:
        raise RepresentError("an address with the network off", fix="use a static configuration")
    if net.mode in automatic and net.address is None and not net.dns and net.device and plain_but(net):
        return f"{_check_field(net.device, 'device')}:{automatic[net.mode]}"
    autoconf = {**automatic, NetMode.OFF: "off", NetMode.STATIC: "off"}[net.mode]
    if len(net.dns) > 2:
        raise RepresentError(
            f"{len(net.dns)} DNS servers; ip= carries two", fix="keep two (nameserver= takes more)"
        )
    fields = [
        _bracket(net.address),
        _bracket(net.server),
        _bracket(net.gateway),
        _netmask(net.prefix, v6),
        _check_field(net.hostname, "hostname"),
        _check_field(net.device, "device"),
        autoconf,
        *(_bracket(d) for d in net.dns),
    ]
    return ":".join(fields)


def plain_but(net: Network) -> bool:
    """True when only the device (and mode) is set."""
    return all(v is None for v in (net.address, net.prefix, net.gateway, net.server, net.hostname))
