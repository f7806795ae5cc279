"""Thin I/O: the QEMU process and a follower of its growing console file.

QEMU writes the guest's serial console to a file (CI has no standard input,
so ``-serial stdio`` is not an option).  :class:`ConsoleFollower` reads the
new complete lines of that file; :func:`follow` polls it until a caller's
predicate is met, QEMU exits or a deadline passes, with no fixed sleeps
standing in for events.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from iscsiboot.errors import EnvironmentProblem

POLL = 0.05  # seconds between looks at the console file and the process


class ConsoleFollower:
    """Return the complete lines appended to a file since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.lines: list[str] = []

    def read_new(self) -> list[str]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        new = [line.decode("utf-8", "replace").rstrip("\r") for line in complete]
        self.lines.extend(new)
        return new

    def flush(self) -> list[str]:
        """Read what is left, the unterminated last line included."""
        new = self.read_new()
        if self._partial:
            tail = self._partial.decode("utf-8", "replace").rstrip("\r")
            self._partial = b""
            self.lines.append(tail)
            new.append(tail)
        return new

    def text(self) -> str:
        return "\n".join(self.lines)


@dataclass
class Qemu:
    """A running ``qemu-system-x86_64``: its process and where its output goes."""

    argv: tuple[str, ...]
    stderr_path: Path
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    _stderr: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 (closed in stop())
        try:
            self.process = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=self._stderr,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except FileNotFoundError:
            self._stderr.close()
            raise EnvironmentProblem(
                f"program {self.argv[0]!r} not found", fix="install qemu-system-x86"
            ) from None
        self.started = time.monotonic()

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self, grace: float = 2.0) -> int | None:
        """Kill QEMU if it still runs (TERM, then KILL) and reap it."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return None if proc is None else proc.returncode

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> Qemu:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class FollowResult:
    reason: str  # "matched", "exited" or "timeout"
    returncode: int | None
    elapsed: float


def follow(
    qemu: Qemu,
    console: ConsoleFollower,
    *,
    timeout: float,
    until: Callable[[Sequence[str]], bool],
    on_line: Callable[[str], None] | None = None,
    on_tick: Callable[[float], None] | None = None,
) -> FollowResult:
    """Poll the console until ``until(all lines)`` holds, QEMU exits, or ``timeout``.

    ``on_line`` sees every new console line, ``on_tick`` the elapsed seconds at
    every poll (used for delayed actions such as a target that appears late).
    """
    start = qemu.started or time.monotonic()
    deadline = start + timeout
    while True:
        new = console.read_new()
        if on_line is not None:
            for line in new:
                on_line(line)
        if new and until(console.lines):
            return FollowResult("matched", None, time.monotonic() - start)
        code = qemu.poll()
        if code is not None:
            for line in console.flush():
                if on_line is not None:
                    on_line(line)
            reason = "matched" if until(console.lines) else "exited"
            return FollowResult(reason, code, time.monotonic() - start)
        now = time.monotonic()
        if now >= deadline:
            return FollowResult("timeout", None, now - start)
        if on_tick is not None:
            on_tick(now - start)
        time.sleep(POLL)
