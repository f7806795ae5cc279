"""SCSI commands as bytes: CDBs, parameter data and answers.  Pure.

INQUIRY (standard data; VPD pages 0x00 supported pages, 0x83 device
identification, 0xB0 Block Limits, 0xB2 Logical Block Provisioning), REPORT
LUNS, READ CAPACITY (10) and (16), READ and WRITE (10) and (16), SYNCHRONIZE
CACHE (10) and (16), UNMAP; fixed and descriptor sense data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from iscsiboot.iscsi.pdu import ProtocolError
from iscsiboot.model import lun_from_sam

INQUIRY = 0x12
REPORT_LUNS = 0xA0
READ_CAPACITY_10 = 0x25
SERVICE_ACTION_IN_16 = 0x9E
READ_CAPACITY_16_SA = 0x10
READ_10 = 0x28
READ_16 = 0x88
WRITE_10 = 0x2A
WRITE_16 = 0x8A
SYNCHRONIZE_CACHE_10 = 0x35
SYNCHRONIZE_CACHE_16 = 0x91
UNMAP = 0x42
TEST_UNIT_READY = 0x00

DEVICE_TYPES = {
    0x00: "disk",
    0x01: "tape",
    0x05: "cd/dvd",
    0x07: "optical",
    0x0C: "controller",
    0x0E: "simplified disk",
    0x0D: "enclosure",
    0x1F: "unknown",
}
# The peripheral device types a block device is made of: direct access and simplified direct access.
DISK_TYPES = frozenset({0x00, 0x0E})


def inquiry_cdb(*, page: int | None = None, length: int = 255) -> bytes:
    if page is None:
        return struct.pack(">BBBHB", INQUIRY, 0, 0, length, 0)
    return struct.pack(">BBBHB", INQUIRY, 1, page, length, 0)


def report_luns_cdb(length: int = 4096) -> bytes:
    return struct.pack(">BBBBBBIBB", REPORT_LUNS, 0, 0, 0, 0, 0, length, 0, 0)


def read_capacity10_cdb() -> bytes:
    return bytes([READ_CAPACITY_10]) + bytes(9)


def read_capacity16_cdb(length: int = 32) -> bytes:
    return struct.pack(">BBQIBB", SERVICE_ACTION_IN_16, READ_CAPACITY_16_SA, 0, length, 0, 0)


def read10_cdb(lba: int, blocks: int) -> bytes:
    if not 0 <= lba < 1 << 32 or not 0 < blocks < 1 << 16:
        raise ValueError("READ(10) takes a 32-bit LBA and 1-65535 blocks")
    return struct.pack(">BBIBHB", READ_10, 0, lba, 0, blocks, 0)


def read16_cdb(lba: int, blocks: int) -> bytes:
    if not 0 <= lba < 1 << 64 or not 0 < blocks < 1 << 32:
        raise ValueError("READ(16) takes a 64-bit LBA and a 32-bit block count")
    return struct.pack(">BBQIBB", READ_16, 0, lba, blocks, 0, 0)


def write10_cdb(lba: int, blocks: int) -> bytes:
    if not 0 <= lba < 1 << 32 or not 0 < blocks < 1 << 16:
        raise ValueError("WRITE(10) takes a 32-bit LBA and 1-65535 blocks")
    return struct.pack(">BBIBHB", WRITE_10, 0, lba, 0, blocks, 0)


def write16_cdb(lba: int, blocks: int) -> bytes:
    if not 0 <= lba < 1 << 64 or not 0 < blocks < 1 << 32:
        raise ValueError("WRITE(16) takes a 64-bit LBA and a 32-bit block count")
    return struct.pack(">BBQIBB", WRITE_16, 0, lba, blocks, 0, 0)


def fits_10(lba: int, blocks: int) -> bool:
    """True when a (10) CDB can address ``blocks`` blocks from ``lba``."""
    return lba + blocks <= 0xFFFFFFFF and blocks < 1 << 16


def synchronize_cache10_cdb(lba: int = 0, blocks: int = 0) -> bytes:
    """SYNCHRONIZE CACHE(10); ``blocks=0`` means from ``lba`` to the end of the medium."""
    if not 0 <= lba < 1 << 32 or not 0 <= blocks < 1 << 16:
        raise ValueError("SYNCHRONIZE CACHE(10) takes a 32-bit LBA and 0-65535 blocks")
    return struct.pack(">BBIBHB", SYNCHRONIZE_CACHE_10, 0, lba, 0, blocks, 0)


def synchronize_cache16_cdb(lba: int = 0, blocks: int = 0) -> bytes:
    if not 0 <= lba < 1 << 64 or not 0 <= blocks < 1 << 32:
        raise ValueError("SYNCHRONIZE CACHE(16) takes a 64-bit LBA and a 32-bit block count")
    return struct.pack(">BBQIBB", SYNCHRONIZE_CACHE_16, 0, lba, blocks, 0, 0)


UNMAP_DESCRIPTORS_MAX = (0xFFFF - 8) // 16  # what a 16-bit parameter list length holds


def unmap_cdb(parameter_length: int) -> bytes:
    if not 24 <= parameter_length <= 0xFFFF:
        raise ValueError("an UNMAP parameter list has 24 to 65535 bytes")
    return struct.pack(">BBIBHB", UNMAP, 0, 0, 0, parameter_length, 0)


def unmap_parameters(ranges: Sequence[tuple[int, int]]) -> bytes:
    """The UNMAP parameter list: a header and one block descriptor per ``(lba, blocks)``."""
    if not 0 < len(ranges) <= UNMAP_DESCRIPTORS_MAX:
        raise ValueError(f"UNMAP takes 1 to {UNMAP_DESCRIPTORS_MAX} block descriptors")
    out = bytearray(struct.pack(">HHI", 6 + 16 * len(ranges), 16 * len(ranges), 0))
    for lba, blocks in ranges:
        if not 0 <= lba < 1 << 64 or not 0 < blocks < 1 << 32:
            raise ValueError("an UNMAP block descriptor takes a 64-bit LBA and 1 to 2**32-1 blocks")
        out += struct.pack(">QII", lba, blocks, 0)
    return bytes(out)


@dataclass(frozen=True)
class Inquiry:
    peripheral_qualifier: int
    device_type: int
    removable: bool
    version: int
    vendor: str
    product: str
    revision: str

    @property
    def type_name(self) -> str:
        return DEVICE_TYPES.get(self.device_type, f"type 0x{self.device_type:02x}")

    @property
    def connected(self) -> bool:
        return self.peripheral_qualifier == 0


def _ascii(raw: bytes) -> str:
    return raw.decode("ascii", errors="replace").replace("\0", " ").strip()


def parse_inquiry(data: bytes) -> Inquiry:
    if len(data) < 36:
        raise ProtocolError(f"standard INQUIRY data has {len(data)} bytes, fewer than 36")
    return Inquiry(
        peripheral_qualifier=data[0] >> 5,
        device_type=data[0] & 0x1F,
        removable=bool(data[1] & 0x80),
        version=data[2],
        vendor=_ascii(data[8:16]),
        product=_ascii(data[16:32]),
        revision=_ascii(data[32:36]),
    )


@dataclass(frozen=True)
class Designator:
    code_set: int  # 1 binary, 2 ASCII, 3 UTF-8
    association: int  # 0 LUN, 1 target port, 2 target device
    type: int  # 1 T10 vendor, 2 EUI-64, 3 NAA, 8 SCSI name string, ...
    value: bytes

    @property
    def text(self) -> str:
        if self.code_set in (2, 3):
            return self.value.decode("utf-8", errors="replace").rstrip("\0 ")
        return self.value.hex()


def parse_device_identification(data: bytes) -> tuple[Designator, ...]:
    """VPD page 0x83."""
    if len(data) < 4 or data[1] != 0x83:
        raise ProtocolError("not a device identification VPD page (0x83)")
    end = min(len(data), 4 + struct.unpack_from(">H", data, 2)[0])
    pos = 4
    out = []
    while pos + 4 <= end:
        length = data[pos + 3]
        value = data[pos + 4 : pos + 4 + length]
        if len(value) < length:
            raise ProtocolError("truncated designator in VPD page 0x83")
        out.append(Designator(data[pos] & 0x0F, (data[pos + 1] >> 4) & 3, data[pos + 1] & 0x0F, value))
        pos += 4 + length
    return tuple(out)


def parse_report_luns(data: bytes) -> tuple[int, ...]:
    """LUN numbers (model form: first SAM level in the low 16 bits), flat addressing reduced."""
    if len(data) < 8:
        raise ProtocolError("REPORT LUNS data shorter than its 8-byte header")
    length = struct.unpack_from(">I", data, 0)[0]
    count = min(length, len(data) - 8) // 8
    luns = []
    for i in range(count):
        raw = data[8 + 8 * i : 16 + 8 * i]
        first = int.from_bytes(raw[0:2], "big")
        if first >> 14 == 1:  # flat space addressing: the method bits are not part of the number
            raw = (first & 0x3FFF).to_bytes(2, "big") + raw[2:]
        luns.append(lun_from_sam(raw))
    return tuple(luns)


def report_luns_length(data: bytes) -> int:
    """Bytes the full answer needs (header + list), to ask again when it was cut short."""
    if len(data) < 4:
        return 0
    return 8 + int(struct.unpack_from(">I", data, 0)[0])


@dataclass(frozen=True)
class Capacity:
    last_lba: int  # -1: the LUN has no blocks
    block_size: int
    provisioned: bool = False  # LBPME: thin provisioning (logical block provisioning management)
    zeroes_unmapped: bool = False  # LBPRZ: unmapped blocks read as zeroes

    @property
    def blocks(self) -> int:
        return self.last_lba + 1

    @property
    def bytes(self) -> int:
        return self.blocks * self.block_size


EMPTY_LAST_LBA = 0xFFFF_FFFF_FFFF_FFFF  # READ CAPACITY(16) of a 0-byte LUN from tgt: no block at all


def parse_read_capacity10(data: bytes) -> Capacity:
    if len(data) < 8:
        raise ProtocolError("READ CAPACITY(10) data shorter than 8 bytes")
    last, size = struct.unpack_from(">II", data, 0)
    return Capacity(last, size)


def parse_read_capacity16(data: bytes) -> Capacity:
    if len(data) < 12:
        raise ProtocolError("READ CAPACITY(16) data shorter than 12 bytes")
    last, size = struct.unpack_from(">QI", data, 0)
    if last == EMPTY_LAST_LBA:  # an empty LUN, whose "last block" some targets compute as 0 - 1
        last = -1
    flags = data[14] if len(data) > 14 else 0
    return Capacity(last, size, provisioned=bool(flags & 0x80), zeroes_unmapped=bool(flags & 0x40))


# ---------------------------------------------------------------- provisioning and limits (SBC-3)

NO_LIMIT = 0xFFFFFFFF  # "no limit" in the 32-bit fields of the Block Limits page


def parse_supported_pages(data: bytes) -> frozenset[int]:
    """VPD page 0x00: the VPD pages the device serves."""
    if len(data) < 4 or data[1] != 0x00:
        raise ProtocolError("not a supported VPD pages page (0x00)")
    end = min(len(data), 4 + struct.unpack_from(">H", data, 2)[0])
    return frozenset(data[4:end])


@dataclass(frozen=True)
class BlockLimitsPage:
    """VPD page 0xB0 as the device wrote it (0: field absent or not reported)."""

    max_transfer_blocks: int
    optimal_transfer_blocks: int
    max_unmap_blocks: int  # 0: UNMAP not implemented; NO_LIMIT: bounded by the list only
    max_unmap_descriptors: int
    unmap_granularity: int


def parse_block_limits_page(data: bytes) -> BlockLimitsPage:
    """VPD page 0xB0 (Block Limits); SBC-2's short page has no UNMAP fields."""
    if len(data) < 4 or data[1] != 0xB0:
        raise ProtocolError("not a Block Limits VPD page (0xB0)")
    page = bytes(data[: 4 + struct.unpack_from(">H", data, 2)[0]]).ljust(32, b"\0")
    max_transfer, optimal, _prefetch, max_unmap, descriptors, granularity = struct.unpack_from(
        ">IIIIII", page, 8
    )
    return BlockLimitsPage(max_transfer, optimal, max_unmap, descriptors, granularity)


@dataclass(frozen=True)
class ProvisioningPage:
    """VPD page 0xB2 (Logical Block Provisioning)."""

    unmap: bool  # LBPU: the device takes UNMAP
    write_same_unmap: bool  # LBPWS
    zeroes_unmapped: bool  # LBPRZ: unmapped blocks read as zeroes
    provisioning_type: int  # 0 full or unknown, 1 resource provisioned, 2 thin provisioned


def parse_provisioning_page(data: bytes) -> ProvisioningPage:
    if len(data) < 8 or data[1] != 0xB2:
        raise ProtocolError("not a Logical Block Provisioning VPD page (0xB2) of at least 8 bytes")
    flags = data[5]
    return ProvisioningPage(
        unmap=bool(flags & 0x80),
        write_same_unmap=bool(flags & 0x40),
        zeroes_unmapped=bool(flags & 0x1C),
        provisioning_type=data[6] & 0x07,
    )


@dataclass(frozen=True)
class BlockLimits:
    """What a LUN allows, for a block device on top of it (counts in logical blocks)."""

    unmap: bool  # UNMAP is supported
    max_unmap_blocks: int  # per UNMAP command (NO_LIMIT: none)
    max_unmap_descriptors: int  # per UNMAP command
    max_transfer_blocks: int  # per READ/WRITE (0: the LUN reports no limit)
    optimal_transfer_blocks: int  # 0: not reported
    unmap_granularity: int  # 0: not reported
    zeroes_unmapped: bool  # unmapped blocks read as zeroes


def block_limits(
    capacity: Capacity | None, limits: BlockLimitsPage | None, provisioning: ProvisioningPage | None
) -> BlockLimits:
    """Combine READ CAPACITY(16) (LBPME, LBPRZ) and VPD pages 0xB0 and 0xB2 (each may be
    missing).  UNMAP counts as supported only when the LUN is thin (LBPME, when known)
    and says so: LBPU on page 0xB2, else a non-zero maximum UNMAP LBA count on 0xB0."""
    if provisioning is not None:
        unmap = provisioning.unmap
    else:
        unmap = limits is not None and limits.max_unmap_blocks > 0
    if capacity is not None and not capacity.provisioned:
        unmap = False
    max_blocks = max_descriptors = 0
    if unmap:
        max_blocks = limits.max_unmap_blocks if limits and limits.max_unmap_blocks else NO_LIMIT
        max_descriptors = min(max(limits.max_unmap_descriptors if limits else 1, 1), UNMAP_DESCRIPTORS_MAX)
    zeroes = (provisioning is not None and provisioning.zeroes_unmapped) or (
        capacity is not None and capacity.zeroes_unmapped
    )
    return BlockLimits(
        unmap=unmap,
        max_unmap_blocks=max_blocks,
        max_unmap_descriptors=max_descriptors,
        max_transfer_blocks=limits.max_transfer_blocks if limits else 0,
        optimal_transfer_blocks=limits.optimal_transfer_blocks if limits else 0,
        unmap_granularity=limits.unmap_granularity if limits else 0,
        zeroes_unmapped=unmap and zeroes,
    )


def unmap_plan(lba: int, blocks: int, limits: BlockLimits) -> Iterator[tuple[tuple[int, int], ...]]:
    """The block descriptors of each UNMAP command that unmaps ``blocks`` blocks from ``lba``."""
    if not limits.unmap:
        raise ValueError("the LUN does not support UNMAP")
    per_descriptor = min(0xFFFFFFFF, limits.max_unmap_blocks)
    while blocks > 0:
        ranges: list[tuple[int, int]] = []
        budget = None if limits.max_unmap_blocks == NO_LIMIT else limits.max_unmap_blocks
        while blocks > 0 and len(ranges) < limits.max_unmap_descriptors and (budget is None or budget > 0):
            n = min(blocks, per_descriptor, budget if budget is not None else blocks)
            ranges.append((lba, n))
            lba += n
            blocks -= n
            if budget is not None:
                budget -= n
        yield tuple(ranges)


SENSE_KEYS = {
    0x0: "no sense",
    0x1: "recovered error",
    0x2: "not ready",
    0x3: "medium error",
    0x4: "hardware error",
    0x5: "illegal request",
    0x6: "unit attention",
    0x7: "data protect",
    0x8: "blank check",
    0xB: "aborted command",
    0xD: "volume overflow",
    0xE: "miscompare",
}


@dataclass(frozen=True)
class Sense:
    key: int
    asc: int
    ascq: int

    def __str__(self) -> str:
        name = SENSE_KEYS.get(self.key, f"sense key 0x{self.key:x}")
        return f"{name} (ASC/ASCQ 0x{self.asc:02x}/0x{self.ascq:02x})"


def parse_sense(data: bytes) -> Sense | None:
    """Sense data as carried in an iSCSI SCSI Response: a 2-byte length, then the sense bytes."""
    if len(data) < 2:
        return None
    length = struct.unpack_from(">H", data, 0)[0]
    sense = data[2 : 2 + length]
    if len(sense) < 1:
        return None
    code = sense[0] & 0x7F
    if code in (0x70, 0x71) and len(sense) >= 14:
        return Sense(sense[2] & 0x0F, sense[12], sense[13])
    if code in (0x72, 0x73) and len(sense) >= 4:
        return Sense(sense[1] & 0x0F, sense[2], sense[3])
    return None
