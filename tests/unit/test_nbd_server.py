"""The NBD server over a real socket pair: the test plays the kernel against an in-memory backend."""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from itertools import repeat

import pytest
from iscsiboot.agent.nbd import protocol as p
from iscsiboot.agent.nbd.server import Outcome, Retry, Server
from iscsiboot.iscsi.login import AuthenticationFailed, LoginFailed
from iscsiboot.iscsi.scsi import Sense
from iscsiboot.iscsi.session import ScsiError
from iscsiboot.iscsi.transport import TransportError

BS = 512
SIZE = 64 * BS


class Memory:
    """A backend in memory; ``fail`` holds exceptions for the next operations, in order."""

    def __init__(self, size: int = SIZE) -> None:
        self.data = bytearray(size)
        self.fail: list[BaseException] = []
        self.refuse_login: list[BaseException] = []
        self.calls: list[str] = []
        self.reconnects = 0
        self.in_reconnect = threading.Event()
        self.gate: threading.Event | None = None  # reconnect waits for it when set
        self.watch: socket.socket | None = None
        self.polled = 0
        self.closed = False

    def _maybe_fail(self, name: str) -> None:
        self.calls.append(name)
        if self.fail:
            raise self.fail.pop(0)

    def read_into(self, offset: int, into: memoryview) -> None:
        self._maybe_fail(f"read {offset} {len(into)}")
        into[:] = self.data[offset : offset + len(into)]

    def write(self, offset: int, data: memoryview) -> None:
        self._maybe_fail(f"write {offset} {len(data)}")
        self.data[offset : offset + len(data)] = data

    def flush(self) -> None:
        self._maybe_fail("flush")

    def trim(self, offset: int, length: int) -> None:
        self._maybe_fail(f"trim {offset} {length}")
        self.data[offset : offset + length] = bytes(length)

    def reconnect(self) -> None:
        self.in_reconnect.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.refuse_login:
            raise self.refuse_login.pop(0)
        self.reconnects += 1

    def fileno(self) -> int | None:
        return None if self.watch is None else self.watch.fileno()

    def poll(self) -> None:
        assert self.watch is not None
        got = self.watch.recv(100)
        self.polled += 1
        if got == b"gone":
            self.watch = None
            raise TransportError("the target closed the connection")

    def close(self) -> None:
        self.calls.append("close")
        self.closed = True


class Kernel:
    """The kernel's end of the socket, with the server in a thread."""

    def __init__(self, backend: Memory, *, trim: bool = True, sleeps: list[float] | None = None) -> None:
        self.backend = backend
        self.sleeps: list[float] = [] if sleeps is None else sleeps
        ours, theirs = socket.socketpair()
        self.sock = theirs
        self.sock.settimeout(10)
        retry = Retry(fast=lambda: repeat(0.5), slow=lambda: repeat(30.0), sleep=self.sleeps.append)
        self.log: list[str] = []
        self.server = Server(ours, backend, p.Geometry(SIZE, BS, trim=trim), log=self.log.append, retry=retry)
        self.outcome: Outcome | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._ours = ours

    def _run(self) -> None:
        self.outcome = self.server.serve()

    def send(self, request: p.Request, data: bytes = b"") -> None:
        self.sock.sendall(request.encode() + data)

    def reply(self, length: int = 0) -> tuple[p.Reply, bytes]:
        reply = p.decode_reply(self._exact(p.REPLY_SIZE))
        data = self._exact(length) if length and not reply.error else b""
        return reply, data

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk, "the server closed the socket"
            out += chunk
        return out

    def stop(self) -> Outcome | None:
        self.send(p.Request(p.Cmd.DISC, 0))
        self.thread.join(10)
        return self.outcome

    def close(self) -> None:
        self.sock.close()
        self.thread.join(10)
        self._ours.close()


def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def memory() -> Memory:
    return Memory()


@pytest.fixture
def kernel(memory: Memory) -> Iterator[Kernel]:
    k = Kernel(memory)
    yield k
    k.close()


def test_write_read_flush_trim(kernel: Kernel, memory: Memory) -> None:
    block = bytes(range(256)) * 4
    kernel.send(p.Request(p.Cmd.WRITE, 1, 2 * BS, 2 * BS), block)
    assert kernel.reply() == (p.Reply(1), b"")
    assert memory.data[2 * BS : 4 * BS] == block
    kernel.send(p.Request(p.Cmd.READ, 2, BS, 3 * BS))
    assert kernel.reply(3 * BS) == (p.Reply(2), bytes(BS) + block)
    kernel.send(p.Request(p.Cmd.FLUSH, 3))
    assert kernel.reply() == (p.Reply(3), b"")
    kernel.send(p.Request(p.Cmd.TRIM, 4, 2 * BS, BS))
    assert kernel.reply() == (p.Reply(4), b"")
    assert memory.data[2 * BS : 3 * BS] == bytes(BS)
    assert kernel.stop() is Outcome.DISCONNECTED
    assert memory.calls[-2:] == ["flush", "close"]  # NBD_CMD_DISC: flush, log out


def test_bad_requests_get_einval_and_the_stream_stays_in_step(kernel: Kernel, memory: Memory) -> None:
    kernel.send(p.Request(p.Cmd.WRITE, 1, SIZE, BS), b"x" * BS)  # past the end: its data is skipped
    assert kernel.reply() == (p.Reply(1, errno.EINVAL), b"")
    kernel.send(p.Request(p.Cmd.READ, 2, 100, BS))  # not aligned
    assert kernel.reply(BS) == (p.Reply(2, errno.EINVAL), b"")
    kernel.send(p.Request(p.Cmd.WRITE_ZEROES, 3, 0, BS))
    assert kernel.reply() == (p.Reply(3, errno.EINVAL), b"")
    kernel.send(p.Request(99, 4, 0, 0))
    assert kernel.reply() == (p.Reply(4, errno.EINVAL), b"")
    kernel.send(p.Request(p.Cmd.WRITE, 5, 0, 100), b"y" * 100)  # not aligned: skipped too
    assert kernel.reply() == (p.Reply(5, errno.EINVAL), b"")
    kernel.send(p.Request(p.Cmd.READ, 6, 0, BS))
    assert kernel.reply(BS) == (p.Reply(6), bytes(BS))
    assert not any(c.startswith("write") for c in memory.calls)
    assert kernel.server.counters.errors == 5


def test_trim_is_refused_when_not_offered(memory: Memory) -> None:
    k = Kernel(memory, trim=False)
    try:
        k.send(p.Request(p.Cmd.TRIM, 1, 0, BS))
        assert k.reply() == (p.Reply(1, errno.EINVAL), b"")
    finally:
        k.close()


def test_scsi_errors_become_errno(kernel: Kernel, memory: Memory) -> None:
    memory.fail = [
        ScsiError("medium", status=2, sense=Sense(0x3, 0x11, 0)),
        ScsiError("protected", status=2, sense=Sense(0x7, 0x27, 0)),
        RuntimeError("a bug"),
    ]
    kernel.send(p.Request(p.Cmd.READ, 1, 0, BS))
    assert kernel.reply(BS) == (p.Reply(1, errno.EIO), b"")
    kernel.send(p.Request(p.Cmd.WRITE, 2, 0, BS), bytes(BS))
    assert kernel.reply() == (p.Reply(2, errno.EPERM), b"")
    kernel.send(p.Request(p.Cmd.FLUSH, 3))
    assert kernel.reply() == (p.Reply(3, errno.EIO), b"")
    kernel.send(p.Request(p.Cmd.READ, 4, 0, BS))
    assert kernel.reply(BS) == (p.Reply(4), bytes(BS))
    assert memory.reconnects == 0


def test_a_broken_connection_is_logged_in_again_and_the_requests_replayed(
    kernel: Kernel, memory: Memory
) -> None:
    memory.data[:BS] = b"a" * BS
    memory.fail = [TransportError("reset"), TransportError("reset again")]
    # three requests in flight before the first answer
    kernel.send(p.Request(p.Cmd.READ, 1, 0, BS))
    kernel.send(p.Request(p.Cmd.WRITE, 2, BS, BS), b"b" * BS)
    kernel.send(p.Request(p.Cmd.READ, 3, BS, BS))
    assert kernel.reply(BS) == (p.Reply(1), b"a" * BS)
    assert kernel.reply() == (p.Reply(2), b"")
    assert kernel.reply(BS) == (p.Reply(3), b"b" * BS)
    assert memory.reconnects == 2
    assert kernel.sleeps == [0.5, 0.5]  # the backoff was asked before each login
    assert memory.calls[:3] == ["read 0 512"] * 3  # the read ran again after each login
    assert kernel.stop() is Outcome.DISCONNECTED
    # each request was answered exactly once: nothing more is waiting
    kernel.sock.settimeout(0.2)
    with pytest.raises(TimeoutError):
        kernel.sock.recv(100)


def test_a_refused_relogin_is_retried_slowly(kernel: Kernel, memory: Memory) -> None:
    memory.fail = [TransportError("reset")]
    memory.refuse_login = [AuthenticationFailed("the target's CHAP proof was wrong")] * 3
    kernel.send(p.Request(p.Cmd.READ, 1, 0, BS))
    assert kernel.reply(BS) == (p.Reply(1), bytes(BS))
    assert kernel.sleeps == [0.5, 30.0, 30.0, 30.0]  # never a tight loop
    assert kernel.server.counters.logins_refused == 3
    assert any("refused (auth)" in line for line in kernel.log)


def test_a_request_that_arrives_during_the_reconnect_waits(kernel: Kernel, memory: Memory) -> None:
    memory.gate = threading.Event()
    memory.fail = [TransportError("reset")]
    kernel.send(p.Request(p.Cmd.WRITE, 1, 0, BS), b"c" * BS)
    assert memory.in_reconnect.wait(10)
    kernel.send(p.Request(p.Cmd.READ, 2, 0, BS))
    kernel.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        kernel.sock.recv(1)  # no answer, and above all no error, while logging in
    kernel.sock.settimeout(10)
    memory.gate.set()
    assert kernel.reply() == (p.Reply(1), b"")
    assert kernel.reply(BS) == (p.Reply(2), b"c" * BS)


def test_while_idle_the_target_is_served_and_a_lost_connection_noticed(
    kernel: Kernel, memory: Memory
) -> None:
    target, ours = socket.socketpair()
    memory.watch = ours
    kernel.send(p.Request(p.Cmd.FLUSH, 1))  # the server picks up the watched socket on its next wait
    assert kernel.reply() == (p.Reply(1), b"")
    target.sendall(b"ping")
    assert until(lambda: memory.polled == 1)  # no request waits: the ping is answered at once
    kernel.send(p.Request(p.Cmd.FLUSH, 2))
    assert kernel.reply() == (p.Reply(2), b"")
    target.sendall(b"gone")
    assert until(lambda: memory.reconnects == 1)  # noticed before any request needs the target
    kernel.send(p.Request(p.Cmd.FLUSH, 3))
    assert kernel.reply() == (p.Reply(3), b"")
    target.close()
    ours.close()


def test_the_kernel_closing_its_end_ends_the_server(memory: Memory) -> None:
    k = Kernel(memory)
    k.sock.close()
    k.thread.join(10)
    assert k.outcome is Outcome.CLOSED
    assert memory.closed
    k._ours.close()


def test_garbage_from_the_kernel_side_ends_the_server(kernel: Kernel, memory: Memory) -> None:
    kernel.sock.sendall(struct.pack(">IHHQQI", 0x12345678, 0, 0, 1, 0, 0))
    kernel.thread.join(10)
    assert kernel.outcome is Outcome.GARBLED
    assert memory.closed


def test_a_target_not_found_while_it_comes_back_is_retried_at_the_fast_pace(
    kernel: Kernel, memory: Memory
) -> None:
    """tgtd and LIO listen before their targets exist again: "not found" then is not for good."""
    memory.fail = [TransportError("reset")]
    memory.refuse_login = [LoginFailed(0x02, 0x03, target="iqn.2026-11.org.iscsiboot:htpc")] * 2
    kernel.send(p.Request(p.Cmd.READ, 1, 0, BS))
    assert kernel.reply(BS) == (p.Reply(1), bytes(BS))
    assert kernel.sleeps == [0.5, 0.5, 0.5]  # the refusal for the credentials above is the slow control
    assert kernel.server.counters.logins_refused == 0
    assert any("failed (target-not-found)" in line for line in kernel.log)
