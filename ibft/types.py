"""The iSCSI Boot Firmware Table: parse, build, the kernel's sysfs view, the model.

Pure code: bytes in, bytes out, no I/O.  The layouts are ``construct``
structures (:mod:`iscsiboot.ibft.layouts`, imported when a table is parsed
or built: reading the kernel's view needs none); :func:`parse_table` checks every length and offset before it
hands a slice to them, so any input either parses or raises one
:class:`~iscsiboot.errors.TableError` naming the field and its offset.

Strings in the table are ``str | None``: ``None`` when the (length, offset)
pair is (0, 0), ``""`` when the length is 0 but the offset is not.  IP
addresses are ``str | None``: ``None`` for sixteen zero bytes, a dotted quad
for an IPv4-mapped address (``0.0.0.0`` for ``::ffff:0.0.0.0``), otherwise
the compressed IPv6 text.  Each string also carries its heap reference
(``*_ref``) so a table rebuilds byte for byte; those references take no part
in equality.
"""

# ruff: noqa: PLC0415  (construct is imported where raw tables are parsed or built)
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from iscsiboot.errors import RepresentError, TableError, UsageError
from iscsiboot.model import (
    DEFAULT_PORT,
    BootConfig,
    Chap,
    NetMode,
    Network,
    Target,
    address_kind,
    lun_from_sam,
    lun_to_sam,
)
from iscsiboot.secret import MASK, Secret

# ---------------------------------------------------------------- constants

SIGNATURES = ("iBFT", "IBFT", "BIFT")
HEADER_SIZE = 48
CONTROL_MIN = 18
INITIATOR_SIZE = 74
NIC_SIZE = 102
TARGET_SIZE = 54
IPXE_ALIGN = 16
MAX_LENGTH = 0x10000  # string offsets are 16-bit: nothing beyond 64 KiB can be referenced
IPXE_OEM_ID = "FENSYS"
IPXE_OEM_TABLE_ID = "iPXE"
QEMU_MAC = "52:54:00:12:34:56"
QEMU_PCI = 0x0018  # 00:03.0, where QEMU's i440fx machine puts the first added NIC

FLAG_VALID = 0x01
FLAG_BOOT = 0x02
NIC_FLAG_GLOBAL = 0x04
TARGET_FLAG_RADIUS_CHAP = 0x04
TARGET_FLAG_RADIUS_REVERSE = 0x08


class StructId(enum.IntEnum):
    RESERVED = 0
    CONTROL = 1
    INITIATOR = 2
    NIC = 3
    TARGET = 4
    EXTENSIONS = 5


class ChapType(enum.IntEnum):
    NONE = 0
    CHAP = 1
    MUTUAL = 2


ORIGINS = {0: "other", 1: "manual", 2: "well-known", 3: "dhcp", 4: "router-advertisement"}
ORIGIN_MANUAL = 1
ORIGIN_DHCP = 3

# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Ref:
    """A heap reference: ``length`` bytes at table offset ``offset`` (plus a NUL)."""

    length: int = 0
    offset: int = 0


_NOREF = Ref()


@dataclass(frozen=True)
class Control:
    offset: int = HEADER_SIZE
    version: int = 1
    length: int = CONTROL_MIN
    index: int = 0
    flags: int = 0
    extensions: int = 0
    initiator_offset: int = 0
    # the u16 offsets after the initiator's: NIC 0, target 0, NIC 1, target 1, ...
    slots: tuple[int, ...] = (0, 0, 0, 0)


@dataclass(frozen=True)
class Initiator:
    offset: int = 0
    version: int = 1
    length: int = INITIATOR_SIZE
    index: int = 0
    flags: int = FLAG_VALID | FLAG_BOOT
    isns_server: str | None = None
    slp_server: str | None = None
    pri_radius_server: str | None = None
    sec_radius_server: str | None = None
    name: str | None = None
    name_ref: Ref = field(default=_NOREF, compare=False)


@dataclass(frozen=True)
class Nic:
    offset: int = 0
    version: int = 1
    length: int = NIC_SIZE
    index: int = 0
    flags: int = FLAG_VALID | FLAG_BOOT
    ip_address: str | None = None
    prefix: int = 0
    origin: int = ORIGIN_DHCP
    gateway: str | None = None
    primary_dns: str | None = None
    secondary_dns: str | None = None
    dhcp: str | None = None
    vlan: int = 0
    mac: str = "00:00:00:00:00:00"
    pci_bdf: int = 0
    hostname: str | None = None
    hostname_ref: Ref = field(default=_NOREF, compare=False)

    @property
    def pci(self) -> str:
        return pci_text(self.pci_bdf)


@dataclass(frozen=True)
class IbftTarget:
    offset: int = 0
    version: int = 1
    length: int = TARGET_SIZE
    index: int = 0
    flags: int = FLAG_VALID | FLAG_BOOT
    address: str | None = None
    port: int = DEFAULT_PORT
    lun: bytes = bytes(8)
    chap_type: int = ChapType.NONE
    nic_assoc: int = 0
    name: str | None = None
    chap_name: str | None = None
    chap_secret: Secret | None = None
    rev_chap_name: str | None = None
    rev_chap_secret: Secret | None = None
    name_ref: Ref = field(default=_NOREF, compare=False)
    chap_name_ref: Ref = field(default=_NOREF, compare=False)
    chap_secret_ref: Ref = field(default=_NOREF, compare=False)
    rev_chap_name_ref: Ref = field(default=_NOREF, compare=False)
    rev_chap_secret_ref: Ref = field(default=_NOREF, compare=False)


@dataclass(frozen=True)
class Table:
    signature: str = "iBFT"
    length: int = 0
    revision: int = 1
    checksum: int = 0
    oem_id: str = IPXE_OEM_ID
    oem_table_id: str = IPXE_OEM_TABLE_ID
    oem_revision: int = 0
    creator_id: int = 0
    creator_revision: int = 0
    reserved: bytes = bytes(12)
    control: Control = field(default_factory=Control)
    initiator: Initiator | None = None
    nics: tuple[Nic, ...] = ()
    targets: tuple[IbftTarget, ...] = ()

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(
            s
            for t in self.targets
            for s in (t.chap_secret, t.rev_chap_secret)
            if s is not None and s.reveal()
        )


@dataclass(frozen=True)
class Parsed:
    table: Table
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------- small codecs


def pci_text(bdf: int) -> str:
    return f"{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7}"


def pci_parse(text: str) -> int:
    """``00:03.0`` (or ``0000:00:03.0``, domain 0 only) -> the iBFT's 16-bit BDF."""
    parts = text.strip().split(":")
    if len(parts) == 3:
        if int(parts[0], 16) != 0:
            raise ValueError("the iBFT has no PCI domain (only domain 0)")
        parts = parts[1:]
    if len(parts) != 2 or "." not in parts[1]:
        raise ValueError(text)
    dev, fn = parts[1].split(".", 1)
    bus, d, f = int(parts[0], 16), int(dev, 16), int(fn, 16)
    if not (0 <= bus <= 0xFF and 0 <= d <= 0x1F and 0 <= f <= 7):
        raise ValueError(text)
    return (bus << 8) | (d << 3) | f


def ip_from_bytes(raw: bytes) -> str | None:
    if raw == bytes(16):
        return None
    if raw[:12] == bytes(10) + b"\xff\xff":
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def ip_to_bytes(text: str | None) -> bytes:
    if text is None:
        return bytes(16)
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return bytes(10) + b"\xff\xff" + ip.packed
    return ip.packed


def mac_from_bytes(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def mac_to_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(len(p) == 2 for p in parts):
        raise ValueError(text)
    return bytes(int(p, 16) for p in parts)


def _ascii_field(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def _align(value: int, to: int = IPXE_ALIGN) -> int:
    return (value + to - 1) // to * to


def checksum_of(data: bytes) -> int:
    return sum(data) & 0xFF


# ---------------------------------------------------------------- parsing


class _Reader:
    def __init__(self, data: bytes, lenient: bool) -> None:
        self.data = data
        self.lenient = lenient
        self.warnings: list[str] = []

    def problem(self, what: str, where: str, fix: str | None = None) -> None:
        """An error, or with ``lenient`` a warning."""
        if self.lenient:
            self.warnings.append(f"{where}: {what}")
        else:
            raise TableError(what, where=where, fix=fix)

    def string(self, ref: Any, where: str, *, secret: bool = False) -> str | None:
        length, offset = int(ref.length), int(ref.offset)
        if length == 0 and offset == 0:
            return None
        size = len(self.data)
        at = f"{where} (length {length}, offset 0x{offset:x})"
        if offset < HEADER_SIZE:
            raise TableError("string offset points into the table header", where=at)
        if offset + length > size:
            raise TableError(f"string runs past the end of the table ({size} bytes)", where=at)
        raw = self.data[offset : offset + length]
        if offset + length >= size or self.data[offset + length] != 0:
            self.problem("string is not NUL-terminated", at, "the table is damaged or not an iBFT")
        if not secret and b"\0" in raw:
            self.warnings.append(
                f"{at}: string contains a NUL byte; the kernel shows only the part before it"
            )
        return raw.decode("utf-8", errors="surrogateescape")


def parse_table(data: bytes, *, lenient: bool = False) -> Parsed:
    """Parse one iBFT from ``data`` (which may carry trailing bytes after the table)."""
    from iscsiboot.ibft import layouts as L

    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise TableError(
            f"truncated: {len(data)} bytes, an iBFT header alone has {HEADER_SIZE}",
            where="acpi_header at offset 0x0",
        )
    hdr = L.HEADER.parse(data[:HEADER_SIZE])
    signature = bytes(hdr.signature)
    if signature.decode("latin-1") not in SIGNATURES:
        raise TableError(
            f"signature {signature!r} is not one of {', '.join(SIGNATURES)}",
            where="acpi_header.signature at offset 0x0",
            fix="this is not an iBFT",
        )
    length = int(hdr.length)
    if length < HEADER_SIZE + CONTROL_MIN:
        raise TableError(
            f"table length {length} is too small (at least {HEADER_SIZE + CONTROL_MIN})",
            where="acpi_header.length at offset 0x4",
        )
    if length > len(data):
        raise TableError(
            f"table length {length} is beyond the {len(data)} bytes of data",
            where="acpi_header.length at offset 0x4",
            fix="the table is truncated",
        )
    data = data[:length]
    reader = _Reader(data, lenient)
    if hdr.revision != 1:
        reader.problem(
            f"revision {hdr.revision} is not 1 (Linux reads only revision 1)",
            "acpi_header.revision at offset 0x8",
        )
    csum = checksum_of(data)
    if csum:
        reader.problem(
            f"bad checksum: the bytes sum to 0x{csum:02x}, not 0",
            "acpi_header.checksum at offset 0x9",
            "the table is damaged; --lenient reads it anyway",
        )

    # control structure
    ctl = L.CONTROL_FIXED.parse(data[HEADER_SIZE : HEADER_SIZE + 10])
    where = f"control at offset 0x{HEADER_SIZE:x}"
    if ctl.hdr.id != StructId.CONTROL:
        raise TableError(f"structure id {ctl.hdr.id}, expected {StructId.CONTROL} (control)", where=where)
    if ctl.hdr.version != 1:
        reader.problem(f"version {ctl.hdr.version}, expected 1", where)
    if ctl.hdr.index != 0:
        raise TableError(f"index {ctl.hdr.index}, expected 0", where=where)
    clen = int(ctl.hdr.length)
    if clen < CONTROL_MIN:
        raise TableError(f"length {clen} is below the minimum {CONTROL_MIN}", where=where)
    if HEADER_SIZE + clen > length:
        raise TableError(f"length {clen} runs past the end of the table ({length} bytes)", where=where)
    nslots = (clen - 10) // 2
    slots = tuple(
        int(v)
        for v in L.Array(nslots, L.Int16ul).parse(data[HEADER_SIZE + 10 : HEADER_SIZE + 10 + 2 * nslots])
    )
    if clen % 2:
        reader.warnings.append(f"{where}: odd length {clen}; the last byte is ignored")
    control = Control(
        offset=HEADER_SIZE,
        version=int(ctl.hdr.version),
        length=clen,
        index=0,
        flags=int(ctl.hdr.flags),
        extensions=int(ctl.extensions),
        initiator_offset=int(ctl.initiator),
        slots=slots,
    )
    if control.extensions:
        reader.warnings.append(
            f"{where}: extensions offset 0x{control.extensions:x} ignored (no format defined)"
        )

    structs_end = HEADER_SIZE + clen

    sizes = {StructId.INITIATOR: INITIATOR_SIZE, StructId.NIC: NIC_SIZE, StructId.TARGET: TARGET_SIZE}
    layouts = {StructId.INITIATOR: L.INITIATOR, StructId.NIC: L.NIC, StructId.TARGET: L.TARGET}

    def locate(offset: int, slot: str, kind: StructId) -> tuple[StructId, Any] | None:
        """The structure at ``offset``; with ``lenient``, whatever kind its id says (as Linux does)."""
        at = f"{slot} at offset 0x{offset:x}"
        if offset < structs_end or offset + 6 > length:
            raise TableError(
                f"offset 0x{offset:x} is out of range (0x{structs_end:x}-0x{length - 1:x})",
                where=f"control.{slot}",
            )
        common = L.COMMON.parse(data[offset : offset + 6])
        if common.id != kind:
            known = common.id in StructId._value2member_map_
            name = StructId(common.id).name.lower() if known else "unknown"
            reader.problem(
                f"structure id {common.id} ({name}), expected {int(kind)} ({kind.name.lower()})", at
            )
            if common.id not in sizes:
                return None  # Linux ignores reserved, control and extension ids too
            kind = StructId(common.id)
        size = sizes[kind]
        if common.version != 1:
            reader.problem(f"version {common.version}, expected 1", at)
        if common.length != size:
            if common.length < size:
                raise TableError(f"structure length {common.length} is shorter than {size}", where=at)
            reader.problem(f"structure length {common.length}, Linux needs exactly {size}", at)
            return None
        if offset + size > length:
            raise TableError(
                f"structure ({size} bytes) runs past the end of the table ({length} bytes)", where=at
            )
        return kind, layouts[kind].parse(data[offset : offset + size])

    pointers = [("initiator", control.initiator_offset, StructId.INITIATOR)]
    for i, off in enumerate(slots):
        pointers.append(
            (f"{'target' if i % 2 else 'nic'}{i // 2}", off, StructId.TARGET if i % 2 else StructId.NIC)
        )
    initiator: Initiator | None = None
    nics: list[Nic] = []
    targets: list[IbftTarget] = []
    for slot, off, expected in pointers:
        if not off:
            continue
        found = locate(off, slot, expected)
        if found is None:
            continue
        kind, raw = found
        if kind is StructId.INITIATOR:
            if initiator is not None:
                reader.problem("a second initiator structure", f"{slot} at offset 0x{off:x}")
                continue
            initiator = _initiator_of(raw, off, reader)
        elif kind is StructId.NIC:
            nics.append(_nic_of(raw, off, reader))
        else:
            targets.append(_target_of(raw, off, reader))
    for dirname, items in (("ethernet", nics), ("target", targets)):
        seen: set[int] = set()
        for item in items:
            if item.index in seen:
                reader.problem(
                    f"two structures have index {item.index}; Linux then shows no /sys/firmware/ibft at all",
                    f"{dirname}{item.index} at offset 0x{item.offset:x}",
                )
            seen.add(item.index)
    table = Table(
        signature=signature.decode("latin-1"),
        length=length,
        revision=int(hdr.revision),
        checksum=int(hdr.checksum),
        oem_id=_ascii_field(hdr.oem_id),
        oem_table_id=_ascii_field(hdr.oem_table_id),
        oem_revision=int(hdr.oem_revision),
        creator_id=int(hdr.creator_id),
        creator_revision=int(hdr.creator_revision),
        reserved=bytes(hdr.reserved),
        control=control,
        initiator=initiator,
        nics=tuple(nics),
        targets=tuple(targets),
    )
    return Parsed(table, tuple(reader.warnings))


def _initiator_of(raw: Any, off: int, reader: _Reader) -> Initiator:
    return Initiator(
        offset=off,
        version=int(raw.hdr.version),
        length=int(raw.hdr.length),
        index=int(raw.hdr.index),
        flags=int(raw.hdr.flags),
        isns_server=ip_from_bytes(raw.isns_server),
        slp_server=ip_from_bytes(raw.slp_server),
        pri_radius_server=ip_from_bytes(raw.pri_radius_server),
        sec_radius_server=ip_from_bytes(raw.sec_radius_server),
        name=reader.string(raw.name, f"initiator at offset 0x{off:x}: initiator-name"),
        name_ref=Ref(int(raw.name.length), int(raw.name.offset)),
    )


def _nic_of(raw: Any, off: int, reader: _Reader) -> Nic:
    at = f"ethernet{raw.hdr.index} at offset 0x{off:x}"
    return Nic(
        offset=off,
        version=int(raw.hdr.version),
        length=int(raw.hdr.length),
        index=int(raw.hdr.index),
        flags=int(raw.hdr.flags),
        ip_address=ip_from_bytes(raw.ip_address),
        prefix=int(raw.prefix),
        origin=int(raw.origin),
        gateway=ip_from_bytes(raw.gateway),
        primary_dns=ip_from_bytes(raw.primary_dns),
        secondary_dns=ip_from_bytes(raw.secondary_dns),
        dhcp=ip_from_bytes(raw.dhcp),
        vlan=int(raw.vlan),
        mac=mac_from_bytes(raw.mac),
        pci_bdf=int(raw.pci_bdf),
        hostname=reader.string(raw.hostname, f"{at}: hostname"),
        hostname_ref=Ref(int(raw.hostname.length), int(raw.hostname.offset)),
    )


def _target_of(raw: Any, off: int, reader: _Reader) -> IbftTarget:
    at = f"target{raw.hdr.index} at offset 0x{off:x}"

    def secret(ref: Any, name: str) -> Secret | None:
        value = reader.string(ref, f"{at}: {name}", secret=True)
        return None if value is None else Secret(value)

    def ref(r: Any) -> Ref:
        return Ref(int(r.length), int(r.offset))

    return IbftTarget(
        offset=off,
        version=int(raw.hdr.version),
        length=int(raw.hdr.length),
        index=int(raw.hdr.index),
        flags=int(raw.hdr.flags),
        address=ip_from_bytes(raw.address),
        port=int(raw.port),
        lun=bytes(raw.lun),
        chap_type=int(raw.chap_type),
        nic_assoc=int(raw.nic_assoc),
        name=reader.string(raw.name, f"{at}: target-name"),
        chap_name=reader.string(raw.chap_name, f"{at}: chap-name"),
        chap_secret=secret(raw.chap_secret, "chap-secret"),
        rev_chap_name=reader.string(raw.rev_chap_name, f"{at}: rev-chap-name"),
        rev_chap_secret=secret(raw.rev_chap_secret, "rev-chap-name-secret"),
        name_ref=ref(raw.name),
        chap_name_ref=ref(raw.chap_name),
        chap_secret_ref=ref(raw.chap_secret),
        rev_chap_name_ref=ref(raw.rev_chap_name),
        rev_chap_secret_ref=ref(raw.rev_chap_secret),
    )


# ---------------------------------------------------------------- building


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


def _encode(value: str | Secret | None) -> bytes | None:
    if value is None:
        return None
    text = value.reveal() if isinstance(value, Secret) else value
    return text.encode("utf-8", errors="surrogateescape")


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
        raw = _encode(value)
        if raw is None:
            return _NOREF
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
        raw = _encode(getattr(struct, attr))
        ref: Ref = getattr(struct, ref_attr)
        if raw is None:
            if ref != _NOREF:
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
        raw = _encode(getattr(struct, attr))
        if raw is not None:
            put(getattr(struct, ref_attr).offset, raw + b"\0")
    buf[9] = (-checksum_of(bytes(buf))) & 0xFF
    return bytes(buf)


# ---------------------------------------------------------------- the kernel's view


def _sysfs_ip(raw: bytes) -> str:
    if raw[:12] == bytes(10) + b"\xff\xff":
        return ".".join(str(b) for b in raw[12:])
    return ":".join(raw[i : i + 2].hex() for i in range(0, 16, 2))


def _present(text: str | None) -> bool:
    """The kernel's ``address_not_null``: neither :: nor ::ffff:0.0.0.0."""
    return text is not None and text != "0.0.0.0"


def _sysfs_string(value: str | Secret | None) -> str:
    raw = _encode(value) or b""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def sysfs_lun(lun: bytes) -> str:
    return "".join(f"{b:x}" for b in lun)


def subnet_mask(prefix: int) -> str:
    if prefix > 32:
        return "255.255.255.255"
    return str(ipaddress.IPv4Address((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))


def to_sysfs(table: Table, *, show_secrets: bool = False) -> dict[str, str]:
    """What Linux shows under /sys/firmware/ibft for ``table``: ``{"<dir>/<attr>": value}``.

    Values lack the trailing newline (``subnet-mask`` has none in the kernel
    either); secrets are ``***`` unless ``show_secrets``.
    """
    out: dict[str, str] = {}
    i = table.initiator
    if i is not None:
        out["initiator/index"] = str(i.index)
        out["initiator/flags"] = str(i.flags)
        for attr, name in (
            ("isns_server", "isns-server"),
            ("slp_server", "slp-server"),
            ("pri_radius_server", "pri-radius-server"),
            ("sec_radius_server", "sec-radius-server"),
        ):
            value = getattr(i, attr)
            if _present(value):
                out[f"initiator/{name}"] = _sysfs_ip(ip_to_bytes(value))
        if i.name:
            out["initiator/initiator-name"] = _sysfs_string(i.name)
    for n in table.nics:
        d = f"ethernet{n.index}"
        out[f"{d}/index"] = str(n.index)
        out[f"{d}/flags"] = str(n.flags)
        if _present(n.ip_address):
            out[f"{d}/ip-addr"] = _sysfs_ip(ip_to_bytes(n.ip_address))
        if n.prefix:
            out[f"{d}/prefix-len"] = str(n.prefix)
            out[f"{d}/subnet-mask"] = subnet_mask(n.prefix)
        out[f"{d}/origin"] = str(n.origin)
        for attr, name in (
            ("gateway", "gateway"),
            ("primary_dns", "primary-dns"),
            ("secondary_dns", "secondary-dns"),
            ("dhcp", "dhcp"),
        ):
            value = getattr(n, attr)
            if _present(value):
                out[f"{d}/{name}"] = _sysfs_ip(ip_to_bytes(value))
        out[f"{d}/vlan"] = str(n.vlan)
        out[f"{d}/mac"] = n.mac
        if n.hostname is not None:
            out[f"{d}/hostname"] = _sysfs_string(n.hostname)
    for t in table.targets:
        d = f"target{t.index}"
        out[f"{d}/index"] = str(t.index)
        out[f"{d}/flags"] = str(t.flags)
        out[f"{d}/ip-addr"] = _sysfs_ip(ip_to_bytes(t.address))
        out[f"{d}/port"] = str(t.port)
        out[f"{d}/lun"] = sysfs_lun(t.lun)
        out[f"{d}/nic-assoc"] = str(t.nic_assoc)
        out[f"{d}/chap-type"] = str(t.chap_type)
        if t.name:
            out[f"{d}/target-name"] = _sysfs_string(t.name)
        if t.chap_name:
            out[f"{d}/chap-name"] = _sysfs_string(t.chap_name)
            out[f"{d}/chap-secret"] = _sysfs_string(t.chap_secret) if show_secrets else MASK
        if t.rev_chap_name:
            out[f"{d}/rev-chap-name"] = _sysfs_string(t.rev_chap_name)
            out[f"{d}/rev-chap-name-secret"] = _sysfs_string(t.rev_chap_secret) if show_secrets else MASK
    out["acpi_header/signature"] = table.signature
    out["acpi_header/oem_id"] = table.oem_id
    out["acpi_header/oem_table_id"] = table.oem_table_id
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- the model


def plausible_host(address: str) -> bool:
    """False for IPv4 addresses no host has (0/8, loopback, multicast, class E, broadcast)."""
    ip = ipaddress.ip_address(address)
    if ip.version != 4:
        return not (ip.is_unspecified or ip.is_multicast or ip.is_loopback)
    first = int(ip) >> 24
    return not (first in {0, 127} or first >= 224)


def lun_warning(lun: bytes) -> str | None:
    """A LUN whose bytes look like a little-endian integer (u-root's layout), not SAM order."""
    if lun[0] != 0 and not any(lun[1:]):
        as_le = int.from_bytes(lun, "little")
        return (
            f"LUN bytes {lun.hex(' ')} read in SAM order are LUN {lun_from_sam(lun)}, "
            f"but look like LUN {as_le} written as a little-endian integer; SAM order was assumed"
        )
    return None


def _is_valid(flags: int) -> bool:
    # open-iscsi takes any non-zero flags as valid: some firmware sets only the boot bit
    return flags != 0


def table_to_model(table: Table) -> tuple[BootConfig, tuple[str, ...]]:
    """The boot model the table describes (``firmware=True``), and warnings."""
    warnings: list[str] = []
    chosen = [t for t in table.targets if t.flags & FLAG_BOOT]
    chosen += [t for t in table.targets if _is_valid(t.flags) and not t.flags & FLAG_BOOT]
    for t in table.targets:
        if not _is_valid(t.flags):
            warnings.append(f"target{t.index}: flags 0 (not valid); ignored")
    nic_by_index = {n.index: n for n in table.nics}
    targets: list[Target] = []
    first_nic: Nic | None = None
    for t in chosen:
        where = f"target{t.index}"
        if t.nic_assoc not in nic_by_index:
            warnings.append(f"{where}: its NIC association {t.nic_assoc} points to no NIC structure")
        elif first_nic is None:
            first_nic = nic_by_index[t.nic_assoc]
        if t.address is not None and not plausible_host(t.address):
            warnings.append(
                f"{where}: address {t.address} is not a plausible host (old iPXE wrote such IPv4-mapped "
                "values for IPv6 targets)" + ("; ignored" if t.address == "0.0.0.0" else "")
            )
            if t.address == "0.0.0.0":
                continue
        if not t.name or t.address is None:
            warnings.append(f"{where}: no target {'name' if t.address else 'address'}; ignored")
            continue
        lw = lun_warning(t.lun)
        if lw:
            warnings.append(f"{where}: {lw}")
        chap = reverse = None
        if t.chap_type not in (0, 1, 2):
            warnings.append(f"{where}: unknown CHAP type {t.chap_type}; treated as mutual CHAP")
        if t.chap_type >= ChapType.CHAP:
            if t.chap_name and t.chap_secret is not None and t.chap_secret.reveal():
                chap = Chap(t.chap_name, t.chap_secret)
            else:
                warnings.append(f"{where}: CHAP type {t.chap_type} without a CHAP name and secret")
        if t.chap_type >= ChapType.MUTUAL and chap is not None:
            if t.rev_chap_name and t.rev_chap_secret is not None and t.rev_chap_secret.reveal():
                reverse = Chap(t.rev_chap_name, t.rev_chap_secret)
            else:
                warnings.append(f"{where}: mutual CHAP without a reverse CHAP name and secret")
        if t.chap_type == ChapType.NONE and t.chap_name:
            warnings.append(f"{where}: CHAP credentials present but CHAP type is 0; not used")
        try:
            targets.append(
                Target(
                    name=t.name,
                    address=t.address,
                    port=t.port or DEFAULT_PORT,
                    lun=lun_from_sam(t.lun),
                    chap=chap,
                    reverse_chap=reverse,
                )
            )
        except UsageError as exc:  # the model's own checks
            warnings.append(f"{where}: {exc}; ignored")
    if not table.targets:
        warnings.append("the table has no target")
    if first_nic is None:
        boot_nics = [n for n in table.nics if n.flags & FLAG_BOOT] or list(table.nics)
        if boot_nics:
            first_nic = boot_nics[0]
    network = Network(mode=NetMode.FIRMWARE)
    if first_nic is not None:
        network = _network_of(first_nic, warnings)
    initiator = table.initiator.name if table.initiator is not None and table.initiator.name else None
    return BootConfig(firmware=True, initiator=initiator, targets=tuple(targets), network=network), tuple(
        warnings
    )


def _network_of(n: Nic, warnings: list[str]) -> Network:
    where = f"ethernet{n.index}"
    server = n.dhcp if _present(n.dhcp) else None
    vlan = n.vlan or None
    if vlan is not None and not 1 <= vlan <= 4094:
        warnings.append(f"{where}: VLAN {vlan} is out of range; ignored")
        vlan = None
    hostname = n.hostname or None
    if hostname is not None:
        try:
            address_kind(hostname)
        except UsageError:
            warnings.append(f"{where}: host name {hostname!r} is not valid; ignored")
            hostname = None
    if n.ip_address is not None and _present(n.ip_address) and not plausible_host(n.ip_address):
        warnings.append(f"{where}: address {n.ip_address} is not a plausible host")
    if n.origin == ORIGIN_DHCP or server is not None:
        return Network(mode=NetMode.DHCP, mac=n.mac, server=server, hostname=hostname, vlan=vlan)
    if not _present(n.ip_address):
        warnings.append(f"{where}: static origin ({n.origin}) without an address; using DHCP")
        return Network(mode=NetMode.DHCP, mac=n.mac, hostname=hostname, vlan=vlan)
    dns = tuple(d for d in (n.primary_dns, n.secondary_dns) if d is not None and _present(d))
    gateway = n.gateway if _present(n.gateway) else None
    limit = 32 if n.ip_address is not None and ":" not in n.ip_address else 128
    prefix = n.prefix
    if prefix > limit:
        warnings.append(f"{where}: prefix length {prefix} is out of range; using {limit}")
        prefix = limit
    return Network(
        mode=NetMode.STATIC,
        mac=n.mac,
        address=n.ip_address,
        prefix=prefix,
        gateway=gateway,
        dns=dns,
        hostname=hostname,
        vlan=vlan,
    )


def model_to_table(
    cfg: BootConfig,
    *,
    mac: str | None = None,
    pci: int = QEMU_PCI,
    oem_id: str = IPXE_OEM_ID,
    oem_table_id: str = IPXE_OEM_TABLE_ID,
    signature: str = "iBFT",
) -> Table:
    """The table iPXE would write for ``cfg`` (one NIC, every target on it)."""
    if not cfg.targets:
        raise RepresentError("the model has no target", where="targets", fix="give at least one target")
    if signature not in SIGNATURES:
        raise RepresentError(f"signature {signature!r} is not one of {', '.join(SIGNATURES)}")
    net = cfg.network
    nic_mac = mac or net.mac or QEMU_MAC
    try:
        mac_to_bytes(nic_mac.lower())
    except ValueError:
        raise RepresentError(f"MAC address {nic_mac!r} is not of the form aa:bb:cc:dd:ee:ff") from None
    if not 0 <= pci <= 0xFFFF:
        raise RepresentError(f"PCI location 0x{pci:x} does not fit 16 bits")
    if len(net.dns) > 2:
        raise RepresentError(f"{len(net.dns)} DNS servers; the iBFT holds two", where="network.dns")
    static = net.mode is NetMode.STATIC
    nic = Nic(
        ip_address=net.address,
        prefix=net.prefix or 0,
        origin=ORIGIN_MANUAL if static else ORIGIN_DHCP,
        gateway=net.gateway,
        primary_dns=net.dns[0] if net.dns else None,
        secondary_dns=net.dns[1] if len(net.dns) > 1 else None,
        # the DHCP server field marks a DHCP-configured NIC for its readers: only DHCP fills it
        dhcp=None if static else net.server,
        vlan=net.vlan or 0,
        mac=nic_mac.lower(),
        pci_bdf=pci,
        hostname=net.hostname,
    )
    targets: list[IbftTarget] = []
    for i, t in enumerate(cfg.targets):
        if address_kind(t.address) == "hostname":
            raise RepresentError(
                f"target address {t.address!r} is a host name; the iBFT holds only IP addresses",
                where=f"targets[{i}].address",
                fix="give the portal's IP address",
            )
        chap_type = ChapType.NONE
        if t.chap is not None:
            chap_type = ChapType.MUTUAL if t.reverse_chap is not None else ChapType.CHAP
        targets.append(
            IbftTarget(
                index=i,
                address=t.address,
                port=t.port,
                lun=lun_to_sam(t.lun or 0),
                chap_type=int(chap_type),
                nic_assoc=0,
                name=t.name,
                chap_name=t.chap.username if t.chap else None,
                chap_secret=t.chap.password if t.chap else None,
                rev_chap_name=t.reverse_chap.username if t.reverse_chap else None,
                rev_chap_secret=t.reverse_chap.password if t.reverse_chap else None,
            )
        )
    for i, it in enumerate(targets):
        for attr in ("name", "chap_name", "chap_secret", "rev_chap_name", "rev_chap_secret"):
            if len(_encode(getattr(it, attr)) or b"") > 0xFFFF:
                raise RepresentError(f"{attr} is longer than 65535 bytes", where=f"targets[{i}]")
    table = Table(
        signature=signature,
        oem_id=oem_id,
        oem_table_id=oem_table_id,
        initiator=Initiator(name=cfg.initiator),
        nics=(nic,),
        targets=tuple(targets),
    )
    table = layout(table)
    if table.length > 0xFFFF:
        raise RepresentError(
            f"the table would be {table.length} bytes; string offsets are 16-bit",
            fix="use shorter names",
        )
    return table
