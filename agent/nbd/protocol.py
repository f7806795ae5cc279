"""The kernel's NBD wire protocol (``include/uapi/linux/nbd.h``), pure: no I/O.

The kernel is the client: it sends 28-byte requests (magic, command flags,
command type, an opaque 8-byte handle that the kernel calls the cookie, offset,
length), followed by the data for a write, and expects 16-byte simple replies
(magic, error, the same handle), followed by the data for a successful read.
Errors in replies are errno values from the NBD protocol's own list (EPERM,
EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN).
"""

from __future__ import annotations

import enum
import errno
import struct
from dataclasses import dataclass

from iscsiboot.iscsi.pdu import ProtocolError
from iscsiboot.iscsi.scsi import Sense

REQUEST_MAGIC = 0x25609513
REPLY_MAGIC = 0x67446698
_REQUEST = struct.Struct(">IHHQQI")
_REPLY = struct.Struct(">II8s")
REQUEST_SIZE = _REQUEST.size  # 28
REPLY_SIZE = _REPLY.size  # 16
# The kernel's NBD queue takes at most 65536 sectors (32 MiB) in one request.
MAX_LENGTH = 32 * 1024 * 1024
MAX_REQUEST = 1024 * 1024  # the largest request the kernel is told to send (max_sectors_kb); one buffer
BLOCK_SIZES = (512, 4096)


class Cmd(enum.IntEnum):
    """Command types (the low 16 bits of the request's type word)."""

    READ = 0
    WRITE = 1
    DISC = 2
    FLUSH = 3
    TRIM = 4
    CACHE = 5
    WRITE_ZEROES = 6


SERVED = frozenset({Cmd.READ, Cmd.WRITE, Cmd.DISC, Cmd.FLUSH, Cmd.TRIM})


class CmdFlag(enum.IntFlag):
    """Per-request flags (the high 16 bits of the request's type word)."""

    FUA = 1 << 0
    NO_HOLE = 1 << 1
    DF = 1 << 2


class TxFlag(enum.IntFlag):
    """Transmission flags: what the server supports (NBD_SET_FLAGS)."""

    HAS_FLAGS = 1 << 0
    READ_ONLY = 1 << 1
    SEND_FLUSH = 1 << 2
    SEND_FUA = 1 << 3
    ROTATIONAL = 1 << 4
    SEND_TRIM = 1 << 5
    SEND_WRITE_ZEROES = 1 << 6
    SEND_DF = 1 << 7
    CAN_MULTI_CONN = 1 << 8


def _io(kind: int, number: int) -> int:
    """``_IO(kind, number)``: no data direction, no size."""
    return (kind << 8) | number


class Ioctl(enum.IntEnum):
    """The NBD device's ioctls (``_IO(0xab, n)``)."""

    SET_SOCK = _io(0xAB, 0)
    SET_BLKSIZE = _io(0xAB, 1)
    SET_SIZE = _io(0xAB, 2)
    DO_IT = _io(0xAB, 3)
    CLEAR_SOCK = _io(0xAB, 4)
    CLEAR_QUE = _io(0xAB, 5)
    PRINT_DEBUG = _io(0xAB, 6)
    SET_SIZE_BLOCKS = _io(0xAB, 7)
    DISCONNECT = _io(0xAB, 8)
    SET_TIMEOUT = _io(0xAB, 9)
    SET_FLAGS = _io(0xAB, 10)


BLKRRPART = _io(0x12, 95)  # the block layer's "re-read the partition table"


@dataclass(frozen=True)
class Request:
    type: int  # a Cmd value, or an unknown number to refuse
    handle: int
    offset: int = 0
    length: int = 0
    flags: int = 0  # CmdFlag bits

    @property
    def cmd(self) -> Cmd | None:
        try:
            return Cmd(self.type)
        except ValueError:
            return None

    @property
    def carries_data(self) -> bool:
        """A write's data follows the header on the wire, whatever the server thinks of it."""
        return self.type == Cmd.WRITE

    def encode(self) -> bytes:
        return _REQUEST.pack(REQUEST_MAGIC, self.flags, self.type, self.handle, self.offset, self.length)

    def __str__(self) -> str:
        cmd = self.cmd
        name = cmd.name if cmd is not None else f"type {self.type}"
        return f"{name} {self.length} B at {self.offset}"


def decode_request(raw: bytes) -> Request:
    if len(raw) != REQUEST_SIZE:
        raise ProtocolError(f"an NBD request is {REQUEST_SIZE} bytes, got {len(raw)}")
    magic, flags, kind, handle, offset, length = _REQUEST.unpack(raw)
    if magic != REQUEST_MAGIC:
        raise ProtocolError(f"NBD request magic 0x{magic:08x}, expected 0x{REQUEST_MAGIC:08x}")
    return Request(kind, handle, offset, length, flags)


@dataclass(frozen=True)
class Reply:
    handle: int
    error: int = 0  # an errno; 0: done

    def encode(self) -> bytes:
        return _REPLY.pack(REPLY_MAGIC, self.error, self.handle.to_bytes(8, "big"))


def decode_reply(raw: bytes) -> Reply:
    if len(raw) != REPLY_SIZE:
        raise ProtocolError(f"an NBD reply is {REPLY_SIZE} bytes, got {len(raw)}")
    magic, error, handle = _REPLY.unpack(raw)
    if magic != REPLY_MAGIC:
        raise ProtocolError(f"NBD reply magic 0x{magic:08x}, expected 0x{REPLY_MAGIC:08x}")
    return Reply(int.from_bytes(handle, "big"), error)


# ---------------------------------------------------------------- what the device is


@dataclass(frozen=True)
class Geometry:
    """What the server exports: its size and block size in bytes, and whether it takes TRIM."""

    size: int
    block_size: int
    trim: bool = False
    read_only: bool = False

    @property
    def blocks(self) -> int:
        return self.size // self.block_size

    @property
    def flags(self) -> TxFlag:
        """The transmission flags for NBD_SET_FLAGS."""
        flags = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH
        if self.trim:
            flags |= TxFlag.SEND_TRIM
        if self.read_only:
            flags |= TxFlag.READ_ONLY
        return flags


def check(request: Request, geometry: Geometry) -> int:
    """0 when the request may be served, else the errno of its refusal (never raises)."""
    cmd = request.cmd
    if cmd is None or cmd not in SERVED:
        return errno.EINVAL
    if cmd in (Cmd.DISC, Cmd.FLUSH):
        return 0
    if cmd is Cmd.TRIM and not geometry.trim:
        return errno.EINVAL
    if cmd is Cmd.WRITE and geometry.read_only:
        return errno.EPERM
    if request.length == 0 or request.length > MAX_LENGTH:
        return errno.EINVAL
    bs = geometry.block_size
    if request.offset % bs or request.length % bs:
        return errno.EINVAL
    if request.offset + request.length > geometry.size:
        return errno.EINVAL
    return 0


# ---------------------------------------------------------------- SCSI errors as errno

# Sense keys (SPC-4 table 51) and the errno each becomes when nothing finer applies.
_BY_KEY: dict[int, int] = {
    0x2: errno.EIO,  # not ready
    0x3: errno.EIO,  # medium error
    0x4: errno.EIO,  # hardware error
    0x5: errno.EINVAL,  # illegal request
    0x7: errno.EPERM,  # data protect
    0xB: errno.EIO,  # aborted command
    0xD: errno.ENOSPC,  # volume overflow
    0xE: errno.EIO,  # miscompare
}
# (key, ASC, ASCQ or None for any) that say more than the key.
_BY_CODE: dict[tuple[int, int, int | None], int] = {
    (0x7, 0x27, 0x07): errno.ENOSPC,  # space allocation failed write protect (thin pool full)
    (0x7, 0x27, None): errno.EPERM,  # write protected
    (0x5, 0x21, None): errno.EINVAL,  # logical block address out of range
    (0x5, 0x20, None): errno.ENOTSUP,  # invalid command operation code
    (0x5, 0x24, None): errno.EINVAL,  # invalid field in CDB
    (0x2, 0x04, None): errno.EIO,  # logical unit not ready
    (0x3, 0x11, None): errno.EIO,  # unrecovered read error
    (0x3, 0x0C, None): errno.EIO,  # write error
}


def errno_of_sense(sense: Sense | None) -> int:
    """The reply's errno for a SCSI command that failed with ``sense`` (None: no sense data: EIO).

    Write protection is EPERM (the NBD protocol has no EROFS); a full thin
    pool is ENOSPC; anything not known is EIO.
    """
    if sense is None:
        return errno.EIO
    for ascq in (sense.ascq, None):
        found = _BY_CODE.get((sense.key, sense.asc, ascq))
        if found is not None:
            return found
    return _BY_KEY.get(sense.key, errno.EIO)
