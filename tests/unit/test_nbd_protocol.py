"""The NBD wire protocol: requests and replies as the kernel's uapi header lays them out, checks, errno."""

from __future__ import annotations

import errno
import struct

import pytest
from iscsiboot.agent.nbd import protocol as p
from iscsiboot.iscsi.pdu import ProtocolError
from iscsiboot.iscsi.scsi import Sense

GEO = p.Geometry(size=1024 * 1024, block_size=512, trim=True)


def test_ioctl_numbers_are_the_uapi_header_s() -> None:
    # _IO(0xab, n): no direction, no size: type in bits 8-15, number in bits 0-7
    assert int(p.Ioctl.SET_SOCK) == 0xAB00
    assert int(p.Ioctl.SET_BLKSIZE) == 0xAB01
    assert int(p.Ioctl.DO_IT) == 0xAB03
    assert int(p.Ioctl.CLEAR_SOCK) == 0xAB04
    assert int(p.Ioctl.CLEAR_QUE) == 0xAB05
    assert int(p.Ioctl.SET_SIZE_BLOCKS) == 0xAB07
    assert int(p.Ioctl.DISCONNECT) == 0xAB08
    assert int(p.Ioctl.SET_TIMEOUT) == 0xAB09
    assert int(p.Ioctl.SET_FLAGS) == 0xAB0A
    assert p.BLKRRPART == 0x125F


def test_request_layout() -> None:
    raw = struct.pack(">IHHQQI", 0x25609513, 1, 1, 0x0102030405060708, 4096, 512)
    request = p.decode_request(raw)
    assert request == p.Request(p.Cmd.WRITE, 0x0102030405060708, 4096, 512, flags=p.CmdFlag.FUA)
    assert request.encode() == raw
    assert request.carries_data
    assert len(raw) == p.REQUEST_SIZE == 28


def test_reply_layout() -> None:
    raw = p.Reply(0xDEADBEEF00000001, errno.EIO).encode()
    assert raw == struct.pack(">II", 0x67446698, 5) + bytes.fromhex("deadbeef00000001")
    assert p.decode_reply(raw) == p.Reply(0xDEADBEEF00000001, errno.EIO)
    assert p.REPLY_SIZE == 16


@pytest.mark.parametrize("raw", [b"", b"\0" * 27, struct.pack(">IHHQQI", 0x12560953, 0, 0, 1, 0, 0)])
def test_a_bad_request_header_is_a_protocol_error(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        p.decode_request(raw)


def test_flags_offered_to_the_kernel() -> None:
    assert GEO.flags == p.TxFlag.HAS_FLAGS | p.TxFlag.SEND_FLUSH | p.TxFlag.SEND_TRIM
    no_trim = p.Geometry(size=4096, block_size=4096)
    assert not no_trim.flags & p.TxFlag.SEND_TRIM
    assert int(p.TxFlag.SEND_TRIM) == 32 and int(p.TxFlag.SEND_FLUSH) == 4
    assert no_trim.blocks == 1


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (p.Request(p.Cmd.READ, 1, 0, 512), 0),
        (p.Request(p.Cmd.READ, 1, 1024 * 1024 - 512, 512), 0),
        (p.Request(p.Cmd.WRITE, 1, 512, 4096), 0),
        (p.Request(p.Cmd.TRIM, 1, 0, 1024 * 1024), 0),
        (p.Request(p.Cmd.FLUSH, 1), 0),
        (p.Request(p.Cmd.DISC, 1), 0),
        (p.Request(p.Cmd.READ, 1, 1024 * 1024, 512), errno.EINVAL),  # past the end
        (p.Request(p.Cmd.READ, 1, 1024 * 1024 - 512, 1024), errno.EINVAL),  # runs past the end
        (p.Request(p.Cmd.READ, 1, 2**64 - 512, 512), errno.EINVAL),  # no wrap-around
        (p.Request(p.Cmd.READ, 1, 100, 512), errno.EINVAL),  # offset not aligned
        (p.Request(p.Cmd.WRITE, 1, 0, 100), errno.EINVAL),  # length not aligned
        (p.Request(p.Cmd.READ, 1, 0, 0), errno.EINVAL),  # nothing
        (p.Request(p.Cmd.READ, 1, 0, p.MAX_LENGTH + 512), errno.EINVAL),  # too big to hold
        (p.Request(p.Cmd.WRITE_ZEROES, 1, 0, 512), errno.EINVAL),  # not served
        (p.Request(p.Cmd.CACHE, 1, 0, 512), errno.EINVAL),
        (p.Request(77, 1, 0, 512), errno.EINVAL),  # unknown
    ],
)
def test_check(request_: p.Request, expected: int) -> None:
    assert p.check(request_, GEO) == expected


def test_trim_is_refused_when_not_offered_and_writes_on_a_read_only_device() -> None:
    assert p.check(p.Request(p.Cmd.TRIM, 1, 0, 512), p.Geometry(4096, 512)) == errno.EINVAL
    assert p.check(p.Request(p.Cmd.WRITE, 1, 0, 512), p.Geometry(4096, 512, read_only=True)) == errno.EPERM


@pytest.mark.parametrize(
    ("sense", "expected"),
    [
        (None, errno.EIO),
        (Sense(0x3, 0x11, 0x00), errno.EIO),  # medium error, unrecovered read error
        (Sense(0x4, 0x44, 0x00), errno.EIO),  # hardware error
        (Sense(0x7, 0x27, 0x00), errno.EPERM),  # write protected
        (Sense(0x7, 0x27, 0x07), errno.ENOSPC),  # space allocation failed (thin pool full)
        (Sense(0x5, 0x21, 0x00), errno.EINVAL),  # LBA out of range
        (Sense(0x5, 0x20, 0x00), errno.ENOTSUP),  # invalid operation code
        (Sense(0xD, 0x00, 0x00), errno.ENOSPC),  # volume overflow
        (Sense(0x2, 0x04, 0x01), errno.EIO),  # not ready
        (Sense(0x9, 0x00, 0x00), errno.EIO),  # vendor specific: unknown
    ],
)
def test_errno_of_sense(sense: Sense | None, expected: int) -> None:
    assert p.errno_of_sense(sense) == expected
