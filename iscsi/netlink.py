"""NETLINK_ISCSI: the messages that hand an iSCSI session to the Linux kernel.

The pure part builds and reads ``struct nlmsghdr`` + ``struct iscsi_uevent``
(56 bytes on x86_64/aarch64: ``type``, ``iferror``, ``transport_handle``, the
24-byte request union ``u`` at 16 and the 16-byte reply union ``r`` at 40)
with ``struct``, and turns a login result into the ``SET_PARAM`` list the
kernel and a later ``iscsid`` read back from sysfs.

:class:`IscsiNetlink` is the thin I/O part: a raw ``AF_NETLINK`` socket of
protocol 8 bound to multicast group 1, one request at a time, with the
asynchronous events (``RECV_PDU``, ``CONN_ERROR``, ...) that arrive before a
request's reply kept for later.  It uses the standard ``socket`` module: the
messages are fixed C structures, not netlink attributes, so pyroute2's message
classes add nothing but an import of its socket machinery at boot.

Kernel facts (``drivers/scsi/scsi_transport_iscsi.c``): a reply carries the
request's ``nlmsg_type`` and the request's event with ``r`` filled in; on
failure the event's ``type`` becomes ``IF_ERROR`` (103) with the negative errno
in ``iferror``.  Events carry ``nlmsg_type`` 0.  Every message needs
CAP_SYS_ADMIN, and the kernel socket exists only in the initial network
namespace.
"""

from __future__ import annotations

import enum
import errno
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from iscsiboot.errors import EnvironmentProblem, IscsibootError
from iscsiboot.iscsi.text import Params
from iscsiboot.model import Target

NETLINK_ISCSI = 8
GROUP_ISCSID = 1  # ISCSI_NL_GRP_ISCSID: the multicast group of the asynchronous events
UEVENT_LEN = 56  # UEVENT.size
NLMSG_HDRLEN = 16  # NLMSGHDR.size
TRANSPORT_HANDLE = Path("/sys/class/iscsi_transport/tcp/handle")
SESSION_CLASS = Path("/sys/class/iscsi_session")
SCSI_HOST_CLASS = Path("/sys/class/scsi_host")


class Ev(enum.IntEnum):
    """``enum iscsi_uevent_e`` (user -> kernel from 11, kernel -> user from 101)."""

    CREATE_SESSION = 11
    DESTROY_SESSION = 12
    CREATE_CONN = 13
    DESTROY_CONN = 14
    BIND_CONN = 15
    SET_PARAM = 16
    START_CONN = 17
    STOP_CONN = 18
    SEND_PDU = 19
    GET_STATS = 20
    GET_PARAM = 21
    SET_HOST_PARAM = 26
    UNBIND_SESSION = 27
    K_RECV_PDU = 101
    K_CONN_ERROR = 102
    K_IF_ERROR = 103
    K_DESTROY_SESSION = 104
    K_UNBIND_SESSION = 105
    K_CREATE_SESSION = 106
    K_PATH_REQ = 107
    K_IF_DOWN = 108
    K_CONN_LOGIN_STATE = 109
    K_HOST_EVENT = 110
    K_PING_COMP = 111


class Param(enum.IntEnum):
    """``enum iscsi_param`` (append-only; the numbers must match the kernel's)."""

    MAX_RECV_DLENGTH = 0
    MAX_XMIT_DLENGTH = 1
    HDRDGST_EN = 2
    DATADGST_EN = 3
    INITIAL_R2T_EN = 4
    MAX_R2T = 5
    IMM_DATA_EN = 6
    FIRST_BURST = 7
    MAX_BURST = 8
    PDU_INORDER_EN = 9
    DATASEQ_INORDER_EN = 10
    ERL = 11
    IFMARKER_EN = 12
    OFMARKER_EN = 13
    EXP_STATSN = 14
    TARGET_NAME = 15
    TPGT = 16
    PERSISTENT_ADDRESS = 17
    PERSISTENT_PORT = 18
    SESS_RECOVERY_TMO = 19
    CONN_PORT = 20
    CONN_ADDRESS = 21
    USERNAME = 22
    USERNAME_IN = 23
    PASSWORD = 24
    PASSWORD_IN = 25
    FAST_ABORT = 26
    ABORT_TMO = 27
    LU_RESET_TMO = 28
    HOST_RESET_TMO = 29
    PING_TMO = 30
    RECV_TMO = 31
    IFACE_NAME = 32
    ISID = 33
    INITIATOR_NAME = 34
    TGT_RESET_TMO = 35
    TARGET_ALIAS = 36
    BOOT_ROOT = 39
    BOOT_NIC = 40
    BOOT_TARGET = 41
    DISCOVERY_SESS = 43


SECRET_PARAMS = frozenset({Param.PASSWORD, Param.PASSWORD_IN})
# conn-level params: set on the connection (cid), not only on the session
CONN_PARAMS = frozenset(
    {
        Param.MAX_RECV_DLENGTH,
        Param.MAX_XMIT_DLENGTH,
        Param.HDRDGST_EN,
        Param.DATADGST_EN,
        Param.IFMARKER_EN,
        Param.OFMARKER_EN,
        Param.EXP_STATSN,
        Param.PERSISTENT_ADDRESS,
        Param.PERSISTENT_PORT,
        Param.PING_TMO,
        Param.RECV_TMO,
    }
)


class ConnErr(enum.IntEnum):
    """``enum iscsi_err`` as carried by CONN_ERROR events (ISCSI_ERR_BASE 1000)."""

    DATASN = 1001
    DATA_OFFSET = 1002
    MAX_CMDSN = 1003
    EXP_CMDSN = 1004
    BAD_OPCODE = 1005
    DATALEN = 1006
    AHSLEN = 1007
    PROTO = 1008
    LUN = 1009
    BAD_ITT = 1010
    CONN_FAILED = 1011
    R2TSN = 1012
    SESSION_FAILED = 1013
    HDR_DGST = 1014
    DATA_DGST = 1015
    PARAM_NOT_FOUND = 1016
    NO_SCSI_CMD = 1017
    INVALID_HOST = 1018
    XMIT_FAILED = 1019
    TCP_CONN_CLOSE = 1020
    SCSI_EH_SESSION_RST = 1021
    NOP_TIMEDOUT = 1022


def conn_error_name(code: int) -> str:
    try:
        return ConnErr(code).name.lower().replace("_", " ")
    except ValueError:
        return f"error {code}"


# ---------------------------------------------------------------- layouts (struct)
# Native byte order, no alignment: the C structures have none to add.  ``struct`` rather than
# construct: the session's creation is on the boot's critical path, and importing construct
# costs a slow guest about a tenth of a second.

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
UEVENT = struct.Struct("=IiQ24s16s")  # type, iferror, transport_handle, u, r
U_SIZE, R_SIZE = 24, 16
# request unions (24 bytes, at offset 16 of the event)
U_CREATE_SESSION = "=IHH"  # initial_cmdsn, cmds_max, queue_depth
U_SESSION = "=I"  # sid
U_CONN = "=II"  # sid, cid
U_BIND_CONN = "=IIQI"  # sid, cid, transport_eph, is_leading
U_SET_PARAM = "=IIII"  # sid, cid, param, len
U_SET_HOST_PARAM = "=III"  # host_no, param, len
U_STOP_CONN = "=IIQI"  # sid, cid, conn_handle, flag
U_SEND_PDU = "=IIII"  # sid, cid, hdr_size, data_size
# reply and event unions (16 bytes, at offset 40)
R_RETCODE = "=i"  # retcode
R_CREATE_SESSION = "=II"  # sid, host_no
R_CONN = "=II"  # sid, cid
R_RECV_PDU = "=IIQ"  # sid, cid, recv_handle
R_CONN_ERROR = "=III"  # sid, cid, error
R_CONN_LOGIN = "=III"  # sid, cid, state
R_DESTROY_SESSION = "=II"  # host_no, sid


def union(layout: str, *values: int) -> bytes:
    """A request union: ``values`` packed by ``layout``, zero-padded to its 24 bytes."""
    raw = struct.pack(layout, *values)
    if len(raw) > U_SIZE:
        raise ValueError(f"a request union has {U_SIZE} bytes")
    return raw + bytes(U_SIZE - len(raw))


def reply(layout: str, r: bytes) -> tuple[int, ...]:
    """The fields of a reply or event union ``r`` (16 bytes) read by ``layout``."""
    if len(r) != R_SIZE:
        raise ValueError(f"a reply union has {R_SIZE} bytes")
    return struct.unpack_from(layout, r)


STOP_CONN_TERM = 1  # the connection ends with its session (a logout)
STOP_CONN_RECOVER = 3  # stop for recovery: clears the kernel's clean-up bit, keeps the session
CONN_FAILURE = 0xFFFFFFFF


def _align4(n: int) -> int:
    return (n + 3) & ~3


def request(
    kind: Ev, handle: int, union_: bytes, payload: bytes = b"", *, seq: int = 0, pid: int = 0
) -> bytes:
    """One netlink datagram: header, event (``u`` filled, ``r`` zero) and the payload padded to 4."""
    if len(union_) != U_SIZE:
        raise ValueError(f"the request union has {U_SIZE} bytes")
    body = UEVENT.pack(int(kind), 0, handle, union_, bytes(R_SIZE))
    padded = payload + bytes(_align4(len(payload)) - len(payload))
    total = NLMSG_HDRLEN + UEVENT_LEN + len(padded)
    head = NLMSGHDR.pack(total, int(kind), 0, seq, pid)
    return head + body + padded


def create_session(handle: int, *, initial_cmdsn: int, cmds_max: int = 128, queue_depth: int = 32) -> bytes:
    return request(Ev.CREATE_SESSION, handle, union(U_CREATE_SESSION, initial_cmdsn, cmds_max, queue_depth))


def destroy_session(handle: int, sid: int) -> bytes:
    return request(Ev.DESTROY_SESSION, handle, union(U_SESSION, sid))


def create_conn(handle: int, sid: int, cid: int = 0) -> bytes:
    return request(Ev.CREATE_CONN, handle, union(U_CONN, sid, cid))


def destroy_conn(handle: int, sid: int, cid: int) -> bytes:
    return request(Ev.DESTROY_CONN, handle, union(U_CONN, sid, cid))


def bind_conn(handle: int, sid: int, cid: int, fd: int, *, leading: bool = True) -> bytes:
    return request(Ev.BIND_CONN, handle, union(U_BIND_CONN, sid, cid, fd, int(leading)))


def set_param(handle: int, sid: int, cid: int, param: int, value: str) -> bytes:
    raw = value.encode() + b"\0"
    return request(Ev.SET_PARAM, handle, union(U_SET_PARAM, sid, cid, int(param), len(raw)), raw)


def start_conn(handle: int, sid: int, cid: int) -> bytes:
    return request(Ev.START_CONN, handle, union(U_CONN, sid, cid))


def stop_conn(handle: int, sid: int, cid: int, flag: int = STOP_CONN_TERM) -> bytes:
    return request(Ev.STOP_CONN, handle, union(U_STOP_CONN, sid, cid, 0, flag))


def send_pdu(handle: int, sid: int, cid: int, wire: bytes) -> bytes:
    """SEND_PDU of one encoded PDU (48-byte BHS, then the data padded to 4; no digests)."""
    if len(wire) < 48:
        raise ValueError("a PDU starts with a 48-byte header")
    return request(Ev.SEND_PDU, handle, union(U_SEND_PDU, sid, cid, 48, len(wire) - 48), wire)


@dataclass(frozen=True)
class Message:
    """One message from the kernel: a reply (``nl_type`` = the request's code) or an event (0)."""

    nl_type: int
    type: int
    iferror: int
    r: bytes
    payload: bytes

    @property
    def is_reply(self) -> bool:
        return self.nl_type != 0

    @property
    def failed(self) -> bool:
        return self.type == Ev.K_IF_ERROR

    def retcode(self) -> int:
        code: int = reply(R_RETCODE, self.r)[0]
        return code

    def session(self) -> tuple[int, int]:
        """(sid, host_no) of a CREATE_SESSION reply."""
        sid, host_no = reply(R_CREATE_SESSION, self.r)
        return sid, host_no

    def conn_error(self) -> int:
        """The error code (``enum iscsi_err``) of a CONN_ERROR event."""
        code: int = reply(R_CONN_ERROR, self.r)[2]
        return code

    def ids(self) -> tuple[int, int]:
        """(sid, cid) of a RECV_PDU, CONN_ERROR or CONN_LOGIN_STATE event."""
        sid, cid = reply(R_CONN, self.r)
        return sid, cid


class NetlinkError(IscsibootError):
    """The kernel refused a NETLINK_ISCSI request (``iferror``) or its answer is malformed."""

    def __init__(self, kind: int, err: int, what: str | None = None) -> None:
        name = Ev(kind).name if kind in Ev._value2member_map_ else str(kind)
        text = (
            what or f"the kernel refused {name}: {os.strerror(err) if err else 'no reason'} (iferror -{err})"
        )
        super().__init__(text)
        self.kind = kind
        self.errno = err


def parse(datagram: bytes) -> list[Message]:
    """Every netlink message of one datagram (a truncated tail raises NetlinkError)."""
    out: list[Message] = []
    pos = 0
    while pos + NLMSG_HDRLEN <= len(datagram):
        length, nl_type, _flags, _seq, _pid = NLMSGHDR.unpack_from(datagram, pos)
        if length < NLMSG_HDRLEN or pos + length > len(datagram):
            raise NetlinkError(0, 0, f"truncated netlink message ({length} bytes at {pos})")
        if nl_type == 2:  # NLMSG_ERROR: the socket layer's own answer
            code = int.from_bytes(datagram[pos + 16 : pos + 20], "little", signed=True)
            if code != 0:
                raise NetlinkError(0, -code)
        elif length >= NLMSG_HDRLEN + UEVENT_LEN:
            body = datagram[pos + NLMSG_HDRLEN : pos + length]
            ev_type, iferror, _handle, _u, r = UEVENT.unpack_from(body)
            out.append(Message(nl_type, ev_type, -iferror, r, body[UEVENT_LEN:]))
        pos += _align4(length)
    return out


# ---------------------------------------------------------------- parameters


def _flag(value: bool) -> str:
    return "1" if value else "0"


def session_params(
    target: Target,
    initiator: str,
    *,
    recovery_timeout: int = 120,
    ping: int = 0,
    boot: tuple[str, str, str] | None = None,
) -> list[tuple[Param, str]]:
    """What iscsid sets before the login (its "session params"); empty values are left out.

    ``recovery_timeout``: seconds the kernel queues I/O while the connection is down (negative:
    for ever).  ``ping``: the NOP-Out interval and answer timeout in seconds (0: no pings, as
    iscsistart does for boot sessions when no daemon would recover).  ``boot`` = (boot_root,
    boot_nic, boot_target), e.g. ("ibft", "ethernet0", "target0"), marks a firmware session for
    later tools.  The credentials let a later iscsid re-log in on its own.
    """
    params: list[tuple[Param, str]] = [
        (Param.TARGET_NAME, target.name),
        (Param.PERSISTENT_ADDRESS, target.address),
        (Param.PERSISTENT_PORT, str(target.port)),
        (Param.SESS_RECOVERY_TMO, str(recovery_timeout)),
    ]
    if target.chap is not None:
        params += [(Param.USERNAME, target.chap.username), (Param.PASSWORD, target.chap.password.reveal())]
    if target.reverse_chap is not None:
        params += [
            (Param.USERNAME_IN, target.reverse_chap.username),
            (Param.PASSWORD_IN, target.reverse_chap.password.reveal()),
        ]
    params += [
        (Param.FAST_ABORT, "1"),
        (Param.ABORT_TMO, "15"),
        (Param.LU_RESET_TMO, "30"),
        (Param.TGT_RESET_TMO, "30"),
        (Param.PING_TMO, str(ping)),
        (Param.RECV_TMO, str(ping)),
        (Param.IFACE_NAME, "default"),
        (Param.INITIATOR_NAME, initiator),
    ]
    if boot is not None:
        params += [(Param.BOOT_ROOT, boot[0]), (Param.BOOT_NIC, boot[1]), (Param.BOOT_TARGET, boot[2])]
    params.append((Param.DISCOVERY_SESS, "0"))
    return [(p, v) for p, v in params if v != ""]


def negotiated_params(params: Params, exp_stat_sn: int, *, tpgt: int) -> list[tuple[Param, str]]:
    """What iscsid sets after a successful login (its "negotiated params").

    The marker flags are left out: iscsid sends them only to transports with
    CAP_MARKERS, and iscsi_tcp (caps 0x39) answers them with -ENOSYS.
    """
    return [
        (Param.MAX_RECV_DLENGTH, str(params.max_recv_data_segment_length)),
        (Param.MAX_XMIT_DLENGTH, str(params.max_xmit_data_segment_length)),
        (Param.HDRDGST_EN, _flag(params.header_digest)),
        (Param.DATADGST_EN, _flag(params.data_digest)),
        (Param.INITIAL_R2T_EN, _flag(params.initial_r2t)),
        (Param.MAX_R2T, str(params.max_outstanding_r2t)),
        (Param.IMM_DATA_EN, _flag(params.immediate_data)),
        (Param.FIRST_BURST, str(params.first_burst_length)),
        (Param.MAX_BURST, str(params.max_burst_length)),
        (Param.PDU_INORDER_EN, _flag(params.data_pdu_in_order)),
        (Param.DATASEQ_INORDER_EN, _flag(params.data_sequence_in_order)),
        (Param.ERL, str(params.error_recovery_level)),
        (Param.EXP_STATSN, str(exp_stat_sn & 0xFFFFFFFF)),
        (
            Param.TPGT,
            str(params.target_portal_group_tag if params.target_portal_group_tag is not None else tpgt),
        ),
    ]


def shown(param: Param, value: str) -> str:
    """A parameter as it may appear in a log: secrets as ``***``."""
    return f"{param.name.lower()}={'***' if param in SECRET_PARAMS else value}"


# ---------------------------------------------------------------- I/O


def read_transport_handle(path: Path = TRANSPORT_HANDLE) -> int:
    """The iscsi_tcp transport handle (a decimal u64; the file appears once iscsi_tcp is loaded)."""
    try:
        return int(path.read_text().strip())
    except FileNotFoundError:
        raise EnvironmentProblem(
            f"{path} is missing: the iscsi_tcp kernel module is not loaded",
            fix="load iscsi_tcp (add it to the initramfs)",
        ) from None
    except (OSError, ValueError) as exc:
        raise EnvironmentProblem(f"cannot read the iscsi_tcp transport handle {path}: {exc}") from None


class IscsiNetlink:
    """One NETLINK_ISCSI socket: requests with their replies, events kept until asked for."""

    def __init__(self, handle: int, sock: socket.socket | None = None) -> None:
        self.handle = handle
        if sock is None:
            try:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ISCSI)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                sock.bind((0, GROUP_ISCSID))
            except OSError as exc:
                if sock is not None:
                    sock.close()
                if exc.errno == errno.EPROTONOSUPPORT:
                    raise EnvironmentProblem(
                        "the kernel has no NETLINK_ISCSI (scsi_transport_iscsi is not loaded)",
                        fix="load iscsi_tcp (add it to the initramfs)",
                    ) from None
                raise EnvironmentProblem(f"cannot open a NETLINK_ISCSI socket: {exc.strerror}") from None
        self.sock = sock
        self.events: list[Message] = []
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> IscsiNetlink:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _read(self, deadline: float) -> list[Message]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no answer from the kernel")
        ready, _, _ = select.select([self.sock], [], [], left)
        if not ready:
            raise TimeoutError("no answer from the kernel")
        return parse(self.sock.recv(1 << 16))

    def call(self, datagram: bytes, *, timeout: float = 10.0) -> Message:
        """Send one request and return its reply; raise NetlinkError when the kernel refused it."""
        kind = NLMSGHDR.unpack_from(datagram)[1]
        self.sock.send(datagram)
        deadline = time.monotonic() + timeout
        while True:
            for msg in self._read(deadline):
                if msg.is_reply and msg.nl_type == kind:
                    if msg.failed:
                        raise NetlinkError(kind, msg.iferror)
                    return msg
                if not msg.is_reply:
                    self.events.append(msg)

    def wait_event(self, match: Callable[[Message], bool], *, deadline: float) -> Message:
        """The first kept or arriving event that ``match`` accepts (others for other sessions are dropped)."""
        while True:
            for i, msg in enumerate(self.events):
                if match(msg):
                    return self.events.pop(i)
            self.events = [m for m in self.events if m.type not in (Ev.K_RECV_PDU, Ev.K_CONN_ERROR)][-64:]
            self.events.extend(m for m in self._read(deadline) if not m.is_reply)


def event_for(sid: int, cid: int, kinds: Iterable[int]) -> Callable[[Message], bool]:
    wanted = frozenset(kinds)

    def match(msg: Message) -> bool:
        return msg.type in wanted and msg.ids() == (sid, cid)

    return match
