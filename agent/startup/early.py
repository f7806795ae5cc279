"""The kernel work PID 1 starts first, before it reads the boot configuration.

None of it depends on the configuration: the NIC drivers (matched by
modalias), the interfaces going up (so link negotiation runs while Python is
still importing the agent), and the modules every iSCSI boot needs
(the transport's base modules, :data:`~iscsiboot.agent.transport.MODULES`).  Loading a module is kernel
time (``finit_module`` releases the interpreter lock), so it overlaps with the
main thread's imports and configuration parsing.  A second thread imports
pyroute2 for the network phase.  With a network worker
(:mod:`iscsiboot.agent.startup.netproc`, PID 1's default) the NIC drivers and the
links are its start-up child's, the pyroute2 imports are the worker's, and
the thread here loads only the base modules.

Nothing here fails the boot: the phases check again and report.  The
interfaces go up with one RTM_NEWLINK message each (:func:`link_up_request`,
pure), because pyroute2 itself takes most of a second to import in a slow
guest; everything else about the network goes through pyroute2.

PID 1 imports this module before it forks the start-up child, which sets the
links up with it: the netlink socket is ``_socket``'s (``socket`` imports
``enum`` and ``selectors``), and ``threading`` is imported only by :class:`Early`.
"""

from __future__ import annotations

import _socket
import os
import struct
import time

from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.phases.modules import PRELOAD_ENV

TYPE_CHECKING = False  # no typing at run time (see init)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from iscsiboot.agent.phases.modules import Loader
    from iscsiboot.agent.startup.netproc import NetWorker

RTM_NEWLINK = 16
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
IFF_UP = 0x1
ARPHRD_ETHER = 1
PRELOAD_WAIT = 10.0  # seconds the start-up child waits for /init's NIC preload before loading beside it


def boottime() -> float:
    """Seconds since the kernel started (the clock of its log lines)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def peak_rss_kib(proc: str = "/proc") -> int | None:
    """This process's peak resident memory (VmHWM) in KiB."""
    try:
        with open(f"{proc}/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


def ethernet_links(sysfs: str = "/sys") -> list[tuple[str, int]]:
    """(name, ifindex) of the hardware Ethernet interfaces present now."""
    found: list[tuple[str, int]] = []
    base = f"{sysfs}/class/net"
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return found
    for name in names:
        try:
            with open(f"{base}/{name}/type") as handle:
                kind = int(handle.read())
            with open(f"{base}/{name}/ifindex") as handle:
                index = int(handle.read())
        except (OSError, ValueError):
            continue
        if kind == ARPHRD_ETHER and os.path.exists(f"{base}/{name}/device"):
            found.append((name, index))
    return found


def link_up_request(index: int, seq: int) -> bytes:
    """RTM_NEWLINK setting IFF_UP on interface ``index`` (nlmsghdr + ifinfomsg)."""
    body = struct.pack("=BxHiII", _socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    return struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def ack_errors(datagram: bytes) -> dict[int, int]:
    """sequence number -> errno (0 for success) of the NLMSG_ERROR messages in ``datagram``."""
    out: dict[int, int] = {}
    offset = 0
    while offset + 16 <= len(datagram):
        length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", datagram, offset)
        if length < 16:
            break
        if kind == NLMSG_ERROR and length >= 20:
            out[seq] = -struct.unpack_from("=i", datagram, offset + 16)[0]
        offset += (length + 3) & ~3
    return out


def links_up(indexes: Sequence[int], timeout: float = 2.0) -> dict[int, int]:
    """Set the interfaces up; ifindex -> errno (0: done)."""
    result: dict[int, int] = {}
    if not indexes:
        return result
    sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0)  # NETLINK_ROUTE
    try:
        sock.settimeout(timeout)
        for seq, index in enumerate(indexes, 1):
            sock.send(link_up_request(index, seq))
        by_seq = dict(enumerate(indexes, 1))
        while len(result) < len(indexes):
            try:
                answers = ack_errors(sock.recv(65536))
            except OSError:
                break
            for seq, err in answers.items():
                if seq in by_seq:
                    result[by_seq[seq]] = err
    finally:
        sock.close()
    return result


def wait_exit(pid: int, seconds: float) -> bool:
    """Wait until process ``pid`` (a sibling: not this process's child) has ended; False at the deadline.

    Through a pidfd, readable once the process has exited; without pidfd_open (Linux
    before 5.3) False at once: the caller goes on beside it.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # gone, and reaped already
    except (OSError, AttributeError):
        return False
    try:
        import select  # noqa: PLC0415  (built into the interpreter; only the start-up child needs it)

        return bool(select.select([fd], [], [], max(0.0, seconds))[0])
    finally:
        os.close(fd)


def preload_pid(environ: dict[str, str] | None = None) -> int | None:
    """The pid of ``/init``'s NIC preload job, taken out of the environment (the real init never sees it)."""
    env = os.environ if environ is None else environ
    text = env.pop(PRELOAD_ENV, "")
    return int(text) if text.isdigit() and int(text) > 1 else None


def offsets(marks: Sequence[tuple[str, float]]) -> str:
    """``what +N.NN s`` for each mark after the first, counted from the first (debugging output)."""
    if not marks:
        return ""
    t0 = marks[0][1]
    return ", ".join(f"{what} +{at - t0:.2f} s" for what, at in marks[1:])


def nics_and_links(
    loader: Loader,
    deadline: Deadline,
    sysfs: str,
    marks: list[tuple[str, float]],
    problems: list[str],
    *,
    preload: int | None = None,
) -> tuple[list[str], dict[str, int], float | None]:
    """Load the NIC drivers, then set the Ethernet interfaces up; nothing raises.

    Returns the drivers loaded, interface -> errno of setting it up (0: done)
    and when the first netlink call went out; ``marks`` and ``problems`` grow.
    ``preload``: the pid of ``/init``'s NIC preload job, waited for first (at most
    :data:`PRELOAD_WAIT` seconds): the interfaces it brought go up at once, what it
    loaded counts as loaded here, and the rest is loaded here (then its interfaces go up).
    """
    nics: list[str] = []
    links: dict[str, int] = {}
    first: float | None = None
    if preload is not None:
        ended = wait_exit(preload, min(deadline.remaining(), PRELOAD_WAIT))
        marks.append((f"/init's NIC preload {'ended' if ended else 'still running'}", boottime()))
        first = _up(sysfs, links, marks, problems, none_yet=False)
    try:
        nics = list(loader.load_nic_drivers(deadline, preloaded=preload is not None))
        marks.append((f"NIC drivers loaded ({', '.join(nics) or 'none'})", boottime()))
    except Exception as exc:  # the modules phase loads again and reports
        problems.append(f"NIC drivers: {exc}")
    later = _up(sysfs, links, marks, problems, none_yet=first is None)
    return nics, links, first or later


def _up(
    sysfs: str, links: dict[str, int], marks: list[tuple[str, float]], problems: list[str], *, none_yet: bool
) -> float | None:
    """Set up the Ethernet interfaces present and not in ``links`` yet; when the netlink step ran.

    ``none_yet``: the step counts (and is marked) even with no interface to set up.
    """
    try:
        present = [(name, index) for name, index in ethernet_links(sysfs) if name not in links]
        if not present and not none_yet:
            return None
        sent = boottime()
        done = links_up([index for _name, index in present])
        links.update({name: done.get(index, -1) for name, index in present})
        marks.append((f"links up ({', '.join(name for name, _ in present)})", boottime()))
        return sent
    except OSError as exc:
        problems.append(f"link up: {exc}")
        return None


class Early:
    """The two start-up threads: kernel work (modules, links) and the pyroute2 imports."""

    def __init__(
        self,
        loader: Loader,
        *,
        base_modules: Sequence[str] = (),
        sysfs: str = "/sys",
        imports: Callable[[], None] | None = None,
        budget: float = 30.0,
        worker: NetWorker | None = None,
        preload: int | None = None,
    ) -> None:
        import threading  # noqa: PLC0415  (after PID 1's first fork: see the module's notes)

        self.loader = loader
        self.worker = worker  # the NIC drivers and links are its start-up child's work
        self.preload = preload  # /init's NIC preload job: PID 1's child, reaped once the NICs are done
        self.base_modules = tuple(base_modules)
        self.sysfs = sysfs
        self.budget = budget
        self.nics: list[str] = []
        self.links: dict[str, int] = {}  # interface -> errno of setting it up
        self.first_netlink: float | None = None
        self.problems: list[str] = []
        self.marks: list[tuple[str, float]] = [("started", boottime())]  # for debugging output
        self.ready = threading.Event()  # the module index is read: loading starts now
        self.nics_done = threading.Event()
        self.kernel = threading.Thread(target=self._kernel, name="early-kernel", daemon=True)
        self.imports = threading.Thread(target=imports or (lambda: None), name="early-imports", daemon=True)

    def start(self) -> Early:
        self.kernel.start()
        self.imports.start()
        return self

    def _kernel(self) -> None:
        deadline = Deadline(self.budget)
        try:
            self.loader.index_now()  # with a worker: read before the fork, nothing to do
            self.marks.append(("module index read", boottime()))
        except Exception as exc:  # the modules phase reads it again and reports
            self.problems.append(f"module index: {exc}")
        finally:
            self.ready.set()
        if self.worker is None:
            try:
                self.nics, self.links, self.first_netlink = nics_and_links(
                    self.loader, deadline, self.sysfs, self.marks, self.problems, preload=self.preload
                )
            finally:
                self.nics_done.set()
        for name in self.base_modules:
            if deadline.expired():
                break
            try:
                self.loader.ensure(name)
            except Exception as exc:  # reported by the phase that needs the module
                self.problems.append(f"{name}: {exc}")
        self.marks.append(("base modules loaded", boottime()))

    def timeline(self) -> str:
        """The start-up steps as offsets from the thread's start (debugging output)."""
        parts = [offsets(self.marks)]
        if self.worker is not None:  # the start-up child's report, and the worker's if one was forked
            who = "network worker" if self.worker.pid > 0 else "start-up child"
            parts.append(f"{who}: {self.worker.timeline()}")
        return "; ".join(p for p in parts if p)

    def wait_ready(self, seconds: float) -> bool:
        """Wait until the first module load is under way (the Python part before it is done)."""
        return self.ready.wait(max(0.0, seconds))

    def wait_nics(self, seconds: float) -> bool:
        """Wait until the NIC drivers are loaded; False at the deadline."""
        if self.worker is None:
            done = self.nics_done.wait(max(0.0, seconds))
        else:
            done = bool(self.worker.wait_nics(seconds))
            self.nics, self.links = list(self.worker.nics), dict(self.worker.links)
            self.first_netlink = self.worker.first_netlink
            self.problems.extend(p for p in self.worker.problems if p not in self.problems)
        if done and self.preload is not None:  # ended by now (else it stays a zombie until switch_root)
            try:
                if os.waitpid(self.preload, os.WNOHANG)[0]:
                    self.preload = None
            except ChildProcessError:
                self.preload = None
        return done
