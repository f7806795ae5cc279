"""Session behaviour a stock tgtd does not show on demand, against a scripted peer over a socketpair.

The peer stands in for the target at the socket (a pure I/O edge): Data-In
split at offsets with residuals, UNIT ATTENTION, a closed command window,
NOP-In pings, asynchronous logout requests, out-of-order DataSN.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from iscsiboot.iscsi.pdu import RESERVED_TAG, Op, Pdu, PduReader, ProtocolError, encode, make_bhs
from iscsiboot.iscsi.session import ScsiError
from iscsiboot.iscsi.transport import TransportError
from peer_support import ScriptedTarget, finish, run_target, session_on


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_data_in_at_offsets_with_underflow(pair: tuple[socket.socket, socket.socket]) -> None:
    seen: list[Pdu] = []

    def script(peer: ScriptedTarget) -> None:
        cmd = peer.recv()
        seen.append(cmd)
        itt = cmd.itt
        peer.data_in(itt, 0, 0, b"A" * 100)
        peer.data_in(itt, 1, 100, b"B" * 100)
        peer.data_in(itt, 2, 200, b"C" * 36, status=True, residual=255 - 236)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0])
    data = session.command(3, bytes([0x12, 0, 0, 0, 255, 0]), 255)
    finish(thread, errors)
    assert data == b"A" * 100 + b"B" * 100 + b"C" * 36
    cmd = seen[0]
    assert cmd.opcode == Op.SCSI_COMMAND and cmd.flags == 0xC1  # F, R, simple
    assert cmd.lun_bytes == bytes.fromhex("0003000000000000")
    assert cmd.u32(20) == 255 and cmd.u32(24) == 1 and cmd.u32(28) == 100
    assert session.cmd_sn == 2 and session.exp_stat_sn == 101


def test_unit_attention_is_retried_and_check_condition_reported(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ua = bytes([0x70, 0, 0x06]) + bytes(9) + bytes([0x29, 0]) + bytes(4)
    bad = bytes([0x70, 0, 0x05]) + bytes(9) + bytes([0x24, 0]) + bytes(4)

    def script(peer: ScriptedTarget) -> None:
        peer.response(peer.recv().itt, status=2, sense=ua)
        cmd = peer.recv()
        peer.data_in(cmd.itt, 0, 0, b"x" * 8, status=True)
        peer.response(peer.recv().itt, status=2, sense=bad)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0])
    assert session.command(1, bytes(10), 8) == b"x" * 8
    with pytest.raises(ScsiError, match="illegal request") as failed:
        session.command(1, bytes(10), 8)
    finish(thread, errors)
    assert failed.value.sense is not None and failed.value.sense.asc == 0x24


def test_closed_window_waits_and_pings_are_answered(pair: tuple[socket.socket, socket.socket]) -> None:
    got: dict[str, Pdu] = {}

    def script(peer: ScriptedTarget) -> None:
        # Had the initiator sent its command into the closed window, it would arrive before the NOP-Out.
        bhs = peer.target_pdu(Op.NOP_IN, RESERVED_TAG, max_cmd_sn=1)
        struct.pack_into(">I", bhs, 20, 0x1234)  # a ping: the initiator must answer
        peer.send(Pdu(bytes(bhs), b"", b"ping"))
        got["nop"] = peer.recv()
        cmd = peer.recv()
        got["cmd"] = cmd
        peer.response(cmd.itt)

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0], max_cmd_sn=0)  # CmdSN 1 > MaxCmdSN 0: window closed
    assert session.command(0, bytes(6), 0) == b""
    finish(thread, errors)
    nop = got["nop"]
    assert nop.opcode == Op.NOP_OUT and nop.immediate and nop.itt == RESERVED_TAG
    assert nop.u32(20) == 0x1234 and nop.data == b"ping"
    assert got["cmd"].u32(24) == 1


def test_async_logout_request_and_bad_data_sn(pair: tuple[socket.socket, socket.socket]) -> None:
    def script(peer: ScriptedTarget) -> None:
        cmd = peer.recv()
        peer.data_in(cmd.itt, 1, 0, b"late")  # DataSN must start at 0
        cmd = peer.recv()
        bhs = peer.target_pdu(Op.ASYNC_MESSAGE, RESERVED_TAG)
        bhs[36] = 1  # the target requests a logout
        peer.send(Pdu(bytes(bhs)))

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0])
    with pytest.raises(ProtocolError, match="DataSN"):
        session.command(1, bytes(10), 4)
    with pytest.raises(ProtocolError, match="ending the session"):
        session.command(1, bytes(10), 4)
    finish(thread, errors)


def test_peer_closing_is_a_transport_error(pair: tuple[socket.socket, socket.socket]) -> None:
    session = session_on(pair[0])
    pair[1].close()
    with pytest.raises(TransportError, match=r"closed the connection|broke"):
        session.command(1, bytes(10), 4)


def test_reader_for_initiator_pdus() -> None:
    reader = PduReader(from_target=False)
    reader.feed(encode(Pdu(bytes(make_bhs(Op.SCSI_COMMAND)))))
    assert reader.next() is not None
    reader.feed(encode(Pdu(bytes(make_bhs(Op.NOP_IN)))))
    with pytest.raises(ProtocolError):
        reader.next()


def test_send_targets_continued_and_logout(pair: tuple[socket.socket, socket.socket]) -> None:
    got: list[Pdu] = []

    def script(peer: ScriptedTarget) -> None:
        first = peer.recv()
        got.append(first)
        bhs = peer.target_pdu(Op.TEXT_RESPONSE, first.itt, flags=0x40)  # C: more to come
        struct.pack_into(">I", bhs, 20, 0x77)
        peer.send(Pdu(bytes(bhs), b"", b"TargetName=iqn.a:one\0TargetAddress=10.0.0.1:3260,1\0TargetAd"))
        second = peer.recv()
        got.append(second)
        peer.stat_sn += 1
        bhs = peer.target_pdu(Op.TEXT_RESPONSE, second.itt)
        struct.pack_into(">I", bhs, 20, RESERVED_TAG)
        peer.send(Pdu(bytes(bhs), b"", b"dress=[fd00::1]:3260,1\0TargetName=iqn.a:two\0"))
        logout = peer.recv()
        got.append(logout)
        peer.stat_sn += 1
        peer.send(Pdu(bytes(peer.target_pdu(Op.LOGOUT_RESPONSE, logout.itt))))

    thread, errors = run_target(pair[1], script)
    session = session_on(pair[0])
    found = session.send_targets()
    session.logout()
    finish(thread, errors)
    assert [(t.name, t.addresses) for t in found] == [
        ("iqn.a:one", ("10.0.0.1:3260,1", "[fd00::1]:3260,1")),
        ("iqn.a:two", ()),
    ]
    first, second, logout = got
    assert first.data == b"SendTargets=All\0" and first.u32(20) == RESERVED_TAG
    assert second.data == b"" and second.u32(20) == 0x77 and second.itt == first.itt
    assert second.u32(24) == first.u32(24) + 1  # Text Requests are not immediate: CmdSN advances
    assert logout.opcode == Op.LOGOUT_REQUEST and logout.immediate and logout.flags == 0x80
