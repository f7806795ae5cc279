"""Serve one NBD socket: the kernel's requests in, the backend's answers out.

The kernel holds the other end of a socket pair (``NBD_SET_SOCK``).  One
request at a time: read it (and a write's data), check it against the
:class:`~iscsiboot.agent.nbd.protocol.Geometry` (a bad one gets an EINVAL
reply, never a crash), run it on the :class:`Backend`, reply.  While no
request waits, the backend's connection is watched too, so the target's
pings are answered and a lost connection is noticed at once.

When the backend's connection breaks (:class:`~iscsiboot.iscsi.transport.TransportError`
or a garbled stream), the server logs in again with exponential, capped,
jittered backoff (:func:`iscsiboot.agent.plan.relogin_backoff`) and runs the request
again: the kernel's requests wait meanwhile, none is answered with an error
because of a reconnect.  A login refused for its credentials is retried
ever more slowly (:data:`~iscsiboot.agent.backends.result.SLOW_RELOGIN`,
:func:`~iscsiboot.agent.plan.refused_backoff`), so the root
file system can come back once the target is fixed; any other failure, "no
such target" from a target still restoring its configuration among them, at
the fast pace.  NBD_CMD_DISC: flush, log out, return.
"""

from __future__ import annotations

import enum
import errno
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from iscsiboot.agent.backends.causes import cause_of_login
from iscsiboot.agent.backends.result import SLOW_RELOGIN, Cause
from iscsiboot.agent.nbd.protocol import (
    MAX_REQUEST,
    REQUEST_SIZE,
    Cmd,
    Geometry,
    Reply,
    Request,
    check,
    decode_request,
    errno_of_sense,
)
from iscsiboot.agent.plan import refused_backoff, relogin_backoff
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi.pdu import ProtocolError
from iscsiboot.iscsi.session import ScsiError
from iscsiboot.iscsi.transport import TransportError

# Errors that mean the backend's connection is gone: log in again, run the request again.
BROKEN: tuple[type[BaseException], ...] = (TransportError, ProtocolError)
DISCARD_CHUNK = 1024 * 1024


class Backend(Protocol):
    """A block device in bytes (offsets and lengths already checked against the geometry)."""

    def read_into(self, offset: int, into: memoryview) -> None:
        """Fill ``into`` with the bytes at ``offset``."""

    def write(self, offset: int, data: memoryview) -> None: ...

    def flush(self) -> None: ...

    def trim(self, offset: int, length: int) -> None: ...

    def reconnect(self) -> None:
        """Log in again (the same session identity); raises when this attempt failed."""

    def fileno(self) -> int | None:
        """The connection to watch while idle (None: nothing to watch)."""

    def poll(self) -> None:
        """Handle what arrived unasked on the connection (pings); raises when it broke."""

    def close(self) -> None:
        """Log out (best effort)."""


class Outcome(enum.Enum):
    DISCONNECTED = "disconnected"  # the kernel sent NBD_CMD_DISC
    CLOSED = "closed"  # the kernel's end of the socket closed (the device was torn down)
    GARBLED = "garbled"  # the kernel's side sent something that is not an NBD request


@dataclass
class Retry:
    """How the server waits between logins after its connection broke."""

    fast: Callable[[], Iterator[float]] = relogin_backoff
    slow: Callable[[], Iterator[float]] = refused_backoff
    sleep: Callable[[float], None] = time.sleep


def what(exc: BaseException) -> str:
    """One line about an exception, for the log (no secret: the project's errors carry none)."""
    if isinstance(exc, IscsibootError):
        return exc.what
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Counters:
    requests: int = 0
    errors: int = 0
    reconnects: int = 0
    logins_refused: int = 0
    polls: int = 0  # times the target sent something unasked (pings) while no request waited


class _KernelGone(Exception):
    """The kernel's end of the socket closed."""


class Server:
    def __init__(
        self,
        sock: socket.socket,
        backend: Backend,
        geometry: Geometry,
        *,
        log: Callable[[str], None],
        retry: Retry | None = None,
    ) -> None:
        self.sock = sock
        self.backend = backend
        self.geometry = geometry
        self.log = log
        self.retry = retry or Retry()
        self.counters = Counters()
        # One buffer for every request's data: a fresh one per request would be mapped, locked
        # (mlockall) and zeroed page by page each time, which a slow CPU feels per MiB.
        self._buffer = memoryview(bytearray(MAX_REQUEST))

    # ------------------------------------------------------------ the loop

    def serve(self) -> Outcome:
        """Answer requests until NBD_CMD_DISC or until the kernel's end closes."""
        try:
            while True:
                self._idle()
                header = self._recv_exact(REQUEST_SIZE)
                try:
                    request = decode_request(header)
                except ProtocolError as exc:
                    self.log(f"the kernel's side sent garbage ({exc.what}); stopping")
                    self._finish()
                    return Outcome.GARBLED
                if request.type == Cmd.DISC:
                    self.log("the kernel disconnects (NBD_CMD_DISC)")
                    self._finish()
                    return Outcome.DISCONNECTED
                self._serve_one(request)
        except _KernelGone:
            self.log("the kernel's end of the socket closed")
            self._finish()
            return Outcome.CLOSED

    def _serve_one(self, request: Request) -> None:
        self.counters.requests += 1
        error = check(request, self.geometry)
        data = self._space(request.length if request.carries_data or request.type == Cmd.READ else 0)
        if request.carries_data:
            if error:
                self._discard(request.length)
            else:
                self._recv_into(data)
        if error:
            self.counters.errors += 1
            self.log(f"refused {request}: {errno.errorcode.get(error, error)}")
            self._send(Reply(request.handle, error).encode())
            return
        error = self._run(request, data)
        if error:
            self.counters.errors += 1
            self._send(Reply(request.handle, error).encode())
        elif request.type == Cmd.READ:
            self._send(Reply(request.handle).encode(), data)  # the data as read: no copy
        else:
            self._send(Reply(request.handle).encode())

    def _space(self, n: int) -> memoryview:
        """``n`` bytes of the server's buffer (a buffer of its own for a larger request)."""
        return self._buffer[:n] if n <= len(self._buffer) else memoryview(bytearray(n))

    def _run(self, request: Request, data: memoryview) -> int:
        """The errno of one request (0: done; a read's bytes are in ``data``), logged in again
        as often as the connection breaks."""
        b = self.backend
        while True:
            try:
                if request.type == Cmd.READ:
                    b.read_into(request.offset, data)
                    return 0
                if request.type == Cmd.WRITE:
                    b.write(request.offset, data)
                elif request.type == Cmd.FLUSH:
                    b.flush()
                elif request.type == Cmd.TRIM:
                    b.trim(request.offset, request.length)
                return 0
            except BROKEN as exc:
                self._reconnect(exc)
            except ScsiError as exc:
                code = errno_of_sense(exc.sense)
                self.log(f"{request} failed: {exc.what} -> {errno.errorcode.get(code, code)}")
                return code
            except Exception as exc:  # the server must answer every request, whatever went wrong
                self.log(f"{request} failed: {what(exc)}")
                return errno.EIO

    def _finish(self) -> None:
        """Flush what the target may cache, then log out."""
        error = self._run(Request(Cmd.FLUSH, 0), self._space(0))
        if error:
            self.log(f"the last flush failed: {errno.errorcode.get(error, error)}")
        try:
            self.backend.close()
        except Exception as exc:
            self.log(f"logout failed: {what(exc)}")
        else:
            self.log("flushed and logged out" if not error else "logged out")

    # ------------------------------------------------------------ the connection to the target

    def _reconnect(self, why: BaseException) -> None:
        """Log in again until it works; the kernel's requests wait meanwhile."""
        self.counters.reconnects += 1
        self.log(f"the connection to the target broke ({what(why)}); logging in again")
        fast = self.retry.fast()
        slow: Iterator[float] | None = None
        attempt = 0
        while True:
            attempt += 1
            try:
                self.retry.sleep(next(fast) if slow is None else next(slow))
                self.backend.reconnect()
            except Exception as exc:  # every failed attempt is retried; PID 1's root depends on it
                cause = cause_of_login(exc) or Cause.OTHER
                if cause in SLOW_RELOGIN:
                    self.counters.logins_refused += 1
                    if slow is None:
                        slow = self.retry.slow()
                    self.log(f"login {attempt} refused ({cause.value}): {what(exc)}; retrying slowly")
                else:
                    slow = None
                    self.log(f"login {attempt} failed ({cause.value}): {what(exc)}")
                continue
            self.log(f"logged in again after {attempt} attempt(s)")
            return

    def _idle(self) -> None:
        """Wait for the kernel's next request, answering the target meanwhile."""
        while True:
            target = self.backend.fileno()
            watched = [self.sock.fileno()] if target is None else [self.sock.fileno(), target]
            try:
                ready, _, _ = select.select(watched, [], [])
            except (OSError, ValueError):  # the backend's socket closed under us
                ready = []
                target = None
                self._reconnect(TransportError("the connection to the target is closed"))
                continue
            if self.sock.fileno() in ready:
                return
            if target is not None and target in ready:
                self.counters.polls += 1
                try:
                    self.backend.poll()
                except BROKEN as exc:
                    self._reconnect(exc)

    # ------------------------------------------------------------ the kernel's socket

    def _recv_exact(self, n: int) -> bytes:
        into = memoryview(bytearray(n))
        self._recv_into(into)
        return into.tobytes()

    def _recv_into(self, into: memoryview) -> None:
        """Fill ``into`` from the kernel's socket."""
        have = 0
        while have < len(into):
            try:
                got = self.sock.recv_into(into[have:], len(into) - have, socket.MSG_WAITALL)
            except OSError:
                raise _KernelGone() from None
            if not got:
                raise _KernelGone()
            have += got

    def _discard(self, n: int) -> None:
        while n > 0:
            chunk = self._space(min(n, DISCARD_CHUNK))
            self._recv_into(chunk)
            n -= len(chunk)

    def _send(self, head: bytes, payload: memoryview | bytes = b"") -> None:
        try:
            sent = self.sock.sendmsg([head, payload]) if payload else self.sock.send(head)
            if sent < len(head):
                self.sock.sendall(memoryview(head)[sent:])
                sent = len(head)
            if sent < len(head) + len(payload):
                self.sock.sendall(memoryview(payload)[sent - len(head) :])
        except OSError:
            raise _KernelGone() from None
