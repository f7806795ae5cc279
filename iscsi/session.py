"""An iSCSI session over the blocking transport: login, SendTargets, SCSI reads, logout.

One connection, one command at a time (a diagnosis needs no more).  NOP-In
pings from the target are answered while waiting; CmdSN/StatSN follow
RFC 7143's serial arithmetic; every wait has a deadline.  This module never
sends a command that writes.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from types import TracebackType

from iscsiboot.errors import IscsibootError
from iscsiboot.files import size_text
from iscsiboot.iscsi import scsi
from iscsiboot.iscsi.login import Login, LoginRedirect, LoginResult, LoginSettings, random_isid
from iscsiboot.iscsi.pdu import RESERVED_TAG, Op, Pdu, ProtocolError, make_bhs, sn_add, sn_gt, sn_lt
from iscsiboot.iscsi.text import decode_keys, encode_keys
from iscsiboot.iscsi.transport import Transport, TransportError, connect
from iscsiboot.model import DEFAULT_PORT, Chap, lun_to_sam

DEFAULT_TIMEOUT = 10.0
MAX_REDIRECTS = 3
READ_CHUNK = 256 * 1024
UNIT_ATTENTION_RETRIES = 4
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
    ) -> Session:
        """Connect and log in (``target=None``: a Discovery session), following redirects."""
        hops: list[str] = []
        while True:
            settings = LoginSettings(
                initiator=initiator,
                target=target,
                chap=chap,
                reverse_chap=reverse_chap,
                isid=random_isid(),
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

    def _await(self, itt: int, deadline: float) -> Pdu:
        while True:
            pdu = self.transport.recv(deadline=deadline)
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
        """Run a read-direction (or no-data) CDB on ``lun``; the Data-In bytes.

        A UNIT ATTENTION (reported once after the target's reset or a change)
        is not an answer to the command: the command is sent again.
        """
        for _ in range(UNIT_ATTENTION_RETRIES):
            try:
                return self._command(lun, cdb, expected)
            except ScsiError as exc:
                if exc.sense is None or exc.sense.key != 0x6:
                    raise
        return self._command(lun, cdb, expected)

    def _command(self, lun: int, cdb: bytes, expected: int) -> bytes:
        if len(cdb) > 16:
            raise ProtocolError("CDBs longer than 16 bytes are not supported")
        deadline = self._deadline()
        self._wait_window(deadline)
        itt = self._next_itt()
        flags = 0x80 | (0x40 if expected else 0) | 0x01  # F, R, simple task attribute
        bhs = make_bhs(Op.SCSI_COMMAND, immediate=False, flags=flags)
        bhs[8:16] = lun_to_sam(lun)
        struct.pack_into(">IIII", bhs, 16, itt, expected, self.cmd_sn, self.exp_stat_sn)
        bhs[32 : 32 + len(cdb)] = cdb
        self._send(Pdu(bytes(bhs)), deadline)
        self.cmd_sn = sn_add(self.cmd_sn, 1)
        buf = bytearray(expected)
        received = 0
        next_data_sn = 0
        while True:
            pdu = self._await(itt, deadline)
            if pdu.opcode == Op.DATA_IN:
                if pdu.u32(36) != next_data_sn:
                    raise ProtocolError(f"Data-In DataSN {pdu.u32(36)}, expected {next_data_sn}")
                next_data_sn += 1
                offset = pdu.u32(40)
                if offset + len(pdu.data) > expected:
                    raise ProtocolError("Data-In beyond the expected transfer length")
                buf[offset : offset + len(pdu.data)] = pdu.data
                received = max(received, offset + len(pdu.data))
                if pdu.flags & 0x01:  # S: status with the last data
                    status = pdu.bhs[3]
                    if status != 0:
                        raise ScsiError(f"SCSI status 0x{status:02x}", status=status, sense=None)
                    return self._trim(bytes(buf), pdu, received)
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
                return self._trim(bytes(buf), pdu, received)
            if pdu.opcode == Op.R2T:
                raise ProtocolError("the target asked for data on a read command")
            raise ProtocolError(f"unexpected {pdu.name()} during a SCSI command")

    @staticmethod
    def _trim(data: bytes, pdu: Pdu, received: int) -> bytes:
        if pdu.flags & 0x02:  # U: underflow, residual count says how much is missing
            residual = pdu.u32(44)
            return data[: max(0, len(data) - residual)]
        return data[:received] if received else data

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
        out = bytearray()
        per = max(1, READ_CHUNK // block_size)
        while blocks > 0:
            n = min(blocks, per)
            cdb = scsi.read10_cdb(lba, n) if lba + n <= 4294967295 and n < 65536 else scsi.read16_cdb(lba, n)
            out += self.command(lun, cdb, n * block_size)
            lba += n
            blocks -= n
        return bytes(out)

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


class LunReader:
    """A :data:`~iscsiboot.disk.probe.ReadAt` over one LUN, with a small block cache."""

    CHUNK = 64 * 1024

    def __init__(self, session: Session, lun: int, capacity: scsi.Capacity, *, base: int = 0) -> None:
        self.session = session
        self.lun = lun
        self.capacity = capacity
        self.base = base
        self._cache: dict[int, bytes] = {}

    def _chunk(self, index: int) -> bytes:
        if index not in self._cache:
            bs = self.capacity.block_size
            lba = index * self.CHUNK // bs
            blocks = min(self.CHUNK // bs, self.capacity.blocks - lba)
            if blocks <= 0:
                return b""
            if len(self._cache) > 512:
                self._cache.clear()
            self._cache[index] = self.session.read(self.lun, lba, blocks, block_size=bs)
        return self._cache[index]

    def __call__(self, offset: int, length: int) -> bytes:
        offset += self.base
        out = bytearray()
        while length > 0:
            index, within = divmod(offset, self.CHUNK)
            chunk = self._chunk(index)[within : within + length]
            if not chunk:
                break
            out += chunk
            offset += len(chunk)
            length -= len(chunk)
        return bytes(out)

    def at(self, base: int) -> LunReader:
        """The same LUN seen from byte ``base`` (a partition); shares the cache."""
        view = LunReader(self.session, self.lun, self.capacity, base=self.base + base)
        view._cache = self._cache
        return view
