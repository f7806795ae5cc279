"""The NBD server's backend over the project's initiator: bytes to LBAs, one iSCSI session.

Reads and writes become READ/WRITE on the LUN, FLUSH becomes SYNCHRONIZE
CACHE, TRIM becomes UNMAP (offered to the kernel only when the LUN's block
limits say UNMAP is supported).  :meth:`IscsiBackend.reconnect` logs in again
with the session's ISID, so the target reinstates the session (RFC 7143
§6.3.5: same initiator name, same ISID, TSIH 0) and drops the broken one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from iscsiboot.agent.nbd.protocol import Geometry
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi import scsi
from iscsiboot.iscsi.pdu import Buffer
from iscsiboot.iscsi.session import Session
from iscsiboot.model import Chap

POLL_SECONDS = 0.5  # at most this long to read what the target sent unasked (a ping)


@dataclass(frozen=True)
class Portal:
    """Where and as whom to log in, and which LUN to serve."""

    host: str  # an address: the daemon resolves a name once, before the root it serves is mounted
    port: int
    target: str
    lun: int | None  # None: the target's lowest disk LUN
    initiator: str
    chap: Chap | None = None
    reverse_chap: Chap | None = None
    timeout: float = 10.0


class NoDiskLun(IscsibootError):
    """No LUN was named and the target maps no disk LUN to this initiator."""


LoginFn = Callable[[Portal, "bytes | None"], Session]


def login(portal: Portal, isid: bytes | None) -> Session:
    """A logged-in session to ``portal`` (``isid``: None for a new session's random one)."""
    return Session.login(
        portal.host,
        portal.port,
        initiator=portal.initiator,
        target=portal.target,
        chap=portal.chap,
        reverse_chap=portal.reverse_chap,
        timeout=portal.timeout,
        isid=isid,
    )


class IscsiBackend:
    """One LUN through one session; :meth:`open` first, then :meth:`probe`."""

    def __init__(self, portal: Portal, *, isid: bytes | None = None, connect: LoginFn = login) -> None:
        self.portal = portal
        self.isid = isid
        self.connect = connect
        self._session: Session | None = None
        self._lun = portal.lun
        self.capacity: scsi.Capacity | None = None
        self.limits: scsi.BlockLimits | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the backend is not logged in")
        return self._session

    @property
    def lun(self) -> int:
        """The LUN served: the one named, or the lowest disk LUN the first login found."""
        if self._lun is None:
            raise RuntimeError("the backend has not chosen its LUN: open() first")
        return self._lun

    @property
    def block_size(self) -> int:
        assert self.capacity is not None, "probe() first"
        return self.capacity.block_size

    def open(self) -> None:
        """The first login; its ISID is the one every later login reuses."""
        self._session = self.connect(self.portal, self.isid)
        self.isid = self._session.isid
        if self._lun is None:
            disks = self._session.disk_luns()
            if not disks:
                raise NoDiskLun(f"{self.portal.target} maps no disk LUN to {self.portal.initiator}")
            self._lun = disks[0]
        else:  # a named LUN must be a disk (tgt's LUN 0 is its controller)
            inq = self._session.inquiry(self._lun)
            if not inq.connected or inq.device_type not in scsi.DISK_TYPES:
                found = ", ".join(str(n) for n in self._session.disk_luns()) or "none"
                raise NoDiskLun(
                    f"LUN {self._lun} of {self.portal.target} is a {inq.type_name}, not a disk "
                    f"(disk LUNs: {found})"
                )

    def probe(self) -> Geometry:
        """READ CAPACITY and the block limits of the LUN (no check of the values here)."""
        lun = self.lun
        self.capacity = self.session.read_capacity(lun)
        self.limits = self.session.block_limits(lun)
        return Geometry(size=self.capacity.bytes, block_size=self.capacity.block_size, trim=self.limits.unmap)

    # ------------------------------------------------------------ the server's Backend

    def read_into(self, offset: int, into: memoryview) -> None:
        bs = self.block_size
        self.session.read_into(self.lun, offset // bs, into, block_size=bs)

    def read(self, offset: int, length: int) -> bytes:
        into = memoryview(bytearray(length))
        self.read_into(offset, into)
        return into.tobytes()

    def write(self, offset: int, data: Buffer) -> None:
        bs = self.block_size
        self.session.write(self.lun, offset // bs, data, block_size=bs)

    def flush(self) -> None:
        self.session.synchronize_cache(self.lun)

    def trim(self, offset: int, length: int) -> None:
        bs = self.block_size
        self.session.unmap(self.lun, offset // bs, length // bs)

    def reconnect(self) -> None:
        old, self._session = self._session, None
        if old is not None:
            old.close()
        self._session = self.connect(self.portal, self.isid)

    def fileno(self) -> int | None:
        if self._session is None:
            return None
        return self._session.transport.sock.fileno()

    def poll(self) -> None:
        self.session.idle(POLL_SECONDS, until_pings=1)

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.logout()
