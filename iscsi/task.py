"""The PDUs of one SCSI task (RFC 7143 §11.3, §11.7, §11.8): pure, as bytes.

A write's data goes out in three ways, each bounded by what the login settled
(:class:`~iscsiboot.iscsi.text.Params`):

* immediate data in the SCSI Command PDU itself (``ImmediateData=Yes``);
* unsolicited Data-Out PDUs right after it (``InitialR2T=No``), immediate and
  unsolicited together at most ``FirstBurstLength``;
* Data-Out PDUs that answer each R2T: the range the R2T asks for (at most
  ``MaxBurstLength``), under its Target Transfer Tag, DataSN counted from 0
  in each sequence, the F bit on the last PDU of a sequence.

Every data segment is at most the target's ``MaxRecvDataSegmentLength``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from iscsiboot.iscsi.pdu import RESERVED_TAG, Op, Pdu, ProtocolError, make_bhs
from iscsiboot.iscsi.text import Params

# SCSI Command flags (byte 1)
FINAL = 0x80
READ = 0x40
WRITE = 0x20
SIMPLE = 0x01


def command_bhs(
    lun: bytes,
    itt: int,
    cdb: bytes,
    *,
    length: int,
    read: bool,
    write: bool,
    final: bool,
    cmd_sn: int,
    exp_stat_sn: int,
) -> bytes:
    """A SCSI Command BHS: ``length`` is the Expected Data Transfer Length, ``final`` is
    False when unsolicited Data-Out PDUs follow."""
    if len(cdb) > 16:
        raise ProtocolError("CDBs longer than 16 bytes are not supported")
    flags = (FINAL if final else 0) | (READ if read and length else 0) | (WRITE if write and length else 0)
    bhs = make_bhs(Op.SCSI_COMMAND, flags=flags | SIMPLE)
    bhs[8:16] = lun
    struct.pack_into(">IIII", bhs, 16, itt, length, cmd_sn, exp_stat_sn)
    bhs[32 : 32 + len(cdb)] = cdb
    return bytes(bhs)


def data_out_bhs(
    lun: bytes, itt: int, ttt: int, *, exp_stat_sn: int, data_sn: int, offset: int, final: bool
) -> bytes:
    """A Data-Out BHS (the data segment length is filled in when it is framed)."""
    bhs = make_bhs(Op.DATA_OUT, flags=FINAL if final else 0)
    bhs[8:16] = lun
    struct.pack_into(">II", bhs, 16, itt, ttt)
    struct.pack_into(">I", bhs, 28, exp_stat_sn)
    struct.pack_into(">II", bhs, 36, data_sn, offset)
    return bytes(bhs)


@dataclass(frozen=True)
class Unsolicited:
    """What a write sends before any R2T: bytes ``[0, immediate)`` in the command PDU,
    bytes ``[immediate, end)`` in unsolicited Data-Out PDUs."""

    immediate: int
    end: int

    @property
    def data_out(self) -> bool:
        return self.end > self.immediate


def unsolicited(length: int, params: Params) -> Unsolicited:
    """The unsolicited part of a ``length``-byte write under ``params``."""
    first = min(length, params.first_burst_length)
    immediate = min(first, params.max_xmit_data_segment_length) if params.immediate_data else 0
    end = immediate if params.initial_r2t else first
    return Unsolicited(immediate, end)


def segments(start: int, end: int, max_segment: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` of each Data-Out PDU covering ``[start, end)``."""
    if max_segment <= 0:
        raise ProtocolError("a data segment limit must be positive")
    for offset in range(start, end, max_segment):
        yield offset, min(max_segment, end - offset)


@dataclass(frozen=True)
class R2T:
    ttt: int
    r2t_sn: int
    offset: int
    length: int


def parse_r2t(pdu: Pdu, *, total: int, r2t_sn: int, max_burst: int) -> R2T:
    """An R2T for a ``total``-byte write whose next R2TSN is ``r2t_sn``, checked."""
    ttt, sn, offset, length = pdu.u32(20), pdu.u32(36), pdu.u32(40), pdu.u32(44)
    if ttt == RESERVED_TAG:
        raise ProtocolError("an R2T carries the reserved Target Transfer Tag 0xffffffff")
    if sn != r2t_sn:
        raise ProtocolError(f"R2T with R2TSN {sn}, expected {r2t_sn}")
    if length == 0:
        raise ProtocolError("an R2T asks for 0 bytes")
    if offset + length > total:
        raise ProtocolError(
            f"an R2T asks for bytes {offset}-{offset + length - 1} of a write of {total} bytes "
            "(beyond the command's data)"
        )
    if length > max_burst:
        raise ProtocolError(f"an R2T asks for {length} bytes, more than MaxBurstLength={max_burst}")
    return R2T(ttt, sn, offset, length)
