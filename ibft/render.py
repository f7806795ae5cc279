"""The iBFT as JSON (every field, both ways) and as a readable explanation.  Pure."""

from __future__ import annotations

import dataclasses
from typing import Any

from iscsiboot.errors import ParseError, UsageError
from iscsiboot.ibft.codec import pci_text
from iscsiboot.ibft.mapping import lun_warning
from iscsiboot.ibft.sysfs import subnet_mask, sysfs_lun
from iscsiboot.ibft.types import (
    FLAG_BOOT,
    FLAG_VALID,
    NIC_FLAG_GLOBAL,
    ORIGINS,
    TARGET_FLAG_RADIUS_CHAP,
    TARGET_FLAG_RADIUS_REVERSE,
    ChapType,
    Control,
    IbftTarget,
    Initiator,
    Nic,
    Ref,
    Table,
)
from iscsiboot.model import lun_from_sam, lun_to_text
from iscsiboot.output import printable
from iscsiboot.secret import MASK, Secret

_BYTES = {"lun", "reserved"}


def _value(value: Any, show_secrets: bool) -> Any:
    if isinstance(value, Secret):
        return value.shown(show_secrets)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Ref):
        return {"length": value.length, "offset": value.offset}
    if isinstance(value, tuple):
        return [_value(v, show_secrets) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _struct(value, show_secrets)
    return value


def _struct(obj: Any, show_secrets: bool) -> dict[str, Any]:
    return {f.name: _value(getattr(obj, f.name), show_secrets) for f in dataclasses.fields(obj)}


def table_to_dict(table: Table, *, show_secrets: bool = False) -> dict[str, Any]:
    """Every field of the parse; secrets ``***`` unless ``show_secrets``."""
    out = _struct(table, show_secrets)
    for nic, d in zip(table.nics, out["nics"], strict=True):
        d["pci"] = pci_text(nic.pci_bdf)
    for tgt, d in zip(table.targets, out["targets"], strict=True):
        d["lun_number"] = lun_from_sam(tgt.lun)
    return out


def is_table_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and "control" in obj and "signature" in obj


def _from(cls: type[Any], obj: Any, where: str) -> Any:
    if not isinstance(obj, dict):
        raise ParseError("must be an object", where=where)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in obj:
            continue
        value = obj[f.name]
        at = f"{where}.{f.name}"
        if f.name in _BYTES:
            if not isinstance(value, str):
                raise ParseError("must be a hex string", where=at)
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise ParseError(f"{value!r} is not hex", where=at) from None
            if len(value) != (8 if f.name == "lun" else 12):
                raise ParseError("has the wrong number of bytes", where=at)
        elif f.name.endswith("_ref"):
            if not isinstance(value, dict):
                raise ParseError("must be an object {length, offset}", where=at)
            value = Ref(_int(value.get("length", 0), at), _int(value.get("offset", 0), at))
        elif f.name in ("chap_secret", "rev_chap_secret"):
            if value is not None:
                if not isinstance(value, str):
                    raise ParseError("must be a string", where=at)
                if value == MASK:
                    raise ParseError(
                        "the secret is masked (***)", where=at, fix="produce the JSON with --show-secrets"
                    )
                value = Secret(value)
        elif f.name == "control":
            value = _from(Control, value, at)
        elif f.name == "initiator":
            value = None if value is None else _from(Initiator, value, at)
        elif f.name == "nics":
            value = tuple(_from(Nic, v, f"{at}[{i}]") for i, v in enumerate(_list(value, at)))
        elif f.name == "targets":
            value = tuple(_from(IbftTarget, v, f"{at}[{i}]") for i, v in enumerate(_list(value, at)))
        elif f.name == "slots":
            value = tuple(_int(v, at) for v in _list(value, at))
        else:
            value = _typed(value, str(f.type), at)
        kwargs[f.name] = value
    try:
        return cls(**kwargs)
    except (TypeError, UsageError) as exc:
        raise ParseError(str(exc), where=where) from None


def _typed(value: Any, annotation: str, where: str) -> Any:
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
            raise ParseError("must be a number 0-4294967295", where=where)
        return value
    if annotation == "str" or (annotation == "str | None" and value is not None):
        if not isinstance(value, str):
            raise ParseError("must be a string", where=where)
        return value
    if annotation == "str | None":
        return None
    raise ParseError(f"cannot be read from JSON ({annotation})", where=where)


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ParseError("must be a list", where=where)
    return value


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFF:
        raise ParseError("must be a number 0-65535", where=where)
    return value


def table_from_dict(obj: Any) -> Table:
    """Read :func:`table_to_dict`'s output (made with ``--show-secrets``) back."""
    table: Table = _from(Table, obj, "table")
    return table


# ---------------------------------------------------------------- text


def _flags(flags: int, names: dict[int, str]) -> str:
    parts = [name for bit, name in names.items() if flags & bit]
    rest = flags & ~sum(names)
    if rest:
        parts.append(f"0x{rest:02x}")
    return f"0x{flags:02x} ({', '.join(parts) or 'none'})"


_COMMON_FLAGS = {FLAG_VALID: "valid", FLAG_BOOT: "boot selected"}


def _addr(value: str | None) -> str:
    return "-" if value is None else value


def _str(value: str | None) -> str:
    """A string of the table as the terminal shows it: escaped, so that no byte of it acts on the terminal."""
    return "-" if value is None else repr(value) if value == "" else printable(value)


def explain(
    table: Table, *, source: str | None = None, warnings: tuple[str, ...] = (), show_secrets: bool = False
) -> str:
    """One block per structure, in plain words."""
    lines: list[str] = []

    def block(title: str, rows: list[tuple[str, str]]) -> None:
        lines.append(title)
        width = max((len(k) for k, _ in rows), default=0)
        lines.extend(f"  {k.ljust(width)}  {v}" for k, v in rows)
        lines.append("")

    head = [
        ("signature", printable(table.signature)),
        ("length", f"{table.length} bytes"),
        ("revision", str(table.revision)),
        ("checksum", f"0x{table.checksum:02x}"),
        ("OEM", f"{printable(table.oem_id)} / {printable(table.oem_table_id)}"),
    ]
    if source:
        head.insert(0, ("source", printable(source)))
    block("iSCSI Boot Firmware Table", head)
    c = table.control
    pairs = [
        f"NIC {i // 2}: 0x{v:x}" if i % 2 == 0 else f"target {i // 2}: 0x{v:x}"
        for i, v in enumerate(c.slots)
        if v
    ]
    block(
        f"control (offset 0x{c.offset:x}, length {c.length})",
        [
            ("flags", f"0x{c.flags:02x}"),
            ("initiator at", f"0x{c.initiator_offset:x}" if c.initiator_offset else "-"),
            ("structures at", ", ".join(pairs) or "-"),
            ("slots", f"{len(c.slots) // 2} NIC/target pairs"),
        ],
    )
    if table.initiator is not None:
        i = table.initiator
        block(
            f"initiator (offset 0x{i.offset:x})",
            [
                ("flags", _flags(i.flags, _COMMON_FLAGS)),
                ("name", _str(i.name)),
                ("iSNS server", _addr(i.isns_server)),
                ("SLP server", _addr(i.slp_server)),
                ("RADIUS servers", f"{_addr(i.pri_radius_server)}, {_addr(i.sec_radius_server)}"),
            ],
        )
    for n in table.nics:
        prefix = f"/{n.prefix} (netmask {subnet_mask(n.prefix)})" if n.prefix else ""
        block(
            f"NIC {n.index} (ethernet{n.index}, offset 0x{n.offset:x})",
            [
                ("flags", _flags(n.flags, {**_COMMON_FLAGS, NIC_FLAG_GLOBAL: "global"})),
                ("MAC", n.mac),
                ("PCI", pci_text(n.pci_bdf)),
                (
                    "origin",
                    f"{n.origin} ({ORIGINS.get(n.origin, 'unchanged' if n.origin in (15, 16) else '?')})",
                ),
                ("address", f"{_addr(n.ip_address)}{prefix}"),
                ("gateway", _addr(n.gateway)),
                ("DNS", f"{_addr(n.primary_dns)}, {_addr(n.secondary_dns)}"),
                ("DHCP server", _addr(n.dhcp)),
                ("VLAN", str(n.vlan) if n.vlan else "none"),
                ("host name", _str(n.hostname)),
            ],
        )
    for t in table.targets:
        chap = {0: "none", 1: "CHAP", 2: "mutual CHAP"}.get(t.chap_type, f"unknown ({t.chap_type})")
        rows = [
            (
                "flags",
                _flags(
                    t.flags,
                    {
                        **_COMMON_FLAGS,
                        TARGET_FLAG_RADIUS_CHAP: "RADIUS CHAP",
                        TARGET_FLAG_RADIUS_REVERSE: "RADIUS rCHAP",
                    },
                ),
            ),
            ("name", _str(t.name)),
            ("portal", f"{_addr(t.address)} port {t.port}"),
            ("LUN", f"{lun_to_text(lun_from_sam(t.lun))} (bytes {t.lun.hex(' ')}, sysfs {sysfs_lun(t.lun)})"),
            ("NIC", str(t.nic_assoc)),
            ("CHAP", f"{t.chap_type} ({chap})"),
        ]
        if t.chap_name is not None or t.chap_secret is not None:
            secret = t.chap_secret.shown(show_secrets) if t.chap_secret is not None else "-"
            rows.append(("CHAP user", f"{_str(t.chap_name)} / {secret}"))
        if t.rev_chap_name is not None or t.rev_chap_secret is not None:
            secret = t.rev_chap_secret.shown(show_secrets) if t.rev_chap_secret is not None else "-"
            rows.append(("reverse CHAP", f"{_str(t.rev_chap_name)} / {secret}"))
        if t.chap_type not in tuple(ChapType):
            rows.append(("note", "unknown CHAP type"))
        lw = lun_warning(t.lun)
        if lw:
            rows.append(("note", lw))
        block(f"target {t.index} (target{t.index}, offset 0x{t.offset:x})", rows)
    if warnings:
        block("warnings", [("-", w) for w in warnings])
    return "\n".join(lines).rstrip("\n") + "\n"
