"""The keeper's work: read the configuration, open NETLINK_ISCSI, say ready, keep the sessions.

Imported by :mod:`.daemon` after the hardening; imports up front everything the
keeper will ever need.  One status line goes back to the agent (``ready PID
RSS_KIB`` or ``failed TEXT``); after it the keeper only logs (to kmsg).
SIGTERM and SIGINT are ignored: the shutdown must not end the root's keeper.
SIGUSR1, the last step of a clean power-off, logs the sessions out.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import astuple
from pathlib import Path

import iscsiboot.iscsi.text  # noqa: F401  (the login's key tables, before the switch)
from iscsiboot.agent.daemons import Log, parse_pipes, read_all, resident_kib
from iscsiboot.agent.keeper.config import MAX_CONFIG, KeeperConfig
from iscsiboot.agent.keeper.recovery import Keeper
from iscsiboot.errors import IscsibootError
from iscsiboot.iscsi import netlink as nl


def tell(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (line + "\n").encode())
    with contextlib.suppress(OSError):
        os.close(fd)


def main(argv: list[str], log: Log, *, sysfs: Path = Path("/sys")) -> int:
    for sig in (signal.SIGHUP, signal.SIGPIPE, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    try:
        config_fd, status_fd = astuple(parse_pipes(argv))
    except IscsibootError as exc:
        log(f"cannot start: {exc.what}")
        return 2
    try:
        raw = read_all(config_fd, MAX_CONFIG)
        if not raw:  # the agent closed the pipe: the boot ended before its handoff
            log("not needed: the agent handed over no session")
            tell(status_fd, "failed no configuration")
            return 0
        config = KeeperConfig.from_json(raw)
        handle = nl.read_transport_handle(sysfs / "class" / "iscsi_transport" / "tcp" / "handle")
        link = nl.IscsiNetlink(handle)
    except (IscsibootError, OSError) as exc:
        text = exc.what if isinstance(exc, IscsibootError) else str(exc)
        log.error(f"cannot start: {text}")
        tell(status_fd, f"failed {text}")
        return 2
    keeper = Keeper(config, link, log, sysfs=sysfs)
    signal.signal(signal.SIGUSR1, lambda _signum, _frame: keeper.stop())
    kib = resident_kib() or 0
    log(f"ready; {kib / 1024:.1f} MiB resident")
    tell(status_fd, f"ready {os.getpid()} {kib}")
    try:
        keeper.serve()
    except Exception as exc:  # said in the log; nothing else would see it
        log.error(f"internal error: {type(exc).__name__}: {exc}")
        return 70
    log("stopped after the sessions' logout")
    return 0
