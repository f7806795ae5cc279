"""The project's subprocess runner: a child it kills on Ctrl-C or SIGTERM is gone when it raises."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from iscsiboot.proc import run


def _interrupted(runner: Callable[[Path], object], tmp_path: Path) -> int:
    """Run ``runner`` until SIGALRM raises KeyboardInterrupt in it; the child's pid."""
    pid_file = tmp_path / "pid"

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            runner(pid_file)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return int(pid_file.read_text())


def _reaped(pid: int) -> bool:
    """True when ``pid`` is no child of ours any more (killed and waited for); reaps it otherwise."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def _shell(pid_file: Path) -> list[str]:
    """A child that writes its pid, then sleeps well past the interrupt."""
    return ["sh", "-c", f'echo $$ > "{pid_file}"; exec sleep 30']


def test_a_child_killed_on_an_interrupt_is_waited_for(tmp_path: Path) -> None:
    pid = _interrupted(lambda f: run(_shell(f), what="wait"), tmp_path)
    assert _reaped(pid)


def test_negative_control_subprocess_run_leaves_its_killed_child_unwaited(tmp_path: Path) -> None:
    pid = _interrupted(lambda f: subprocess.run(_shell(f), capture_output=True, check=False), tmp_path)
    assert not _reaped(pid)  # still ours to wait for: killed, perhaps not yet gone
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
