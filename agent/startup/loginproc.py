# ruff: noqa: PLC0415  (the worker imports the login side after the fork, PID 1 never does)
"""PID 1's login worker: the native backend's login phase in a child process of its own.

The login side of the agent (the project's initiator, NETLINK_ISCSI, CHAP, the
backend) takes a slow guest about a quarter of a second to import, and PID 1
would import it only when its network is up, right before the login.  PID 1
forks this worker at start-up instead, next to the network worker and before
any thread starts; the worker imports the login side on the other CPU while PID 1
reads its configuration and brings the network up, then waits for the login
request.  PID 1 sends it when the network is up and the login's modules are
loaded; the worker logs in exactly as the in-process phase does
(:func:`iscsiboot.agent.phases.login.login_all` with
:class:`iscsiboot.agent.backends.kernel.NativeBackend`), answers with each
target's result and the kernel sessions it made, and exits.  The kernel
keeps the sessions (each holds its connection's socket); the keeper takes
them over as it does after an in-process login.

Only for the native backend on kernel iSCSI (``iscsistart`` logs in by itself,
the NBD transport's daemon too), and not with ``iscsiboot.worker=no``.
Messages are JSON lines over pipes.  PID 1 to the worker::

    {"targets": [...], "initiator": i, "firmware": b, "seconds": s, "recovery_timeout": r, "ping": p}

(the targets with their CHAP secrets: the pipe is between PID 1 and its child); end of
file instead ends the worker.  The worker to PID 1::

    {"say": "line"}     a progress line of the login phase (a retry)
    {"debug": "line"}   the backend's debugging line
    {"results": [{"cause": c, "evidence": e, "attempts": n}, ...], "kept": [...], ...}
    {"error": {"what": ..., "cause": ..., "evidence": ..., "fix": ..., "retryable": b}, ...}

(both with ``"peak_rss_kib"`` and ``"marks"``, as the network worker's answers).

If the worker ends without an answer, PID 1 logs in itself (:class:`WorkerGone`).
"""

from __future__ import annotations

import os

from iscsiboot.agent.startup.netproc import GRACE, REAP, Lines, WorkerGone, _finish, _fork, encode

TYPE_CHECKING = False  # no typing at run time (see init)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

    from iscsiboot.agent.backends.result import LoginResult
    from iscsiboot.agent.deadline import Deadline
    from iscsiboot.agent.keeper.config import KeptSession
    from iscsiboot.model import Target

BUDGET = 600.0  # seconds the worker waits for its request (the phases before the login end sooner)


class LoginWorker:
    """PID 1's handle on the login worker."""

    def __init__(self, pid: int, to_worker: int, from_worker: int) -> None:
        self.pid = pid
        self.to_worker: int | None = to_worker
        self.lines = Lines(from_worker)
        self.marks: list[tuple[str, float]] = []
        self.peak_rss_kib: int | None = None
        self.status: int | None = None  # the worker's exit status once reaped

    @classmethod
    def start(cls, *, inherited: Sequence[int] = (), budget: float = BUDGET) -> LoginWorker:
        """Fork the worker (before any thread starts); ``inherited``: PID 1's descriptors it closes.

        OSError when it cannot be forked.
        """
        down_r, down_w = os.pipe()  # PID 1 -> worker
        up_r, up_w = os.pipe()  # worker -> PID 1
        close = (down_w, up_r, *(fd for fd in inherited if fd >= 0))
        try:
            pid = _fork(lambda: _work(down_r, up_w, budget=budget), close=close)
        except OSError:
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            raise
        os.close(down_r)
        os.close(up_w)
        return cls(pid, down_w, up_r)

    @property
    def running(self) -> bool:
        """True while the worker is there to log in."""
        return self.pid > 0 and self.status is None and self.to_worker is not None

    def login(
        self,
        targets: Sequence[Target],
        initiator: str | None,
        deadline: Deadline,
        *,
        firmware: bool,
        recovery_timeout: int,
        ping: int,
        say: Callable[[str], None],
        debug: Callable[[str], None],
        while_waiting: Callable[[], None] = lambda: None,
    ) -> tuple[list[tuple[Target | None, LoginResult]], list[KeptSession]]:
        """The login phase, run by the worker: each target's result and the kernel sessions.

        ``while_waiting`` runs once the request is sent (PID 1's own work meanwhile).
        PhaseError as the in-process phase raises it; WorkerGone when the worker ended
        without an answer (PID 1 then logs in itself).
        """
        from iscsiboot.agent.errors import PhaseError
        from iscsiboot.model import target_to_dict

        wanted: list[Target | None] = list(targets) if targets or not firmware else [None]
        request = {
            "targets": [target_to_dict(t, show_secrets=True) for t in targets],
            "initiator": initiator,
            "firmware": firmware,
            "seconds": deadline.remaining(),
            "recovery_timeout": recovery_timeout,
            "ping": ping,
        }
        try:
            self._send(request)
            while_waiting()
            while True:
                message = self.lines.next(deadline.remaining() + GRACE)
                if message is None:
                    if self.lines.eof:
                        raise WorkerGone(f"it ended without an answer ({self._reap_status()})")
                    raise PhaseError(
                        "login",
                        f"the login worker did not answer within {deadline.seconds:.0f} s",
                        cause="timeout",
                        fix="raise iscsiboot.timeout.login= or boot with iscsiboot.debug",
                    )
                if "say" in message:
                    say(str(message["say"]))
                elif "debug" in message:
                    debug(str(message["debug"]))
                elif "results" in message:
                    self._answered(message)
                    return self._results(wanted, message)
                elif "error" in message:
                    self._answered(message)
                    err = dict(message["error"])
                    raise PhaseError(
                        "login",
                        str(err.get("what") or "the login failed"),
                        cause=str(err.get("cause") or "other"),
                        evidence=err.get("evidence"),
                        fix=err.get("fix"),
                        retryable=bool(err.get("retryable")),
                    )
                elif "garbled" in message:
                    debug(f"login worker: garbled message {message['garbled']!r}")
        finally:
            self.stop()

    @staticmethod
    def _results(
        wanted: list[Target | None], message: dict[str, Any]
    ) -> tuple[list[tuple[Target | None, LoginResult]], list[KeptSession]]:
        from iscsiboot.agent.backends.result import Cause, LoginResult
        from iscsiboot.agent.keeper.config import KeptSession

        results = [
            LoginResult(Cause(str(r["cause"])), str(r.get("evidence") or ""), int(r.get("attempts") or 1))
            for r in message.get("results", [])
        ]
        if len(results) != len(wanted):
            raise WorkerGone(f"it answered {len(results)} results for {len(wanted)} targets")
        kept = [KeptSession.from_dict(k) for k in message.get("kept", [])]
        return list(zip(wanted, results, strict=True)), kept

    def _answered(self, message: dict[str, Any]) -> None:
        self.peak_rss_kib = message.get("peak_rss_kib")
        self.marks.extend((str(what), float(at)) for what, at in message.get("marks", []))

    def _send(self, message: dict[str, Any]) -> None:
        if self.to_worker is None:
            raise WorkerGone("its pipe is closed")
        try:
            os.write(self.to_worker, encode(message))
        except OSError as exc:  # EPIPE: the worker is gone
            raise WorkerGone(f"it cannot be reached ({exc.strerror})") from None

    def timeline(self) -> str:
        from iscsiboot.agent.startup.early import offsets

        return offsets(self.marks) if self.marks else "no report from the login worker"

    def stop(self) -> None:
        """Close the pipes and reap the worker (killed if it does not exit in time)."""
        if self.to_worker is not None:
            os.close(self.to_worker)  # end of file: a waiting worker exits
            self.to_worker = None
        if self.status is None and self.pid > 0:
            self.status = _finish(self.pid, REAP)
        if self.lines.fd >= 0:
            os.close(self.lines.fd)
            self.lines.fd = -1

    def _reap_status(self) -> str:
        if self.status is None and self.pid > 0:
            self.status = _finish(self.pid, REAP)
        status = self.status
        if status is None or status < 0:
            return "already reaped"
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"


def _work(rfd: int, wfd: int, *, budget: float) -> None:
    """The worker: imports the login side, then logs in as PID 1's request says."""
    from iscsiboot.agent.startup.early import boottime, peak_rss_kib

    def send(message: dict[str, Any]) -> None:
        os.write(wfd, encode(message))

    marks = [("login worker started", boottime())]
    from iscsiboot.agent.startup import codecache

    codecache.install()  # PID 1's table, inherited when it was installed before the fork
    from iscsiboot.agent.backends.kernel import NativeBackend
    from iscsiboot.agent.deadline import Deadline
    from iscsiboot.agent.errors import PhaseError
    from iscsiboot.agent.phases.login import login_all
    from iscsiboot.model import from_dict

    marks.append(("login imported", boottime()))
    request = Lines(rfd).next(budget)
    if request is None or "targets" not in request:
        return  # the run stopped before the login phase, or logs in itself
    marks.append(("request received", boottime()))
    try:
        targets = from_dict({"targets": list(request["targets"])}).targets if request["targets"] else ()
        backend = NativeBackend(
            lambda text: send({"debug": text}),
            recovery_timeout=int(request.get("recovery_timeout") or 0),
            ping=int(request.get("ping") or 0),
        )
        done = login_all(
            backend,
            targets,
            request.get("initiator"),
            Deadline(float(request.get("seconds") or 0.0)),
            firmware=bool(request.get("firmware")),
            say=lambda text: send({"say": text}),
        )
    except PhaseError as exc:
        marks.append(("login failed", boottime()))
        error = {
            "what": exc.what,
            "cause": exc.cause,
            "evidence": exc.evidence,
            "fix": exc.fix,
            "retryable": exc.retryable,
        }
        send({"error": error, "peak_rss_kib": peak_rss_kib(), "marks": marks})
        return
    except Exception as exc:
        marks.append(("login failed", boottime()))
        error = {
            "what": f"internal error {type(exc).__name__}: {exc}",
            "cause": "internal",
            "evidence": None,
            "fix": "report this with the output of a run with debugging",
            "retryable": False,
        }
        send({"error": error, "peak_rss_kib": peak_rss_kib(), "marks": marks})
        return
    marks.append(("logged in", boottime()))
    results = [{"cause": r.cause.value, "evidence": r.evidence, "attempts": r.attempts} for _t, r in done]
    kept = [k.to_dict() for k in backend.kept]
    send({"results": results, "kept": kept, "peak_rss_kib": peak_rss_kib(), "marks": marks})
