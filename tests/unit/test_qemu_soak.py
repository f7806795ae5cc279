"""The soak harness' pure parts: the fault driver's cycles, the report, the QMP option."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.qemu.harness import Machine
from iscsiboot.qemu.outcome import judge
from iscsiboot.qemu.scenario import Files, ScenarioOptions, qemu_argv
from iscsiboot.qemu.soak import (
    LEAD,
    RESTORE_GAP,
    SETTLE,
    Cycle,
    CycleResult,
    Fault,
    SoakDriver,
    guest_seconds,
    kept_blocks,
    kernel_errors,
    report,
    soak_append,
    text_report,
    written_blocks,
)
from iscsiboot.qemu.system import TEST_MARKER

SUM = "ab" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def driven(cycles: tuple[Cycle, ...]) -> tuple[SoakDriver, Clock, list[str]]:
    clock = Clock()
    actions: list[str] = []
    driver = SoakDriver(cycles, clock=clock)
    driver.attach(
        Machine(
            lambda: actions.append("stop"),
            lambda: actions.append("start"),
            lambda: actions.append("listen"),
            None,
            actions.append,
        )
    )
    return driver, clock, actions


def test_a_target_restart_cycle_is_timed_from_the_target_s_return_to_the_next_write() -> None:
    driver, clock, actions = driven((Cycle(Fault.TARGET_RESTART, 15.0),))
    driver.tick()
    assert "stop" not in actions  # nothing before the guest starts writing
    driver.line(f"{TEST_MARKER} soak start 60")
    clock.now = LEAD
    driver.tick()
    assert "stop" not in actions  # no block written yet: the fault waits for one
    driver.line(f"{TEST_MARKER} soakw 0 {SUM}")
    driver.tick()
    assert actions[-2].startswith("soak: cycle 1") and actions[-1] == "stop"
    clock.now += 14.9
    driver.tick()
    assert "start" not in actions
    clock.now += 0.2
    driver.tick()
    assert "start" in actions
    clock.now += 1.5
    driver.line(f"{TEST_MARKER} soakw 1 {SUM}")
    assert driver.results[0].blocks_before == 1
    assert driver.results[0].recovered_s is not None and abs(driver.results[0].recovered_s - 1.5) < 1e-9
    clock.now += SETTLE
    driver.tick()
    assert driver.state == "done"


def faulted(cycle: Cycle) -> tuple[SoakDriver, Clock, list[str]]:
    """A driver of ``cycle`` whose guest wrote a block, at the fault (the target just stopped)."""
    driver, clock, actions = driven((cycle,))
    driver.line(f"{TEST_MARKER} soak start 60")
    driver.line(f"{TEST_MARKER} soakw 0 {SUM}")
    clock.now = LEAD
    driver.tick()
    assert actions[-1] == "stop"
    return driver, clock, actions


def test_a_restored_target_listens_first_and_is_timed_from_when_it_serves_again() -> None:
    driver, clock, actions = faulted(Cycle(Fault.TARGET_RESTORE, 5.0))
    clock.now += 5.1
    driver.tick()
    assert actions[-2:-1] == ["listen"] and "start" not in actions
    clock.now += RESTORE_GAP - 0.2
    driver.tick()
    assert "start" not in actions  # its target and accounts come RESTORE_GAP after the server
    clock.now += 0.3
    driver.tick()
    assert actions.count("start") == 1 and driver.state == "recover"
    clock.now += 0.8
    driver.line(f"{TEST_MARKER} soakw 1 {SUM}")
    assert driver.results[0].recovered_s == pytest.approx(0.8)
    assert guest_seconds((Cycle(Fault.TARGET_RESTORE, 5.0),)) == guest_seconds(
        (Cycle(Fault.TARGET_RESTART, 5.0 + RESTORE_GAP),)
    )


def test_a_guest_done_while_the_target_is_restored_leaves_it_served() -> None:
    driver, _clock, actions = faulted(Cycle(Fault.TARGET_RESTORE, 5.0))
    driver.line(f"{TEST_MARKER} soak result 16384 16384 0")
    assert actions[-1] != "stop" and "listen" in actions and "start" in actions
    assert driver.state == "done"


def test_link_down_without_qmp_is_reported_not_raised() -> None:
    driver, clock, _actions = driven((Cycle(Fault.LINK_DOWN, 1.0),))
    driver.line(f"{TEST_MARKER} soak start 30")
    driver.line(f"{TEST_MARKER} soakw 0 {SUM}")
    clock.now = LEAD
    driver.tick()
    assert driver.errors and "QMP" in driver.errors[0]


def test_the_guest_writes_long_enough_for_every_cycle() -> None:
    cycles = (Cycle(Fault.TARGET_RESTART, 15.0),) * 3
    assert guest_seconds(cycles) > 3 * (15 + LEAD + SETTLE)
    assert soak_append(cycles) == ("iscsiboot.test=soak", f"iscsiboot.soak={guest_seconds(cycles)}")


def console(*lines: str) -> str:
    return "\n".join(lines)


def test_report_reads_the_guest_s_totals_and_the_kernel_s_errors() -> None:
    text = console(
        "ISCSIBOOT-SYSTEM-REACHED pid=1",
        f"{TEST_MARKER} soakw 0 {SUM}",
        f"[  20.1] {TEST_MARKER} soakw 1 {SUM}",
        f"{TEST_MARKER} soak result 32768 32768 0",
        f"{TEST_MARKER} dmesg [   30.000000] sd 2:0:0:1: [sda] tag#3 FAILED Result: I/O error",
        f"{TEST_MARKER} dmesg [   31.000000] iscsiboot-keeper: session1: logged in again",
    )
    outcome = judge(text.splitlines(), reason="exited", boot_seconds=1.0, total_seconds=1.0, console=text)
    cycles = (Cycle(Fault.TARGET_RESTART, 15.0),)
    r = report(outcome, cycles, [CycleResult(Fault.TARGET_RESTART, 15.0, 2, 1.2)], [])
    assert (r.bytes_written, r.bytes_verified, r.io_errors) == (32768, 32768, 0)
    assert len(r.kernel_errors) == 1 and "I/O error" in r.kernel_errors[0]
    assert not r.ok  # the kernel said I/O error (and the agent's result is missing)
    data = r.to_json()
    for key in ("ok", "fault", "down_s", "cycles", "recovered_s", "bytes_written", "bytes_verified"):
        assert key in data
    assert data["recovered_s"] == [1.2] and data["fault"] == "target-restart"
    assert written_blocks(text) == ((0, SUM), (1, SUM))
    assert "FAILED" in text_report(r)


def test_kernel_errors_from_the_console_when_no_dump_came() -> None:
    text = console("[ 99.0] session1: session recovery timed out after 10 secs", "all well")
    assert kernel_errors(text) == ("[ 99.0] session1: session recovery timed out after 10 secs",)


def test_kept_blocks() -> None:
    assert kept_blocks(console(f"{TEST_MARKER} soakr 3 {SUM}", f"{TEST_MARKER} soakread none")) == {3: SUM}


def test_qmp_socket_only_when_asked(tmp_path: Path) -> None:
    files = Files(tmp_path)
    plain = qemu_argv(ScenarioOptions(), files, append="", kernel=None, initrd=None)
    assert "-qmp" not in plain
    argv = qemu_argv(ScenarioOptions(qmp=True), files, append="", kernel=None, initrd=None)
    assert argv[argv.index("-qmp") + 1] == f"unix:{files.qmp},server=on,wait=off"
