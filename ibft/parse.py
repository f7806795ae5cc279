"""Parse an iBFT: every length and offset is checked before ``construct`` reads a slice.

Any input either parses or raises one :class:`~iscsiboot.errors.TableError`
naming the field and its offset; with ``lenient`` the defects Linux tolerates
become warnings.  Pure.  The layouts are imported when a table is parsed, so
that importing this module does not import ``construct``.
"""

# ruff: noqa: PLC0415  (construct is imported where a raw table is parsed)
from __future__ import annotations

from typing import Any, TypedDict

from iscsiboot.errors import TableError
from iscsiboot.ibft.codec import checksum_of, ip_from_bytes, mac_from_bytes
from iscsiboot.ibft.types import (
    CONTROL_MIN,
    HEADER_SIZE,
    INITIATOR_SIZE,
    NIC_SIZE,
    SIGNATURES,
    TARGET_SIZE,
    Control,
    IbftTarget,
    Initiator,
    Nic,
    Parsed,
    Ref,
    StructId,
    Table,
)
from iscsiboot.secret import Secret


def _ascii_field(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


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


class _Common(TypedDict):
    """The fields every structure takes from its common header."""

    offset: int
    version: int
    length: int
    index: int
    flags: int


def _common_of(raw: Any, off: int) -> _Common:
    hdr = raw.hdr
    return _Common(
        offset=off,
        version=int(hdr.version),
        length=int(hdr.length),
        index=int(hdr.index),
        flags=int(hdr.flags),
    )


def _ref_of(raw: Any) -> Ref:
    return Ref(int(raw.length), int(raw.offset))


def _initiator_of(raw: Any, off: int, reader: _Reader) -> Initiator:
    return Initiator(
        **_common_of(raw, off),
        isns_server=ip_from_bytes(raw.isns_server),
        slp_server=ip_from_bytes(raw.slp_server),
        pri_radius_server=ip_from_bytes(raw.pri_radius_server),
        sec_radius_server=ip_from_bytes(raw.sec_radius_server),
        name=reader.string(raw.name, f"initiator at offset 0x{off:x}: initiator-name"),
        name_ref=_ref_of(raw.name),
    )


def _nic_of(raw: Any, off: int, reader: _Reader) -> Nic:
    at = f"ethernet{raw.hdr.index} at offset 0x{off:x}"
    return Nic(
        **_common_of(raw, off),
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
        hostname_ref=_ref_of(raw.hostname),
    )


def _target_of(raw: Any, off: int, reader: _Reader) -> IbftTarget:
    at = f"target{raw.hdr.index} at offset 0x{off:x}"

    def secret(ref: Any, name: str) -> Secret | None:
        value = reader.string(ref, f"{at}: {name}", secret=True)
        return None if value is None else Secret(value)

    return IbftTarget(
        **_common_of(raw, off),
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
        name_ref=_ref_of(raw.name),
        chap_name_ref=_ref_of(raw.chap_name),
        chap_secret_ref=_ref_of(raw.chap_secret),
        rev_chap_name_ref=_ref_of(raw.rev_chap_name),
        rev_chap_secret_ref=_ref_of(raw.rev_chap_secret),
    )
