"""Log a failed kernel session in again, as iscsid does, and log it out at the power-off.

On ``ISCSI_KEVENT_CONN_ERROR`` for one of its sessions (or a session found
``FAILED`` in sysfs: an event missed, or one from before the keeper ran) the
keeper recovers it:

1. ``STOP_CONN`` with ``STOP_CONN_RECOVER``: the kernel keeps the session and
   its queued I/O, and clears the connection's clean-up state (without it
   BIND_CONN, START_CONN and SEND_PDU fail with ENOTCONN);
2. a new TCP connection, retried with a short backoff (connecting is cheap,
   and the target may be back any moment), the session ids unchanged;
3. ``BIND_CONN`` from this process, which owns the socket; the RECV_PDU and
   CONN_ERROR events of the session that came before it belong to earlier
   connections and are dropped (a late answer or error of a failed attempt
   would otherwise be taken for this connection's);
4. every session and connection parameter again (the same list as the first
   login: target, portal, recovery timeout, CHAP, timeouts, NOP-Out pings);
5. the login through SEND_PDU/RECV_PDU with the same ISID and TSIH 0, so the
   target reinstates the session;
6. the negotiated parameters again (the stop cleared the digests, and the
   target may negotiate differently), then ``START_CONN``: the queued I/O runs.

A failed attempt stops the connection for recovery again, which releases its
socket.  A login refused for authentication is said at error level and
retried at a pace that slows from a second to a minute: a target that is
restoring its configuration (an account set before its mutual one) refuses
for a moment, and wrong credentials are not tried over and over.  When the
kernel's recovery timeout runs out first (the session's sysfs state ``FREE``),
the keeper names the volumes that now fail, once, and keeps trying.

:meth:`Keeper.stop` (SIGUSR1, the last step of a clean power-off) makes
:meth:`Keeper.serve` log every session out (a Logout PDU through the kernel,
then ``STOP_CONN`` with ``STOP_CONN_TERM``) and return.
"""

from __future__ import annotations

import os
import random
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path

from iscsiboot.agent.backends.causes import cause_of_login
from iscsiboot.agent.backends.kernel import (
    bind,
    connect_tcp,
    describe,
    kernel_login,
    send_pdu,
    set_params,
    start,
)
from iscsiboot.agent.backends.result import SLOW_RELOGIN
from iscsiboot.agent.keeper.config import KeeperConfig, KeptSession
from iscsiboot.agent.plan import refused_backoff, relogin_backoff
from iscsiboot.iscsi import netlink as nl
from iscsiboot.iscsi.login import LoginSettings
from iscsiboot.iscsi.pdu import Op, Pdu, encode, make_bhs

CHECK = 1.0  # seconds between looks at the sessions' sysfs state while all is well
CONNECT_TIMEOUT = 2.0
LOGIN_TIMEOUT = 10.0
LOGOUT_WAIT = 3.0
SAY_AGAIN = 30  # the same failure is said again every this many attempts

Connect = Callable[[str, int, float], socket.socket]
Say = Callable[[str, int], None]


def logout_pdu(cid: int) -> bytes:
    """A Logout Request (reason 0: close the session); the kernel fills ITT, CmdSN and ExpStatSN."""
    bhs = make_bhs(Op.LOGOUT_REQUEST, immediate=True, flags=0x80)
    struct.pack_into(">H", bhs, 20, cid)
    return encode(Pdu(bytes(bhs)))


def volumes_text(config: KeeperConfig) -> str:
    if not config.volumes:
        return "its disks"
    return " and ".join(f"{role} ({device})" for role, device in config.volumes)


class Keeper:
    """The keeper's loop over one NETLINK_ISCSI socket (a fake kernel in unit tests)."""

    def __init__(
        self,
        config: KeeperConfig,
        link: nl.IscsiNetlink,
        say: Say,
        *,
        sysfs: Path = Path("/sys"),
        connect: Connect = connect_tcp,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.link = link
        self.say = say
        # sysfs by a descriptor opened now: after switch_root the keeper's own root (the old
        # initramfs) has an empty /sys, while the descriptor still reaches the moved mount
        self.sysfs = os.open(sysfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.connect = connect
        self.clock = clock
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.stopping = False
        self.gave_up: set[int] = set()  # sessions whose recovery timeout ran out (said once)
        self.recoveries: list[float] = []  # seconds each recovery took

    # ------------------------------------------------------------ state

    def stop(self) -> None:
        """Ask :meth:`serve` to log out and return (safe from a signal handler)."""
        self.stopping = True

    def state(self, s: KeptSession) -> str:
        try:
            fd = os.open(f"class/iscsi_session/session{s.sid}/state", os.O_RDONLY, dir_fd=self.sysfs)
        except OSError:
            return "missing"
        try:
            return os.read(fd, 64).decode("ascii", "replace").strip()
        except OSError:
            return "missing"
        finally:
            os.close(fd)

    def _log(self, text: str, level: int = 6) -> None:
        self.say(text, level)

    def _wait(self, seconds: float) -> None:
        """Sleep in short steps, so that a power-off is not kept waiting."""
        until = self.clock() + seconds
        while not self.stopping and self.clock() < until:
            self.sleep(min(0.1, until - self.clock()))

    # ------------------------------------------------------------ the loop

    def serve(self) -> None:
        ours = {(s.sid, s.cid): s for s in self.config.sessions}
        for s in self.config.sessions:
            timeout = "never" if self.config.recovery_timeout < 0 else f"{self.config.recovery_timeout} s"
            self._log(
                f"keeping session{s.sid} to {s.target.name} at {s.target.address}:{s.target.port} "
                f"(ISID {s.isid.hex()}, recovery timeout {timeout}, NOP-Out every {self.config.ping} s)"
            )

        def match(msg: nl.Message) -> bool:
            return msg.type == nl.Ev.K_CONN_ERROR and msg.ids() in ours

        while not self.stopping:
            for s in self.config.sessions:
                if not self.stopping and self.state(s) in ("FAILED", "FREE"):
                    self.recover(s, "found failed")
            try:
                event = self.link.wait_event(match, deadline=self.clock() + CHECK)
            except TimeoutError:
                continue
            except InterruptedError:
                continue
            code = event.conn_error()
            self.recover(ours[event.ids()], nl.conn_error_name(code))
        for s in self.config.sessions:
            self.logout(s)

    def recover(self, s: KeptSession, why: str) -> bool:
        """Log ``s`` in again; False when asked to stop first."""
        t0 = self.clock()
        where = f"{s.target.address}:{s.target.port}"
        self._log(f"session{s.sid}: connection lost ({why}); logging in again to {where}", 4)
        self._stop_conn(s, nl.STOP_CONN_RECOVER)
        delays = relogin_backoff(self.rng)
        refused = refused_backoff(self.rng)
        attempts = 0
        said = ""
        while not self.stopping:
            attempts += 1
            try:
                self.attempt(s)
            except Exception as exc:  # every failure is retried; the keeper must not die
                text = describe(exc)
                auth = cause_of_login(exc) in SLOW_RELOGIN
                if text != said or attempts % SAY_AGAIN == 0:
                    self._log(f"session{s.sid}: attempt {attempts} failed: {text}", 3 if auth else 6)
                    said = text
                self._stop_conn(s, nl.STOP_CONN_RECOVER)
                self._check_timeout(s)
                if auth:
                    delay = next(refused)
                    self._log(
                        f"session{s.sid}: the target refused the credentials; next try in {delay:.1f} s", 3
                    )
                else:
                    delay = next(delays)
                self._wait(delay)
                continue
            took = self.clock() - t0
            self.recoveries.append(took)
            back = " (the disks failed meanwhile: remount them or reboot)" if s.sid in self.gave_up else ""
            self.gave_up.discard(s.sid)
            self._log(
                f"session{s.sid}: logged in again after {took:.1f} s, attempt {attempts}; I/O resumes{back}"
            )
            return True
        return False

    def attempt(self, s: KeptSession) -> None:
        """One reconnection: TCP, BIND_CONN, parameters, login, negotiated parameters, START_CONN."""
        link, sid, cid, target = self.link, s.sid, s.cid, s.target
        sock = self.connect(target.address, target.port, CONNECT_TIMEOUT)
        try:
            bind(link, sid, cid, sock)
            self._drop_stale(s)
            params = nl.session_params(
                target, s.initiator, recovery_timeout=self.config.recovery_timeout, ping=self.config.ping
            )
            set_params(link, sid, cid, params, self._log)
            settings = LoginSettings(
                initiator=s.initiator,
                target=target.name,
                chap=target.chap,
                reverse_chap=target.reverse_chap,
                isid=s.isid,
            )
            where = f"{target.address}:{target.port}"
            result = kernel_login(
                link, sid, cid, settings, where=where, budget=LOGIN_TIMEOUT, log=self._log, sock=sock
            )
            negotiated = nl.negotiated_params(result.params, result.exp_stat_sn, tpgt=target.group)
            set_params(link, sid, cid, negotiated, self._log)
            start(link, sid, cid)
        finally:
            sock.close()  # after BIND_CONN the kernel holds its own reference

    def _drop_stale(self, s: KeptSession) -> None:
        """Forget the RECV_PDU and CONN_ERROR events of ``s`` read so far: those of earlier connections.

        Called once BIND_CONN has answered: every event the kernel sent before that
        answer was read with it, and the connections before this one were released
        by their STOP_CONN, so nothing of theirs comes later.
        """
        stale = nl.event_for(s.sid, s.cid, (nl.Ev.K_RECV_PDU, nl.Ev.K_CONN_ERROR))
        self.link.events = [m for m in self.link.events if not stale(m)]

    def _stop_conn(self, s: KeptSession, flag: int) -> None:
        try:
            self.link.call(nl.stop_conn(self.link.handle, s.sid, s.cid, flag), timeout=5.0)
        except (nl.NetlinkError, OSError, TimeoutError) as exc:
            self._log(f"session{s.sid}: STOP_CONN refused: {describe(exc)}")

    def _check_timeout(self, s: KeptSession) -> None:
        """Say once that the kernel's recovery timeout ran out, naming what now fails."""
        if s.sid in self.gave_up or self.state(s) != "FREE":
            return
        self.gave_up.add(s.sid)
        self._log(
            f"session{s.sid}: {s.target.name} stayed away past the recovery timeout "
            f"({self.config.recovery_timeout} s): the kernel fails every I/O to {volumes_text(self.config)}; "
            "still trying to log in",
            3,
        )

    # ------------------------------------------------------------ the power-off

    def logout(self, s: KeptSession) -> None:
        """Log ``s`` out through the kernel and end its connection (the last step of a power-off)."""
        if self.state(s) != "LOGGED_IN":
            self._log(f"session{s.sid}: not logged in at the power-off ({self.state(s)})")
            self._stop_conn(s, nl.STOP_CONN_TERM)
            return
        try:
            send_pdu(self.link, s.sid, s.cid, logout_pdu(s.cid), self._log)
            kinds = (nl.Ev.K_RECV_PDU, nl.Ev.K_CONN_ERROR)
            event = self.link.wait_event(
                nl.event_for(s.sid, s.cid, kinds), deadline=self.clock() + LOGOUT_WAIT
            )
            answered = event.type == nl.Ev.K_RECV_PDU
            self._log(f"session{s.sid}: logged out" if answered else f"session{s.sid}: the target closed")
        except (nl.NetlinkError, OSError, TimeoutError) as exc:
            self._log(f"session{s.sid}: logout: {describe(exc)}")
        self._stop_conn(s, nl.STOP_CONN_TERM)
