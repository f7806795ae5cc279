"""The resident NBD daemon's entry point: logging and hardening first, then everything else.

Order matters.  The log goes to /dev/kmsg, opened before anything else (the
console may be gone after switch_root; the kernel's log is always there).
Then the process makes itself hard to lose: all its memory locked
(``mlockall``, so serving the root never waits for a page of the root),
out of the OOM killer's reach, marked as an I/O flusher (``PR_SET_IO_FLUSHER``:
its own allocations do not recurse into the I/O it serves), its working
folder ``/``.  Only then are the modules imported, all of them
(:mod:`.resident`): after the switch the daemon never reads a file of the
root it serves.
"""

from __future__ import annotations

import contextlib
import os
import sys

PREFIX = "iscsiboot-nbd: "
KMSG = "/dev/kmsg"
KMSG_MAX = 900  # a kmsg record holds about 1 KiB
MCL_CURRENT = 1
MCL_FUTURE = 2
PR_SET_IO_FLUSHER = 57
INFO = 6
ERROR = 3


class Log:
    """One kmsg record per line, ``<level>iscsiboot-nbd: text``; control characters escaped."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __call__(self, text: str, level: int = INFO) -> None:
        clean = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
        record = f"<{level}>{PREFIX}{clean}"[:KMSG_MAX] + "\n"
        with contextlib.suppress(OSError):  # nowhere left to say it
            os.write(self.fd, record.encode("utf-8", "replace"))

    def error(self, text: str) -> None:
        self(text, ERROR)


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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    log = Log(log_fd(args))
    harden(log)
    try:
        from iscsiboot.agent.nbd import resident  # noqa: PLC0415  (imported after the hardening)
    except BaseException as exc:  # the log must say why the daemon could not start
        log.error(f"cannot start: {type(exc).__name__}: {exc}")
        return 70
    return resident.main(args, log)


if __name__ == "__main__":
    sys.exit(main())
