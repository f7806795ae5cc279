"""A real ``tgtd`` (Linux SCSI target framework) on loopback, for tests and scenarios.

Each :class:`Tgtd` runs its own daemon with its own iSCSI portal and its own
control port (``tgtd -C N`` / ``tgtadm -C N``), so it never disturbs another
tgtd on the machine.  ``tgtd`` ignores SIGTERM while it serves targets and keeps
all its state in memory, so :meth:`Tgtd.stop` kills it with SIGKILL.

Every ``tgtadm`` call goes through :func:`iscsiboot.proc.run`; CHAP passwords
are passed as ``secrets=`` so that a failure message masks them.

With ``netns=`` the daemon runs inside that network namespace (its portal
address lives there); its control socket is a file, so ``tgtadm`` reaches it
from here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from iscsiboot.errors import BootFailure, EnvironmentProblem, UsageError
from iscsiboot.proc import Result, run, which
from iscsiboot.secret import Secret

START_TIMEOUT = 15.0
TGTADM_TIMEOUT = 20.0
IPC_DIR = Path("/var/run/tgtd")
CONTROL_PORT_MAX = 32767  # tgtd rejects larger -C values


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _control_port_free(port: int) -> bool:
    """True when no tgtd holds the lock of control port ``port``.

    tgtd takes a POSIX record lock on ``/var/run/tgtd/socket.N.lock`` for as
    long as it runs; a stale file of a killed tgtd is not locked.
    """
    lock = IPC_DIR / f"socket.{port}.lock"
    if not lock.exists():
        return True
    try:
        fd = os.open(lock, os.O_WRONLY)
    except OSError:
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1)
    except OSError:
        return False
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1)
        return True
    finally:
        os.close(fd)


def free_control_port(preferred: int | None = None) -> int:
    """A tgtd control port that no running tgtd uses (never 0, the system daemon's)."""
    candidates = [preferred] if preferred and 0 < preferred <= CONTROL_PORT_MAX else []
    rng = random.Random()
    candidates += [rng.randrange(1000, CONTROL_PORT_MAX) for _ in range(50)]
    for port in candidates:
        if port and _control_port_free(port):
            return port
    raise EnvironmentProblem("no free tgtd control port found", fix=f"remove stale tgtd daemons ({IPC_DIR})")


class Tgtd:
    """A tgtd on ``host``; a context manager whose exit always stops it."""

    def __init__(
        self,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        control_port: int | None = None,
        netns: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.netns = netns
        self._want_port = port
        self._want_control = control_port
        self.port = port or 0
        self.control_port = control_port or 0
        self.log_path = self.workdir / "tgtd.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._secrets: list[Secret] = []

    # ------------------------------------------------------------ lifecycle

    @property
    def portal(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self._proc is not None:
            raise UsageError("this tgtd is already started")
        if os.geteuid() != 0:
            raise EnvironmentProblem("tgtd needs root", fix="run as root (sudo)")
        tgtd = which("tgtd", hint="install the Debian package tgt")
        which("tgtadm", hint="install the Debian package tgt")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.netns is not None and self._want_port is None:
            raise UsageError("a tgtd in a network namespace needs its port given")
        self.port = self._want_port or free_tcp_port(self.host)
        self.control_port = self._want_control or free_control_port(self.port)
        argv = [tgtd, "-f", "-C", str(self.control_port), "--iscsi", f"portal={self.portal}"]
        if self.netns is not None:
            argv[:0] = ["ip", "netns", "exec", self.netns]
        with open(self.log_path, "ab") as log:
            # A daemon runs in the background: proc.run cannot hold it, so Popen here.
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(START_TIMEOUT)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.01
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BootFailure(
                    f"tgtd exited with status {self._proc.returncode} before serving {self.portal}",
                    fix=f"see {self.log_path}",
                )
            if self._portal_open() and self._control_open():
                return
            if time.monotonic() > deadline:
                raise BootFailure(
                    f"tgtd did not serve {self.portal} within {timeout:.0f} s", fix=f"see {self.log_path}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _portal_open(self) -> bool:
        if self.netns is not None:
            from iscsiboot.qemu.netlab import listening  # noqa: PLC0415  (only a namespace needs it)

            assert self._proc is not None
            return listening(self._proc.pid, self.port)
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            try:
                sock.connect((self.host, self.port))
            except OSError:
                return False
            return True

    def _control_open(self) -> bool:
        result = self._tgtadm(["--mode", "target", "--op", "show"], "ask tgtd for its targets", check=False)
        return result.returncode == 0

    def stop(self) -> None:
        """Kill tgtd (SIGKILL: it ignores SIGTERM while serving) and wait; idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        proc.wait(timeout=30)
        self._proc = None
        for leftover in (f"socket.{self.control_port}", f"socket.{self.control_port}.lock"):
            with contextlib.suppress(OSError):
                (IPC_DIR / leftover).unlink()

    def __enter__(self) -> Tgtd:
        if self._proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ configuration

    def _tgtadm(self, args: Sequence[str], what: str, *, check: bool = True) -> Result:
        return run(
            ["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", *args],
            what=what,
            secrets=self._secrets,
            check=check,
            timeout=TGTADM_TIMEOUT,
        )

    def add_target(
        self,
        tid: int,
        iqn: str,
        luns: Sequence[Path],
        *,
        initiators: Sequence[str] | None = None,
        initiator_addresses: Sequence[str] | None = None,
        block_size: int | None = None,
    ) -> None:
        """Target ``tid`` named ``iqn``; LUN ``i+1`` is ``luns[i]`` (LUN 0 is tgt's controller).

        ``block_size``: the LUNs' logical block size (tgt's default is 512).

        Access: tgt admits an initiator that matches ANY of the bound addresses or
        names.  So ``initiator_addresses`` defaults to ``("ALL",)`` only when no
        ``initiators`` are given; with ``initiators`` alone, only those names get in.
        """
        if initiator_addresses is None:
            initiator_addresses = () if initiators else ("ALL",)
        self._tgtadm(
            ["--mode", "target", "--op", "new", "--tid", str(tid), "--targetname", iqn],
            f"create target {iqn}",
        )
        for number, path in enumerate(luns, start=1):
            self._tgtadm(
                [
                    "--mode",
                    "logicalunit",
                    "--op",
                    "new",
                    "--tid",
                    str(tid),
                    "--lun",
                    str(number),
                    "--backing-store",
                    str(Path(path).resolve()),
                    *(["--blocksize", str(block_size)] if block_size is not None else []),
                ],
                f"add LUN {number} ({path}) to target {iqn}",
            )
        for address in initiator_addresses:
            self._tgtadm(
                ["--mode", "target", "--op", "bind", "--tid", str(tid), "--initiator-address", address],
                f"allow initiator address {address} on target {iqn}",
            )
        for name in initiators or ():
            self._tgtadm(
                ["--mode", "target", "--op", "bind", "--tid", str(tid), "--initiator-name", name],
                f"allow initiator {name} on target {iqn}",
            )

    def add_account(self, user: str, password: Secret) -> None:
        if not isinstance(password, Secret):
            raise TypeError("password must be a Secret")
        self._secrets.append(password)
        self._tgtadm(
            ["--mode", "account", "--op", "new", "--user", user, "--password", password.reveal()],
            f"create CHAP account {user}",
        )

    def bind_account(self, tid: int, user: str, *, outgoing: bool = False) -> None:
        """Require CHAP ``user`` on target ``tid``; ``outgoing`` makes it the target's own (mutual)."""
        args = ["--mode", "account", "--op", "bind", "--tid", str(tid), "--user", user]
        if outgoing:
            args.append("--outgoing")
        self._tgtadm(args, f"bind CHAP account {user} to target {tid}")

    def set_state(self, tid: int, state: str) -> None:
        """``offline`` (logins fail with a target error) or ``ready``."""
        if state not in ("offline", "ready"):
            raise UsageError(f"unknown target state {state!r}", fix="use offline or ready")
        self._tgtadm(
            ["--mode", "target", "--op", "update", "--tid", str(tid), "--name", "state", "--value", state],
            f"set target {tid} {state}",
        )

    def set_param(self, tid: int, name: str, value: str) -> None:
        """A target parameter, e.g. ``HeaderDigest``/``DataDigest`` = ``CRC32C`` or
        ``nop_interval`` (seconds between the target's NOP-In pings; set ``nop_count``
        too: with its default 0 tgt drops the connection at the first ping)."""
        self._tgtadm(
            ["--mode", "target", "--op", "update", "--tid", str(tid), "--name", name, "--value", value],
            f"set {name} of target {tid}",
        )

    def set_redirect(self, tid: int, address: str, port: int, *, permanent: bool = False) -> None:
        """Answer logins to ``tid`` with a redirect (status 0x0101, or 0x0102 when ``permanent``).

        tgt does not redirect an initiator to its own address, so on loopback
        give the other tgtd another 127.0.0.0/8 address (``Tgtd(host="127.0.0.2")``).
        """
        reason = "Permanent" if permanent else "Temporary"
        for name, value in (
            ("RedirectAddress", address),
            ("RedirectPort", str(port)),
            ("RedirectReason", reason),
        ):
            self._tgtadm(
                ["--mode", "target", "--op", "update", "--tid", str(tid), "--name", name, "--value", value],
                f"redirect target {tid} to {address}:{port}",
            )

    def close_connections(self, tid: int) -> int:
        """Close every connection of target ``tid`` from the target's side (as a restart does); how many."""
        nexus = re.findall(r"^\s*I_T nexus: (\d+)$", self._target_text(tid), flags=re.M)
        for sid in nexus:
            self._tgtadm(
                ["--mode", "conn", "--op", "delete", "--tid", str(tid), "--sid", sid, "--cid", "0"],
                f"close connection {sid} of target {tid}",
                check=False,  # it may have ended meanwhile
            )
        return len(nexus)

    def _target_text(self, tid: int) -> str:
        """The ``show`` block of target ``tid`` alone."""
        text = self.show()
        found = re.search(rf"^Target {tid}: .*?(?=^Target \d+: |\Z)", text, flags=re.M | re.S)
        return found.group(0) if found else ""

    def show(self) -> str:
        """``tgtadm --op show`` text (for diagnostics in tests)."""
        result = run(
            ["tgtadm", "-C", str(self.control_port), "--lld", "iscsi", "--mode", "target", "--op", "show"],
            what="ask tgtd for its targets",
            secrets=self._secrets,
            timeout=TGTADM_TIMEOUT,
        )
        return result.stdout
