"""Root storage daemons: how they are started, log and harden themselves (one place for all).

A daemon that serves or keeps the root's storage (the NBD server, the kernel
session's keeper) outlives the agent and the switch to the new root.  It is
exec'd (never a fork of the agent: a fresh, small process) with an ``argv[0]``
that starts with ``@``, which systemd takes as a root storage daemon's mark:
neither switch_root's clean-up nor the shutdown's killing spree kills it.  Such
an ``argv[0]`` tells the interpreter nothing about where it lives, so the
command runs it without ``site`` (``-S``, as the image's ``/init`` does) and
gives it the agent's own module search path; where the agent runs with ``site``
(a development tree, an editable install), the same site folders are added,
with their ``.pth`` files.

Order matters in the daemon.  The log goes to /dev/kmsg, opened before
anything else (the console may be gone after switch_root; the kernel's log is
always there).  Then the process makes itself hard to lose: all its memory
locked (``mlockall``, so serving the root never waits for a page of the root),
out of the OOM killer's reach, marked as an I/O flusher (``PR_SET_IO_FLUSHER``:
its own allocations do not recurse into the I/O it serves), its working folder
``/``.  Only then are its modules imported, all of them: after the switch the
daemon never reads a file of the root.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass

from iscsiboot.agent import layout
from iscsiboot.errors import IscsibootError

TYPE_CHECKING = False
if TYPE_CHECKING:
    import subprocess

KMSG = "/dev/kmsg"
KMSG_MAX = 900  # a kmsg record holds about 1 KiB
MCL_CURRENT = 1
MCL_FUTURE = 2
PR_SET_IO_FLUSHER = 57
INFO = 6
WARNING = 4
ERROR = 3
PIPE_OPTIONS = ("--config-fd", "--status-fd", "--log-fd")


class Log:
    """One kmsg record per line, ``<level>prefix: text``; control characters escaped."""

    def __init__(self, fd: int, prefix: str) -> None:
        self.fd = fd
        self.prefix = prefix

    def __call__(self, text: str, level: int = INFO) -> None:
        clean = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
        record = f"<{level}>{self.prefix}{clean}"[:KMSG_MAX] + "\n"
        with contextlib.suppress(OSError):  # nowhere left to say it
            os.write(self.fd, record.encode("utf-8", "replace"))

    def error(self, text: str) -> None:
        self(text, ERROR)


@dataclass(frozen=True)
class Pipes:
    """The descriptors a daemon is started with: its configuration in, its one status line out."""

    config_fd: int
    status_fd: int


def parse_pipes(argv: list[str]) -> Pipes:
    """``--config-fd N --status-fd N`` (and ``--log-fd N``, read by :func:`log_fd`)."""
    found: dict[str, int] = {}
    words = iter(argv)
    for word in words:
        value = next(words, "")
        if word not in PIPE_OPTIONS or not (value.isascii() and value.isdigit()):
            raise IscsibootError(f"unknown option or value: {word} {value}".strip())
        found[word] = int(value)
    if "--config-fd" not in found or "--status-fd" not in found:
        raise IscsibootError("--config-fd and --status-fd are required")
    return Pipes(found["--config-fd"], found["--status-fd"])


def read_all(fd: int, limit: int) -> bytes:
    """Everything until the writer closes (at most about ``limit`` bytes); the descriptor is closed."""
    data = bytearray()
    try:
        while len(data) <= limit:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return bytes(data)


def resident_kib() -> int | None:
    """The process's resident memory (VmRSS; with mlockall, all it has); None when unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def log_fd(argv: list[str]) -> int:
    """``--log-fd N`` (tests), else /dev/kmsg, else standard error."""
    if "--log-fd" in argv:
        at = argv.index("--log-fd") + 1
        if at < len(argv) and argv[at].isascii() and argv[at].isdigit():
            return int(argv[at])
    try:
        return os.open(KMSG, os.O_WRONLY | os.O_CLOEXEC)
    except OSError:
        return 2


def harden(log: Log) -> None:
    """Lock memory, leave the OOM killer, mark the process an I/O flusher, stand in ``/``."""
    import ctypes  # noqa: PLC0415  (after the log is open: nothing comes before it)

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        log.error(f"mlockall failed: {os.strerror(ctypes.get_errno())}")
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("-1000\n")
    except OSError as exc:
        log.error(f"oom_score_adj not set: {exc.strerror or exc}")
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    if prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0:
        log.error(f"PR_SET_IO_FLUSHER failed: {os.strerror(ctypes.get_errno())}")
    os.chdir("/")


def start(argv: list[str] | None, prefix: str, resident: str) -> int:
    """A daemon's whole entry point: its log, its hardening, then ``resident`` imported and run.

    ``resident`` is the module with the daemon's work (``main(argv, log) -> int``),
    imported only after the hardening, with everything it imports.
    """
    args = sys.argv[1:] if argv is None else argv
    log = Log(log_fd(args), prefix)
    harden(log)
    from iscsiboot.agent.startup import codecache  # noqa: PLC0415  (imported first by the command)

    table = codecache.install()  # the image's precompiled dataclass code, as PID 1 uses it
    try:
        work = importlib.import_module(resident)
    except BaseException as exc:  # the log must say why the daemon could not start
        log.error(f"cannot start: {type(exc).__name__}: {exc}")
        return 70
    finally:
        if table is not None:
            codecache.uninstall()  # all its classes are made: the table's memory goes back
    return int(work.main(args, log))


def _site_dirs() -> list[str]:
    if sys.flags.no_site:
        return []
    import site  # noqa: PLC0415  (only where the agent itself runs with site)

    return [d for d in site.getsitepackages() if d in sys.path]


def daemon_command(argv0: str, module: str) -> tuple[str, list[str]]:
    """(the program to exec, its argv) that runs ``module``'s ``main()`` as ``argv0``; the caller
    appends the daemon's own options."""
    path = [entry for entry in sys.path if os.path.isabs(entry)]
    code = f"import sys\nsys.path[:] = {path!r}\n"
    dirs = _site_dirs()
    if dirs:
        code += "import site\n" + "".join(f"site.addsitedir({d!r})\n" for d in dirs)
    # dataclasses first through the code cache's module: without inspect (and ast, dis, tokenize)
    code += f"import iscsiboot.agent.startup.codecache\nfrom {module} import main\nsys.exit(main())\n"
    if sys.executable == layout.PYTHON:  # the image's interpreter: only its own loader runs it
        program, argv = layout.python_exec(argv0)
        return program, [*argv, "-c", code]
    return sys.executable, [argv0, "-S", "-c", code]


@dataclass
class Launched:
    """A daemon just exec'd: the agent's ends of its configuration and status pipes."""

    process: subprocess.Popen[bytes]
    config_w: int  # the configuration goes in here; closing it says "that was all"
    status_r: int  # its one status line comes out here


def launch(argv0: str, module: str, *, log_fd: int | None = None) -> Launched:
    """Exec ``module`` as a root storage daemon named ``argv0``, with its two pipes.

    The daemon runs in a session of its own (out of the agent's process group
    and its signals); ``log_fd`` (tests) replaces /dev/kmsg.
    """
    import subprocess  # noqa: PLC0415  (the agent's side only: the daemon itself never starts one)

    config_r, config_w = os.pipe()
    status_r, status_w = os.pipe()
    program, argv = daemon_command(argv0, module)
    argv += ["--config-fd", str(config_r), "--status-fd", str(status_w)]
    fds = [config_r, status_w]
    if log_fd is not None:
        argv += ["--log-fd", str(log_fd)]
        fds.append(log_fd)
    try:
        process = subprocess.Popen(
            argv, executable=program, pass_fds=fds, stdin=subprocess.DEVNULL, start_new_session=True
        )
    except BaseException:
        for fd in (config_r, config_w, status_r, status_w):
            os.close(fd)
        raise
    os.close(config_r)
    os.close(status_w)
    return Launched(process, config_w, status_r)
