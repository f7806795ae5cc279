# ruff: noqa: PLC0415, SIM105  (the child imports the network phase; no json or contextlib before the fork)
"""PID 1's network worker: the network phase in a child process of its own.

CPython runs one thread at a time.  In a slow guest PID 1's imports and the
config phase take over a second of CPU, and pyroute2 with asyncio takes
nearly as long to import, so a start-up *thread* importing pyroute2 only
takes turns with PID 1.  A forked child runs on another CPU.  Before PID 1
starts any thread it forks twice:

1. the **start-up child** loads the NIC drivers (by modalias), sets the
   Ethernet links up with one RTM_NEWLINK each (so link negotiation runs
   while Python imports), reports, and exits;
2. PID 1 meanwhile imports what both processes need (dataclasses and the
   plan: ``before_worker``), so the worker inherits them instead of
   importing them a second time;
3. the **worker** imports pyroute2 and its DHCP client, waits for the
   network plan, which PID 1 sends when the config phase has made it, and
   brings the network up exactly as the in-process phase does
   (:func:`~iscsiboot.agent.phases.network.bring_up`); it answers with the
   result or the phase's error, and exits.

Both children run at nice -10: they are the boot's critical path.
Messages are JSON lines over pipes.  The start-up child to PID 1::

    {"nics": [...], "links": {...}, "first_netlink": t, "marks": [...], "problems": [...]}

The worker to PID 1::

    {"say": "line"}                 a progress line of the network phase
    {"result": {...}, "peak_rss_kib": n, "marks": [...]}
    {"error": {"what": ..., "cause": ..., "evidence": ..., "fix": ...}, "peak_rss_kib": n, "marks": [...]}

PID 1 to the worker: ``{"plan": {...}, "seconds": s, "resolv_conf": p,
"dhcp_client": c}``; end of file instead (a run that stops before the
network phase) ends the worker.

If the worker ends without an answer (it crashed, or its pipe broke), PID 1
brings the network up itself (:class:`WorkerGone`): nothing is lost but time.
Nothing here needs more than the standard library until the child runs the
phase, and PID 1 imports it before its first fork: no ``contextlib`` (it imports
``collections`` and ``functools``), ``signal``'s C module, and the start-up
child's one report written without ``json`` (:func:`encode_plain`).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C module (signal imports enum)
import os
import select
import time

from iscsiboot.agent.deadline import Deadline

TYPE_CHECKING = False  # no typing at run time (see init)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from iscsiboot.agent.phases.modules import Loader
    from iscsiboot.agent.plan import NetPlan, NetResult

GRACE = 2.0  # seconds PID 1 waits beyond the phase's deadline before it stops the worker
REAP = 1.0  # seconds a finished worker has to exit before it is killed
PRIORITY = -10  # the worker's nice value (PID 1 keeps 0)


class WorkerGone(Exception):
    """The worker ended or broke its pipe without answering."""


def encode(message: dict[str, Any]) -> bytes:
    import json  # not before the fork: the NIC drivers come first

    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


# JSON's escapes of the characters a string cannot hold as they are
_ESCAPES = {**{i: f"\\u{i:04x}" for i in range(32)}, ord('"'): '\\"', ord("\\"): "\\\\"}


def _plain(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int | float):
        finite = value - value == 0  # not inf or nan, which JSON cannot hold
        return repr(value) if finite else "null"
    if isinstance(value, str):
        return '"' + value.translate(_ESCAPES) + '"'
    if isinstance(value, list | tuple):
        return "[" + ",".join(_plain(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_plain(str(k))}:{_plain(v)}" for k, v in value.items()) + "}"
    return _plain(str(value))


def encode_plain(message: dict[str, Any]) -> bytes:
    """:func:`encode` without ``json`` (about 0.1 s of a slow guest's imports): the start-up child's report.

    Strings, numbers, None, booleans, lists and dicts, as ``json.dumps`` writes them
    (``ensure_ascii`` off: the line is UTF-8).
    """
    return _plain(message).encode() + b"\n"


class Lines:
    """JSON messages from a file descriptor, one per line, with a timeout."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""
        self.eof = False

    def next(self, seconds: float) -> dict[str, Any] | None:
        """The next message; None at end of file or when ``seconds`` pass."""
        until = time.monotonic() + max(0.0, seconds)
        while b"\n" not in self.buffer:
            if self.eof or self.fd < 0:
                return None
            left = until - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        import json

        try:
            message = json.loads(line)
        except ValueError:
            return {"garbled": line[:200].decode(errors="replace")}
        return message if isinstance(message, dict) else {"garbled": str(message)[:200]}


class NetWorker:
    """PID 1's handle on the worker process."""

    def __init__(
        self, pid: int, to_worker: int, from_worker: int, starter: int = -1, from_starter: int = -1
    ) -> None:
        self.pid = pid  # the worker; -1 until it is forked
        self.to_worker: int | None = to_worker if to_worker >= 0 else None
        self.lines = Lines(from_worker)
        self.starter = starter  # the start-up child (NIC drivers, links); -1 once reaped
        self.start_lines = Lines(from_starter)
        self.nics: list[str] = []
        self.links: dict[str, int] = {}
        self.first_netlink: float | None = None
        self.marks: list[tuple[str, float]] = []
        self.problems: list[str] = []
        self.nics_done = False
        self.peak_rss_kib: int | None = None
        self.status: int | None = None  # the worker's exit status once reaped

    # ------------------------------------------------------------- start-up
    @classmethod
    def start(
        cls,
        loader: Loader,
        *,
        dhcp: bool,
        sysfs: str = "/sys",
        budget: float = 60.0,
        before_worker: Callable[[], None] = lambda: None,
    ) -> NetWorker:
        """Fork the start-up child, run ``before_worker``, fork the worker; call before any thread starts.

        ``before_worker`` imports what PID 1 and the worker both need; what it
        raises is ignored (the phases import again and report).
        """
        handle = cls.start_up(loader, sysfs=sysfs, budget=budget)
        try:
            before_worker()
        except Exception:
            pass
        handle.start_worker(dhcp=dhcp, budget=budget)
        return handle

    @classmethod
    def start_up(
        cls, loader: Loader, *, sysfs: str = "/sys", budget: float = 60.0, preload: int | None = None
    ) -> NetWorker:
        """Fork the start-up child (NIC drivers, links); the worker is not started yet.

        ``preload``: the pid of ``/init``'s NIC preload job, which the child waits for first.
        """
        nic_r, nic_w = os.pipe()  # start-up child -> PID 1
        starter = _fork(
            lambda: _start_up(loader, nic_w, sysfs=sysfs, budget=budget, preload=preload), close=(nic_r,)
        )
        os.close(nic_w)
        return cls(-1, -1, -1, starter, nic_r)

    def start_worker(self, *, dhcp: bool, budget: float = 60.0) -> None:
        """Fork the worker (before any thread starts); OSError leaves the handle without one."""
        down_r, down_w = os.pipe()  # PID 1 -> worker
        up_r, up_w = os.pipe()  # worker -> PID 1
        try:
            pid = _fork(
                lambda: _work(down_r, up_w, dhcp=dhcp, budget=budget),
                close=(down_w, up_r, self.start_lines.fd),
            )
        except OSError:
            for fd in (down_r, down_w, up_r, up_w):
                os.close(fd)
            raise
        os.close(down_r)
        os.close(up_w)
        self.pid, self.to_worker, self.lines = pid, down_w, Lines(up_r)

    @property
    def running(self) -> bool:
        """True while a worker process is there to bring the network up."""
        return self.pid > 0 and self.status is None

    def wait_nics(self, seconds: float) -> bool:
        """Wait for the start-up child's report (NIC drivers, links); False without one."""
        if self.nics_done:
            return True
        message = self.start_lines.next(seconds)
        self._close_starter()
        if message is None or "nics" not in message:
            if message is not None:
                self.problems.append(f"network worker: unexpected message {message!r}")
            return False
        self.nics = [str(n) for n in message.get("nics", [])]
        self.links = {str(k): int(v) for k, v in dict(message.get("links", {})).items()}
        first = message.get("first_netlink")
        self.first_netlink = float(first) if first is not None else None
        self.marks = [(str(what), float(at)) for what, at in message.get("marks", [])]
        self.problems.extend(str(p) for p in message.get("problems", []))
        self.nics_done = True
        return True

    def _close_starter(self) -> None:
        """Reap the start-up child (it exits after its one report; killed if it hangs)."""
        if self.starter > 0:
            _finish(self.starter, REAP)
            self.starter = -1
        if self.start_lines.fd >= 0:
            os.close(self.start_lines.fd)
            self.start_lines.fd = -1

    def timeline(self) -> str:
        from iscsiboot.agent.startup.early import offsets

        return offsets(self.marks) if self.marks else "no report from the network worker"

    # ------------------------------------------------------------- the phase
    def bring_up(
        self,
        plan: NetPlan,
        deadline: Deadline,
        say: Callable[[str], None],
        *,
        resolv_conf: str | None = None,
        dhcp_client: str = "pyroute2",
        while_waiting: Callable[[], None] = lambda: None,
    ) -> NetResult:
        """The network phase, run by the worker; NetResult, PhaseError, or WorkerGone."""
        from iscsiboot.agent.errors import PhaseError

        try:
            self.wait_nics(deadline.remaining())
            request = {
                "plan": plan.to_dict(),
                "seconds": deadline.remaining(),
                "resolv_conf": resolv_conf,
                "dhcp_client": dhcp_client,
            }
            self._send(request)
            while_waiting()
            while True:
                message = self.lines.next(deadline.remaining() + GRACE)
                if message is None:
                    if self.lines.eof:
                        raise WorkerGone(f"it ended without an answer ({self._reap_status()})")
                    raise PhaseError(
                        "network",
                        f"the network worker did not answer within {deadline.seconds:.0f} s",
                        cause="timeout",
                        fix="raise iscsiboot.timeout.network= or boot with iscsiboot.debug",
                    )
                if "say" in message:
                    say(str(message["say"]))
                elif "result" in message:
                    self._answered(message)
                    from iscsiboot.agent.plan import NetResult

                    return NetResult.from_dict(dict(message["result"]))
                elif "error" in message:
                    self._answered(message)
                    err = dict(message["error"])
                    raise PhaseError(
                        "network",
                        str(err.get("what") or "the network did not come up"),
                        cause=str(err.get("cause") or "other"),
                        evidence=err.get("evidence"),
                        fix=err.get("fix"),
                    )
                elif "garbled" in message:
                    self.problems.append(f"network worker: garbled message {message['garbled']!r}")
        finally:
            self.stop()

    def _answered(self, message: dict[str, Any]) -> None:
        """Keep what the worker's answer says of itself: peak memory, later steps."""
        self.peak_rss_kib = message.get("peak_rss_kib")
        self.marks.extend((str(what), float(at)) for what, at in message.get("marks", []))

    def _send(self, message: dict[str, Any]) -> None:
        if self.to_worker is None:
            raise WorkerGone("its pipe is closed")
        try:
            os.write(self.to_worker, encode(message))
        except OSError as exc:  # EPIPE: the worker is gone
            raise WorkerGone(f"it cannot be reached ({exc.strerror})") from None

    # ------------------------------------------------------------- the end
    def kill(self) -> None:
        """End a worker that is not needed (a plan without DHCP) at once, then :meth:`stop`."""
        if self.status is None and self.pid > 0:
            try:
                os.kill(self.pid, _signal.SIGKILL)
            except OSError:
                pass
        self.stop()

    def stop(self) -> None:
        """Close the pipes and reap both children (killed if they do not exit in time)."""
        if self.to_worker is not None:
            os.close(self.to_worker)  # end of file: a waiting worker exits
            self.to_worker = None
        self._close_starter()
        if self.status is None and self.pid > 0:
            self.status = _finish(self.pid, REAP)
        if self.lines.fd >= 0:
            os.close(self.lines.fd)
            self.lines.fd = -1

    def _reaped(self, seconds: float) -> bool:
        """Wait at most ``seconds`` for the worker to exit; reap it."""
        if self.status is None and self.pid > 0:
            self.status = _reap(self.pid, seconds)
        return self.status is not None

    def _reap_status(self) -> str:
        status = self.status if self._reaped(REAP) else None
        if status is None:
            return "still running"
        if status < 0:
            return "already reaped"
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exit status {os.waitstatus_to_exitcode(status)}"


def _reap(pid: int, seconds: float | None) -> int | None:
    """Child ``pid``'s wait status once it exits within ``seconds`` (None: no limit); None if it runs on.

    The wait is an event: the child's pidfd turns readable when it exits.
    -1: it was reaped already.
    """
    try:
        if seconds is None:
            return os.waitpid(pid, 0)[1]
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # a kernel without pidfd (before 5.3): poll until the deadline
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return status
                time.sleep(0.01)
        else:
            try:
                select.select([fd], [], [], max(0.0, seconds))
            finally:
                os.close(fd)
        done, status = os.waitpid(pid, os.WNOHANG)
        return status if done else None
    except ChildProcessError:
        return -1


def _finish(pid: int, seconds: float) -> int:
    """Child ``pid``'s wait status: reaped if it exits within ``seconds``, else killed and reaped."""
    status = _reap(pid, seconds)
    if status is None:
        try:
            os.kill(pid, _signal.SIGKILL)
        except OSError:
            pass
        status = _reap(pid, None)
    return -1 if status is None else status


# ----------------------------------------------------------------- the children


def _fork(run: Callable[[], None], *, close: tuple[int, ...]) -> int:
    """Fork a child at nice -10 that closes ``close``, calls ``run`` and exits; its pid."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd in close:
                os.close(fd)
            _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
            try:  # the boot's critical path: first in line for a CPU
                os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
            except OSError:
                pass
            run()
            code = 0
        except BaseException:  # PID 1 sees the end of file and does the work itself
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    try:  # also from here: set when start() returns, whoever runs first
        os.setpriority(os.PRIO_PROCESS, pid, PRIORITY)
    except OSError:
        pass
    return pid


def _start_up(loader: Loader, wfd: int, *, sysfs: str, budget: float, preload: int | None = None) -> None:
    """The start-up child: NIC drivers, links up, one report."""
    from iscsiboot.agent.startup.early import boottime, nics_and_links

    marks: list[tuple[str, float]] = [("started", boottime())]
    problems: list[str] = []
    nics, links, first = nics_and_links(loader, Deadline(budget), sysfs, marks, problems, preload=preload)
    message = {"nics": nics, "links": links, "first_netlink": first, "marks": marks, "problems": problems}
    os.write(wfd, encode_plain(message))


def _work(rfd: int, wfd: int, *, dhcp: bool, budget: float) -> None:
    """The worker: imports, then the network phase for the plan PID 1 sends."""
    from iscsiboot.agent.startup.early import boottime, peak_rss_kib

    def send(message: dict[str, Any]) -> None:
        os.write(wfd, encode(message))

    later = [("worker started", boottime())]
    from iscsiboot.agent.phases.network import prefetch
    from iscsiboot.agent.startup import codecache

    codecache.install()  # PID 1's table, inherited when it was installed before the fork
    prefetch(dhcp)
    later.append(("pyroute2 imported", boottime()))
    request = Lines(rfd).next(budget)
    if request is None or "plan" not in request:
        return  # the run stopped before the network phase
    later.append(("plan received", boottime()))
    from iscsiboot.agent.errors import PhaseError
    from iscsiboot.agent.phases.network import bring_up
    from iscsiboot.agent.plan import NetPlan

    def say(text: str) -> None:
        send({"say": text})

    try:
        net = bring_up(
            NetPlan.from_dict(dict(request["plan"])),
            Deadline(float(request.get("seconds") or 0.0)),
            say,
            resolv_conf=request.get("resolv_conf"),
            dhcp_client=str(request.get("dhcp_client") or "pyroute2"),
        )
    except PhaseError as exc:
        later.append(("network failed", boottime()))
        error = {"what": exc.what, "cause": exc.cause, "evidence": exc.evidence, "fix": exc.fix}
        send({"error": error, "peak_rss_kib": peak_rss_kib(), "marks": later})
    except Exception as exc:
        later.append(("network failed", boottime()))
        error = {
            "what": f"internal error {type(exc).__name__}: {exc}",
            "cause": "internal",
            "evidence": None,
            "fix": "report this with the output of a run with debugging",
        }
        send({"error": error, "peak_rss_kib": peak_rss_kib(), "marks": later})
    else:
        later.append(("network up", boottime()))
        send({"result": net.to_dict(secrets=True), "peak_rss_kib": peak_rss_kib(), "marks": later})
