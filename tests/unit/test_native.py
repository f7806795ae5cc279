"""The native login backend: NETLINK_ISCSI messages from bytes, parameter lists, causes.

Golden messages are written with ``struct`` from the byte offsets of
``struct iscsi_uevent`` (56 bytes: type 0, iferror 4, transport_handle 8,
``u`` 16..40, ``r`` 40..56), independently of the construct layouts under test.
"""

from __future__ import annotations

import argparse
import errno
import shutil
import socket
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iscsiboot.agent.backends import kernel as native
from iscsiboot.agent.backends.result import Cause
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.options import parse_options
from iscsiboot.agent.phases.login import make_backend
from iscsiboot.errors import EnvironmentProblem, ParseError
from iscsiboot.initramfs.cli import register, wants_iscsistart
from iscsiboot.iscsi import netlink as nl
from iscsiboot.iscsi.login import AuthenticationFailed, LoginFailed, LoginSettings
from iscsiboot.iscsi.text import Params
from iscsiboot.model import Chap, Target
from iscsiboot.secret import Secret

HANDLE = 0xFFFF_8880_1234_5678
IQN = "iqn.2026-11.org.iscsiboot:htpc"
ME = "iqn.2026-11.org.iscsiboot:client"


def header(length: int, kind: int) -> bytes:
    return struct.pack("<IHHII", length, kind, 0, 0, 0)


def event(kind: int, u: bytes = b"", r: bytes = b"", iferror: int = 0, handle: int = HANDLE) -> bytes:
    return struct.pack("<IiQ", kind, iferror, handle) + u.ljust(24, b"\0") + r.ljust(16, b"\0")


def reply(kind: int, r: bytes, *, iferror: int = 0, failed: bool = False) -> bytes:
    body = event(103 if failed else kind, r=r, iferror=iferror)
    return header(16 + len(body), kind) + body


def kernel_event(kind: int, r: bytes, payload: bytes = b"") -> bytes:
    body = event(kind, r=r, handle=0) + payload
    return header(16 + len(body), 0) + body


# ---------------------------------------------------------------- requests, byte for byte


def test_uevent_is_56_bytes() -> None:
    assert nl.UEVENT.size == nl.UEVENT_LEN == 56
    assert nl.NLMSGHDR.size == nl.NLMSG_HDRLEN == 16


def test_create_session_golden() -> None:
    got = nl.create_session(HANDLE, initial_cmdsn=1, cmds_max=128, queue_depth=32)
    want = header(72, 11) + event(11, struct.pack("<IHH", 1, 128, 32))
    assert got == want
    assert got[16 + 16 : 16 + 20] == b"\x01\0\0\0"  # initial_cmdsn at 16
    assert got[16 + 8 : 16 + 16] == HANDLE.to_bytes(8, "little")


def test_conn_requests_golden() -> None:
    assert nl.create_conn(HANDLE, 7, 0) == header(72, 13) + event(13, struct.pack("<II", 7, 0))
    assert nl.destroy_conn(HANDLE, 7, 0) == header(72, 14) + event(14, struct.pack("<II", 7, 0))
    assert nl.start_conn(HANDLE, 7, 0) == header(72, 17) + event(17, struct.pack("<II", 7, 0))
    assert nl.destroy_session(HANDLE, 7) == header(72, 12) + event(12, struct.pack("<I", 7))


def test_bind_conn_golden() -> None:
    got = nl.bind_conn(HANDLE, 3, 0, 9)
    assert got == header(72, 15) + event(15, struct.pack("<IIQI", 3, 0, 9, 1))
    ev = got[16:]
    assert struct.unpack_from("<Q", ev, 24)[0] == 9  # transport_eph at 24
    assert struct.unpack_from("<I", ev, 32)[0] == 1  # is_leading at 32


def test_stop_conn_golden() -> None:
    got = nl.stop_conn(HANDLE, 3, 0)
    assert struct.unpack_from("<I", got[16:], 32)[0] == 1  # STOP_CONN_TERM at 32
    assert got == header(72, 18) + event(18, struct.pack("<IIQI", 3, 0, 0, 1))


def test_set_param_golden() -> None:
    got = nl.set_param(HANDLE, 3, 0, nl.Param.TARGET_NAME, IQN)
    value = IQN.encode() + b"\0"  # 31 bytes: padded to 32
    padded = value.ljust(32, b"\0")
    want = event(16, struct.pack("<IIII", 3, 0, 15, len(value))) + padded
    assert got == header(16 + len(want), 16) + want
    assert struct.unpack_from("<I", got, 0)[0] % 4 == 0


def test_send_pdu_golden() -> None:
    wire = bytes(range(48)) + b"abcdefgh"
    got = nl.send_pdu(HANDLE, 3, 0, wire)
    want = event(19, struct.pack("<IIII", 3, 0, 48, 8)) + wire
    assert got == header(16 + len(want), 19) + want
    with pytest.raises(ValueError):
        nl.send_pdu(HANDLE, 3, 0, b"short")


# ---------------------------------------------------------------- replies and events from bytes


def test_parse_create_session_reply() -> None:
    (msg,) = nl.parse(reply(11, struct.pack("<II", 5, 2)))
    assert msg.is_reply and not msg.failed and msg.nl_type == 11
    assert msg.session() == (5, 2)


def test_parse_if_error_reply() -> None:
    (msg,) = nl.parse(reply(13, b"", iferror=-12, failed=True))
    assert msg.failed and msg.iferror == errno.ENOMEM and msg.nl_type == 13


def test_parse_recv_pdu_event_and_two_messages_in_one_datagram() -> None:
    pdu = bytes([0x23]) + bytes(47) + b"data"
    first = kernel_event(101, struct.pack("<IIQ", 5, 0, 0xABC), pdu)
    second = kernel_event(102, struct.pack("<III", 5, 0, 1020))
    pad = b"\0" * ((4 - len(first) % 4) % 4)
    msgs = nl.parse(first + pad + second)
    assert [m.type for m in msgs] == [101, 102]
    assert not msgs[0].is_reply and msgs[0].ids() == (5, 0)
    assert msgs[0].payload == pdu
    assert msgs[1].conn_error() == 1020


def test_parse_rejects_truncated_message() -> None:
    data = reply(11, b"")
    with pytest.raises(nl.NetlinkError):
        nl.parse(struct.pack("<I", 200) + data[4:])


def test_response_pdu_restores_our_task_tag() -> None:
    bhs = bytearray(48)
    bhs[0] = 0x23
    bhs[5:8] = (5).to_bytes(3, "big")
    bhs[16:20] = (0x1234).to_bytes(4, "big")  # the kernel's own tag
    pdu = native.response_pdu(bytes(bhs) + b"A=B\0\0" + b"\0\0\0", itt=0)
    assert pdu.itt == 0 and pdu.data == b"A=B\0\0"


# ---------------------------------------------------------------- parameters


def chap_target() -> Target:
    return Target(
        IQN,
        "10.0.2.2",
        3261,
        chap=Chap("htpc", Secret("htpc-secret-12")),
        reverse_chap=Chap("nas", Secret("nas-secret-345")),
    )


def test_session_params_carry_what_iscsid_reads_back() -> None:
    params = dict(nl.session_params(chap_target(), ME))
    assert params[nl.Param.TARGET_NAME] == IQN
    assert params[nl.Param.PERSISTENT_ADDRESS] == "10.0.2.2"
    assert params[nl.Param.PERSISTENT_PORT] == "3261"
    assert params[nl.Param.INITIATOR_NAME] == ME
    assert params[nl.Param.USERNAME] == "htpc" and params[nl.Param.PASSWORD] == "htpc-secret-12"
    assert params[nl.Param.USERNAME_IN] == "nas" and params[nl.Param.PASSWORD_IN] == "nas-secret-345"
    assert params[nl.Param.SESS_RECOVERY_TMO] == "120"
    assert nl.Param.BOOT_ROOT not in params
    plain = dict(nl.session_params(Target(IQN, "10.0.2.2"), ME, boot=("ibft", "ethernet0", "target0")))
    assert nl.Param.USERNAME not in plain and nl.Param.PASSWORD not in plain
    assert plain[nl.Param.BOOT_ROOT] == "ibft"


def test_negotiated_params() -> None:
    params = Params(
        header_digest=True,
        max_recv_data_segment_length=262144,
        max_xmit_data_segment_length=65536,
        first_burst_length=65536,
        max_burst_length=262144,
        immediate_data=False,
        target_portal_group_tag=1,
    )
    got = dict(nl.negotiated_params(params, 0x1_0000_0005, tpgt=7))
    assert got[nl.Param.MAX_RECV_DLENGTH] == "262144"
    assert got[nl.Param.MAX_XMIT_DLENGTH] == "65536"
    assert got[nl.Param.HDRDGST_EN] == "1" and got[nl.Param.DATADGST_EN] == "0"
    assert got[nl.Param.IMM_DATA_EN] == "0" and got[nl.Param.INITIAL_R2T_EN] == "1"
    assert got[nl.Param.EXP_STATSN] == "5"  # 32 bits
    assert got[nl.Param.TPGT] == "1"  # the login response's, not the configured one
    assert dict(nl.negotiated_params(Params(), 1, tpgt=7))[nl.Param.TPGT] == "7"
    assert nl.Param.MAX_RECV_DLENGTH.value == 0 and nl.Param.TPGT.value == 16
    assert nl.Param.INITIATOR_NAME.value == 34 and nl.Param.DISCOVERY_SESS.value == 43


def test_shown_masks_passwords() -> None:
    assert nl.shown(nl.Param.PASSWORD, "htpc-secret-12") == "password=***"
    assert nl.shown(nl.Param.PASSWORD_IN, "x") == "password_in=***"
    assert nl.shown(nl.Param.USERNAME, "htpc") == "username=htpc"


# ---------------------------------------------------------------- causes


@pytest.mark.parametrize(
    ("exc", "cause"),
    [
        (LoginFailed(2, 1), Cause.AUTH),
        (LoginFailed(2, 2), Cause.REJECTED),
        (LoginFailed(2, 4), Cause.NOT_FOUND),
        (LoginFailed(2, 3), Cause.NOT_FOUND),
        (LoginFailed(2, 0), Cause.REJECTED),
        (LoginFailed(3, 1), Cause.OTHER),
        (AuthenticationFailed("the target's CHAP answer is wrong"), Cause.AUTH),
        (nl.NetlinkError(nl.Ev.CREATE_CONN, errno.ENOMEM), Cause.NO_CRC32C),
        (nl.NetlinkError(nl.Ev.SET_PARAM, errno.EINVAL), Cause.OTHER),
        (native.ConnectionLost(1020), Cause.REFUSED),
        (native.ConnectionLost(1022), Cause.TIMEOUT),
        (native.ConnectionLost(1008), Cause.OTHER),
        (native.TcpFailed("refused", errno.ECONNREFUSED), Cause.REFUSED),
        (native.TcpFailed("no route", errno.EHOSTUNREACH), Cause.UNREACHABLE),
        (native.TcpFailed("late", errno.ETIMEDOUT), Cause.TIMEOUT),
        (TimeoutError("no Login Response"), Cause.TIMEOUT),
        (ValueError("bug"), Cause.OTHER),
    ],
)
def test_cause_of_error(exc: BaseException, cause: Cause) -> None:
    assert native.cause_of_error(exc) is cause


def test_missing_handle_is_no_driver(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem) as info:
        nl.read_transport_handle(tmp_path / "handle")
    assert native.cause_of_error(info.value) is Cause.NO_DRIVER
    assert "iscsi_tcp" in str(info.value)


# ---------------------------------------------------------------- options and backend choice


def test_backend_option() -> None:
    assert parse_options("quiet").login_backend == "native"
    assert parse_options("iscsiboot.backend=native").login_backend == "native"
    assert parse_options("iscsiboot.login=native").login_backend == "native"
    assert parse_options("iscsiboot.backend=iscsistart").login_backend == "iscsistart"
    with pytest.raises(ParseError):
        parse_options("iscsiboot.backend=iscsid")
    with pytest.raises(ParseError):
        parse_options("iscsiboot.backend=auto")


def test_make_backend_native() -> None:
    backend = make_backend("native")
    assert backend.name == "native"
    assert isinstance(backend, native.NativeBackend)


def test_make_backend_iscsistart_when_present() -> None:
    if shutil.which("iscsistart") is None and not Path("/usr/sbin/iscsistart").exists():
        pytest.skip("iscsistart not installed (Debian package open-iscsi)")
    assert make_backend("iscsistart").name == "iscsistart"


def test_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(PhaseError) as info:
        make_backend("iscsid")
    assert info.value.cause == "config"


# ---------------------------------------------------------------- the socket class against a fake kernel


def test_call_keeps_events_that_arrive_before_the_reply() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel, nl.IscsiNetlink(HANDLE, ours) as link:
        early = kernel_event(101, struct.pack("<IIQ", 5, 0, 1), bytes(48))
        other = kernel_event(101, struct.pack("<IIQ", 9, 0, 1), bytes(48))
        kernel.send(other)
        kernel.send(early)
        kernel.send(reply(19, b""))
        msg = link.call(nl.send_pdu(HANDLE, 5, 0, bytes(48)), timeout=2)
        assert msg.nl_type == 19 and msg.retcode() == 0
        sent = kernel.recv(4096)
        assert struct.unpack_from("<H", sent, 4)[0] == 19
        got = link.wait_event(nl.event_for(5, 0, (101, 102)), deadline=_soon())
        assert got.ids() == (5, 0)
        with pytest.raises(TimeoutError):
            link.wait_event(nl.event_for(5, 0, (101, 102)), deadline=_soon(0.1))


def test_call_raises_on_if_error() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel, nl.IscsiNetlink(HANDLE, ours) as link:
        kernel.send(reply(13, b"", iferror=-12, failed=True))
        with pytest.raises(nl.NetlinkError) as info:
            link.call(nl.create_conn(HANDLE, 5), timeout=2)
        assert info.value.errno == errno.ENOMEM and info.value.kind == 13
        assert "Cannot allocate memory" in info.value.what


def _soon(seconds: float = 2.0) -> float:
    return time.monotonic() + seconds


def test_no_marker_params_for_iscsi_tcp() -> None:
    names = {p for p, _ in nl.negotiated_params(Params(), 1, tpgt=1)}
    assert nl.Param.IFMARKER_EN not in names and nl.Param.OFMARKER_EN not in names
    assert len(names) == 14


# ---------------------------------------------------------------- the initramfs builder's choice


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        ([], False),
        (["--backend", "iscsistart"], True),
        (["--backend", "native"], False),
    ],
)
def test_initramfs_backend_option(argv: list[str], wanted: bool) -> None:
    assert wants_iscsistart(initramfs_args(argv)) is wanted


def initramfs_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"), argparse.ArgumentParser(add_help=False))
    return parser.parse_args(["initramfs", "build", *argv])


@given(st.binary(max_size=300))
def test_parse_raises_only_netlink_error(data: bytes) -> None:
    try:
        msgs = nl.parse(data)
    except nl.NetlinkError:
        return
    for msg in msgs:
        assert len(msg.r) == 16


@given(
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.sampled_from(list(nl.Param)),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=64),
)
def test_set_param_layout(sid: int, cid: int, param: nl.Param, value: str) -> None:
    raw = nl.set_param(HANDLE, sid, cid, param, value)
    length = struct.unpack_from("<I", raw, 0)[0]
    assert length == len(raw) and length % 4 == 0
    assert struct.unpack_from("<IIII", raw, 16 + 16) == (sid, cid, int(param), len(value) + 1)
    assert raw[72 : 72 + len(value) + 1] == value.encode() + b"\0"


# ---------------------------------------------------------------- a login connection the target closes


def _login_against(close_target: bool, *, watch: bool) -> tuple[type[BaseException], float]:
    """kernel_login against a fake kernel that takes the Login Request and never answers it."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    initiator, target = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    settings = LoginSettings("iqn.2026-11.org.iscsiboot:client", "iqn.2026-11.org.iscsiboot:htpc")
    with ours, kernel, initiator, target, nl.IscsiNetlink(HANDLE, ours) as link:
        kernel.send(reply(19, b""))  # SEND_PDU accepted
        if close_target:
            target.close()  # as after a session FAILED: the kernel says nothing of it
        t0 = time.monotonic()
        with pytest.raises((native.ConnectionLost, TimeoutError)) as info:
            native.kernel_login(
                link, 5, 0, settings, where="10.0.2.2:3260", budget=3.0, log=lambda _t: None,
                sock=initiator if watch else None,
            )  # fmt: skip
        return info.type, time.monotonic() - t0


def test_a_login_connection_the_target_closed_ends_the_attempt_at_once() -> None:
    kind, took = _login_against(True, watch=True)
    assert kind is native.ConnectionLost and took < 1.5  # the watch, plus the grace for a last answer
    # the negative control: not watched, the attempt waits for its whole budget
    kind, took = _login_against(True, watch=False)
    assert kind is TimeoutError and took >= 3.0


def test_an_open_login_connection_without_an_answer_waits_for_its_budget() -> None:
    kind, took = _login_against(False, watch=True)
    assert kind is TimeoutError and took >= 3.0
