"""The reporter writes each line to the kernel's console once (pure: files stand in for the devices)."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from iscsiboot.agent.report import KMSG_RECORD, Reporter, RunResult, kernel_console_level


def _reporter(tmp_path: Path, level: int | None, **kw: object) -> tuple[Reporter, io.StringIO, Path]:
    console = io.StringIO()
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    return Reporter(console, kmsg=str(kmsg), report_path=None, console_level=level, **kw), console, kmsg  # type: ignore[arg-type]


def test_a_line_the_kernel_shows_goes_through_the_kernel_log_only(tmp_path: Path) -> None:
    reporter, console, kmsg = _reporter(tmp_path, 7)
    reporter.line("network: eth0 10.0.2.15/24 via 10.0.2.2 (firmware)")
    assert console.getvalue() == ""
    assert kmsg.read_text() == "<6>iscsiboot: network: eth0 10.0.2.15/24 via 10.0.2.2 (firmware)\n"


def test_a_line_the_kernel_does_not_show_is_written_to_the_console(tmp_path: Path) -> None:
    """``quiet`` (console level 4): the kernel keeps level 6 off its console, the agent writes it."""
    reporter, console, kmsg = _reporter(tmp_path, 4)
    reporter.line("logged in")
    assert console.getvalue() == "iscsiboot: logged in\n"
    assert kmsg.read_text() == "<6>iscsiboot: logged in\n"
    quiet, console, kmsg = _reporter(tmp_path, 4)
    quiet.line("iSCSI boot failed in the login phase: no.", level=3)  # shown by the kernel
    assert console.getvalue() == ""


def test_after_a_direct_line_every_line_is_written_to_the_console_and_kept_off_it_in_the_log(
    tmp_path: Path,
) -> None:
    """The kernel would print a later record while the tty still sends the direct line: in its middle."""
    reporter, console, kmsg = _reporter(tmp_path, 7)
    reporter.line("mounted /dev/sda2 on /storage (rw)")  # shown by the kernel: the log only
    assert console.getvalue() == ""
    result = RunResult(ok=False, phase="login", error="no", cause="auth")
    line = reporter.finish(result)
    reporter.line("powering off in 10 s")
    shown = console.getvalue().splitlines()
    assert shown[-2:] == [line, "iscsiboot: powering off in 10 s"]
    assert kmsg.read_text().splitlines()[-1] == "<7>iscsiboot: powering off in 10 s"  # off the console


def test_without_the_kernels_console_every_line_is_written_to_both(tmp_path: Path) -> None:
    reporter, console, kmsg = _reporter(tmp_path, None)
    reporter.line("logged in")
    assert console.getvalue() == "iscsiboot: logged in\n"
    assert kmsg.read_text() == "<6>iscsiboot: logged in\n"


def test_debug_lines_follow_the_same_rule(tmp_path: Path) -> None:
    reporter, console, kmsg = _reporter(tmp_path, 7, verbose=True)
    reporter.debug("start-up: fine")  # level 7: not shown by the kernel at console level 7
    assert console.getvalue() == "iscsiboot: start-up: fine\n"
    assert kmsg.read_text() == "<7>iscsiboot: start-up: fine\n"
    quiet, console, kmsg = _reporter(tmp_path, 8)  # loglevel=8: the kernel shows everything
    quiet.debug("start-up: fine")
    assert console.getvalue() == ""


def test_a_line_too_long_for_a_record_is_written_whole_and_its_cut_copy_kept_off_the_console(
    tmp_path: Path,
) -> None:
    reporter, console, kmsg = _reporter(tmp_path, 7)
    long = "x" * 2000
    reporter.line(long)
    assert console.getvalue() == f"iscsiboot: {long}\n"
    record = kmsg.read_bytes()
    assert record.startswith(b"<7>iscsiboot: xxx") and len(record) == KMSG_RECORD


def test_without_a_kernel_log_the_console_gets_the_line(tmp_path: Path) -> None:
    console = io.StringIO()
    reporter = Reporter(console, kmsg=str(tmp_path / "missing" / "kmsg"), report_path=None, console_level=7)
    reporter.line("logged in")
    assert console.getvalue() == "iscsiboot: logged in\n"


def test_the_result_line_is_written_whole_to_the_console_once(tmp_path: Path) -> None:
    reporter, console, kmsg = _reporter(tmp_path, 7)
    result = RunResult(ok=True, phase="done", timeline={"config": 0.1}, warnings=["w" * 1500])
    line = reporter.finish(result)
    shown = console.getvalue().splitlines()
    assert shown == [line]  # the timeline went through the kernel log
    assert json.loads(line.split(" ", 1)[1])["ok"] is True
    records = kmsg.read_text().splitlines()
    assert records[0].startswith("<6>iscsiboot: timeline: config 0.10 s")
    assert records[1].startswith("<7>iscsiboot: ISCSIBOOT-RESULT ")  # cut, and kept off the console


def test_the_kernels_console_level_is_the_first_number(tmp_path: Path) -> None:
    printk = tmp_path / "printk"
    printk.write_text("7\t4\t1\t7\n")
    assert kernel_console_level(str(printk)) == 7
    printk.write_text("")
    assert kernel_console_level(str(printk)) is None
    assert kernel_console_level(str(tmp_path / "none")) is None


def test_the_result_line_waits_until_a_terminal_has_sent_it_but_not_for_ever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A UART sends slowly (a pty has nothing queued): the queue is polled until empty, or the deadline."""
    import fcntl  # noqa: PLC0415
    import os  # noqa: PLC0415
    import pty  # noqa: PLC0415
    import time  # noqa: PLC0415

    from iscsiboot.agent import report  # noqa: PLC0415

    queued = [300, 200, 100, 0]
    polls: list[int] = []

    def outq(fd: int, request: int, buffer: bytearray) -> int:
        assert request == report.TIOCOUTQ
        polls.append(queued[min(len(polls), len(queued) - 1)])
        buffer[:] = polls[-1].to_bytes(4, sys.byteorder)
        return 0

    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=False) as console:
            reporter = Reporter(console, kmsg=None, report_path=None)
            monkeypatch.setattr(fcntl, "ioctl", outq)
            reporter.finish(RunResult(ok=True, phase="done"))
            assert polls == [300, 200, 100, 0]  # until the terminal had sent it all
            assert os.read(master, 65536).startswith(b"iscsiboot: timeline:")
            queued[:] = [50]  # a line held by flow control: the deadline ends the wait
            started = time.monotonic()
            reporter._drain(0.2)
            assert 0.15 < time.monotonic() - started < 5
    finally:
        os.close(master)
        os.close(slave)
