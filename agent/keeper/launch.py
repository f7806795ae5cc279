"""Start the keeper from the agent (before the switch) and wait for its ``ready`` line.

The agent execs it right after the login (:func:`spawn_keeper`), so that its start (the
interpreter, the hardening, the imports) overlaps the disk, label and mount phases; the
handoff gives it its configuration and waits for it to be ready (:meth:`Pending.finish`).
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import time
from dataclasses import dataclass

from iscsiboot.agent.daemons import launch
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


@dataclass
class Pending:
    """A keeper started early: it hardens itself and imports while the boot goes on, then waits
    for its configuration (:meth:`finish`), or ends when the pipe closes without one (:meth:`abandon`)."""

    process: subprocess.Popen[bytes]
    config_w: int | None
    status_r: int | None

    def finish(self, config: KeeperConfig, timeout: float = READY_TIMEOUT) -> Started:
        """Hand over ``config`` and wait for the ``ready`` line."""
        config_w, status_r, self.config_w, self.status_r = self.config_w, self.status_r, None, None
        if config_w is None or status_r is None:
            raise KeeperFailed("the keeper was already given its configuration")
        try:
            os.write(config_w, (config.to_json() + "\n").encode())  # far below a pipe's buffer
        except OSError as exc:
            os.close(status_r)
            raise KeeperFailed(f"it took no configuration: {exc.strerror or exc}") from None
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
            self._end()
            raise

    def abandon(self) -> None:
        """No handoff after all: the keeper reads no configuration and ends."""
        for fd in (self.config_w, self.status_r):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.config_w = self.status_r = None

    def _end(self) -> None:
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(2.0)


def spawn_keeper(*, log_fd: int | None = None) -> Pending:
    """Exec the keeper now; its configuration follows through :meth:`Pending.finish`."""
    started = launch(ARGV0, MODULE, log_fd=log_fd)
    return Pending(started.process, started.config_w, started.status_r)


def start_keeper(
    config: KeeperConfig, *, timeout: float = READY_TIMEOUT, log_fd: int | None = None
) -> Started:
    """Exec the keeper with its configuration; its status line says it is ready."""
    return spawn_keeper(log_fd=log_fd).finish(config, timeout)
