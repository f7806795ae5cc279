"""The target's end of a socket in tests that script a target: read the initiator's PDUs, send answers.

:class:`ScriptedTarget` adds the answers of a logged-in session (Data-In, R2T, SCSI Response);
:func:`session_on` and :func:`run_target` put an initiator and a script on the two ends.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable

from iscsiboot.iscsi.login import LoginResult
from iscsiboot.iscsi.pdu import Op, Pdu, PduReader, encode, make_bhs
from iscsiboot.iscsi.session import Session
from iscsiboot.iscsi.text import Params
from iscsiboot.iscsi.transport import Transport


class PeerSocket:
    """One connection's target side: whole PDUs in, encoded PDUs out; StatSN counts from ``stat_sn``."""

    def __init__(self, sock: socket.socket, stat_sn: int) -> None:
        self.sock = sock
        self.reader = PduReader(from_target=False)
        self.stat_sn = stat_sn

    def recv(self) -> Pdu:
        while True:
            pdu = self.reader.next()
            if pdu is not None:
                return pdu
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError
            self.reader.feed(chunk)

    def send(self, pdu: Pdu) -> None:
        self.sock.sendall(encode(pdu))


class ScriptedTarget(PeerSocket):
    """A target's answers to one logged-in session (StatSN from 100, ExpCmdSN 1)."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, stat_sn=100)

    def target_pdu(self, op: int, itt: int, *, flags: int = 0x80, max_cmd_sn: int = 50) -> bytearray:
        bhs = make_bhs(op, flags=flags)
        struct.pack_into(">I", bhs, 16, itt)
        struct.pack_into(">III", bhs, 24, self.stat_sn, 1, max_cmd_sn)
        return bhs

    def data_in(self, itt: int, data_sn: int, offset: int, data: bytes, *, status: bool = False,
                residual: int = 0) -> None:  # fmt: skip
        flags = 0x80 | (0x01 if status else 0) | (0x02 if residual else 0)
        bhs = self.target_pdu(Op.DATA_IN, itt, flags=flags if status else 0)
        struct.pack_into(">III", bhs, 36, data_sn, offset, residual)
        if status:
            self.stat_sn += 1
        self.send(Pdu(bytes(bhs), b"", data))

    def response(self, itt: int, status: int = 0, sense: bytes = b"", *, residual: int = 0) -> None:
        bhs = self.target_pdu(Op.SCSI_RESPONSE, itt, flags=0x80 | (0x02 if residual else 0))
        bhs[3] = status
        struct.pack_into(">I", bhs, 44, residual)
        self.stat_sn += 1
        self.send(Pdu(bytes(bhs), b"", struct.pack(">H", len(sense)) + sense if sense else b""))

    def r2t(self, cmd: Pdu, r2t_sn: int, offset: int, length: int, *, ttt: int = 0x1000) -> None:
        bhs = self.target_pdu(Op.R2T, cmd.itt)
        bhs[8:16] = cmd.lun_bytes
        struct.pack_into(">I", bhs, 20, ttt + r2t_sn)
        struct.pack_into(">III", bhs, 36, r2t_sn, offset, length)
        self.send(Pdu(bytes(bhs)))


def session_on(sock: socket.socket, params: Params | None = None, *, max_cmd_sn: int = 10) -> Session:
    """A session as after a login (CmdSN 1, ExpStatSN 100) on the initiator's end of a socket."""
    result = LoginResult(params or Params(), tsih=1, cmd_sn=1, exp_stat_sn=100, max_cmd_sn=max_cmd_sn,
                         auth="None")  # fmt: skip
    return Session(Transport(sock, "peer"), result, timeout=5, portal="peer")


def run_target(
    sock: socket.socket, script: Callable[[ScriptedTarget], None]
) -> tuple[threading.Thread, list[BaseException]]:
    """Play ``script`` as the target in a thread; :func:`finish` joins it and raises what it raised."""
    errors: list[BaseException] = []

    def body() -> None:
        try:
            script(ScriptedTarget(sock))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, errors


def finish(thread: threading.Thread, errors: list[BaseException]) -> None:
    thread.join(10)
    assert not thread.is_alive()
    if errors:
        raise errors[0]
