"""Start the keeper from the agent (before the switch) and wait for its ``ready`` line."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from dataclasses import dataclass

from iscsiboot.agent.daemons import daemon_command
from iscsiboot.agent.keeper.config import KeeperConfig

ARGV0 = "@iscsiboot-keeper"  # '@': a root storage daemon that systemd leaves alive
MODULE = "iscsiboot.agent.keeper.daemon"
READY_TIMEOUT = 20.0  # seconds for the keeper to harden, import and open NETLINK_ISCSI (TCG is slow)


@dataclass(frozen=True)
class Started:
    pid: int
    resident_kib: int


class KeeperFailed(Exception):
    pass


def parse_status(line: str) -> Started:
    """``ready PID KIB`` -> :class:`Started`; anything else raises :class:`KeeperFailed` (pure)."""
    words = line.split()
    if len(words) == 3 and words[0] == "ready" and words[1].isdigit() and words[2].isdigit():
        return Started(int(words[1]), int(words[2]))
    reason = line.removeprefix("failed ").strip() or "it ended without a word"
    raise KeeperFailed(reason)


def start_keeper(
    config: KeeperConfig, *, timeout: float = READY_TIMEOUT, log_fd: int | None = None
) -> Started:
    """Exec the keeper with its configuration on a pipe; its status line says it is ready."""
    config_r, config_w = os.pipe()
    status_r, status_w = os.pipe()
    program, argv = daemon_command(ARGV0, MODULE)
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
    try:
        os.write(config_w, (config.to_json() + "\n").encode())
    finally:
        os.close(config_w)
    data = b""
    until = time.monotonic() + timeout
    try:
        while b"\n" not in data:
            left = until - time.monotonic()
            if left <= 0 or not select.select([status_r], [], [], left)[0]:
                break
            chunk = os.read(status_r, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(status_r)
    try:
        return parse_status(data.decode("utf-8", "replace").partition("\n")[0])
    except KeeperFailed:
        with contextlib.suppress(OSError):
            process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(2.0)
        raise
