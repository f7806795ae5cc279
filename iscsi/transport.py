"""A blocking TCP transport for PDUs: every call has a deadline.

Thin on purpose: framing lives in :class:`iscsiboot.iscsi.pdu.PduReader`.
"""

from __future__ import annotations

import contextlib
import socket
import time

from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi.pdu import Pdu, PduReader, encode


class TransportError(IscsibootError):
    """The TCP connection failed, closed or timed out."""


class PortalUnreachable(TransportError):
    """No TCP connection to the portal."""


def connect(host: str, port: int, *, timeout: float) -> Transport:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise PortalUnreachable(
            f"no answer from {host}:{port} within {timeout:g} s",
            fix="check the address, the route and any firewall between here and the target",
        ) from None
    except ConnectionRefusedError:
        raise PortalUnreachable(
            f"{host}:{port} refused the connection: nothing listens on that port",
            fix="start the target (tgtd, targetcli) or correct the port (iSCSI uses 3260)",
        ) from None
    except OSError as exc:
        raise PortalUnreachable(
            f"cannot reach {host}:{port}: {exc.strerror or exc}",
            fix="check the address, the network and the route",
        ) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Transport(sock, f"{host}:{port}")


class Transport:
    def __init__(self, sock: socket.socket, peer: str) -> None:
        self.sock = sock
        self.peer = peer
        self.header_digest = False
        self.data_digest = False
        self._reader = PduReader()

    def set_digests(self, header: bool, data: bool) -> None:
        self.header_digest = header
        self.data_digest = data
        self._reader.header_digest = header
        self._reader.data_digest = data

    def send(self, pdu: Pdu, *, deadline: float) -> None:
        raw = encode(pdu, header_digest=self.header_digest, data_digest=self.data_digest)
        self._settimeout(deadline, "send to")
        try:
            self.sock.sendall(raw)
        except TimeoutError:
            raise TransportError(f"timed out sending to {self.peer}") from None
        except OSError as exc:
            raise TransportError(f"the connection to {self.peer} broke: {exc.strerror or exc}") from None

    def recv(self, *, deadline: float) -> Pdu:
        while True:
            pdu = self._reader.next()
            if pdu is not None:
                return pdu
            self._settimeout(deadline, "hear from")
            try:
                chunk = self.sock.recv(max(self._reader.needed(), 4096))
            except TimeoutError:
                raise TransportError(f"timed out waiting for {self.peer}") from None
            except OSError as exc:
                raise TransportError(f"the connection to {self.peer} broke: {exc.strerror or exc}") from None
            if not chunk:
                raise TransportError(f"{self.peer} closed the connection")
            self._reader.feed(chunk)

    def _settimeout(self, deadline: float, verb: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransportError(f"timed out waiting to {verb} {self.peer}")
        self.sock.settimeout(left)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
