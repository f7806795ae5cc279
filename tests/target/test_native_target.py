"""The native backend's whole sequence against a real tgtd, with a fake kernel at the netlink edge.

The sandbox kernel has no iSCSI, so a thread plays the kernel's side of
NETLINK_ISCSI over a socket pair: it answers each request as
``scsi_transport_iscsi`` does (replies carry the request's type, refusals
IF_ERROR), relays SEND_PDU to the target over the socket handed to
BIND_CONN, and sends each answer as a RECV_PDU event *before* the reply to
SEND_PDU, under a task tag of its own, as libiscsi may; when the bound
socket closes it reports CONN_ERROR once, as iscsi_tcp's state check does.
The login itself is
real: tgtd checks the CHAP exchange.  The QEMU test (test_native_vm) runs the
same code against the real kernel.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from iscsiboot.agent.backends.kernel import NativeBackend
from iscsiboot.agent.backends.result import Cause
from iscsiboot.agent.deadline import Deadline
from iscsiboot.iscsi import netlink as nl
from iscsiboot.iscsi.pdu import PduReader, encode
from iscsiboot.model import Chap, Target
from iscsiboot.qemu.tgt import Tgtd
from iscsiboot.secret import Secret
from tgt_support import tgtd_missing

IQN = "iqn.2026-11.org.iscsiboot.test:native"
ME = "iqn.2026-11.org.iscsiboot.test:initiator"
USER, PASSWORD = "htpc", "htpc-secret-12"
TUSER, TPASSWORD = "nas", "nas-secret-345"
HANDLE = 0xFFFF_8880_0BAD_F00D


class FakeKernel(threading.Thread):
    def __init__(self, sock: socket.socket, sysfs: Path, *, busy: int = 0) -> None:
        super().__init__(daemon=True)
        self.busy = busy  # SEND_PDUs refused (EPERM) after each Login Response, as a busy login task
        self.busy_left = 0
        self.refused = 0
        self.sock = sock
        self.sysfs = sysfs
        self.calls: list[int] = []
        self.params: dict[int, str] = {}
        self.tcp: socket.socket | None = None
        self.reader = PduReader()
        self.failed: tuple[int, int] | None = None  # (sid, cid) once CONN_ERROR was sent
        self.wake_r, self.wake_w = os.pipe()  # stop() ends run() at once

    def stop(self) -> None:
        os.write(self.wake_w, b"x")
        self.join(5)
        os.close(self.wake_r)
        os.close(self.wake_w)

    def answer(self, kind: int, r: bytes = b"", payload: bytes = b"", *, event: int | None = None) -> None:
        body = struct.pack("<IiQ", event or kind, 0, HANDLE) + bytes(24) + r.ljust(16, b"\0") + payload
        self.sock.send(struct.pack("<IHHII", 16 + len(body), 0 if event else kind, 0, 0, 0) + body)

    def conn_error(self, sid: int, cid: int) -> None:
        if self.failed is None:
            self.failed = (sid, cid)
            self.calls.append(nl.Ev.K_CONN_ERROR)
            self.answer(0, struct.pack("<III", sid, cid, 1020), event=nl.Ev.K_CONN_ERROR)

    def closed(self) -> bool:
        """Whether the bound socket has reached end of file (without taking data)."""
        assert self.tcp is not None
        try:
            return self.tcp.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def run(self) -> None:
        sid = cid = 0
        while True:
            watched: list[socket.socket | int] = [self.sock, self.wake_r]
            if self.tcp is not None and not self.failed:
                watched.append(self.tcp)
            try:
                ready, _, _ = select.select(watched, [], [], 10)
                if self.wake_r in ready:
                    return
                if self.tcp in ready and self.closed():
                    self.conn_error(sid, cid)
            except (OSError, ValueError):  # the test closed its end
                return
            if self.sock not in ready:
                continue
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            kind = struct.unpack_from("<H", data, 4)[0]
            ev = data[16:]
            sid, cid = struct.unpack_from("<II", ev, 16)
            self.calls.append(kind)
            if kind == nl.Ev.CREATE_SESSION:
                self.answer(kind, struct.pack("<II", 1, 0))
            elif kind == nl.Ev.CREATE_CONN:
                self.answer(kind, struct.pack("<II", sid, 0))
            elif kind == nl.Ev.BIND_CONN:
                fd = struct.unpack_from("<Q", ev, 24)[0]
                self.tcp = socket.socket(fileno=os.dup(fd))
                self.tcp.setblocking(True)
                self.tcp.settimeout(10)
                self.answer(kind)
            elif kind == nl.Ev.SET_PARAM:
                param, length = struct.unpack_from("<II", ev, 24)
                self.params[param] = ev[56 : 56 + length - 1].decode()
                self.answer(kind)
            elif kind == nl.Ev.SEND_PDU:
                if self.busy_left > 0:  # libiscsi's login task not yet freed: EPERM, nothing sent
                    self.busy_left -= 1
                    self.refused += 1
                    self.answer(kind, struct.pack("<i", -errno.EPERM))
                    continue
                self.busy_left = self.busy
                self.relay(ev[56:], sid, cid)
                self.answer(kind)
            elif kind == nl.Ev.START_CONN:
                session = self.sysfs / "class" / "iscsi_session" / "session1"
                session.mkdir(parents=True, exist_ok=True)
                (session / "state").write_text("LOGGED_IN\n")
                self.answer(kind)
            else:  # STOP_CONN, DESTROY_CONN, DESTROY_SESSION
                self.answer(kind)

    def relay(self, wire: bytes, sid: int, cid: int) -> None:
        assert self.tcp is not None
        self.tcp.sendall(wire)
        pdu = None
        while pdu is None:
            chunk = self.tcp.recv(65536)
            if not chunk:  # the target closed the connection: CONN_ERROR
                self.conn_error(sid, cid)
                return
            self.reader.feed(chunk)
            pdu = self.reader.next()
        bhs = bytearray(encode(pdu)[:48])
        bhs[16:20] = (0x4D2).to_bytes(4, "big")  # the kernel's own task tag
        self.answer(0, struct.pack("<IIQ", sid, cid, 7), bytes(bhs) + pdu.data, event=nl.Ev.K_RECV_PDU)


@pytest.fixture(scope="module")
def tgtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tgtd]:
    reason = tgtd_missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("native")
    image = work / "disk.img"
    image.write_bytes(bytes(4 << 20))
    with Tgtd(work / "tgtd") as daemon:
        daemon.add_target(1, IQN, [image])
        daemon.add_account(USER, Secret(PASSWORD))
        daemon.add_account(TUSER, Secret(TPASSWORD))
        daemon.bind_account(1, USER)
        daemon.bind_account(1, TUSER, outgoing=True)
        yield daemon


def sysfs_tree(root: Path) -> Path:
    (root / "class" / "iscsi_transport" / "tcp").mkdir(parents=True)
    (root / "class" / "iscsi_transport" / "tcp" / "handle").write_text(f"{HANDLE}\n")
    (root / "class" / "scsi_host" / "host0").mkdir(parents=True)
    (root / "class" / "scsi_host" / "host0" / "scan").write_text("")
    return root


def login(tgtd: Tgtd, sysfs: Path, password: str, *, busy: int = 0) -> tuple[Cause, FakeKernel, list[str]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    kernel = FakeKernel(theirs, sysfs, busy=busy)
    kernel.start()
    lines: list[str] = []
    target = Target(
        IQN,
        "127.0.0.1",
        tgtd.port,
        chap=Chap(USER, Secret(password)),
        reverse_chap=Chap(TUSER, Secret(TPASSWORD)),
    )
    backend = NativeBackend(lines.append, sysfs=sysfs, open_link=lambda h: nl.IscsiNetlink(h, ours))
    try:
        result = backend.login(target, ME, Deadline(20))
    finally:
        kernel.stop()
        theirs.close()
        if kernel.tcp is not None:
            kernel.tcp.close()
    lines.append(result.evidence)
    return result.cause, kernel, lines


def test_a_busy_login_task_is_waited_for(tgtd: Tgtd, tmp_path: Path) -> None:
    """libiscsi may refuse the next Login Request (EPERM) until it has freed the last one's task."""
    cause, kernel, lines = login(tgtd, sysfs_tree(tmp_path / "sys"), PASSWORD, busy=3)
    assert cause is Cause.OK, lines
    assert kernel.refused >= 3  # mutual CHAP takes several Login Requests: each later one was refused first
    assert any("SEND_PDU taken after 3 refusal(s)" in line for line in lines), lines


def test_mutual_chap_login_hands_the_session_over(tgtd: Tgtd, tmp_path: Path) -> None:
    sysfs = sysfs_tree(tmp_path / "sys")
    started = time.monotonic()
    cause, kernel, lines = login(tgtd, sysfs, PASSWORD)
    assert cause is Cause.OK, lines
    assert time.monotonic() - started < 10
    order = [c for c in kernel.calls if c != nl.Ev.SET_PARAM]
    assert order[:3] == [nl.Ev.CREATE_SESSION, nl.Ev.CREATE_CONN, nl.Ev.BIND_CONN]
    assert order[-1] == nl.Ev.START_CONN and nl.Ev.SEND_PDU in order
    assert nl.Ev.DESTROY_SESSION not in kernel.calls
    p = kernel.params
    assert p[nl.Param.TARGET_NAME] == IQN and p[nl.Param.INITIATOR_NAME] == ME
    assert p[nl.Param.PASSWORD] == PASSWORD and p[nl.Param.USERNAME_IN] == TUSER
    assert p[nl.Param.PERSISTENT_PORT] == str(tgtd.port)
    assert p[nl.Param.TPGT] == "1"
    assert int(p[nl.Param.EXP_STATSN]) > 0
    assert (sysfs / "class" / "scsi_host" / "host0" / "scan").read_text() == "- - -"
    assert any("CHAP (mutual)" in line for line in lines), lines
    for line in lines:
        assert PASSWORD not in line and TPASSWORD not in line


def test_wrong_password_is_auth_and_tears_the_session_down(tgtd: Tgtd, tmp_path: Path) -> None:
    sysfs = sysfs_tree(tmp_path / "sys")
    cause, kernel, lines = login(tgtd, sysfs, "not-the-one-67")
    assert cause is Cause.AUTH, lines
    tail = kernel.calls[-3:]
    assert tail == [nl.Ev.STOP_CONN, nl.Ev.DESTROY_CONN, nl.Ev.DESTROY_SESSION], kernel.calls
    # the connection had failed in the kernel (its own clean-up queued) before STOP_CONN
    assert nl.Ev.K_CONN_ERROR in kernel.calls[:-3], kernel.calls
    assert nl.Ev.START_CONN not in kernel.calls
    assert (sysfs / "class" / "scsi_host" / "host0" / "scan").read_text() == ""
    for line in lines:
        assert "not-the-one-67" not in line and TPASSWORD not in line


def test_closed_port_is_refused_before_any_kernel_object(tmp_path: Path) -> None:
    sysfs = sysfs_tree(tmp_path / "sys")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    kernel = FakeKernel(theirs, sysfs)
    kernel.start()
    backend = NativeBackend(sysfs=sysfs, open_link=lambda h: nl.IscsiNetlink(h, ours))
    result = backend.login(Target(IQN, "127.0.0.1", port), ME, Deadline(5))
    kernel.stop()
    theirs.close()
    assert result.cause is Cause.REFUSED and result.retryable
    assert kernel.calls == []


def test_no_iscsi_tcp_is_no_driver(tmp_path: Path) -> None:
    backend = NativeBackend(sysfs=tmp_path)
    result = NativeBackend.login(backend, Target(IQN, "127.0.0.1", 3260), ME, Deadline(5))
    assert result.cause is Cause.NO_DRIVER
    assert "iscsi_tcp" in result.evidence
