"""Build an iBFT: iPXE's layout, and the bytes of a table.  Pure.

The layouts are imported when a table is serialised, so that importing this
module (as :func:`layout`'s callers at boot do) does not import ``construct``.
"""

# ruff: noqa: PLC0415  (construct is imported where a raw table is built)
from __future__ import annotations

from dataclasses import replace
from typing import Any

from iscsiboot.errors import RepresentError
from iscsiboot.ibft.codec import checksum_of, encode_string, ip_to_bytes, mac_to_bytes
from iscsiboot.ibft.types import (
    CONTROL_MIN,
    HEADER_SIZE,
    INITIATOR_SIZE,
    IPXE_ALIGN,
    MAX_LENGTH,
    NIC_SIZE,
    NOREF,
    TARGET_SIZE,
    Ref,
    StructId,
    Table,
)
from iscsiboot.secret import Secret


def _align(value: int, to: int = IPXE_ALIGN) -> int:
    return (value + to - 1) // to * to


def _strings_of(table: Table) -> list[tuple[str, Any, str, str]]:
    """(structure key, structure, value attribute, ref attribute) in iPXE's heap order."""
    out: list[tuple[str, Any, str, str]] = []
    if table.initiator is not None:
        out.append(("initiator", table.initiator, "name", "name_ref"))
    for i, nic in enumerate(table.nics):
        out.append((f"nic{i}", nic, "hostname", "hostname_ref"))
    for i, tgt in enumerate(table.targets):
        for attr in ("name", "chap_name", "chap_secret", "rev_chap_name", "rev_chap_secret"):
            out.append((f"target{i}", tgt, attr, f"{attr}_ref"))
    return out


def layout(table: Table, *, align: int = IPXE_ALIGN) -> Table:
    """Give ``table`` iPXE's layout: control, initiator, NIC slots, target slots, heap.

    ``pairs = max(2, NICs, targets)`` slots of each kind are reserved, each
    16-byte aligned; NIC ``i`` sits in NIC slot ``i``, target ``i`` in target
    slot ``i``; the strings follow in iPXE's order, each NUL-terminated.
    """
    pairs = max(2, len(table.nics), len(table.targets))
    clen = 10 + 4 * pairs
    pos = _align(HEADER_SIZE + clen, align)
    initiator = table.initiator
    init_off = 0
    if initiator is not None:
        init_off = pos
        initiator = replace(initiator, offset=pos, length=INITIATOR_SIZE)
        pos = _align(pos + INITIATOR_SIZE, align)
    nic_offs = [pos + i * _align(NIC_SIZE, align) for i in range(pairs)]
    pos += pairs * _align(NIC_SIZE, align)
    tgt_offs = [pos + i * _align(TARGET_SIZE, align) for i in range(pairs)]
    pos += pairs * _align(TARGET_SIZE, align)
    nics = [replace(n, offset=nic_offs[i], length=NIC_SIZE) for i, n in enumerate(table.nics)]
    targets = [replace(t, offset=tgt_offs[i], length=TARGET_SIZE) for i, t in enumerate(table.targets)]
    slots: list[int] = []
    for i in range(pairs):
        slots.append(nics[i].offset if i < len(nics) else 0)
        slots.append(targets[i].offset if i < len(targets) else 0)

    def alloc(value: str | Secret | None) -> Ref:
        nonlocal pos
        raw = encode_string(value)
        if raw is None:
            return NOREF
        ref = Ref(len(raw), pos)
        pos += len(raw) + 1
        return ref

    if initiator is not None:
        initiator = replace(initiator, name_ref=alloc(initiator.name))
    nics = [replace(n, hostname_ref=alloc(n.hostname)) for n in nics]
    new_targets = []
    for t in targets:
        new_targets.append(
            replace(
                t,
                name_ref=alloc(t.name),
                chap_name_ref=alloc(t.chap_name),
                chap_secret_ref=alloc(t.chap_secret),
                rev_chap_name_ref=alloc(t.rev_chap_name),
                rev_chap_secret_ref=alloc(t.rev_chap_secret),
            )
        )
    control = replace(
        table.control, offset=HEADER_SIZE, length=clen, initiator_offset=init_off, slots=tuple(slots)
    )
    out = replace(
        table, length=pos, control=control, initiator=initiator, nics=tuple(nics), targets=tuple(new_targets)
    )
    from iscsiboot.ibft import layouts as L

    try:
        return replace(out, checksum=_serialize(out)[9])
    except (ValueError, OverflowError, L.ConstructError):
        return out  # build_table reports what does not fit


def _has_layout(table: Table) -> bool:
    structs: list[Any] = [*table.nics, *table.targets]
    if table.initiator is not None:
        structs.append(table.initiator)
    if any(s.offset < HEADER_SIZE for s in structs) or table.length < HEADER_SIZE + CONTROL_MIN:
        return False
    pointed = {table.control.initiator_offset, *table.control.slots}
    if any(s.offset not in pointed for s in structs):
        return False
    for _key, struct, attr, ref_attr in _strings_of(table):
        raw = encode_string(getattr(struct, attr))
        ref: Ref = getattr(struct, ref_attr)
        if raw is None:
            if ref != NOREF:
                return False
        elif ref.length != len(raw) or ref.offset < HEADER_SIZE or ref.offset + len(raw) >= table.length:
            return False
    return True


def build_table(table: Table) -> bytes:
    """The bytes of ``table``, with its offsets when they are consistent, else :func:`layout`'s.

    The checksum is always recomputed.
    """
    from iscsiboot.ibft import layouts as L

    if not _has_layout(table):
        table = layout(table)
    if table.length > MAX_LENGTH:
        raise RepresentError(
            f"table length {table.length} is beyond {MAX_LENGTH} bytes",
            where="ibft build",
            fix="use shorter strings",
        )
    try:
        return _serialize(table)
    except (ValueError, OverflowError, L.ConstructError) as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        field_path = lines[0].split("->", 1)[1].strip() if len(lines) > 1 and "->" in lines[0] else None
        what = " ".join(lines[1:] if field_path else lines)
        where = f"ibft build: {field_path}" if field_path else "ibft build"
        raise RepresentError(f"the table cannot be built: {what}", where=where) from None


def _common(sid: StructId, s: Any) -> dict[str, int]:
    return {"id": int(sid), "version": s.version, "length": s.length, "index": s.index, "flags": s.flags}


def _ref(r: Ref) -> dict[str, int]:
    return {"length": r.length, "offset": r.offset}


def _serialize(table: Table) -> bytes:
    from iscsiboot.ibft import layouts as L

    buf = bytearray(table.length)

    def put(offset: int, raw: bytes) -> None:
        if offset + len(raw) > len(buf):
            raise ValueError(f"data at offset 0x{offset:x} runs past the table length {len(buf)}")
        buf[offset : offset + len(raw)] = raw

    def fixed(text: str, size: int) -> bytes:
        raw = text.encode("latin-1")
        if len(raw) > size:
            raise ValueError(f"{text!r} is longer than {size} bytes")
        return raw.ljust(size, b"\0")

    put(
        0,
        L.HEADER.build(
            {
                "signature": fixed(table.signature, 4),
                "length": table.length,
                "revision": table.revision,
                "checksum": 0,
                "oem_id": fixed(table.oem_id, 6),
                "oem_table_id": fixed(table.oem_table_id, 8),
                "oem_revision": table.oem_revision,
                "creator_id": table.creator_id,
                "creator_revision": table.creator_revision,
                "reserved": table.reserved,
            }
        ),
    )
    c = table.control
    put(
        c.offset,
        L.CONTROL_FIXED.build(
            {"hdr": _common(StructId.CONTROL, c), "extensions": c.extensions, "initiator": c.initiator_offset}
        )
        + L.Array(len(c.slots), L.Int16ul).build(list(c.slots)),
    )
    if table.initiator is not None:
        i = table.initiator
        put(
            i.offset,
            L.INITIATOR.build(
                {
                    "hdr": _common(StructId.INITIATOR, i),
                    "isns_server": ip_to_bytes(i.isns_server),
                    "slp_server": ip_to_bytes(i.slp_server),
                    "pri_radius_server": ip_to_bytes(i.pri_radius_server),
                    "sec_radius_server": ip_to_bytes(i.sec_radius_server),
                    "name": _ref(i.name_ref),
                }
            ),
        )
    for n in table.nics:
        put(
            n.offset,
            L.NIC.build(
                {
                    "hdr": _common(StructId.NIC, n),
                    "ip_address": ip_to_bytes(n.ip_address),
                    "prefix": n.prefix,
                    "origin": n.origin,
                    "gateway": ip_to_bytes(n.gateway),
                    "primary_dns": ip_to_bytes(n.primary_dns),
                    "secondary_dns": ip_to_bytes(n.secondary_dns),
                    "dhcp": ip_to_bytes(n.dhcp),
                    "vlan": n.vlan,
                    "mac": mac_to_bytes(n.mac),
                    "pci_bdf": n.pci_bdf,
                    "hostname": _ref(n.hostname_ref),
                }
            ),
        )
    for t in table.targets:
        put(
            t.offset,
            L.TARGET.build(
                {
                    "hdr": _common(StructId.TARGET, t),
                    "address": ip_to_bytes(t.address),
                    "port": t.port,
                    "lun": t.lun,
                    "chap_type": t.chap_type,
                    "nic_assoc": t.nic_assoc,
                    "name": _ref(t.name_ref),
                    "chap_name": _ref(t.chap_name_ref),
                    "chap_secret": _ref(t.chap_secret_ref),
                    "rev_chap_name": _ref(t.rev_chap_name_ref),
                    "rev_chap_secret": _ref(t.rev_chap_secret_ref),
                }
            ),
        )
    for _key, struct, attr, ref_attr in _strings_of(table):
        raw = encode_string(getattr(struct, attr))
        if raw is not None:
            put(getattr(struct, ref_attr).offset, raw + b"\0")
    buf[9] = (-checksum_of(bytes(buf))) & 0xFF
    return bytes(buf)
