"""Writes against a scripted target over a socketpair: immediate, unsolicited and solicited
data under every combination of the login's keys, bytes checked PDU by PDU."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from iscsiboot.iscsi import scsi, task
from iscsiboot.iscsi.pdu import RESERVED_TAG, Op, Pdu, PduReader, ProtocolError, encode
from iscsiboot.iscsi.session import ScsiError
from iscsiboot.iscsi.text import Params
from iscsiboot.iscsi.transport import TransportError
from peer_support import ScriptedTarget, finish, run_target, session_on

MEDIUM_ERROR = bytes([0x70, 0, 0x03]) + bytes(9) + bytes([0x11, 0x00]) + bytes(4)
UNIT_ATTENTION = bytes([0x70, 0, 0x06]) + bytes(9) + bytes([0x29, 0x07]) + bytes(4)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@dataclass
class Seen:
    """What the target received for one write, checked against RFC 7143 as it came."""

    command: Pdu | None = None
    data: bytearray = field(default_factory=bytearray)
    immediate: int = 0
    unsolicited: list[Pdu] = field(default_factory=list)
    solicited: list[list[Pdu]] = field(default_factory=list)


def _sequence(
    peer: ScriptedTarget, cmd: Pdu, ttt: int, *, start: int, end: int, params: Params, seen: Seen
) -> list[Pdu]:
    """Read the Data-Out PDUs of one sequence covering [start, end); check each."""
    pdus: list[Pdu] = []
    offset = start
    while True:
        pdu = peer.recv()
        assert pdu.opcode == Op.DATA_OUT, pdu.name()
        assert pdu.itt == cmd.itt and pdu.lun_bytes == cmd.lun_bytes
        assert pdu.u32(20) == ttt
        assert pdu.u32(36) == len(pdus)  # DataSN counts from 0 in each sequence
        assert pdu.u32(40) == offset  # in order, no holes
        assert 0 < len(pdu.data) <= params.max_xmit_data_segment_length
        assert pdu.u32(28) == peer.stat_sn  # ExpStatSN
        seen.data[offset : offset + len(pdu.data)] = pdu.data
        offset += len(pdu.data)
        pdus.append(pdu)
        if pdu.final:
            assert offset == end, (offset, end)
            return pdus
        assert offset < end


def honest(
    params: Params, seen: Seen, *, status: int = 0, sense: bytes = b"", burst: int | None = None
) -> Callable[[ScriptedTarget], None]:
    """A target that takes one write as ``params`` say, asking for the rest in R2Ts of
    ``burst`` bytes (MaxBurstLength), ``max_outstanding_r2t`` at a time."""

    def script(peer: ScriptedTarget) -> None:
        cmd = peer.recv()
        seen.command = cmd
        total = cmd.u32(20)
        assert cmd.opcode == Op.SCSI_COMMAND and cmd.flags & 0x20  # W
        seen.data = bytearray(total)
        seen.immediate = len(cmd.data)
        if not params.immediate_data:
            assert not cmd.data
        assert len(cmd.data) <= min(params.first_burst_length, params.max_xmit_data_segment_length)
        seen.data[: len(cmd.data)] = cmd.data
        done = len(cmd.data)
        if not cmd.final:
            assert not params.initial_r2t
            end = min(total, params.first_burst_length)
            seen.unsolicited = _sequence(
                peer, cmd, RESERVED_TAG, start=done, end=end, params=params, seen=seen
            )
            done = end
        else:
            assert params.initial_r2t or done == min(total, params.first_burst_length)
        size = burst or params.max_burst_length
        sn = 0
        while done < total:
            asked = []
            for _ in range(params.max_outstanding_r2t):
                if done >= total:
                    break
                n = min(size, total - done)
                peer.r2t(cmd, sn, done, n)
                asked.append((sn, done, n))
                sn += 1
                done += n
            for r2t_sn, offset, n in asked:
                sequence = _sequence(
                    peer, cmd, 0x1000 + r2t_sn, start=offset, end=offset + n, params=params, seen=seen
                )
                seen.solicited.append(sequence)
        peer.response(cmd.itt, status=status, sense=sense)

    return script


MATRIX = [
    pytest.param(imm, r2t, id=f"ImmediateData={'Yes' if imm else 'No'}-InitialR2T={'Yes' if r2t else 'No'}")
    for imm in (True, False)
    for r2t in (True, False)
]


@pytest.mark.parametrize(("immediate", "initial_r2t"), MATRIX)
def test_write_under_each_negotiation(
    pair: tuple[socket.socket, socket.socket], immediate: bool, initial_r2t: bool
) -> None:
    params = Params(immediate_data=immediate, initial_r2t=initial_r2t, first_burst_length=16384,
                    max_burst_length=32768, max_xmit_data_segment_length=8192)  # fmt: skip
    data = os.urandom(100 * 512)
    seen = Seen()
    thread, errors = run_target(pair[1], honest(params, seen))
    session = session_on(pair[0], params)
    session.write(2, 70000, data, block_size=512)
    finish(thread, errors)
    assert seen.data == data
    cmd = seen.command
    assert cmd is not None
    assert cmd.bhs[32:42] == scsi.write10_cdb(70000, 100)
    assert cmd.u32(20) == len(data) and cmd.lun_bytes == bytes.fromhex("0002000000000000")
    assert seen.immediate == (8192 if immediate else 0)
    unsolicited = sum(len(p.data) for p in seen.unsolicited)
    assert seen.immediate + unsolicited == (
        8192 if initial_r2t and immediate else 0 if initial_r2t else 16384
    )
    assert cmd.final == (initial_r2t or (immediate and unsolicited == 0))
    assert all(len(seq[-1].data) and seq[-1].final for seq in seen.solicited)
    assert session.cmd_sn == 2 and session.exp_stat_sn == 101  # Data-Out PDUs take no CmdSN


def test_first_burst_smaller_than_the_immediate_room(pair: tuple[socket.socket, socket.socket]) -> None:
    params = Params(immediate_data=True, initial_r2t=False, first_burst_length=1024,
                    max_xmit_data_segment_length=65536)  # fmt: skip
    seen = Seen()
    data = os.urandom(8 * 512)
    thread, errors = run_target(pair[1], honest(params, seen))
    session_on(pair[0], params).write(0, 0, data, block_size=512)
    finish(thread, errors)
    assert seen.immediate == 1024 and not seen.unsolicited  # FirstBurstLength bounds it all
    assert seen.command is not None and seen.command.final
    assert [len(seq[0].data) for seq in seen.solicited] == [3072]
    assert seen.data == data


def test_small_target_segments_and_several_outstanding_r2ts(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    params = Params(immediate_data=False, initial_r2t=True, max_burst_length=4096, first_burst_length=4096,
                    max_xmit_data_segment_length=512, max_outstanding_r2t=3)  # fmt: skip
    seen = Seen()
    data = os.urandom(40 * 512)
    thread, errors = run_target(pair[1], honest(params, seen, burst=3000))
    session_on(pair[0], params).write(0, 9, data, block_size=512)
    finish(thread, errors)
    assert seen.data == data
    assert len(seen.solicited) == 7  # 20480 bytes in R2Ts of 3000
    offsets = [seq[0].u32(40) for seq in seen.solicited]
    assert offsets == list(range(0, 20480, 3000))
    sizes = [len(p.data) for p in seen.solicited[0]]
    assert sizes == [512] * 5 + [440]  # the target's MaxRecvDataSegmentLength splits each burst


def test_large_write_is_split_into_commands(pair: tuple[socket.socket, socket.socket]) -> None:
    params = Params(immediate_data=True, initial_r2t=False, first_burst_length=65536,
                    max_burst_length=262144, max_xmit_data_segment_length=65536)  # fmt: skip
    data = os.urandom(3 * 1024 * 1024 + 4096)
    seen = [Seen() for _ in range(4)]

    def script(peer: ScriptedTarget) -> None:
        for one in seen:
            honest(params, one)(peer)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0], params)
    session.write(0, (1 << 32) - 10, memoryview(data), block_size=4096)  # beyond 32 bits: WRITE(16)
    finish(thread, errors)
    assert b"".join(bytes(s.data) for s in seen) == data
    first = seen[0].command
    assert first is not None and first.bhs[32:48] == scsi.write16_cdb((1 << 32) - 10, 256)
    assert [s.command.u32(20) for s in seen if s.command] == [1 << 20] * 3 + [4096]


def test_r2t_beyond_the_command_is_a_protocol_error(pair: tuple[socket.socket, socket.socket]) -> None:
    def script(peer: ScriptedTarget) -> None:
        cmd = peer.recv()
        peer.r2t(cmd, 0, 1024, 4096)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0], Params(immediate_data=False, initial_r2t=True))
    with pytest.raises(ProtocolError, match=r"R2T asks for bytes 1024-5119 of a write of 4096 bytes"):
        session.write(0, 0, bytes(4096), block_size=512)
    finish(thread, errors)


def test_r2t_out_of_sequence_and_on_a_read(pair: tuple[socket.socket, socket.socket]) -> None:
    def script(peer: ScriptedTarget) -> None:
        cmd = peer.recv()
        peer.r2t(cmd, 1, 0, 512)  # R2TSN must start at 0
        cmd = peer.recv()
        peer.r2t(cmd, 0, 0, 512)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0], Params(immediate_data=False, initial_r2t=True))
    with pytest.raises(ProtocolError, match="R2TSN 1, expected 0"):
        session.write(0, 0, bytes(512), block_size=512)
    with pytest.raises(ProtocolError, match="asked for data"):
        session.read(0, 0, 1)
    finish(thread, errors)


def test_check_condition_on_a_write_and_unit_attention_retried(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    params = Params(immediate_data=True, initial_r2t=True)
    seen = [Seen(), Seen(), Seen()]

    def script(peer: ScriptedTarget) -> None:
        honest(params, seen[0], status=2, sense=UNIT_ATTENTION)(peer)  # after a reinstatement
        honest(params, seen[1])(peer)  # the same write again
        honest(params, seen[2], status=2, sense=MEDIUM_ERROR)(peer)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0], params)
    data = os.urandom(20000 - 20000 % 512)
    session.write(1, 5, data, block_size=512)
    with pytest.raises(ScsiError, match=r"medium error \(ASC/ASCQ 0x11/0x00\)") as failed:
        session.write(1, 5, data, block_size=512)
    finish(thread, errors)
    assert seen[0].data == seen[1].data == data
    assert failed.value.status == 2 and failed.value.sense is not None and failed.value.sense.key == 3


def test_a_residual_on_a_write_is_an_error(pair: tuple[socket.socket, socket.socket]) -> None:
    def script(peer: ScriptedTarget) -> None:
        peer.response(peer.recv().itt, residual=512)

    thread, errors = run_target(pair[1], script)
    with pytest.raises(ProtocolError, match="took 512 of 1024 bytes for blocks 0-1"):
        session_on(pair[0]).write(0, 0, bytes(1024), block_size=512)
    finish(thread, errors)


def test_connection_lost_while_waiting_for_r2t(pair: tuple[socket.socket, socket.socket]) -> None:
    def script(peer: ScriptedTarget) -> None:
        peer.recv()
        peer.sock.shutdown(socket.SHUT_RDWR)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0], Params(immediate_data=False, initial_r2t=True))
    with pytest.raises(TransportError, match="closed the connection"):
        session.write(0, 0, bytes(4096), block_size=512)
    finish(thread, errors)


def test_connection_lost_while_sending_data(pair: tuple[socket.socket, socket.socket]) -> None:
    pair[1].close()
    params = Params(immediate_data=True, initial_r2t=False, first_burst_length=1 << 20,
                    max_burst_length=1 << 20, max_xmit_data_segment_length=65536)  # fmt: skip
    with pytest.raises(TransportError, match="broke"):
        session_on(pair[0], params).write(0, 0, bytes(1 << 20), block_size=512)


def test_write_with_digests(pair: tuple[socket.socket, socket.socket]) -> None:
    params = Params(header_digest=True, data_digest=True, immediate_data=True, initial_r2t=False,
                    first_burst_length=4096, max_xmit_data_segment_length=1024)  # fmt: skip
    seen = Seen()

    def script(peer: ScriptedTarget) -> None:
        peer.reader = PduReader(header_digest=True, data_digest=True, from_target=False)
        peer.send = lambda pdu: peer.sock.sendall(encode(pdu, header_digest=True, data_digest=True))  # type: ignore[method-assign]
        honest(params, seen)(peer)

    thread, errors = run_target(pair[1], script)
    data = os.urandom(8191 - 8191 % 512 + 512)
    session_on(pair[0], params).write(0, 0, data, block_size=512)
    finish(thread, errors)
    assert seen.data == data


def test_read_across_sequences_into_a_buffer(pair: tuple[socket.socket, socket.socket]) -> None:
    data = os.urandom(300 * 1024)

    def script(peer: ScriptedTarget) -> None:
        cmd = peer.recv()
        pos, sn = 0, 0
        while pos < len(data):
            n = min(7000, len(data) - pos)
            peer.data_in(cmd.itt, sn, pos, data[pos : pos + n], status=pos + n == len(data))
            pos, sn = pos + n, sn + 1
        cmd = peer.recv()
        peer.data_in(cmd.itt, 0, 0, data[:512])
        peer.data_in(cmd.itt, 1, 1024, data[:512], status=True)  # a hole

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0])
    out = bytearray(len(data))
    session.read_into(0, 0, memoryview(out), block_size=512)
    assert out == data
    with pytest.raises(ProtocolError, match="offset 1024, expected 512"):
        session.read(0, 0, 3)
    finish(thread, errors)


def test_short_read_is_an_error(pair: tuple[socket.socket, socket.socket]) -> None:
    def script(peer: ScriptedTarget) -> None:
        cmd = peer.recv()
        peer.data_in(cmd.itt, 0, 0, bytes(512), status=True, residual=512)

    thread, errors = run_target(pair[1], script)
    with pytest.raises(ProtocolError, match="sent 512 of 1024 bytes"):
        session_on(pair[0]).read(0, 0, 2)
    finish(thread, errors)


def test_synchronize_cache_and_unmap_through_the_limits(pair: tuple[socket.socket, socket.socket]) -> None:
    got: list[Pdu] = []
    pages = bytes([0, 0, 0, 4, 0x00, 0x83, 0xB0, 0xB2])
    b0 = bytearray(64)
    b0[1], b0[3] = 0xB0, 0x3C
    struct.pack_into(">IIIIII", b0, 8, 2048, 256, 0, 1000, 2, 8)
    b2 = bytes([0, 0xB2, 0, 4, 0, 0x80 | 0x04, 0x02, 0])
    cap16 = struct.pack(">QI", 99999, 512) + bytes([0, 0, 0xC0, 0]) + bytes(16)

    def script(peer: ScriptedTarget) -> None:
        sync = peer.recv()
        got.append(sync)
        peer.response(sync.itt)
        for answer in (pages, bytes(b0), b2, cap16):
            cmd = peer.recv()
            got.append(cmd)
            peer.data_in(cmd.itt, 0, 0, answer[: cmd.u32(20)], status=True)
        for _ in range(3):
            cmd = peer.recv()  # UNMAP: its parameter list as immediate data
            got.append(cmd)
            peer.response(cmd.itt)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0])
    session.synchronize_cache(3)
    limits = session.block_limits(3)
    session.unmap(3, 10, 3000)  # at most 1000 blocks per command
    assert session.block_limits(3) is limits  # asked once
    finish(thread, errors)
    assert got[0].bhs[32:42] == scsi.synchronize_cache10_cdb() and got[0].u32(20) == 0
    assert [c.bhs[34] for c in got[1:4]] == [0x00, 0xB0, 0xB2]
    assert limits == scsi.BlockLimits(unmap=True, max_unmap_blocks=1000, max_unmap_descriptors=2,
                                      max_transfer_blocks=2048, optimal_transfer_blocks=256,
                                      unmap_granularity=8, zeroes_unmapped=True)  # fmt: skip
    unmaps = got[5:]
    assert all(c.bhs[32:42] == scsi.unmap_cdb(24) and c.flags & 0x20 and c.u32(20) == 24 for c in unmaps)
    assert [c.data for c in unmaps] == [scsi.unmap_parameters([(lba, 1000)]) for lba in (10, 1010, 2010)]


# ---------------------------------------------------------------- pure: CDBs, pages, plans


def test_cdbs_as_bytes() -> None:
    assert scsi.write10_cdb(0x01020304, 0x0506) == bytes.fromhex("2a00010203040005 0600".replace(" ", ""))
    assert scsi.write16_cdb(1 << 40, 7) == bytes.fromhex("8a000000010000000000000000070000")
    assert scsi.synchronize_cache10_cdb() == bytes.fromhex("35000000000000000000")
    assert scsi.synchronize_cache16_cdb(5, 2) == bytes.fromhex("91000000000000000005000000020000")
    assert scsi.unmap_cdb(40) == bytes.fromhex("42000000000000002800")
    assert scsi.unmap_parameters([(1, 2), (1 << 33, 0xFFFFFFFF)]) == bytes.fromhex(
        "0026" "0020" "00000000"
        "0000000000000001" "00000002" "00000000"
        "0000000200000000" "ffffffff" "00000000"
    )  # fmt: skip
    refused: list[Callable[[], bytes]] = [
        lambda: scsi.write10_cdb(1 << 32, 1),
        lambda: scsi.write16_cdb(0, 0),
        lambda: scsi.unmap_parameters([]),
        lambda: scsi.unmap_parameters([(0, 1 << 32)]),
        lambda: scsi.unmap_cdb(8),
    ]
    for bad in refused:
        with pytest.raises(ValueError):
            bad()
    assert scsi.fits_10(0xFFFFFFFF - 1, 1) and not scsi.fits_10(0xFFFFFFFF, 1)
    assert not scsi.fits_10(0, 65536)


def test_vpd_pages_and_capacity_flags() -> None:
    assert scsi.parse_supported_pages(bytes([0, 0, 0, 3, 0, 0x83, 0xB0, 0xB2])) == {0, 0x83, 0xB0}
    b0 = bytearray(64)
    b0[1], b0[3] = 0xB0, 0x3C
    struct.pack_into(">IIIIII", b0, 8, 0x400, 0x80, 0, 0xFFFFFFFF, 64, 2048)
    page = scsi.parse_block_limits_page(bytes(b0))
    assert page == scsi.BlockLimitsPage(0x400, 0x80, 0xFFFFFFFF, 64, 2048)
    short = bytes([0, 0xB0, 0, 0x0C, 0, 0, 0, 0]) + struct.pack(">II", 128, 8)  # SBC-2: no UNMAP fields
    assert scsi.parse_block_limits_page(short) == scsi.BlockLimitsPage(128, 8, 0, 0, 0)
    b2 = scsi.parse_provisioning_page(bytes([0, 0xB2, 0, 4, 0, 0xC4, 0x02, 0]))
    assert b2 == scsi.ProvisioningPage(unmap=True, write_same_unmap=True, zeroes_unmapped=True,
                                       provisioning_type=2)  # fmt: skip
    for parse, raw in ((scsi.parse_block_limits_page, bytes([0, 0xB2, 0, 0])),
                       (scsi.parse_provisioning_page, bytes([0, 0xB2, 0, 4])),
                       (scsi.parse_supported_pages, b"\0\x80\0")):  # fmt: skip
        with pytest.raises(ProtocolError):
            parse(raw)
    cap = scsi.parse_read_capacity16(struct.pack(">QI", 7, 4096) + bytes([0, 3, 0x80, 0]) + bytes(16))
    assert cap == scsi.Capacity(7, 4096, provisioned=True, zeroes_unmapped=False)
    assert scsi.parse_read_capacity16(struct.pack(">QI", 7, 512)) == scsi.Capacity(7, 512)


def test_block_limits_combine_the_sources() -> None:
    thin = scsi.Capacity(99, 512, provisioned=True, zeroes_unmapped=True)
    thick = scsi.Capacity(99, 512)
    lbpu = scsi.ProvisioningPage(
        unmap=True, write_same_unmap=False, zeroes_unmapped=False, provisioning_type=2
    )
    page = scsi.BlockLimitsPage(0, 0, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    limits = scsi.block_limits(thin, page, lbpu)
    assert limits.unmap and limits.max_unmap_blocks == scsi.NO_LIMIT
    assert limits.max_unmap_descriptors == scsi.UNMAP_DESCRIPTORS_MAX and limits.zeroes_unmapped
    assert not scsi.block_limits(thick, page, lbpu).unmap  # LBPME=0: fully provisioned
    assert not scsi.block_limits(thin, scsi.BlockLimitsPage(0, 0, 0, 0, 0), None).unmap
    assert scsi.block_limits(None, scsi.BlockLimitsPage(0, 0, 5, 0, 0), None).max_unmap_descriptors == 1
    assert scsi.block_limits(None, None, None) == scsi.BlockLimits(False, 0, 0, 0, 0, 0, False)


def test_unmap_plan_splits_by_the_limits() -> None:
    unlimited = scsi.BlockLimits(True, scsi.NO_LIMIT, 2, 0, 0, 0, False)
    big = 3 * 0xFFFFFFFF + 5
    assert list(scsi.unmap_plan(10, big, unlimited)) == [
        ((10, 0xFFFFFFFF), (10 + 0xFFFFFFFF, 0xFFFFFFFF)),
        ((10 + 2 * 0xFFFFFFFF, 0xFFFFFFFF), (10 + 3 * 0xFFFFFFFF, 5)),
    ]
    small = scsi.BlockLimits(True, 100, 8, 0, 0, 0, False)
    assert list(scsi.unmap_plan(0, 250, small)) == [((0, 100),), ((100, 100),), ((200, 50),)]
    with pytest.raises(ValueError):
        list(scsi.unmap_plan(0, 1, scsi.BlockLimits(False, 0, 0, 0, 0, 0, False)))


def test_unsolicited_plan_and_segments() -> None:
    def plan(length: int, **kw: int | bool) -> tuple[int, int]:
        p = task.unsolicited(length, Params(**kw))  # type: ignore[arg-type]
        return p.immediate, p.end

    assert plan(100000, immediate_data=True, initial_r2t=True) == (8192, 8192)
    assert plan(100000, immediate_data=True, initial_r2t=False) == (8192, 65536)
    assert plan(100000, immediate_data=False, initial_r2t=False) == (0, 65536)
    assert plan(100000, immediate_data=False, initial_r2t=True) == (0, 0)
    assert plan(1000, immediate_data=True, initial_r2t=False) == (1000, 1000)
    assert plan(4096, immediate_data=True, first_burst_length=512, max_burst_length=512) == (512, 512)
    assert list(task.segments(10, 30, 8)) == [(10, 8), (18, 8), (26, 4)]
    assert list(task.segments(5, 5, 8)) == []


def test_silence_and_a_closed_socket_are_transport_errors(pair: tuple[socket.socket, socket.socket]) -> None:
    session = session_on(pair[0], Params(immediate_data=False, initial_r2t=True))
    session.timeout = 0.2
    with pytest.raises(TransportError, match="timed out"):
        session.write(0, 0, bytes(512), block_size=512)  # no R2T ever comes
    session.close()
    with pytest.raises(TransportError, match="broke"):
        session.write(0, 0, bytes(512), block_size=512)
    with pytest.raises(TransportError, match="broke"):
        session.read(0, 0, 1)
