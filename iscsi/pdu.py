"""iSCSI PDUs as bytes (RFC 7143 §11): encode, decode, digests, serial numbers.

Pure: no sockets.  A :class:`Pdu` is the 48-byte Basic Header Segment, the
Additional Header Segments and the data segment.  :func:`encode` frames it
(padding, optional CRC32C digests); :class:`PduReader` takes bytes as they
arrive and hands out whole PDUs.  Anything malformed raises
:class:`ProtocolError` and nothing else.
"""

from __future__ import annotations

import enum
import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from iscsiboot.errors import IscsibootError

BHS_LEN = 48
RESERVED_TAG = 0xFFFFFFFF
MAX_DATA_SEGMENT = (1 << 24) - 1


class ProtocolError(IscsibootError):
    """The peer sent something that is not valid iSCSI (or not what the state allows)."""


class Op(enum.IntEnum):
    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TASK_MGMT = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK = 0x10
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TASK_MGMT_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


TARGET_OPS = frozenset(op for op in Op if op >= 0x20)
INITIATOR_OPS = frozenset({*(op for op in Op if op < 0x20), 0x1C, 0x1D, 0x1E})

# ---------------------------------------------------------------- serial numbers (RFC 1982, 32 bits)

_SN_MOD = 1 << 32
_SN_HALF = 1 << 31


def sn_add(a: int, n: int) -> int:
    return (a + n) % _SN_MOD


def sn_lt(a: int, b: int) -> bool:
    """``a < b`` in 32-bit serial number arithmetic (undefined distance 2**31 is False)."""
    return a != b and ((a < b and b - a < _SN_HALF) or (a > b and a - b > _SN_HALF))


def sn_le(a: int, b: int) -> bool:
    return a == b or sn_lt(a, b)


def sn_gt(a: int, b: int) -> bool:
    return sn_lt(b, a)


# ---------------------------------------------------------------- CRC32C (Castagnoli, reflected 0x82F63B78)


def _crc_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc32c(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C of ``data``, continuing from ``crc``; ``crc32c(b"123456789") == 0xE3069283``."""
    return _crc32c_implementation()(data, crc)


@functools.cache
def _crc32c_implementation() -> Callable[[bytes | bytearray | memoryview, int], int]:
    """The C CRC32C of the ``crc32c`` package where it is installed (the host: hundreds of MiB/s),
    else :func:`crc32c_pure` (the initramfs, which does not carry it).  Imported at the first
    digest, not with this module: a trace of the agent's imports must not pull it into an image."""
    try:
        import crc32c as fast  # noqa: PLC0415
    except ImportError:
        return crc32c_pure
    implementation: Callable[[bytes | bytearray | memoryview, int], int] = fast.crc32c
    return implementation


def crc32c_pure(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC32C in Python, one table look-up per byte (about 7 MiB/s)."""
    c = crc ^ 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def digest_bytes(data: bytes | bytearray | memoryview) -> bytes:
    """The 4 digest bytes as they go on the wire (the CRC little-endian, RFC 7143 §11.1 / B.4)."""
    return crc32c(data).to_bytes(4, "little")


def pad4(n: int) -> int:
    return (4 - n % 4) % 4


# ---------------------------------------------------------------- the PDU


@dataclass(frozen=True)
class Pdu:
    """One PDU: ``bhs`` is exactly 48 bytes (its DataSegmentLength/TotalAHSLength are
    recomputed by :func:`encode`), ``ahs`` a multiple of 4, ``data`` unpadded."""

    bhs: bytes
    ahs: bytes = b""
    data: bytes = field(default=b"")

    def __post_init__(self) -> None:
        if len(self.bhs) != BHS_LEN:
            raise ProtocolError(f"a basic header segment has 48 bytes, not {len(self.bhs)}")
        if len(self.ahs) % 4:
            raise ProtocolError("additional header segments are a multiple of 4 bytes")

    @property
    def opcode(self) -> int:
        return self.bhs[0] & 0x3F

    @property
    def immediate(self) -> bool:
        return bool(self.bhs[0] & 0x40)

    @property
    def flags(self) -> int:
        return self.bhs[1]

    @property
    def final(self) -> bool:
        return bool(self.bhs[1] & 0x80)

    @property
    def lun_bytes(self) -> bytes:
        return self.bhs[8:16]

    @property
    def itt(self) -> int:
        return self.u32(16)

    def u32(self, offset: int) -> int:
        value: int = struct.unpack_from(">I", self.bhs, offset)[0]
        return value

    def u16(self, offset: int) -> int:
        value: int = struct.unpack_from(">H", self.bhs, offset)[0]
        return value

    # Fields that target PDUs carry at the same place (NOP-In, SCSI Response,
    # Login/Text/Logout Response, Data-In, R2T, Async, Reject).
    @property
    def stat_sn(self) -> int:
        return self.u32(24)

    @property
    def exp_cmd_sn(self) -> int:
        return self.u32(28)

    @property
    def max_cmd_sn(self) -> int:
        return self.u32(32)

    def name(self) -> str:
        try:
            return Op(self.opcode).name
        except ValueError:
            return f"opcode 0x{self.opcode:02x}"


def make_bhs(opcode: int, *, immediate: bool = False, flags: int = 0, **fields: bytes) -> bytearray:
    """A zeroed BHS with the opcode byte and flag byte set; callers fill the rest."""
    bhs = bytearray(BHS_LEN)
    bhs[0] = (opcode & 0x3F) | (0x40 if immediate else 0)
    bhs[1] = flags
    return bhs


Buffer: TypeAlias = bytes | bytearray | memoryview


def frame(
    bhs: bytes, ahs: bytes, data: Buffer, *, header_digest: bool = False, data_digest: bool = False
) -> list[Buffer]:
    """The wire bytes of one PDU as a list of buffers (for ``sendmsg``): the header
    with its lengths filled in (and its digest), then the data as given (not copied),
    then its padding (and digest).  ``data`` is a byte-format buffer."""
    size = len(data)
    if size > MAX_DATA_SEGMENT:
        raise ProtocolError("data segment longer than 2**24-1 bytes")
    if len(ahs) // 4 > 255:
        raise ProtocolError("additional header segments longer than 1020 bytes")
    header = bytearray(bhs)
    header[4] = len(ahs) // 4
    header[5:8] = size.to_bytes(3, "big")
    header += ahs
    if header_digest:
        header += digest_bytes(header)
    if not size:
        return [bytes(header)]
    tail = b"\0" * pad4(size)
    if data_digest:
        tail += crc32c(tail, crc32c(data)).to_bytes(4, "little")
    return [bytes(header), data, tail] if tail else [bytes(header), data]


def encode(pdu: Pdu, *, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """The wire bytes of ``pdu`` (lengths filled in, data padded, digests when asked)."""
    return b"".join(frame(pdu.bhs, pdu.ahs, pdu.data, header_digest=header_digest, data_digest=data_digest))


def header_length(bhs: Buffer, *, header_digest: bool) -> int:
    """Bytes from the start of a PDU to its data segment: BHS, AHS, header digest."""
    return BHS_LEN + bhs[4] * 4 + (4 if header_digest else 0)


def data_length(bhs: Buffer) -> int:
    """The DataSegmentLength of a BHS (without padding)."""
    return int.from_bytes(bhs[5:8], "big")


def parse_header(header: bytes, *, header_digest: bool, from_target: bool = True) -> Pdu:
    """The BHS and AHS of a whole header (``header_length`` bytes) as a data-less
    :class:`Pdu`, after the reserved bit, the opcode and the digest are checked."""
    opcode = header[0] & 0x3F
    if header[0] & 0x80:
        raise ProtocolError(f"PDU byte 0 has its reserved bit set (0x{header[0]:02x})")
    if from_target and opcode not in TARGET_OPS and opcode not in (0x3C, 0x3D, 0x3E):
        raise ProtocolError(f"unexpected opcode 0x{opcode:02x} from the target")
    if not from_target and (opcode in TARGET_OPS or opcode not in INITIATOR_OPS):
        raise ProtocolError(f"unexpected opcode 0x{opcode:02x} from the initiator")
    end = BHS_LEN + header[4] * 4
    if header_digest and header[end : end + 4] != digest_bytes(header[:end]):
        raise ProtocolError("header digest (CRC32C) mismatch")
    return Pdu(header[:BHS_LEN], header[BHS_LEN:end])


def check_data_digest(data: Buffer, tail: bytes) -> None:
    """``tail`` is the padding then the 4 digest bytes that followed ``data``."""
    if crc32c(tail[:-4], crc32c(data)).to_bytes(4, "little") != tail[-4:]:
        raise ProtocolError("data digest (CRC32C) mismatch")


def decode(raw: bytes, *, header_digest: bool = False, data_digest: bool = False) -> Pdu:
    """Exactly one PDU from ``raw``; :class:`ProtocolError` when it is not exactly one."""
    reader = PduReader(header_digest=header_digest, data_digest=data_digest)
    reader.feed(raw)
    pdu = reader.next()
    if pdu is None:
        raise ProtocolError(f"truncated PDU ({len(raw)} bytes)")
    if reader.pending:
        raise ProtocolError(f"{reader.pending} bytes after the PDU")
    return pdu


class PduReader:
    """Sans-I/O framing: :meth:`feed` bytes, take whole PDUs with :meth:`next`.

    :meth:`needed` says how many more bytes complete the next PDU, so a
    transport can read exactly that much.
    """

    def __init__(
        self, *, header_digest: bool = False, data_digest: bool = False, from_target: bool = True
    ) -> None:
        self.header_digest = header_digest
        self.data_digest = data_digest
        self.from_target = from_target  # False: read an initiator's PDUs (a test target, a trace)
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> None:
        self._buf += data

    def _total(self) -> int | None:
        if len(self._buf) < BHS_LEN:
            return None
        total = header_length(self._buf, header_digest=self.header_digest)
        size = data_length(self._buf)
        if size:
            total += size + pad4(size) + (4 if self.data_digest else 0)
        return total

    def needed(self) -> int:
        total = self._total()
        if total is None:
            return BHS_LEN - len(self._buf)
        return max(0, total - len(self._buf))

    def next(self) -> Pdu | None:
        total = self._total()
        if total is None or len(self._buf) < total:
            return None
        raw = bytes(self._buf[:total])
        del self._buf[:total]
        end = header_length(raw, header_digest=self.header_digest)
        head = parse_header(raw[:end], header_digest=self.header_digest, from_target=self.from_target)
        size = data_length(raw)
        if not size:
            return head
        if self.data_digest:
            check_data_digest(memoryview(raw)[end : end + size], raw[end + size :])
        return Pdu(head.bhs, head.ahs, raw[end : end + size])
