"""The NBD server with the real iSCSI backend against tgtd (the test plays the kernel), and the
daemon started through the agent's NBD backend up to the point of attaching."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path

import pytest
from iscsiboot.agent.backends.nbd import NbdBackend, spawn
from iscsiboot.agent.backends.result import Cause
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.nbd import protocol as p
from iscsiboot.agent.nbd.iscsi_backend import IscsiBackend, Portal
from iscsiboot.agent.nbd.messages import DaemonConfig
from iscsiboot.agent.nbd.server import Outcome, Retry, Server
from iscsiboot.model import Chap, Target
from iscsiboot.qemu.tgt import Tgtd
from iscsiboot.secret import Secret
from tgt_support import MIB, tgtd_missing

OPEN = "iqn.2026-11.org.iscsiboot.test:nbd-open"
CHAPPED = "iqn.2026-11.org.iscsiboot.test:nbd-chap"
ME = "iqn.2026-11.org.iscsiboot.test:nbd-initiator"
ODD_BLOCKS = "iqn.2026-11.org.iscsiboot.test:nbd-1k-blocks"
EMPTY = "iqn.2026-11.org.iscsiboot.test:nbd-empty"
USER = Chap("nbduser", Secret("nbd-secret-0123"))
SIZE = 8 * MIB


class Lab:
    def __init__(self, tgtd: Tgtd, image: Path) -> None:
        self.tgtd = tgtd
        self.image = image
        self.port = tgtd.port

    def portal(self, target: str = OPEN, chap: Chap | None = None) -> Portal:
        return Portal("127.0.0.1", self.port, target, 1, ME, chap, None, 10.0)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    reason = tgtd_missing()
    if reason:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("nbd")
    image = work / "disk.img"
    image.write_bytes(bytes(SIZE))
    with Tgtd(work / "tgtd") as tgtd:
        tgtd.add_target(1, OPEN, [image])
        tgtd.add_target(2, CHAPPED, [image])
        empty = work / "empty.img"
        empty.write_bytes(b"")
        tgtd.add_target(3, ODD_BLOCKS, [image], block_size=1024)
        tgtd.add_target(4, EMPTY, [empty])
        tgtd.add_account(USER.username, USER.password)
        tgtd.bind_account(2, USER.username)
        yield Lab(tgtd, image)


class Kernel:
    """The kernel's end of the socket pair; the server runs in a thread."""

    def __init__(self, backend: IscsiBackend) -> None:
        self.backend = backend
        geometry = backend.probe()
        ours, self.sock = socket.socketpair()
        self.sock.settimeout(30)
        self.log: list[str] = []
        self.sleeps: list[float] = []

        def sleep(seconds: float) -> None:
            self.sleeps.append(seconds)
            time.sleep(0.05)

        retry = Retry(fast=lambda: repeat(0.05), slow=lambda: repeat(1.0), sleep=sleep)
        self.server = Server(ours, backend, geometry, log=self.log.append, retry=retry)
        self.outcome: Outcome | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.handle = 0

    def _run(self) -> None:
        self.outcome = self.server.serve()

    def send(self, cmd: p.Cmd, offset: int = 0, length: int = 0, data: bytes = b"") -> int:
        self.handle += 1
        self.sock.sendall(p.Request(cmd, self.handle, offset, length).encode() + data)
        return self.handle

    def reply(self, length: int = 0) -> tuple[p.Reply, bytes]:
        reply = p.decode_reply(self._exact(p.REPLY_SIZE))
        return reply, self._exact(length) if length and not reply.error else b""

    def _exact(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            assert chunk
            out += chunk
        return out

    def write(self, offset: int, data: bytes) -> None:
        handle = self.send(p.Cmd.WRITE, offset, len(data), data)
        assert self.reply() == (p.Reply(handle), b"")

    def read(self, offset: int, length: int) -> bytes:
        handle = self.send(p.Cmd.READ, offset, length)
        reply, data = self.reply(length)
        assert reply == p.Reply(handle)
        return data

    def flush(self) -> None:
        handle = self.send(p.Cmd.FLUSH)
        assert self.reply() == (p.Reply(handle), b"")

    def disconnect(self) -> Outcome | None:
        self.send(p.Cmd.DISC)
        self.thread.join(30)
        self.sock.close()
        return self.outcome


@pytest.fixture
def kernel(lab: Lab) -> Iterator[Kernel]:
    backend = IscsiBackend(lab.portal())
    backend.open()
    k = Kernel(backend)
    yield k
    if k.thread.is_alive():
        k.disconnect()


def pattern(seed: int, length: int) -> bytes:
    return bytes((seed + i * 7) & 0xFF for i in range(256)) * (length // 256)


def on_disk(lab: Lab, offset: int, length: int) -> bytes:
    with open(lab.image, "rb") as handle:
        handle.seek(offset)
        return handle.read(length)


def test_round_trips_reach_the_backing_file(lab: Lab, kernel: Kernel) -> None:
    assert kernel.server.geometry.size == SIZE and kernel.server.geometry.block_size == 512
    first = pattern(1, 64 * 1024)
    kernel.write(1 * MIB, first)
    kernel.write(3 * MIB + 512, pattern(2, 4096))
    kernel.flush()
    assert kernel.read(1 * MIB, 64 * 1024) == first
    assert on_disk(lab, 1 * MIB, 64 * 1024) == first
    assert on_disk(lab, 3 * MIB + 512, 4096) == pattern(2, 4096)
    big = pattern(3, 1024 * 1024)  # larger than one burst: several Data-Out sequences
    kernel.write(4 * MIB, big)
    assert kernel.read(4 * MIB, len(big)) == big
    assert kernel.disconnect() is Outcome.DISCONNECTED
    assert on_disk(lab, 4 * MIB, len(big)) == big  # NBD_CMD_DISC flushed


def test_a_cut_connection_is_logged_in_again_with_the_same_isid(lab: Lab, kernel: Kernel) -> None:
    isid = kernel.backend.isid
    kernel.write(0, pattern(4, 8192))
    kernel.backend.session.transport.sock.shutdown(socket.SHUT_RDWR)  # the network breaks between requests
    kernel.write(8192, pattern(5, 8192))
    assert kernel.server.counters.reconnects == 1
    assert kernel.sleeps, "the backoff was asked before the new login"
    assert kernel.backend.isid == isid
    # requests in flight when the connection breaks: each is replayed and answered once, in order
    handles = [kernel.send(p.Cmd.WRITE, 16384 + i * 4096, 4096, pattern(10 + i, 4096)) for i in range(8)]
    kernel.backend.session.transport.sock.shutdown(socket.SHUT_RDWR)
    handles += [kernel.send(p.Cmd.READ, 0, 8192)]
    for handle in handles[:-1]:
        assert kernel.reply() == (p.Reply(handle), b"")
    assert kernel.reply(8192) == (p.Reply(handles[-1]), pattern(4, 8192))
    assert kernel.server.counters.reconnects in (1, 2)  # 1 when the cut came after the last write
    assert kernel.backend.isid == isid
    kernel.flush()
    assert on_disk(lab, 0, 16384) == pattern(4, 8192) + pattern(5, 8192)
    for i in range(8):
        assert on_disk(lab, 16384 + i * 4096, 4096) == pattern(10 + i, 4096)
    assert lab.tgtd.show().count(f"Initiator: {ME}") == 1  # the target reinstated the session: one nexus


def test_the_target_s_pings_are_answered_while_idle(lab: Lab) -> None:
    lab.tgtd.set_param(1, "nop_count", "2")
    lab.tgtd.set_param(1, "nop_interval", "1")
    try:
        backend = IscsiBackend(lab.portal())
        backend.open()
        kernel = Kernel(backend)
        time.sleep(4)  # tgtd drops a connection that misses 2 pings in a row
        assert kernel.read(0, 512) == on_disk(lab, 0, 512)
        assert kernel.server.counters.reconnects == 0
        assert kernel.server.counters.polls >= 2
        assert kernel.disconnect() is Outcome.DISCONNECTED
    finally:
        lab.tgtd.set_param(1, "nop_interval", "0")


# ---------------------------------------------------------------- the daemon through the agent's backend


def target(lab: Lab, name: str = OPEN, chap: Chap | None = None) -> Target:
    return Target(name=name, address="127.0.0.1", port=lab.port, lun=1, chap=chap)


def log_spawn(path: Path) -> object:
    def start(config: DaemonConfig) -> object:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return spawn(config, log_fd=fd)
        finally:
            os.close(fd)

    return start


def test_the_daemon_logs_in_and_reports_the_lun(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    backend = NbdBackend(attach=False, start=log_spawn(log))  # type: ignore[arg-type]
    result = backend.login(target(lab, CHAPPED, USER), ME, Deadline(30))
    assert result.cause is Cause.OK, (result, log.read_text())
    (disk,) = backend.disks
    assert (disk.device, disk.size, disk.block_size, disk.lun) == (None, SIZE, 512, 1)
    assert len(disk.isid) == 12
    text = log.read_text()
    assert "iscsiboot-nbd: logged in to" in text
    resident = re.search(r"([0-9.]+) MiB resident", text)
    assert resident is not None and float(resident.group(1)) <= 40.0  # the memory target, all of it locked
    assert USER.password.reveal() not in text


def test_a_wrong_password_is_auth(lab: Lab, tmp_path: Path) -> None:
    log = tmp_path / "daemon.log"
    wrong = Chap(USER.username, Secret("not-the-secret"))
    backend = NbdBackend(attach=False, start=log_spawn(log))  # type: ignore[arg-type]
    result = backend.login(target(lab, CHAPPED, wrong), ME, Deadline(30))
    assert result.cause is Cause.AUTH
    assert "not-the-secret" not in result.evidence + log.read_text()
    assert backend.disks == ()


def test_an_unknown_target_and_a_closed_port(lab: Lab) -> None:
    backend = NbdBackend(attach=False)
    unknown = backend.login(target(lab, OPEN + "-missing"), ME, Deadline(30))
    assert unknown.cause is Cause.NOT_FOUND
    closed = Target(name=OPEN, address="127.0.0.1", port=1, lun=1)
    assert backend.login(closed, ME, Deadline(30)).cause is Cause.REFUSED


def test_no_lun_named_serves_the_lowest_disk_lun(lab: Lab) -> None:
    """tgt's LUN 0 is its controller: the daemon serves LUN 1, the disk, as the kernel path picks it."""
    backend = NbdBackend(attach=False)
    unnamed = Target(name=OPEN, address="127.0.0.1", port=lab.port)
    result = backend.login(unnamed, ME, Deadline(30))
    assert result.cause is Cause.OK, result
    (disk,) = backend.disks
    assert (disk.lun, disk.size) == (1, SIZE)
    assert "LUN 1" in result.evidence
    # LUN 0 named: the controller is refused at once with what the disk LUNs are (no retries)
    controller = Target(name=OPEN, address="127.0.0.1", port=lab.port, lun=0)
    refused = NbdBackend(attach=False).login(controller, ME, Deadline(30))
    assert refused.cause is Cause.UNUSABLE_LUN and not refused.retryable
    assert "LUN 0" in refused.evidence and "controller" in refused.evidence
    assert "disk LUNs: 1" in refused.evidence


@pytest.mark.parametrize(
    ("name", "said"),
    [(ODD_BLOCKS, "has 1024-byte blocks"), (EMPTY, "has a size of 0 bytes"), (OPEN, None)],
)
def test_a_lun_the_kernel_cannot_take_is_refused_at_once(lab: Lab, name: str, said: str | None) -> None:
    """1024-byte blocks and a 0-byte LUN (tgt says its last block is 0 - 1) end the login, unretried;
    the same target with a 512-byte LUN is the control."""
    backend = NbdBackend(attach=False)
    started = time.monotonic()
    result = backend.login(target(lab, name), ME, Deadline(30))
    if said is None:
        assert result.cause is Cause.OK, result
        return
    assert result.cause is Cause.UNUSABLE_LUN and not result.retryable, result
    assert said in result.evidence and backend.disks == ()
    assert time.monotonic() - started < 10  # one login, no waiting for the deadline


def test_the_target_closing_mid_transfer_is_ridden_out(lab: Lab, kernel: Kernel) -> None:
    """tgtd closes the session's connection while reads are queued: every reply comes, right, once."""
    data = pattern(20, 1 * MIB)
    kernel.write(2 * MIB, data)
    kernel.flush()
    handles = [kernel.send(p.Cmd.READ, 2 * MIB, len(data)) for _ in range(24)]
    first, got = kernel.reply(len(data))
    assert first == p.Reply(handles[0]) and got == data
    closed = lab.tgtd.close_connections(1)  # the others are still queued or being read
    assert closed >= 1  # control: the target really dropped a connection
    for handle in handles[1:]:
        reply, got = kernel.reply(len(data))
        assert reply == p.Reply(handle) and got == data
    assert kernel.server.counters.reconnects >= 1, kernel.log
    assert any("logged in again" in line for line in kernel.log), kernel.log
    assert kernel.read(2 * MIB, 4096) == data[:4096]
