"""FreeBSD's user-space target ``istgt`` (Debian's package) on 127.0.0.1.

The harness writes istgt's two files: the configuration (:func:`config_text`:
one portal on loopback, one initiator group naming the client, one logical
unit whose LUN 0 is the disk image) and the CHAP file (:func:`auth_text`,
mode 0600: it holds the secrets).  istgt reads them when it starts, so
:meth:`Istgt.serve` restarts the daemon with the new files.

What istgt does its own way (and the harness follows):

* The disk is LUN 0 (no controller LUN, unlike tgt).
* The target name is ``TargetName`` as given when it holds a ``:``; otherwise
  istgt prefixes its ``NodeBase``.
* ``AuthMethod CHAP Mutual`` REQUIRES mutual CHAP: an initiator that logs in
  with one-way CHAP is refused (tgt and LIO let it in).  One account gives
  ``AuthMethod CHAP``.
* ``Netmask`` of the initiator group is checked too: the guest's connections
  arrive from 127.0.0.1 (QEMU's user network), hence ``127.0.0.0/8``.
* Its start-up lines go to standard output; later messages go to syslog,
  which a test machine may not have.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iscsiboot.errors import BootFailure, EnvironmentProblem, UsageError
from iscsiboot.model import Chap
from iscsiboot.output import write_atomic
from iscsiboot.proc import which
from iscsiboot.qemu.targets import TargetKind, chap_of, tcp_open
from iscsiboot.qemu.tgt import free_tcp_port

if TYPE_CHECKING:
    from iscsiboot.qemu.scenario import TargetSpec

START_TIMEOUT = 15.0
HOST = "127.0.0.1"
AUTH_GROUP = "AuthGroup1"
_UNQUOTABLE = frozenset('"\\\n\r')


@dataclass(frozen=True)
class IstgtConfig:
    """What one istgt serves: a target, its disk, its initiator and CHAP accounts."""

    iqn: str
    image: Path
    initiator: str
    port: int
    control_port: int
    workdir: Path
    chap: Chap | None = None
    reverse_chap: Chap | None = None


def _quoted(value: str, what: str) -> str:
    if any(c in _UNQUOTABLE for c in value):
        raise UsageError(f"{what} holds a quote, a backslash or a line break", fix="istgt cannot read it")
    return f'"{value}"'


def auth_method(cfg: IstgtConfig) -> str:
    """istgt's ``AuthMethod``: ``CHAP Mutual`` demands the target's own account too."""
    if cfg.chap is None:
        return "None"
    return "CHAP Mutual" if cfg.reverse_chap is not None else "CHAP"


def config_text(cfg: IstgtConfig) -> str:
    """istgt.conf for ``cfg`` (no secret in it: those are in :func:`auth_text`'s file)."""
    lines = [
        "[Global]",
        '  NodeBase "iqn.2026-11.org.iscsiboot"',
        f"  PidFile {cfg.workdir / 'istgt.pid'}",
        f"  AuthFile {cfg.workdir / 'auth.conf'}",
        f"  MediaDirectory {cfg.workdir}",
        "  Timeout 30",
        "  NopInInterval 20",
        "  DiscoveryAuthMethod Auto",
        "  MaxSessions 16",
        "  MaxConnections 4",
        "  FirstBurstLength 262144",
        "  MaxBurstLength 1048576",
        "  MaxRecvDataSegmentLength 262144",
        "  InitialR2T Yes",
        "  ImmediateData Yes",
        "[UnitControl]",
        f"  Portal UC1 {HOST}:{cfg.control_port}",
        f"  Netmask {HOST}",
        "[PortalGroup1]",
        f"  Portal DA1 {HOST}:{cfg.port}",
        "[InitiatorGroup1]",
        f"  InitiatorName {_quoted(cfg.initiator, 'the initiator name')}",
        "  Netmask 127.0.0.0/8",
        "[LogicalUnit1]",
        f"  TargetName {_quoted(cfg.iqn, 'the target name')}",
        "  Mapping PortalGroup1 InitiatorGroup1",
        f"  AuthMethod {auth_method(cfg)}",
        *([f"  AuthGroup {AUTH_GROUP}"] if cfg.chap is not None else []),
        "  UseDigest Auto",
        "  UnitType Disk",
        f"  LUN0 Storage {cfg.image.resolve()} Auto",
    ]
    return "\n".join(lines) + "\n"


def auth_text(cfg: IstgtConfig) -> str:
    """The CHAP file: the initiator's account and, for mutual CHAP, the target's."""
    if cfg.chap is None:
        return ""
    words = [
        _quoted(cfg.chap.username, "the CHAP user"),
        _quoted(cfg.chap.password.reveal(), "a CHAP secret"),
    ]
    if cfg.reverse_chap is not None:
        words += [
            _quoted(cfg.reverse_chap.username, "the target's CHAP user"),
            _quoted(cfg.reverse_chap.password.reveal(), "a CHAP secret"),
        ]
    return f"[{AUTH_GROUP}]\n  Auth {' '.join(words)}\n"


class Istgt:
    """An ``istgt -D`` on 127.0.0.1; a context manager whose exit always stops it."""

    kind = TargetKind.ISTGT

    def __init__(self, workdir: Path, *, port: int | None = None) -> None:
        self.workdir = Path(workdir)
        self._port = port or 0
        self.log_path = self.workdir / "istgt.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._config: IstgtConfig | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Pick the portal's port (istgt itself starts once it has something to serve)."""
        if os.geteuid() != 0:
            raise EnvironmentProblem("istgt needs root", fix="run as root (sudo)")
        which("istgt", hint="install the Debian package istgt")
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self._port:
            self._port = free_tcp_port(HOST)

    def serve(self, spec: TargetSpec, *, initiator: str) -> None:
        self.start()
        cfg = IstgtConfig(
            iqn=spec.iqn,
            image=spec.image,
            initiator=initiator,
            port=self._port,
            control_port=free_tcp_port(HOST),
            workdir=self.workdir,
            chap=chap_of(spec, outgoing=False),
            reverse_chap=chap_of(spec, outgoing=True),
        )
        self._halt()
        write_atomic(self.workdir / "auth.conf", auth_text(cfg), mode=0o600)
        write_atomic(self.workdir / "istgt.conf", config_text(cfg))
        self._config = cfg
        self._launch()

    def _launch(self) -> None:
        istgt = which("istgt", hint="install the Debian package istgt")
        argv = [istgt, "-D", "-c", str(self.workdir / "istgt.conf"), "-p", str(self.workdir / "istgt.pid")]
        with open(self.log_path, "ab") as log:
            # A daemon runs in the background: proc.run cannot hold it, so Popen here.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            self._wait_ready()
        except BaseException:
            self._halt()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise BootFailure(
                    f"istgt exited with status {self._proc.returncode} before serving {HOST}:{self._port}",
                    fix=f"see {self.log_path}",
                )
            if tcp_open(HOST, self._port):
                return
            if time.monotonic() > deadline:
                raise BootFailure(
                    f"istgt did not serve {HOST}:{self._port} within {START_TIMEOUT:.0f} s",
                    fix=f"see {self.log_path}",
                )
            time.sleep(0.05)

    def _halt(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        self._proc = None

    def stop(self) -> None:
        """Stop istgt (SIGTERM, then SIGKILL) and remove the CHAP file; idempotent."""
        self._halt()
        with contextlib.suppress(OSError):
            (self.workdir / "auth.conf").unlink()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> Istgt:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
