"""A blocking TCP transport for PDUs: every call has a deadline.

Thin on purpose: framing and checks live in :mod:`iscsiboot.iscsi.pdu`.  Made
for bulk data: a PDU goes out in one ``sendmsg`` of its header, the caller's
data buffer (not copied) and the padding; a received data segment can go
straight from the socket into the caller's buffer (``recv(sink=...)``).  Every
failure of the connection (end of stream, reset, timeout) is a
:class:`TransportError`.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Callable

from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi.pdu import (
    BHS_LEN,
    Buffer,
    Pdu,
    check_data_digest,
    data_length,
    frame,
    header_length,
    pad4,
    parse_header,
)

# Where a data segment goes: called with the PDU's header (a data-less Pdu) and
# the segment's length; returns a writable byte view of exactly that length, or
# None to have the data in the returned Pdu's ``data``.
Sink = Callable[[Pdu, int], memoryview | None]

READ_AHEAD = 32 * 1024
WAITALL_MIN = 16 * 1024  # a data segment's rest at least this large is received in one call


class TransportError(IscsibootError):
    """The TCP connection failed, closed or timed out."""


class PortalUnreachable(TransportError):
    """No TCP connection to the portal."""


def host_arg(host: str) -> str | bytes:
    """``host`` for getaddrinfo: bytes when it is ASCII (an address or a plain name).

    A ``str`` host goes through Python's idna codec on every lookup, even an
    address; the boot image carries no idna codec (nor the unicodedata it needs).
    """
    return host.encode("ascii") if host.isascii() else host


def connect(host: str, port: int, *, timeout: float) -> Transport:
    try:
        sock = socket.create_connection((host_arg(host), port), timeout=timeout)  # type: ignore[arg-type]
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
        # Bytes received but not yet used: _buf[_start:_end]
        self._buf = bytearray(READ_AHEAD)
        self._view = memoryview(self._buf)
        self._start = 0
        self._end = 0

    def set_digests(self, header: bool, data: bool) -> None:
        self.header_digest = header
        self.data_digest = data

    # ------------------------------------------------------------ sending

    def send(self, pdu: Pdu, *, deadline: float) -> None:
        self.send_parts(pdu.bhs, pdu.data, ahs=pdu.ahs, deadline=deadline)

    def send_parts(self, bhs: bytes, data: Buffer, *, deadline: float, ahs: bytes = b"") -> None:
        """One PDU whose data segment is ``data`` (a byte-format buffer, sent without a copy)."""
        parts = frame(bhs, ahs, data, header_digest=self.header_digest, data_digest=self.data_digest)
        try:
            self._settimeout(deadline, "send to")
            sent = self.sock.sendmsg(parts)
            for part in parts:
                size = len(part)
                if sent >= size:
                    sent -= size
                    continue
                self.sock.sendall(memoryview(part)[sent:])
                sent = 0
        except TimeoutError:
            raise TransportError(f"timed out sending to {self.peer}") from None
        except OSError as exc:
            raise TransportError(f"the connection to {self.peer} broke: {exc.strerror or exc}") from None

    # ------------------------------------------------------------ receiving

    def recv(self, *, deadline: float, sink: Sink | None = None) -> Pdu:
        """The next PDU.  With ``sink``, a data segment goes where the sink says;
        the returned PDU's ``data`` is then empty (its BHS still gives the length)."""
        self._fill(BHS_LEN, deadline)
        end = header_length(self._view[self._start : self._start + BHS_LEN], header_digest=self.header_digest)
        self._fill(end, deadline)
        head = parse_header(self._take(end), header_digest=self.header_digest)
        size = data_length(head.bhs)
        if not size:
            return head
        target = sink(head, size) if sink is not None else None
        own = None
        if target is None:
            own = bytearray(size)
            target = memoryview(own)
        self._read_into(target, deadline)
        tail = pad4(size) + (4 if self.data_digest else 0)
        if tail:
            self._fill(tail, deadline)
            rest = self._take(tail)
            if self.data_digest:
                check_data_digest(target, rest)
        return head if own is None else Pdu(head.bhs, head.ahs, bytes(own))

    def _take(self, n: int) -> bytes:
        out = bytes(self._view[self._start : self._start + n])
        self._start += n
        return out

    def _fill(self, n: int, deadline: float) -> None:
        """Have at least ``n`` (at most :data:`READ_AHEAD`) received bytes in the buffer."""
        if self._end - self._start >= n:
            return
        if self._start + n > len(self._buf):
            kept = self._end - self._start
            self._buf[:kept] = self._view[self._start : self._end]
            self._start, self._end = 0, kept
        while self._end - self._start < n:
            self._end += self._recv_into(self._view[self._end :], deadline)

    def _read_into(self, target: memoryview, deadline: float) -> None:
        have = min(self._end - self._start, len(target))
        target[:have] = self._view[self._start : self._start + have]
        self._start += have
        while have < len(target):
            whole = len(target) - have >= WAITALL_MIN
            have += self._recv_into(target[have:], deadline, whole=whole)

    def _recv_into(self, view: memoryview, deadline: float, *, whole: bool = False) -> int:
        """What arrives into ``view`` before the deadline; ``whole``: wait for all of it in one call.

        ``whole`` blocks with a kernel receive timeout and MSG_WAITALL: the kernel
        gathers the whole segment instead of waking the caller for every few
        kilobytes (a slow CPU pays for each wake-up and each timeout set-up).
        """
        try:
            if whole:
                self._set_receive_timeout(deadline)
                got = self.sock.recv_into(view, len(view), socket.MSG_WAITALL)
            else:
                self._settimeout(deadline, "hear from")
                got = self.sock.recv_into(view)
        except (BlockingIOError, TimeoutError):  # BlockingIOError: SO_RCVTIMEO passed, nothing came
            raise TransportError(f"timed out waiting for {self.peer}") from None
        except OSError as exc:
            raise TransportError(f"the connection to {self.peer} broke: {exc.strerror or exc}") from None
        if not got:
            raise TransportError(f"{self.peer} closed the connection")
        return got

    def _set_receive_timeout(self, deadline: float) -> None:
        """Block, with the kernel's receive timeout at the deadline (SO_RCVTIMEO)."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransportError(f"timed out waiting to hear from {self.peer}")
        seconds = int(left)
        micro = int((left - seconds) * 1_000_000)
        if seconds == 0 and micro == 0:  # a zero timeout would mean none at all
            micro = 1
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", seconds, micro))

    def _settimeout(self, deadline: float, verb: str) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TransportError(f"timed out waiting to {verb} {self.peer}")
        self.sock.settimeout(left)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def deliver(pdu: Pdu, sink: Sink | None) -> Pdu:
    """What :meth:`Transport.recv` returns for a whole ``pdu`` (for transports that hold
    PDUs): the data given to the sink, the BHS's DataSegmentLength set as on the wire."""
    if sink is None or not pdu.data:
        return pdu
    bhs = bytearray(pdu.bhs)
    bhs[5:8] = len(pdu.data).to_bytes(3, "big")
    head = Pdu(bytes(bhs), pdu.ahs)
    target = sink(head, len(pdu.data))
    if target is None:
        return Pdu(head.bhs, head.ahs, pdu.data)
    target[:] = pdu.data
    return head
