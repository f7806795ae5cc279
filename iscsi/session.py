"""An iSCSI session over the blocking transport: login, SendTargets, SCSI reads and
writes, logout.

One connection, one command at a time.  NOP-In pings from the target are
answered while waiting; CmdSN/StatSN follow RFC 7143's serial arithmetic; every
wait has a deadline.  Reads go from the socket straight into the caller's
buffer; writes send immediate, unsolicited and solicited (R2T) data as the
login settled (:mod:`iscsiboot.iscsi.task`).

Only the methods named for it change a LUN: :meth:`Session.write`,
:meth:`Session.unmap` and :meth:`Session.synchronize_cache`, for a block device
served from a LUN and for the installer.  The diagnostics (``doctor``,
``discover``) never call them.

Failures: a lost connection (end of stream, reset, timeout) is a
:class:`~iscsiboot.iscsi.transport.TransportError`, after which the caller may
log in again with the same ISID (:attr:`Session.isid`: the target then ends the
old session, RFC 7143 session reinstatement) and replay what did not complete.
A command that ends with a status other than GOOD is a :class:`ScsiError` with
its sense; a UNIT ATTENTION is no answer and the command is sent again.
"""

from __future__ import annotations

import contextlib
import functools
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from iscsiboot.errors import IscsibootError
from iscsiboot.files import size_text
from iscsiboot.iscsi import scsi, task
from iscsiboot.iscsi.login import Login, LoginRedirect, LoginResult, LoginSettings, random_isid
from iscsiboot.iscsi.lunreader import LunReader as LunReader  # noqa: PLC0414 (re-exported)
from iscsiboot.iscsi.pdu import (
    RESERVED_TAG,
    Buffer,
    Op,
    Pdu,
    ProtocolError,
    make_bhs,
    sn_add,
    sn_gt,
    sn_lt,
)
from iscsiboot.iscsi.text import decode_keys, encode_keys
from iscsiboot.iscsi.transport import Sink, Transport, TransportError, connect
from iscsiboot.model import DEFAULT_PORT, Chap, lun_to_sam

DEFAULT_TIMEOUT = 10.0
MAX_REDIRECTS = 3
# Bytes per READ/WRITE command when a transfer is split (Session.max_transfer)
TRANSFER_CHUNK = 1024 * 1024
UNIT_ATTENTION_RETRIES = 4
SENSE_UNIT_ATTENTION = 0x6
SENSE_ILLEGAL_REQUEST = 0x5
T = TypeVar("T")
# A SendTargets answer in all its Text Responses: thousands of targets fit in these
MAX_SEND_TARGETS = 1024 * 1024
MAX_TEXT_RESPONSES = 64


class ScsiError(IscsibootError):
    """A SCSI command ended with a status other than GOOD."""

    def __init__(self, what: str, *, status: int, sense: scsi.Sense | None) -> None:
        super().__init__(what)
        self.status = status
        self.sense = sense


@dataclass(frozen=True)
class DiscoveredTarget:
    name: str
    addresses: tuple[str, ...]  # "host:port,tpgt" as the target wrote them


class Session:
    """A logged-in session; use :meth:`login` to make one, then close it with :meth:`logout`."""

    def __init__(self, transport: Transport, result: LoginResult, *, timeout: float, portal: str) -> None:
        self.transport = transport
        self.result = result
        self.params = result.params
        self.timeout = timeout
        self.portal = portal
        self.cmd_sn = result.cmd_sn
        self.exp_stat_sn = result.exp_stat_sn
        self.max_cmd_sn = result.max_cmd_sn
        self._itt = 1
        self.redirects: tuple[str, ...] = ()
        self.max_transfer = TRANSFER_CHUNK  # bytes per READ/WRITE when a transfer is split
        self._limits: dict[int, scsi.BlockLimits] = {}
        transport.set_digests(result.params.header_digest, result.params.data_digest)

    # ------------------------------------------------------------ login

    @classmethod
    def login(
        cls,
        host: str,
        port: int = DEFAULT_PORT,
        *,
        initiator: str,
        target: str | None = None,
        chap: Chap | None = None,
        reverse_chap: Chap | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_redirects: int = MAX_REDIRECTS,
        digests: bool = False,
        isid: bytes | None = None,
    ) -> Session:
        """Connect and log in (``target=None``: a Discovery session), following redirects.

        ``isid=None`` picks a random ISID (a new session beside any other of this
        initiator); the :attr:`isid` of an earlier session reinstates that session:
        the target ends it (and its connection) and this one takes its place.
        """
        hops: list[str] = []
        chosen = random_isid() if isid is None else isid
        while True:
            settings = LoginSettings(
                initiator=initiator,
                target=target,
                chap=chap,
                reverse_chap=reverse_chap,
                isid=chosen,
                digests=digests,
            )
            transport = connect(host, port, timeout=timeout)
            try:
                result = _run_login(transport, settings, timeout)
            except LoginRedirect as moved:
                transport.close()
                hops.append(f"{moved.address}:{moved.port}")
                if len(hops) > max_redirects:
                    raise IscsibootError(
                        f"more than {max_redirects} redirects ({' -> '.join(hops)})",
                        fix="correct the portal to the target's real address",
                    ) from None
                host, port = moved.address, moved.port
                continue
            except BaseException:
                transport.close()
                raise
            session = cls(transport, result, timeout=timeout, portal=f"{host}:{port}")
            session.redirects = tuple(hops)
            return session

    @property
    def isid(self) -> bytes:
        """The 6-byte ISID this session logged in with."""
        return self.result.isid

    # ------------------------------------------------------------ plumbing

    def _deadline(self) -> float:
        return time.monotonic() + self.timeout

    def _next_itt(self) -> int:
        itt = self._itt
        self._itt = (self._itt + 1) % RESERVED_TAG or 1
        return itt

    def _track(self, pdu: Pdu) -> None:
        if pdu.opcode in (Op.NOP_IN, Op.SCSI_RESPONSE, Op.TEXT_RESPONSE, Op.DATA_IN, Op.LOGOUT_RESPONSE,
                          Op.R2T, Op.ASYNC_MESSAGE, Op.REJECT):  # fmt: skip
            if pdu.opcode == Op.REJECT:
                return
            max_sn, exp_sn = pdu.max_cmd_sn, pdu.exp_cmd_sn
            if not sn_lt(max_sn, sn_add(exp_sn, 0xFFFFFFFF)):  # else both are to be ignored
                self.max_cmd_sn = max_sn
            status_bearing = (
                pdu.opcode in (Op.SCSI_RESPONSE, Op.TEXT_RESPONSE, Op.LOGOUT_RESPONSE, Op.ASYNC_MESSAGE)
                or (pdu.opcode == Op.DATA_IN and pdu.flags & 1)
                or (pdu.opcode == Op.NOP_IN and pdu.itt != RESERVED_TAG)
            )
            if status_bearing:
                self.exp_stat_sn = sn_add(pdu.stat_sn, 1)

    def _send(self, pdu: Pdu, deadline: float) -> None:
        self.transport.send(pdu, deadline=deadline)

    def _send_parts(self, bhs: bytes, data: Buffer, deadline: float) -> None:
        self.transport.send_parts(bhs, data, deadline=deadline)

    def _wait_window(self, deadline: float) -> None:
        while sn_gt(self.cmd_sn, self.max_cmd_sn):
            self._handle_unsolicited(self.transport.recv(deadline=deadline), deadline)

    def _handle_unsolicited(self, pdu: Pdu, deadline: float) -> bool:
        """Answer NOP-In pings, note async messages; True when ``pdu`` was consumed."""
        self._track(pdu)
        if pdu.opcode == Op.NOP_IN and pdu.itt == RESERVED_TAG:
            ttt = pdu.u32(20)
            if ttt != RESERVED_TAG:
                bhs = make_bhs(Op.NOP_OUT, immediate=True, flags=0x80)
                bhs[8:16] = pdu.lun_bytes
                struct.pack_into(">IIII", bhs, 16, RESERVED_TAG, ttt, self.cmd_sn, self.exp_stat_sn)
                self._send(Pdu(bytes(bhs), b"", pdu.data), deadline)
            return True
        if pdu.opcode == Op.ASYNC_MESSAGE:
            event = pdu.bhs[36]
            if event in (1, 2, 3):
                raise ProtocolError(f"the target is ending the session (asynchronous event {event})")
            return True
        if pdu.opcode == Op.REJECT:
            raise ProtocolError(f"the target rejected a request (reason 0x{pdu.bhs[2]:02x})")
        return False

    def _await(self, itt: int, deadline: float, sink: Sink | None = None) -> Pdu:
        while True:
            pdu = self.transport.recv(deadline=deadline, sink=sink)
            if self._handle_unsolicited(pdu, deadline):
                continue
            if pdu.itt != itt:
                raise ProtocolError(f"{pdu.name()} for task 0x{pdu.itt:08x}, expected 0x{itt:08x}")
            return pdu

    # ------------------------------------------------------------ text (SendTargets)

    def send_targets(self, which: str = "All") -> tuple[DiscoveredTarget, ...]:
        """``SendTargets=All`` (in a Discovery session) as (name, addresses)."""
        deadline = self._deadline()
        itt = self._next_itt()
        ttt = RESERVED_TAG
        payload = encode_keys([("SendTargets", which)])
        collected = bytearray()
        for _ in range(MAX_TEXT_RESPONSES):
            self._wait_window(deadline)
            bhs = make_bhs(Op.TEXT_REQUEST, immediate=False, flags=0x80)
            struct.pack_into(">IIII", bhs, 16, itt, ttt, self.cmd_sn, self.exp_stat_sn)
            self._send(Pdu(bytes(bhs), b"", payload), deadline)
            self.cmd_sn = sn_add(self.cmd_sn, 1)
            pdu = self._await(itt, deadline)
            if pdu.opcode != Op.TEXT_RESPONSE:
                raise ProtocolError(f"expected a Text Response, got {pdu.name()}")
            collected += pdu.data
            if len(collected) > MAX_SEND_TARGETS:
                raise ProtocolError(
                    f"the SendTargets answer is longer than {size_text(MAX_SEND_TARGETS)} "
                    "(no target list is that long; the target may be hostile or broken)"
                )
            if pdu.final and not pdu.flags & 0x40:
                break
            ttt = pdu.u32(20)
            payload = b""
        else:
            raise ProtocolError(f"the SendTargets answer did not end within {MAX_TEXT_RESPONSES} responses")
        out: list[DiscoveredTarget] = []
        for key, value in decode_keys(bytes(collected)):
            if key == "TargetName":
                out.append(DiscoveredTarget(value, ()))
            elif key == "TargetAddress" and out:
                out[-1] = DiscoveredTarget(out[-1].name, (*out[-1].addresses, value))
        return tuple(out)

    # ------------------------------------------------------------ SCSI

    def command(self, lun: int, cdb: bytes, expected: int) -> bytes:
        """Run a read-direction (or no-data) CDB on ``lun``; the Data-In bytes (as many
        as the target sent, at most ``expected``).  A UNIT ATTENTION is retried."""
        buf = bytearray(expected)
        got = self._retrying(lambda: self._execute(lun, cdb, into=memoryview(buf)))
        return bytes(buf[:got])

    def command_out(self, lun: int, cdb: bytes, data: Buffer) -> int:
        """Run a write-direction CDB on ``lun`` with ``data`` as its Data-Out; the bytes the
        target took (less a residual it reported).  A UNIT ATTENTION is retried (the
        same data is sent again)."""
        out = memoryview(data).cast("B")
        return self._retrying(lambda: self._execute(lun, cdb, out=out))

    def _retrying(self, run: Callable[[], T]) -> T:
        """``run()``, again after each UNIT ATTENTION (reported once after the target's
        reset, a session reinstatement or a change: it is no answer to the command)."""
        for _ in range(UNIT_ATTENTION_RETRIES):
            try:
                return run()
            except ScsiError as exc:
                if exc.sense is None or exc.sense.key != SENSE_UNIT_ATTENTION:
                    raise
        return run()

    def _execute(
        self, lun: int, cdb: bytes, *, into: memoryview | None = None, out: memoryview | None = None
    ) -> int:
        """One SCSI task: Data-In goes into ``into``, ``out`` is the Data-Out.  Returns
        the bytes of Data-In received, or of Data-Out taken, less a residual the
        target reported."""
        total = len(into) if into is not None else len(out) if out is not None else 0
        params = self.params
        plan = task.unsolicited(len(out), params) if out is not None else task.Unsolicited(0, 0)
        deadline = self._deadline()
        self._wait_window(deadline)
        itt = self._next_itt()
        lun_bytes = lun_to_sam(lun)
        bhs = task.command_bhs(
            lun_bytes, itt, cdb, length=total, read=into is not None, write=out is not None,
            final=not plan.data_out, cmd_sn=self.cmd_sn, exp_stat_sn=self.exp_stat_sn,
        )  # fmt: skip
        self._send_parts(bhs, out[: plan.immediate] if out is not None else b"", deadline)
        self.cmd_sn = sn_add(self.cmd_sn, 1)
        if out is not None and plan.data_out:
            self._data_out(
                lun_bytes, itt, RESERVED_TAG, out, start=plan.immediate, end=plan.end, deadline=deadline
            )
        received = 0
        next_data_sn = 0
        next_r2t_sn = 0

        def sink(head: Pdu, size: int) -> memoryview | None:
            if head.opcode != Op.DATA_IN or head.itt != itt or into is None:
                return None
            offset = head.u32(40)
            if offset + size > len(into):
                raise ProtocolError(
                    f"Data-In for bytes {offset}-{offset + size - 1} beyond the expected {len(into)}"
                )
            if offset != received:
                raise ProtocolError(f"Data-In at offset {offset}, expected {received} (data out of order)")
            return into[offset : offset + size]

        while True:
            pdu = self._await(itt, deadline, sink)
            if pdu.opcode == Op.DATA_IN:
                if into is None or pdu.data:
                    raise ProtocolError("Data-In beyond the expected transfer length")
                if pdu.u32(36) != next_data_sn:
                    raise ProtocolError(f"Data-In DataSN {pdu.u32(36)}, expected {next_data_sn}")
                next_data_sn += 1
                received += int.from_bytes(pdu.bhs[5:8], "big")
                if pdu.flags & 0x01:  # S: status with the last data
                    status = pdu.bhs[3]
                    if status != 0:
                        raise ScsiError(f"SCSI status 0x{status:02x}", status=status, sense=None)
                    return self._received(pdu, received, total)
                continue
            if pdu.opcode == Op.R2T:
                if out is None:
                    raise ProtocolError("the target asked for data (R2T) on a command that has none to send")
                r2t = task.parse_r2t(
                    pdu, total=len(out), r2t_sn=next_r2t_sn, max_burst=params.max_burst_length
                )
                next_r2t_sn += 1
                end = r2t.offset + r2t.length
                self._data_out(lun_bytes, itt, r2t.ttt, out, start=r2t.offset, end=end, deadline=deadline)
                continue
            if pdu.opcode == Op.SCSI_RESPONSE:
                if pdu.bhs[2] != 0:
                    raise ProtocolError(
                        f"the target could not complete the command (response 0x{pdu.bhs[2]:02x})"
                    )
                status = pdu.bhs[3]
                if status != 0:
                    sense = scsi.parse_sense(pdu.data)
                    detail = f": {sense}" if sense else ""
                    raise ScsiError(
                        f"SCSI command 0x{cdb[0]:02x} on LUN {lun} failed with status 0x{status:02x}{detail}",
                        status=status,
                        sense=sense,
                    )
                return self._received(pdu, received if out is None else total, total)
            raise ProtocolError(f"unexpected {pdu.name()} during a SCSI command")

    def _data_out(
        self, lun: bytes, itt: int, ttt: int, out: memoryview, *, start: int, end: int, deadline: float
    ) -> None:
        """One sequence of Data-Out PDUs carrying ``out[start:end]``."""
        limit = self.params.max_xmit_data_segment_length
        for data_sn, (offset, size) in enumerate(task.segments(start, end, limit)):
            bhs = task.data_out_bhs(
                lun, itt, ttt, exp_stat_sn=self.exp_stat_sn, data_sn=data_sn, offset=offset,
                final=offset + size == end,
            )  # fmt: skip
            self._send_parts(bhs, out[offset : offset + size], deadline)

    @staticmethod
    def _received(pdu: Pdu, received: int, total: int) -> int:
        if pdu.flags & 0x02:  # U: underflow, the residual count says how much is missing
            return min(received, max(0, total - pdu.u32(44)))
        return received

    def _transfers(self, lba: int, blocks: int, block_size: int) -> list[tuple[int, int]]:
        """``(lba, blocks)`` of each command of a transfer split at :attr:`max_transfer`."""
        if block_size <= 0 or lba < 0 or blocks < 0:
            raise ValueError("a transfer needs a positive block size and a non-negative LBA and count")
        per = max(1, self.max_transfer // block_size)
        return [(start, min(per, lba + blocks - start)) for start in range(lba, lba + blocks, per)]

    def inquiry(self, lun: int) -> scsi.Inquiry:
        return scsi.parse_inquiry(self.command(lun, scsi.inquiry_cdb(), 255))

    def device_identification(self, lun: int) -> tuple[scsi.Designator, ...]:
        return scsi.parse_device_identification(self.command(lun, scsi.inquiry_cdb(page=0x83), 255))

    def report_luns(self) -> tuple[int, ...]:
        data = self.command(0, scsi.report_luns_cdb(4096), 4096)
        need = scsi.report_luns_length(data)
        if need > len(data):
            data = self.command(0, scsi.report_luns_cdb(need), need)
        return scsi.parse_report_luns(data)

    def disk_luns(self) -> tuple[int, ...]:
        """The LUNs that are disks (INQUIRY: a direct-access or simplified direct-access device there)."""
        out: list[int] = []
        for number in self.report_luns():
            try:
                inq = self.inquiry(number)
            except ScsiError:
                continue
            if inq.connected and inq.device_type in scsi.DISK_TYPES:
                out.append(number)
        return tuple(out)

    def read_capacity(self, lun: int) -> scsi.Capacity:
        """READ CAPACITY(16), or (10) when the device does not know (16)."""
        try:
            cap = scsi.parse_read_capacity16(self.command(lun, scsi.read_capacity16_cdb(), 32))
        except ScsiError as exc:
            if exc.sense is None or exc.sense.key != 0x5:
                raise
            return scsi.parse_read_capacity10(self.command(lun, scsi.read_capacity10_cdb(), 8))
        return cap

    def read_capacity10(self, lun: int) -> scsi.Capacity:
        return scsi.parse_read_capacity10(self.command(lun, scsi.read_capacity10_cdb(), 8))

    def read(self, lun: int, lba: int, blocks: int, *, block_size: int = 512) -> bytes:
        """``blocks`` blocks from ``lba``: READ(10) when it fits, else READ(16)."""
        buf = bytearray(blocks * block_size)
        self.read_into(lun, lba, memoryview(buf), block_size=block_size)
        return bytes(buf)

    def read_into(self, lun: int, lba: int, into: memoryview, *, block_size: int = 512) -> None:
        """Fill ``into`` (a writable byte view, whole blocks) from ``lba``, no copy on the way."""
        view = into.cast("B") if into.format != "B" else into
        if len(view) % block_size:
            raise ValueError(f"{len(view)} bytes are not whole blocks of {block_size}")
        for start, n in self._transfers(lba, len(view) // block_size, block_size):
            cdb = scsi.read10_cdb(start, n) if scsi.fits_10(start, n) else scsi.read16_cdb(start, n)
            part = view[(start - lba) * block_size : (start - lba + n) * block_size]
            got = self._retrying(functools.partial(self._execute, lun, cdb, into=part))
            if got != len(part):
                raise ProtocolError(
                    f"the target sent {got} of {len(part)} bytes "
                    f"for blocks {start}-{start + n - 1} of LUN {lun}"
                )

    def write(self, lun: int, lba: int, data: Buffer, *, block_size: int) -> None:
        """Write ``data`` (whole blocks) at ``lba``: WRITE(10) when it fits, else WRITE(16),
        one command per :attr:`max_transfer` bytes."""
        view = memoryview(data).cast("B")
        if len(view) % block_size:
            raise ValueError(f"{len(view)} bytes are not whole blocks of {block_size}")
        for start, n in self._transfers(lba, len(view) // block_size, block_size):
            cdb = scsi.write10_cdb(start, n) if scsi.fits_10(start, n) else scsi.write16_cdb(start, n)
            took = self.command_out(
                lun, cdb, view[(start - lba) * block_size : (start - lba + n) * block_size]
            )
            if took != n * block_size:
                raise ProtocolError(
                    f"the target took {took} of {n * block_size} bytes "
                    f"for blocks {start}-{start + n - 1} of LUN {lun} (residual underflow)"
                )

    def synchronize_cache(self, lun: int) -> None:
        """SYNCHRONIZE CACHE(10) over the whole LUN (written data reaches the medium),
        or (16) for a device that does not know (10)."""
        try:
            self.command(lun, scsi.synchronize_cache10_cdb(), 0)
        except ScsiError as exc:
            if exc.sense is None or exc.sense.key != SENSE_ILLEGAL_REQUEST:
                raise
            self.command(lun, scsi.synchronize_cache16_cdb(), 0)

    def block_limits(self, lun: int) -> scsi.BlockLimits:
        """The LUN's limits and UNMAP support (VPD pages 0xB0/0xB2 when served, READ
        CAPACITY(16)'s LBPME); asked once per LUN and session."""
        known = self._limits.get(lun)
        if known is not None:
            return known
        pages: frozenset[int] = frozenset()
        with contextlib.suppress(ScsiError):  # a device without VPD pages
            pages = scsi.parse_supported_pages(self.command(lun, scsi.inquiry_cdb(page=0x00), 255))
        limits = provisioning = None
        if 0xB0 in pages:
            limits = scsi.parse_block_limits_page(
                self.command(lun, scsi.inquiry_cdb(page=0xB0, length=64), 64)
            )
        if 0xB2 in pages:
            provisioning = scsi.parse_provisioning_page(
                self.command(lun, scsi.inquiry_cdb(page=0xB2, length=64), 64)
            )
        capacity: scsi.Capacity | None = None
        try:
            capacity = scsi.parse_read_capacity16(self.command(lun, scsi.read_capacity16_cdb(), 32))
        except ScsiError as exc:
            if exc.sense is None or exc.sense.key != SENSE_ILLEGAL_REQUEST:
                raise
        known = scsi.block_limits(capacity, limits, provisioning)
        self._limits[lun] = known
        return known

    def unmap(self, lun: int, lba: int, blocks: int) -> None:
        """UNMAP ``blocks`` blocks from ``lba``, in as many commands as the LUN's limits need."""
        if blocks <= 0:
            return
        limits = self.block_limits(lun)
        if not limits.unmap:
            raise IscsibootError(
                f"LUN {lun} does not support UNMAP",
                where=self.portal,
                fix="ask Session.block_limits() first, or make the LUN thin-provisioned",
            )
        for ranges in scsi.unmap_plan(lba, blocks, limits):
            parameters = scsi.unmap_parameters(ranges)
            # (tgt reports the whole parameter list as a residual: the status is what counts)
            self.command_out(lun, scsi.unmap_cdb(len(parameters)), parameters)

    def idle(self, seconds: float, *, until_pings: int | None = None) -> int:
        """Serve the connection for ``seconds`` (answering NOP-In pings); the pings answered.

        Returns early once ``until_pings`` pings were answered.  Keeps a
        session alive while nothing else is to be done.
        """
        deadline = time.monotonic() + seconds
        answered = 0
        while until_pings is None or answered < until_pings:
            try:
                pdu = self.transport.recv(deadline=deadline)
            except TransportError:
                if time.monotonic() >= deadline:
                    break
                raise
            pinged = pdu.opcode == Op.NOP_IN and pdu.itt == RESERVED_TAG and pdu.u32(20) != RESERVED_TAG
            if not self._handle_unsolicited(pdu, deadline + self.timeout):
                raise ProtocolError(f"unexpected {pdu.name()} while idle")
            answered += int(pinged)
        return answered

    # ------------------------------------------------------------ logout

    def logout(self) -> None:
        """Close the session politely; the connection is closed whatever happens."""
        try:
            deadline = self._deadline()
            itt = self._next_itt()
            bhs = make_bhs(Op.LOGOUT_REQUEST, immediate=True, flags=0x80)  # reason 0: close the session
            struct.pack_into(">I", bhs, 16, itt)
            struct.pack_into(">HH", bhs, 20, 0, 0)
            struct.pack_into(">II", bhs, 24, self.cmd_sn, self.exp_stat_sn)
            self._send(Pdu(bytes(bhs)), deadline)
            pdu = self._await(itt, deadline)
            if pdu.opcode != Op.LOGOUT_RESPONSE:
                raise ProtocolError(f"expected a Logout Response, got {pdu.name()}")
            if pdu.bhs[2] != 0:
                raise ProtocolError(f"logout refused (response {pdu.bhs[2]})")
        finally:
            self.transport.close()

    def close(self) -> None:
        self.transport.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.logout()
        else:
            self.close()


def _run_login(transport: Transport, settings: LoginSettings, timeout: float) -> LoginResult:
    deadline = time.monotonic() + timeout
    machine = Login(settings, rng=os.urandom, itt=0)
    request: Pdu | None = machine.start()
    while request is not None:
        transport.send(request, deadline=deadline)
        request = machine.receive(transport.recv(deadline=deadline))
    assert machine.result is not None
    return machine.result
