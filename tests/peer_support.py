"""The target's end of a socket in tests that script a target: read the initiator's PDUs, send answers."""

from __future__ import annotations

import socket

from iscsiboot.iscsi.pdu import Pdu, PduReader, encode


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
