"""The NBD login backend: one resident daemon per target serves its LUN to the kernel as /dev/nbdN.

For kernels without iSCSI but with the NBD client.  :meth:`NbdBackend.login`
starts the daemon (:mod:`iscsiboot.agent.nbd.daemon`, exec'd through
:func:`iscsiboot.agent.daemons.launch`), hands it the target over a
pipe, and waits, within the phase's deadline, for its one status line: a
failed login becomes the same :class:`~iscsiboot.agent.backends.result.Cause`
as on the kernel path (:mod:`.causes`); a ready device becomes an
:class:`NbdDisk` in :attr:`NbdBackend.disks`.  The daemon lives on after the
agent (it serves the root); a daemon that failed or timed out is ended.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from iscsiboot.agent.backends.result import Cause, LoginResult
from iscsiboot.agent.daemons import launch
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.nbd.launch import MODULE
from iscsiboot.agent.nbd.messages import MAX_LINE, DaemonConfig, Failed, LoginFailed, Problem, Ready, Status
from iscsiboot.agent.nbd.messages import status_from_json as parse_status
from iscsiboot.errors import ParseError
from iscsiboot.model import Target

ARGV0 = "@iscsiboot-nbd"  # '@': a root storage daemon that systemd leaves alive
EXIT_WAIT = 2.0  # seconds to collect the exit status of a daemon that closed its pipe

PROBLEM_CAUSE: dict[Problem, Cause] = {
    Problem.BLOCK_SIZE: Cause.UNUSABLE_LUN,
    Problem.EMPTY: Cause.UNUSABLE_LUN,
    Problem.NO_DISK: Cause.UNUSABLE_LUN,
    Problem.CAPACITY: Cause.OTHER,  # a LUN not ready yet: worth another try
    Problem.NO_DEVICE: Cause.NO_NBD,
    Problem.ATTACH: Cause.NO_NBD,
    Problem.CONFIG: Cause.OTHER,
    Problem.INTERNAL: Cause.OTHER,
}


@dataclass(frozen=True)
class NbdDisk:
    """One target's LUN as the kernel sees it, for the disk phase."""

    target: str
    lun: int
    device: str | None  # /dev/nbdN (None: a daemon told not to attach)
    size: int  # bytes
    block_size: int
    trim: bool
    partitions: tuple[str, ...]  # nbdNp1 ... as the kernel showed them when the daemon reported
    isid: str
    pid: int


@dataclass
class Spawned:
    """A started daemon: its process and the read end of its status pipe."""

    process: subprocess.Popen[bytes]
    status_fd: int


Spawn = Callable[[DaemonConfig], Spawned]


def spawn(config: DaemonConfig, *, log_fd: int | None = None) -> Spawned:
    """Exec the daemon with its two pipes; write ``config`` into the first and close it."""
    started = launch(ARGV0, MODULE, log_fd=log_fd)
    try:
        os.write(started.config_w, (config.to_json() + "\n").encode())  # far below a pipe's buffer
    finally:
        os.close(started.config_w)
    return Spawned(started.process, started.status_r)


def read_status(fd: int, deadline: Deadline) -> Status | None:
    """The daemon's status line (None: it closed the pipe first); TimeoutError at the deadline."""
    data = bytearray()
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while b"\n" not in data:
        if len(data) > MAX_LINE:
            raise ParseError(f"the NBD daemon's status line is longer than {MAX_LINE} bytes")
        left = deadline.remaining()
        if left <= 0 or not poller.poll(int(left * 1000) + 1):
            if deadline.expired():
                raise TimeoutError("the NBD daemon did not report within the deadline")
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        data += chunk
    return parse_status(bytes(data).partition(b"\n")[0])


def config_for(
    target: Target, initiator: str, *, isid: bytes | None, device: int | None, attach: bool, timeout: float
) -> DaemonConfig:
    return DaemonConfig(
        host=target.address,
        port=target.port,
        target=target.name,
        lun=target.lun,
        initiator=initiator,
        chap=target.chap,
        reverse_chap=target.reverse_chap,
        isid=isid,
        device=device,
        timeout=timeout,
        attach=attach,
    )


class NbdBackend:
    """A :class:`~iscsiboot.agent.backends.result.LoginBackend` that serves each target's LUN over NBD."""

    name = "nbd"

    def __init__(
        self,
        log: Callable[[str], None] = lambda _text: None,
        *,
        isid: bytes | None = None,
        device: int | None = None,
        attach: bool = True,
        command_timeout: float = 10.0,
        start: Spawn = spawn,
    ) -> None:
        self.log = log
        self.isid = isid
        self.device = device
        self.attach = attach
        self.command_timeout = command_timeout
        self.start = start
        self._disks: list[NbdDisk] = []
        self._daemons: list[subprocess.Popen[bytes]] = []  # the ones that serve: kept, never waited for

    @property
    def disks(self) -> tuple[NbdDisk, ...]:
        return tuple(self._disks)

    def disk_for(self, target: Target) -> NbdDisk | None:
        for disk in self._disks:
            if disk.target == target.name and target.lun in (None, disk.lun):
                return disk
        return None

    def login_firmware(self, deadline: Deadline) -> LoginResult:
        return LoginResult(
            Cause.NO_FIRMWARE, "the NBD backend logs in to the targets the agent read from the iBFT"
        )

    def login(self, target: Target, initiator: str, deadline: Deadline) -> LoginResult:
        existing = self.disk_for(target)
        if existing is not None:
            return LoginResult(Cause.SESSION_EXISTS, f"{existing.device} already serves {target.name}")
        config = config_for(
            target,
            initiator,
            isid=self.isid,
            device=self.device,
            attach=self.attach,
            timeout=max(1.0, min(self.command_timeout, deadline.remaining() or 1.0)),
        )
        try:
            spawned = self.start(config)
        except OSError as exc:
            return LoginResult(Cause.OTHER, f"cannot start the NBD daemon: {exc.strerror or exc}")
        try:
            status = read_status(spawned.status_fd, deadline)
        except TimeoutError as exc:
            self._end(spawned.process)
            return LoginResult(Cause.TIMEOUT, f"{target.name}: {exc}")
        except (ParseError, OSError) as exc:
            self._end(spawned.process)
            return LoginResult(Cause.OTHER, f"{target.name}: {exc}")
        finally:
            os.close(spawned.status_fd)
        return self._result(target, status, spawned.process)

    def _result(self, target: Target, status: Status | None, process: subprocess.Popen[bytes]) -> LoginResult:
        if isinstance(status, Ready):
            disk = NbdDisk(
                target.name,
                status.lun,
                status.device,
                status.size,
                status.block_size,
                status.trim,
                status.partitions,
                status.isid,
                process.pid,
            )
            self._disks.append(disk)
            if status.device is None:
                self._collect(process)
            else:
                self._daemons.append(process)
            where = status.device or "(not attached)"
            trim = "on" if status.trim else "off"
            text = (
                f"{target.name} LUN {disk.lun} served as {where}: {status.size} bytes, "
                f"{status.block_size}-byte blocks, trim {trim} (daemon {process.pid})"
            )
            self.log(f"nbd: {text}")
            return LoginResult(Cause.OK, text)
        if isinstance(status, LoginFailed):
            self._collect(process)
            self.log(f"nbd: login to {target.name} failed ({status.cause.value}): {status.evidence}")
            return LoginResult(status.cause, status.evidence)
        if isinstance(status, Failed):
            self._collect(process)
            self.log(f"nbd: {target.name}: {status.what} ({status.fix})")
            return LoginResult(PROBLEM_CAUSE[status.cause], f"{status.what} ({status.fix})")
        code = self._collect(process)
        return LoginResult(
            Cause.OTHER, f"the NBD daemon for {target.name} ended without a status (exit {code})"
        )

    def _collect(self, process: subprocess.Popen[bytes]) -> int | None:
        """The exit status of a daemon that is ending by itself (killed when it does not)."""
        try:
            return process.wait(EXIT_WAIT)
        except subprocess.TimeoutExpired:
            return self._end(process)

    @staticmethod
    def _end(process: subprocess.Popen[bytes]) -> int | None:
        with contextlib.suppress(OSError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            return process.wait(EXIT_WAIT)
        return None
