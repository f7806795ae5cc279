"""The NBD daemon's work: read the configuration, log in, check the LUN, attach, report, serve.

Imported by :mod:`.daemon` after the hardening; imports up front every
module the daemon will ever need, so nothing is read from the served root
later.  One status line goes back to the agent (:mod:`.messages`); after it,
the daemon only logs (to kmsg).  SIGTERM and SIGINT are ignored while it
serves: the shutdown must not kill the root's server.  It ends after
NBD_CMD_DISC (flush, log out) or when the device is torn down; SIGUSR1, the
last step of a clean power-off, asks the kernel for that NBD_CMD_DISC.
"""

from __future__ import annotations

import contextlib
import errno  # noqa: F401  (imported now: the server names errno values later)
import json  # noqa: F401  (imported now, with its decoder and encoder)
import os
import random
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from iscsiboot.agent.backends.causes import cause_of_login
from iscsiboot.agent.backends.result import Cause
from iscsiboot.agent.daemons import parse_pipes, read_all, resident_kib
from iscsiboot.agent.nbd import device
from iscsiboot.agent.nbd.iscsi_backend import IscsiBackend, NoDiskLun, Portal
from iscsiboot.agent.nbd.messages import (
    MAX_LINE,
    DaemonConfig,
    Failed,
    LoginFailed,
    Problem,
    Ready,
    Status,
)
from iscsiboot.agent.nbd.protocol import BLOCK_SIZES, Geometry
from iscsiboot.agent.nbd.server import Retry, Server, what
from iscsiboot.agent.plan import refused_backoff, relogin_backoff
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi.transport import host_arg

Log = Callable[[str], None]


class StatusPipe:
    """The one status line for the agent; the pipe is closed after it."""

    def __init__(self, fd: int, log: Log) -> None:
        self.fd: int | None = fd
        self.log = log

    def send(self, status: Status) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        if isinstance(status, Failed):
            self.log(f"{status.what} ({status.fix})")
        try:
            os.write(fd, (status.to_json() + "\n").encode())
        except OSError as exc:
            self.log(f"the agent did not take the status line: {exc.strerror or exc}")
        finally:
            os.close(fd)


def refusal(geometry: Geometry, where: str) -> Failed | None:
    """Why the LUN cannot be served as it is, or None (pure)."""
    if geometry.block_size not in BLOCK_SIZES:
        return Failed(
            Problem.BLOCK_SIZE,
            f"{where} has {geometry.block_size}-byte blocks; the NBD path serves 512 or 4096",
            "give the LUN 512- or 4096-byte logical blocks on the target",
        )
    if geometry.size <= 0:
        return Failed(Problem.EMPTY, f"{where} has a size of 0 bytes", "map a LUN with storage on the target")
    return None


def memory_text() -> str:
    kib = resident_kib()
    return "resident memory unknown" if kib is None else f"{kib / 1024:.1f} MiB resident"


def resolve(host: str, port: int) -> str:
    """The address of ``host``, resolved once now (after the switch, no resolver is at hand)."""
    return str(socket.getaddrinfo(host_arg(host), port, type=socket.SOCK_STREAM)[0][4][0])


def run(
    config: DaemonConfig,
    status: StatusPipe,
    log: Log,
    *,
    sysfs: Path = Path("/sys"),
    dev: Path = Path("/dev"),
) -> int:
    try:
        host = resolve(config.host, config.port)
    except OSError as exc:
        status.send(LoginFailed(Cause.UNREACHABLE, f"cannot resolve {config.host}: {exc.strerror or exc}"))
        return 1
    portal = Portal(
        host,
        config.port,
        config.target,
        config.lun,
        config.initiator,
        config.chap,
        config.reverse_chap,
        config.timeout,
    )
    backend = IscsiBackend(portal, isid=config.isid)
    try:
        backend.open()
    except NoDiskLun as exc:
        log(exc.what)
        status.send(Failed(Problem.NO_DISK, exc.what, "map a disk LUN to this initiator, or name the LUN"))
        backend.close()
        return 1
    except Exception as exc:  # every failure becomes a cause for the agent
        cause = cause_of_login(exc) or Cause.OTHER
        log(f"login to {config.target} at {host}:{config.port} failed ({cause.value}): {what(exc)}")
        status.send(LoginFailed(cause, what(exc)))
        return 1
    assert backend.isid is not None
    isid = backend.isid.hex()
    log(f"logged in to {config.target} at {host}:{config.port} (ISID {isid})")
    where = f"LUN {backend.lun} of {config.target}"
    try:
        geometry = backend.probe()
    except Exception as exc:
        status.send(Failed(Problem.CAPACITY, f"{where}: {what(exc)}", "check the LUN on the target"))
        backend.close()
        return 1
    refused = refusal(geometry, where)
    if refused is not None:
        log(refused.what)
        status.send(refused)
        backend.close()
        return 1
    log(f"{where}: {geometry.size} bytes in {geometry.block_size}-byte blocks, trim {geometry.trim}")
    if not config.attach:
        log(f"not attaching, as configured; {memory_text()}")
        status.send(Ready(None, geometry.size, geometry.block_size, geometry.trim, isid, lun=backend.lun))
        backend.close()
        return 0
    try:
        expect_table = device.has_partition_table(backend.read(0, geometry.block_size))
        index = device.choose(sysfs, config.device)
    except device.DeviceError as exc:
        status.send(Failed(Problem.NO_DEVICE, exc.what, exc.fix or "load the nbd module"))
        backend.close()
        return 1
    except Exception as exc:
        status.send(
            Failed(Problem.CAPACITY, f"{where}: reading its first block: {what(exc)}", "check the LUN")
        )
        backend.close()
        return 1
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        attached = device.attach(index, theirs.fileno(), geometry, log=log, dev=dev, sysfs=sysfs)
    except (device.DeviceError, OSError) as exc:
        text = exc.what if isinstance(exc, IscsibootError) else f"/dev/nbd{index}: {exc.strerror or exc}"
        status.send(Failed(Problem.ATTACH, text, "check that the kernel's nbd module is loaded"))
        backend.close()
        return 1
    log(f"{attached.path} attached")

    def settle() -> None:
        try:
            found = device.settle(attached, geometry, expect_table=expect_table, log=log, sysfs=sysfs)
        except Exception as exc:
            status.send(Failed(Problem.ATTACH, what(exc), "see the kernel log"))
            return
        log(f"{attached.path} ready, partitions: {' '.join(found) or 'none'}; {memory_text()}")
        path = str(attached.path)
        status.send(Ready(path, geometry.size, geometry.block_size, geometry.trim, isid, found, backend.lun))

    def leave(_signum: int, _frame: object) -> None:
        """The end of the shutdown: the kernel disconnects, the server flushes and logs out."""
        log(f"asked to disconnect {attached.path} (SIGUSR1)")
        try:
            device.disconnect(attached)
        except OSError as exc:
            log(f"NBD_DISCONNECT on {attached.path} failed: {exc.strerror or exc}")

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, leave)
    threading.Thread(target=settle, name="nbd-settle", daemon=True).start()
    rng = random.Random()
    # a lost target is tried again at least every second: the root waits no longer than that
    retry = Retry(fast=lambda: relogin_backoff(rng), slow=lambda: refused_backoff(rng))
    server = Server(ours, backend, geometry, log=log, retry=retry)
    outcome = server.serve()
    c = server.counters
    log(
        f"{attached.path} stopped ({outcome.value}) after {c.requests} requests, {c.errors} errors, "
        f"{c.reconnects} reconnects"
    )
    with contextlib.suppress(OSError):
        ours.close()
    return 0


def main(argv: list[str], log: Log) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    try:
        args = parse_pipes(argv)
    except IscsibootError as exc:
        log(f"cannot start: {exc.what}")
        return 2
    status = StatusPipe(args.status_fd, log)
    try:
        config = DaemonConfig.from_json(read_all(args.config_fd, MAX_LINE))
    except (IscsibootError, OSError) as exc:
        text = exc.what if isinstance(exc, IscsibootError) else str(exc)
        log(f"no configuration: {text}")
        status.send(Failed(Problem.CONFIG, text, "the agent and the daemon must come from the same image"))
        return 2
    try:
        return run(config, status, log)
    except Exception as exc:  # the status line must say it, not a traceback nobody sees
        log(f"internal error: {what(exc)}")
        status.send(Failed(Problem.INTERNAL, what(exc), "see the kernel log"))
        return 70
