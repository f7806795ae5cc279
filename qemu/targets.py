"""The iSCSI targets a scenario can boot from, behind one interface.

Three implementations serve the same disk image to the guest:

``tgt``
    ``tgtd`` on 127.0.0.1 (:mod:`iscsiboot.qemu.tgt`).  LUN 0 is tgt's own
    controller; the disk is LUN 1.
``lio``
    The Linux kernel's target (what Synology, QNAP and TrueNAS SCALE run) in
    a small target VM, set up through configfs (:mod:`iscsiboot.qemu.lio`).
    The disk is LUN 0; access is by per-initiator ACL.
``istgt``
    FreeBSD's user-space target on 127.0.0.1 with a configuration file the
    harness writes (:mod:`iscsiboot.qemu.istgt`).  The disk is LUN 0.

Every server is reached by the host at 127.0.0.1:``port`` and by the guest at
10.0.2.2:``port`` (QEMU's user network), so the client side of a scenario is
the same for all three.  Which LUN holds the disk is never assumed: after
:meth:`TargetServer.serve`, :func:`disk_lun` logs in as the client would and
asks (REPORT LUNS, then INQUIRY of each).
"""

from __future__ import annotations

import enum
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from iscsiboot.errors import BootFailure, IscsibootError
from iscsiboot.model import Chap

if TYPE_CHECKING:
    from iscsiboot.qemu.scenario import TargetSpec
    from iscsiboot.qemu.tgt import Tgtd


class TargetKind(enum.Enum):
    """The target implementation (the values are the CLI spellings of ``--target``)."""

    TGT = "tgt"
    LIO = "lio"
    ISTGT = "istgt"

    @property
    def usual_lun(self) -> int:
        """Where this implementation puts the first disk (only for a plan made before the target runs)."""
        return 1 if self is TargetKind.TGT else 0


class TargetServer(Protocol):
    """A running target that serves one scenario's disk at 127.0.0.1:``port``."""

    kind: TargetKind

    @property
    def port(self) -> int: ...

    def start(self) -> None:
        """Start the server (idempotent for a server shared by several scenarios)."""

    def serve(self, spec: TargetSpec, *, initiator: str) -> None:
        """Serve ``spec`` (its image, name and CHAP accounts) to ``initiator``, replacing what was served."""

    def stop(self) -> None:
        """Stop the server and release what it holds; idempotent."""

    def log_text(self) -> str:
        """The server's own log (for a failed scenario's diagnostics)."""


class TgtServer:
    """:class:`~iscsiboot.qemu.tgt.Tgtd` behind the :class:`TargetServer` interface."""

    kind = TargetKind.TGT

    def __init__(self, workdir: Path, *, port: int | None = None, tgtd: Tgtd | None = None) -> None:
        from iscsiboot.qemu.tgt import Tgtd  # noqa: PLC0415  (tgt.py stays free of this module)

        self.tgtd = tgtd if tgtd is not None else Tgtd(workdir, port=port)

    @property
    def port(self) -> int:
        return self.tgtd.port

    def start(self) -> None:
        if not self.tgtd.running:
            self.tgtd.start()

    def serve(self, spec: TargetSpec, *, initiator: str) -> None:
        """A fresh target ``spec.tid`` (tgt admits every initiator address; CHAP guards it)."""
        self.start()
        self.tgtd.add_target(spec.tid, spec.iqn, [spec.image], block_size=spec.block_size)
        for account in spec.accounts:
            self.tgtd.add_account(account.username, account.password)
            self.tgtd.bind_account(spec.tid, account.username, outgoing=account.outgoing)

    def stop(self) -> None:
        self.tgtd.stop()

    def log_text(self) -> str:
        try:
            return self.tgtd.log_path.read_text(errors="replace")
        except OSError:
            return ""


def tcp_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host``:``port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect((host, port))
        except OSError:
            return False
        return True


def chap_of(spec: TargetSpec, *, outgoing: bool) -> Chap | None:
    """The one-way (``outgoing=False``) or the target's own (mutual) account of ``spec``."""
    for account in spec.accounts:
        if account.outgoing is outgoing:
            return Chap(account.username, account.password)
    return None


def disk_lun(spec: TargetSpec, *, port: int, initiator: str, timeout: float = 10.0) -> int:
    """The first disk LUN that the target serves ``initiator``, asked as that initiator.

    tgt answers with LUN 1 (LUN 0 is its controller), LIO and istgt with LUN 0.
    A connection closed under the first login is tried again for a few seconds:
    istgt may close the first connections while it still starts up.
    """
    from iscsiboot.iscsi.session import Session  # noqa: PLC0415  (planning needs no sockets)
    from iscsiboot.iscsi.transport import TransportError  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while True:
        try:
            with Session.login(
                "127.0.0.1",
                port,
                initiator=initiator,
                target=spec.iqn,
                chap=chap_of(spec, outgoing=False),
                reverse_chap=chap_of(spec, outgoing=True),
                timeout=timeout,
            ) as session:
                disks = session.disk_luns()
            break
        except (TransportError, OSError) as exc:
            if time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            raise BootFailure(
                f"cannot ask target {spec.iqn} at 127.0.0.1:{port} for its LUNs: {exc}",
                fix="check the target's log",
            ) from None
        except IscsibootError as exc:
            raise BootFailure(
                f"cannot ask target {spec.iqn} at 127.0.0.1:{port} for its LUNs: {exc}",
                fix="check the target's log",
            ) from None
    if not disks:
        raise BootFailure(f"target {spec.iqn} serves no disk LUN", fix="check the target's log")
    return disks[0]


def make_server(kind: TargetKind, workdir: Path, *, port: int, image: Path) -> TargetServer:
    """A stopped server of ``kind`` on 127.0.0.1:``port`` working in ``workdir``.

    ``image`` is the disk: the LIO VM gets it as its block device when it
    starts, so its :meth:`~TargetServer.serve` serves that disk whatever the spec says.
    """
    if kind is TargetKind.TGT:
        return TgtServer(workdir, port=port)
    if kind is TargetKind.ISTGT:
        from iscsiboot.qemu.istgt import Istgt  # noqa: PLC0415

        return Istgt(workdir, port=port)
    from iscsiboot.qemu.lio import LioVm  # noqa: PLC0415

    return LioVm(workdir, image=image, port=port)
