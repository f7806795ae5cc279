"""The console follower, the process wrapper and the SYSTEM image builder (real files, real processes)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from iscsiboot.errors import EnvironmentProblem
from iscsiboot.qemu.runner import ConsoleFollower, Qemu, follow
from iscsiboot.qemu.system import INIT_PATHS, SYSTEM_MARKER, build_system


def test_follower_returns_complete_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    f = ConsoleFollower(log)
    assert f.read_new() == []  # no file yet
    log.write_bytes(b"one\r\ntw")
    assert f.read_new() == ["one"]
    with open(log, "ab") as h:
        h.write(b"o\nthree")
    assert f.read_new() == ["two"]
    assert f.flush() == ["three"]
    assert f.lines == ["one", "two", "three"]
    assert f.text() == "one\ntwo\nthree"


def _writer(path: Path, lines: list[str], gap: float) -> threading.Thread:
    def go() -> None:
        with open(path, "a") as h:
            for line in lines:
                h.write(line + "\n")
                h.flush()
                time.sleep(gap)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_follow_stops_on_match_and_kills_on_stop(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    q = Qemu(("sleep", "60"), tmp_path / "err.log")
    q.start()
    try:
        writer = _writer(log, ["boot", "DONE", "after"], 0.05)
        seen: list[str] = []
        r = follow(q, ConsoleFollower(log), timeout=10, until=lambda ls: "DONE" in ls, on_line=seen.append)
        assert r.reason == "matched" and r.elapsed < 5
        assert "DONE" in seen
        writer.join()
    finally:
        code = q.stop(grace=1)
    assert code is not None and code != 0  # killed by a signal
    assert q.poll() is not None


def test_follow_sees_exit_and_last_partial_line(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    q = Qemu(("sh", "-c", f"printf 'a\\nlast' > {log}; exit 3"), tmp_path / "err.log")
    q.start()
    try:
        seen: list[str] = []
        r = follow(q, ConsoleFollower(log), timeout=10, until=lambda ls: False, on_line=seen.append)
    finally:
        q.stop()
    assert r.reason == "exited" and r.returncode == 3
    assert seen == ["a", "last"]


def test_follow_deadline_and_ticks(tmp_path: Path) -> None:
    q = Qemu(("sleep", "60"), tmp_path / "err.log")
    ticks: list[float] = []
    with q:
        r = follow(
            q,
            ConsoleFollower(tmp_path / "none.log"),
            timeout=0.5,
            until=lambda ls: True,
            on_tick=ticks.append,
        )
    assert r.reason == "timeout" and r.elapsed >= 0.5
    assert ticks and ticks == sorted(ticks)
    assert q.poll() is not None


def test_missing_program_is_environment_problem(tmp_path: Path) -> None:
    with pytest.raises(EnvironmentProblem):
        Qemu(("/nonexistent/qemu",), tmp_path / "err.log").start()


@pytest.mark.skipif(
    shutil.which("mksquashfs") is None or shutil.which("unsquashfs") is None, reason="squashfs-tools"
)
def test_system_image_has_busybox_and_init(tmp_path: Path) -> None:
    image = build_system(tmp_path / "SYSTEM")
    assert image.read_bytes()[:4] == b"hsqs"
    listing = subprocess.run(
        ["unsquashfs", "-l", str(image)], capture_output=True, text=True, check=True
    ).stdout
    for path in ("bin/busybox", *INIT_PATHS, "flash", "storage"):
        assert f"squashfs-root/{path}\n" in listing
    out = subprocess.run(
        ["unsquashfs", "-cat", str(image), "sbin/init"], capture_output=True, text=True, check=True
    ).stdout
    assert SYSTEM_MARKER in out and "poweroff" in out
