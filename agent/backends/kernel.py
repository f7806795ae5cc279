"""The native (kernel) login backend: the agent creates the kernel session over NETLINK_ISCSI itself.

The sequence is iscsid's for ``iscsi_tcp`` (see :mod:`iscsiboot.iscsi.netlink`):
connect the TCP socket, CREATE_SESSION, CREATE_CONN, BIND_CONN with the socket,
the session parameters, the login PDUs through SEND_PDU with the answers as
RECV_PDU events (driven by :class:`iscsiboot.iscsi.login.Login`), the
negotiated parameters, START_CONN, then wait until sysfs says ``LOGGED_IN``
and ask the SCSI host to scan.  A failed attempt stops and destroys what it
created, after the kernel has given up the connection on its own (see
:meth:`NativeBackend._quiesce`).  Failures become the same :class:`~iscsiboot.agent.backends.result.Cause`
values as the ``iscsistart`` backend (:func:`cause_of_error`, pure).

The login runs through the kernel (not on the socket before CREATE_SESSION):
libiscsi then sees every Login Response and takes the target's MaxCmdSN
from it, so its command window is the one the target granted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from iscsiboot.agent.backends.causes import cause_of_login, cause_of_tcp
from iscsiboot.agent.backends.result import Cause, LoginResult
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.keeper.config import KeptSession
from iscsiboot.errors import EnvironmentProblem, IscsibootError
from iscsiboot.iscsi import netlink as nl
from iscsiboot.iscsi.login import (
    Login,
    LoginRedirect,
    LoginSettings,
)
from iscsiboot.iscsi.login import LoginResult as IscsiLogin
from iscsiboot.iscsi.pdu import BHS_LEN, Pdu, ProtocolError, encode
from iscsiboot.model import Target, address_kind

PDU_TIMEOUT = 15.0  # seconds for each Login Response
# libiscsi sends RECV_PDU to user space before it frees the connection's login task; a
# SEND_PDU of the next Login Request that comes in between is refused with EPERM ("Login/Text
# in progress").  It is sent again every SEND_RETRY_STEP seconds for at most SEND_RETRY seconds.
SEND_RETRY = 1.0
SEND_RETRY_STEP = 0.005
QUIESCE_TIMEOUT = 3.0  # seconds to wait for the kernel's CONN_ERROR before the teardown
MAX_REDIRECTS = 4
SCAN = "- - -"


class ConnectionLost(IscsibootError):
    """The kernel reported a connection error (CONN_ERROR) during the login."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the connection failed during the login ({nl.conn_error_name(code)}, {code})")
        self.code = code


class TcpFailed(IscsibootError):
    def __init__(self, what: str, err: int | None) -> None:
        super().__init__(what)
        self.errno = err


# ---------------------------------------------------------------- error mapping (pure)

_IFERROR: dict[int, Cause] = {
    errno.EPERM: Cause.OTHER,
    errno.EACCES: Cause.OTHER,
    errno.EEXIST: Cause.OTHER,
}
_CONN_ERROR: dict[int, Cause] = {
    nl.ConnErr.TCP_CONN_CLOSE: Cause.REFUSED,  # iscsistart: "(4 - encountered connection failure)"
    nl.ConnErr.CONN_FAILED: Cause.REFUSED,
    nl.ConnErr.SESSION_FAILED: Cause.REFUSED,
    nl.ConnErr.XMIT_FAILED: Cause.REFUSED,
    nl.ConnErr.NOP_TIMEDOUT: Cause.TIMEOUT,
}


def cause_of_iferror(kind: int, err: int) -> Cause:
    """The cause of a refused NETLINK_ISCSI request (``err`` positive)."""
    if kind == nl.Ev.CREATE_CONN and err == errno.ENOMEM:
        return Cause.NO_CRC32C  # iscsi_tcp cannot allocate its crc32c transform
    if err in (errno.EPROTONOSUPPORT, errno.ENODEV):
        return Cause.NO_DRIVER
    return _IFERROR.get(err, Cause.OTHER)


def cause_of_error(exc: BaseException) -> Cause:
    """The plain cause of an exception from one native login attempt."""
    shared = cause_of_login(exc)
    if shared is not None:
        return shared
    if isinstance(exc, nl.NetlinkError):
        return cause_of_iferror(exc.kind, exc.errno)
    if isinstance(exc, ConnectionLost):
        return _CONN_ERROR.get(exc.code, Cause.OTHER)
    if isinstance(exc, TcpFailed):
        return cause_of_tcp(exc.errno)
    if isinstance(exc, EnvironmentProblem):
        return Cause.NO_DRIVER
    if isinstance(exc, TimeoutError):
        return Cause.TIMEOUT
    return Cause.OTHER


def describe(exc: BaseException) -> str:
    if isinstance(exc, IscsibootError):
        return exc.what
    if isinstance(exc, TimeoutError):
        return f"timed out: {exc}"
    return f"{type(exc).__name__}: {exc}"


def response_pdu(payload: bytes, itt: int) -> Pdu:
    """The Login Response of a RECV_PDU event (BHS + data), with our task tag put back.

    libiscsi sends the login under a task tag of its own and has matched the
    answer to that task already; the state machine checks the tag it chose.
    """
    if len(payload) < BHS_LEN:
        raise ProtocolError(f"RECV_PDU with {len(payload)} bytes, less than a header")
    bhs = bytearray(payload[:BHS_LEN])
    length = int.from_bytes(bhs[5:8], "big")
    data = payload[BHS_LEN : BHS_LEN + length]
    if len(data) != length:
        raise ProtocolError("RECV_PDU shorter than its data segment length")
    bhs[16:20] = itt.to_bytes(4, "big")
    return Pdu(bytes(bhs), b"", data)


# ---------------------------------------------------------------- sysfs helpers


def existing_session(sysfs: Path, target: Target) -> str | None:
    """The name of a kernel session already logged in to ``target`` (hook mode, a second try)."""
    base = sysfs / "class" / "iscsi_session"
    if not base.is_dir():
        return None
    for entry in sorted(base.iterdir()):
        try:
            name = (entry / "targetname").read_text().strip()
            state = (entry / "state").read_text().strip()
        except OSError:
            continue
        if name == target.name and state == "LOGGED_IN":
            return entry.name
    return None


def wait_logged_in(
    sysfs: Path, sid: int, deadline: float, sleep: Callable[[float], None] = time.sleep
) -> str:
    """Poll ``session<sid>/state`` until LOGGED_IN (START_CONN unblocks the session asynchronously)."""
    path = sysfs / "class" / "iscsi_session" / f"session{sid}" / "state"
    state = "missing"
    while True:
        with contextlib.suppress(OSError):
            state = path.read_text().strip()
        if state == "LOGGED_IN":
            return state
        if time.monotonic() >= deadline:
            raise TimeoutError(f"session{sid} stayed {state}")
        sleep(0.01)


def readback(sysfs: Path, sid: int, cid: int) -> str:
    """What the kernel shows of the handed-over session (what a later iscsid adopts); no secrets."""
    session = sysfs / "class" / "iscsi_session" / f"session{sid}"
    conn = sysfs / "class" / "iscsi_connection" / f"connection{sid}:{cid}"
    fields = []
    for folder, name in (
        (session, "targetname"),
        (session, "tpgt"),
        (session, "initiatorname"),
        (session, "username"),
        (session, "username_in"),
        (conn, "persistent_address"),
        (conn, "persistent_port"),
    ):
        try:
            value = (folder / name).read_text().strip()
        except OSError:
            continue
        if value and value != "(null)":
            fields.append(f"{name}={value}")
    return f"session{sid} " + " ".join(fields)


# ---------------------------------------------------------------- the backend


@dataclass
class _Kernel:
    """What one attempt created, for the teardown."""

    link: nl.IscsiNetlink
    sid: int | None = None
    host_no: int | None = None
    cid: int | None = None
    sock: socket.socket | None = None
    bound: bool = False  # the kernel holds the socket (BIND_CONN succeeded)
    isid: bytes = b""
    conn_error: bool = False  # the kernel reported CONN_ERROR for this connection


class NativeBackend:
    name = "native"

    def __init__(
        self,
        log: Callable[[str], None] = lambda _text: None,
        *,
        sysfs: Path = Path("/sys"),
        isid: bytes | None = None,
        open_link: Callable[[int], nl.IscsiNetlink] = nl.IscsiNetlink,
        recovery_timeout: int = 120,
        ping: int = 0,
    ) -> None:
        self.log = log
        self.recovery_timeout = recovery_timeout  # seconds the kernel queues I/O without a connection
        self.ping = ping  # NOP-Out interval and timeout (0: none), when a keeper recovers the session
        self.sysfs = sysfs
        self.open_link = open_link  # the NETLINK_ISCSI socket (a fake kernel in unit tests)
        self.isid = isid
        self.sessions: list[tuple[int, int]] = []  # (sid, host_no) of each session handed over
        self.kept: list[KeptSession] = []  # what a keeper needs to log each of them in again

    def login_firmware(self, deadline: Deadline) -> LoginResult:
        return LoginResult(
            Cause.NO_FIRMWARE, "the native backend logs in to the targets the agent read from the iBFT"
        )

    def login(self, target: Target, initiator: str, deadline: Deadline) -> LoginResult:
        existing = existing_session(self.sysfs, target)
        if existing is not None:
            return LoginResult(Cause.SESSION_EXISTS, f"{existing} is already logged in to {target.name}")
        address = target.address
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                return self._attempt(target, address, target.port, initiator, deadline)
            except LoginRedirect as moved:
                self.log(f"native: {target.name} moved to {moved.address}:{moved.port}")
                address = moved.address
                target = _moved(target, moved)
            except Exception as exc:  # every failure becomes a cause; PID 1 must not die
                cause = cause_of_error(exc)
                text = describe(exc)
                self.log(f"native: login to {target.name} failed ({cause.value}): {text}")
                return LoginResult(cause, text)
        return LoginResult(Cause.REJECTED, f"more than {MAX_REDIRECTS} login redirects")

    # -- one attempt

    def _attempt(
        self, target: Target, address: str, port: int, initiator: str, deadline: Deadline
    ) -> LoginResult:
        if address_kind(address) == "hostname":
            try:
                from iscsiboot.iscsi.transport import host_arg  # noqa: PLC0415  (names only)

                address = str(socket.getaddrinfo(host_arg(address), port, type=socket.SOCK_STREAM)[0][4][0])
            except OSError as exc:
                return LoginResult(Cause.UNREACHABLE, f"cannot resolve {address}: {exc}")
        handle = nl.read_transport_handle(self.sysfs / "class" / "iscsi_transport" / "tcp" / "handle")
        kernel = _Kernel(self.open_link(handle))
        done = False
        try:
            result = self._run(
                kernel, target, address=address, port=port, initiator=initiator, deadline=deadline
            )
            done = True
            return result
        finally:
            if not done:
                self._teardown(kernel)
            if kernel.sock is not None:
                kernel.sock.close()  # after BIND the kernel holds its own reference
            kernel.link.close()

    def _run(
        self, k: _Kernel, target: Target, *, address: str, port: int, initiator: str, deadline: Deadline
    ) -> LoginResult:
        t0 = time.monotonic()
        k.sock = connect_tcp(address, port, min(10.0, max(1.0, deadline.remaining())))
        link = k.link
        settings = LoginSettings(
            initiator=initiator,
            target=target.name,
            chap=target.chap,
            reverse_chap=target.reverse_chap,
        )
        if self.isid is not None:
            settings = replace(settings, isid=self.isid)
        k.isid = settings.isid
        created = link.call(nl.create_session(link.handle, initial_cmdsn=settings.cmd_sn))
        k.sid, k.host_no = created.session()
        _sid, cid = link.call(nl.create_conn(link.handle, k.sid, 0)).ids()
        if cid == nl.CONN_FAILURE:
            raise nl.NetlinkError(nl.Ev.CREATE_CONN, errno.ENOMEM)
        k.cid = cid
        bind(link, k.sid, k.cid, k.sock)
        k.bound = True
        params = nl.session_params(target, initiator, recovery_timeout=self.recovery_timeout, ping=self.ping)
        set_params(link, k.sid, k.cid, params, self.log)
        self.log(f"native: session{k.sid} host{k.host_no} bound to {address}:{port}")
        try:
            result = kernel_login(
                link,
                k.sid,
                k.cid,
                settings,
                where=f"{address}:{port}",
                budget=deadline.remaining(),
                log=self.log,
                sock=k.sock,
            )
        except ConnectionLost:
            k.conn_error = True
            raise
        set_params(
            link,
            k.sid,
            k.cid,
            nl.negotiated_params(result.params, result.exp_stat_sn, tpgt=target.group),
            self.log,
        )
        start(link, k.sid, k.cid)
        wait_logged_in(self.sysfs, k.sid, time.monotonic() + max(2.0, deadline.remaining()))
        self.log(f"native: sysfs {readback(self.sysfs, k.sid, k.cid)}")
        scan = self.sysfs / "class" / "scsi_host" / f"host{k.host_no}" / "scan"
        scan.write_text(SCAN)
        self.sessions.append((k.sid, k.host_no))
        self.kept.append(
            KeptSession(
                k.sid, k.cid, k.host_no, replace(target, address=address, port=port), initiator, k.isid
            )
        )
        took = time.monotonic() - t0
        text = (
            f"session{k.sid} (host{k.host_no}) logged in to {target.name} at {address}:{port}, "
            f"{result.auth}, in {took:.2f} s"
        )
        self.log(f"native: {text}")
        return LoginResult(Cause.OK, text)

    def _teardown(self, k: _Kernel) -> None:
        """STOP_CONN, DESTROY_CONN, DESTROY_SESSION for whatever this attempt created."""
        link = k.link
        if k.bound and not k.conn_error:
            self._quiesce(k)
        steps: list[bytes] = []
        if k.sid is not None and k.cid is not None:
            steps += [nl.stop_conn(link.handle, k.sid, k.cid), nl.destroy_conn(link.handle, k.sid, k.cid)]
        if k.sid is not None:
            steps.append(nl.destroy_session(link.handle, k.sid))
        for datagram in steps:
            try:
                link.call(datagram, timeout=5.0)
            except (nl.NetlinkError, OSError) as exc:
                self.log(f"native: teardown step refused: {describe(exc)}")
        if k.sid is not None:
            self.log(f"native: session{k.sid} torn down")

    def _quiesce(self, k: _Kernel) -> None:
        """Close the bound connection and wait until the kernel reports it failed (CONN_ERROR).

        When a bound socket closes, iscsi_tcp queues its own clean-up work,
        which releases the socket as STOP_CONN does.  Linux 6.1 does not
        serialise the two: a close that lands during STOP_CONN (the target
        hanging up after a Login reject) ran both at once and oopsed in
        ``iscsi_sw_tcp_release_conn``.  Shutting the socket down first and
        waiting for the kernel's CONN_ERROR means its clean-up has been queued
        (once per connection) before STOP_CONN, which then waits for it.
        """
        assert k.sock is not None and k.sid is not None and k.cid is not None
        with contextlib.suppress(OSError):
            k.sock.shutdown(socket.SHUT_RDWR)
        match = nl.event_for(k.sid, k.cid, (nl.Ev.K_CONN_ERROR,))
        t0 = time.monotonic()
        try:
            event = k.link.wait_event(match, deadline=t0 + QUIESCE_TIMEOUT)
        except TimeoutError:
            self.log(f"native: no CONN_ERROR within {QUIESCE_TIMEOUT:g} s; tearing down anyway")
            return
        except OSError as exc:
            self.log(f"native: waiting for CONN_ERROR failed: {describe(exc)}")
            return
        code = event.conn_error()
        took = time.monotonic() - t0
        self.log(f"native: the kernel closed the connection ({nl.conn_error_name(code)}) in {took:.2f} s")
        k.conn_error = True


# ---------------------------------------------------------------- steps shared with the keeper


def bind(link: nl.IscsiNetlink, sid: int, cid: int, sock: socket.socket) -> None:
    """BIND_CONN of ``sock``: the kernel looks the descriptor up in this process."""
    bound = link.call(nl.bind_conn(link.handle, sid, cid, sock.fileno()))
    if bound.retcode() != 0:
        raise nl.NetlinkError(nl.Ev.BIND_CONN, abs(bound.retcode()))


def start(link: nl.IscsiNetlink, sid: int, cid: int) -> None:
    """START_CONN: the SCSI targets unblock and queued I/O runs."""
    started = link.call(nl.start_conn(link.handle, sid, cid))
    if started.retcode() != 0:
        raise nl.NetlinkError(nl.Ev.START_CONN, abs(started.retcode()))


def set_params(
    link: nl.IscsiNetlink, sid: int, cid: int, params: list[tuple[nl.Param, str]], log: Callable[[str], None]
) -> None:
    """SET_PARAM of each; a parameter the kernel does not know (ENOSYS) is logged and skipped."""
    for param, value in params:
        try:
            link.call(nl.set_param(link.handle, sid, cid, param, value))
        except nl.NetlinkError as exc:
            if exc.errno == errno.ENOSYS:  # older kernels lack some parameters
                log(f"native: kernel ignores {param.name.lower()}")
                continue
            raise nl.NetlinkError(
                nl.Ev.SET_PARAM,
                exc.errno,
                f"the kernel refused {nl.shown(param, value)}: {os.strerror(exc.errno)}",
            ) from None


def send_pdu(link: nl.IscsiNetlink, sid: int, cid: int, wire: bytes, log: Callable[[str], None]) -> None:
    """SEND_PDU, again while the kernel still holds the previous login task (EPERM)."""
    until = time.monotonic() + SEND_RETRY
    refused = 0
    while True:
        code = link.call(nl.send_pdu(link.handle, sid, cid, wire)).retcode()
        if code == 0:
            if refused:
                log(f"native: SEND_PDU taken after {refused} refusal(s) (login task busy)")
            return
        if code != -errno.EPERM or time.monotonic() >= until:
            raise nl.NetlinkError(nl.Ev.SEND_PDU, abs(code))
        refused += 1
        time.sleep(SEND_RETRY_STEP)


def kernel_login(
    link: nl.IscsiNetlink,
    sid: int,
    cid: int,
    settings: LoginSettings,
    *,
    where: str,
    budget: float,
    log: Callable[[str], None],
    sock: socket.socket | None = None,
) -> IscsiLogin:
    """The login PDUs through SEND_PDU, the answers as RECV_PDU events (``budget``: seconds left).

    Raises :class:`ConnectionLost` when the kernel reports the connection failed meanwhile,
    or when ``sock`` (the bound connection) was closed by the target with no answer.
    """
    machine = Login(settings, itt=0)
    request: Pdu | None = machine.start()
    wanted = nl.event_for(sid, cid, (nl.Ev.K_RECV_PDU, nl.Ev.K_CONN_ERROR))
    while request is not None:
        send_pdu(link, sid, cid, encode(request), log)
        until = time.monotonic() + min(PDU_TIMEOUT, max(0.5, budget))
        event = _answer(link, wanted, until, sock, where)
        if event.type == nl.Ev.K_CONN_ERROR:
            raise ConnectionLost(event.conn_error())
        request = machine.receive(response_pdu(event.payload, machine.itt))
    assert machine.result is not None
    return machine.result


WATCH = 0.25  # seconds between looks at the login connection while its answer is awaited
CLOSE_GRACE = 0.5  # seconds for an answer the target sent just before it closed


def _answer(
    link: nl.IscsiNetlink,
    wanted: Callable[[nl.Message], bool],
    until: float,
    sock: socket.socket | None,
    where: str,
) -> nl.Message:
    """The kernel's RECV_PDU or CONN_ERROR for the login, by ``until``.

    The kernel reports no CONN_ERROR for a connection that fails while its session is
    already FAILED (libiscsi's ``iscsi_conn_failure`` returns early): the case of every
    relogin.  So the connection itself is watched too: closed by the target with no
    answer, the attempt ends now, as :class:`ConnectionLost`, not at the deadline.
    """
    while True:
        step = until if sock is None else min(until, time.monotonic() + WATCH)
        try:
            return link.wait_event(wanted, deadline=step)
        except TimeoutError:
            pass
        if sock is not None and peer_closed(sock):
            try:
                return link.wait_event(wanted, deadline=time.monotonic() + CLOSE_GRACE)
            except TimeoutError:
                raise ConnectionLost(nl.ConnErr.TCP_CONN_CLOSE) from None
        if time.monotonic() >= until:
            raise TimeoutError(f"no Login Response from {where}")


def peer_closed(sock: socket.socket) -> bool:
    """True once the other end has closed (or reset) ``sock``; never waits."""
    poller = select.poll()
    try:
        poller.register(sock.fileno(), select.POLLRDHUP)
    except (OSError, ValueError):  # closed on our side meanwhile
        return True
    return any(mask & (select.POLLRDHUP | select.POLLHUP | select.POLLERR) for _fd, mask in poller.poll(0))


def _moved(target: Target, moved: LoginRedirect) -> Target:
    return replace(target, address=moved.address, port=moved.port)


def connect_tcp(address: str, port: int, timeout: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout)
        sock.connect((address, port))
    except TimeoutError:
        sock.close()
        raise TcpFailed(f"no answer from {address}:{port} within {timeout:g} s", errno.ETIMEDOUT) from None
    except OSError as exc:
        sock.close()
        raise TcpFailed(f"cannot connect to {address}:{port}: {exc.strerror or exc}", exc.errno) from None
    return sock
