"""The target goes away after the boot: the session recovers and nothing is lost.

Boots are shared: one kernel-transport soak runs three target restarts (15 s each, the
second one a restore: tgtd listens 3 s before its target and accounts are back, as a NAS
restoring its configuration) and then a 20 s link-down; one NBD soak runs the three
restarts; the negative control (no keeper, a 10 s recovery timeout, a 30 s outage) must
show I/O errors; a target that stays away past a 10 s recovery timeout with the keeper
makes the keeper name Storage, and a second boot of the same disk reads back every block
written before the outage.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import Mode, ScenarioOptions
from iscsiboot.qemu.soak import RESTORE_GAP, Cycle, Fault, SoakReport, kept_blocks, run_soak
from iscsiboot.secret import Secret
from vm_support import BOOT_TIMEOUT, TIMINGS, boot, expect_success, explain, require_vm

USER, PASSWORD = "htpc", "htpc-secret-12"
REVERSE_USER, REVERSE_PASSWORD = "nas", "nas-secret-345"
RECOVERED_MAX = 3.0  # seconds from the target's return to writes flowing
KEEPER_RSS_KIB = 40 * 1024
RESTARTS = (
    Cycle(Fault.TARGET_RESTART, 15.0),
    Cycle(Fault.TARGET_RESTORE, 15.0 - RESTORE_GAP),  # away as long, then listening with nothing served
    Cycle(Fault.TARGET_RESTART, 15.0),
)
LINK_DOWN = Cycle(Fault.LINK_DOWN, 20.0)
AWAY = (Cycle(Fault.TARGET_RESTART, 30.0),)  # past a 10 s recovery timeout
RECOVERY_LINE = re.compile(r"^\[[ 0-9.]+\] (iscsiboot-keeper: | ?connection\d+:\d+: )")


def options(*append: str, disk: Path | None = None) -> ScenarioOptions:
    return ScenarioOptions(
        username=USER,
        password=Secret(PASSWORD),
        reverse_username=REVERSE_USER,
        reverse_password=Secret(REVERSE_PASSWORD),
        timeout=BOOT_TIMEOUT,
        extra_append=append,
        disk=disk,
    )


def soak(
    name: str,
    cycles: tuple[Cycle, ...],
    artifacts: Artifacts,
    work: Path,
    *append: str,
    disk: Path | None = None,
) -> tuple[SoakReport, Outcome]:
    result, outcome = run_soak(cycles, artifacts, options(*append, disk=disk), log_dir=work / name)
    TIMINGS.append((f"soak {name}", outcome.boot_seconds))
    return result, outcome


def why(result: SoakReport, outcome: Outcome, name: str) -> str:
    """The report, the console's tail, and every line of the keeper and of the kernel's connections.

    The soak's writes fill the console: its tail alone misses how each recovery went.
    """
    kept = [line for line in outcome.console.splitlines() if RECOVERY_LINE.search(line)]
    return f"{result.to_json()}\n{explain(outcome, name)}\n--- keeper and connections ---\n" + "\n".join(kept)


class Soaks:
    """Each soak boot runs once for the module's tests."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self._kernel: Artifacts | None = None
        self._runs: dict[str, tuple[SoakReport, Outcome]] = {}

    def kernel_artifacts(self) -> Artifacts:
        if self._kernel is None:
            self._kernel = prepare(transport="kernel")
        return self._kernel

    def run(self, name: str) -> tuple[SoakReport, Outcome]:
        if name not in self._runs:
            if name == "kernel":
                self._runs[name] = soak(name, (*RESTARTS, LINK_DOWN), self.kernel_artifacts(), self.work)
            elif name == "nbd":
                self._runs[name] = soak(name, RESTARTS, prepare(transport="nbd"), self.work)
            elif name == "no-keeper":
                self._runs[name] = soak(
                    name, AWAY, self.kernel_artifacts(), self.work, "iscsiboot.keeper=no",
                    "iscsiboot.recovery_timeout=10",
                )  # fmt: skip
            else:
                self._runs[name] = soak(
                    name, AWAY, self.kernel_artifacts(), self.work, "iscsiboot.recovery_timeout=10",
                    disk=self.work / "away-disk.img",
                )  # fmt: skip
        return self._runs[name]


@pytest.fixture(scope="module")
def soaks(tmp_path_factory: pytest.TempPathFactory) -> Soaks:
    require_vm()
    return Soaks(tmp_path_factory.mktemp("soak"))


def expect_recovered(result: SoakReport, outcome: Outcome, name: str, cycles: range) -> None:
    text = why(result, outcome, name)
    assert result.ok, text
    assert result.io_errors == 0 and not result.kernel_errors, text
    assert result.bytes_written > 0 and result.bytes_verified == result.bytes_written, text
    for i in cycles:
        seconds = result.recovered_s[i]
        assert seconds is not None and seconds <= RECOVERED_MAX, text


def test_kernel_transport_survives_three_target_restarts(soaks: Soaks) -> None:
    result, outcome = soaks.run("kernel")
    expect_recovered(result, outcome, "kernel target-restart", range(3))
    assert outcome.console.count("logged in again after") >= 3, why(result, outcome, "kernel")


def test_kernel_transport_survives_a_link_down(soaks: Soaks) -> None:
    """No FIN: the NOP-Out ping finds the loss, the keeper logs in once the link is back."""
    result, outcome = soaks.run("kernel")
    expect_recovered(result, outcome, "kernel link-down", range(3, 4))
    assert "(nop timedout)" in outcome.console, why(result, outcome, "kernel link-down")


def test_the_keeper_is_a_root_storage_daemon_and_logs_out_at_the_power_off(soaks: Soaks) -> None:
    result, outcome = soaks.run("kernel")
    text = why(result, outcome, "kernel keeper")
    expect_success(outcome, "kernel keeper")
    (line,) = [ln for ln in outcome.console.splitlines() if "iscsiboot: keeper: pid" in ln][:1]
    kib = int(line.split("(")[-1].split()[0])
    assert 0 < kib <= KEEPER_RSS_KIB, text
    assert "iscsiboot-keeper: session1: logged out" in outcome.console, text
    assert "daemons still running at power-off" not in outcome.console, text
    for secret in (PASSWORD, REVERSE_PASSWORD):
        assert secret not in outcome.console, "a CHAP secret leaked"


def test_nbd_transport_survives_three_target_restarts(soaks: Soaks) -> None:
    result, outcome = soaks.run("nbd")
    expect_recovered(result, outcome, "nbd target-restart", range(3))
    assert outcome.result is not None and outcome.result.transport == "nbd", why(result, outcome, "nbd")


def test_without_a_keeper_the_outage_ends_in_io_errors(soaks: Soaks) -> None:
    """The negative control: the harness sees the failure the keeper prevents."""
    result, outcome = soaks.run("no-keeper")
    text = why(result, outcome, "no keeper")
    assert outcome.result is not None and outcome.result.ok, text
    assert "iscsiboot-keeper" not in outcome.console, text
    assert not result.ok, text
    assert result.io_errors > 0 or result.kernel_errors, text
    assert any("recovery timed out" in line for line in result.kernel_errors), text


def test_a_target_away_past_the_recovery_timeout_is_named_and_loses_nothing_written_before(
    soaks: Soaks,
) -> None:
    result, outcome = soaks.run("away")
    text = why(result, outcome, "away")
    assert not result.ok and (result.io_errors > 0 or result.kernel_errors), text
    named = [ln for ln in outcome.console.splitlines() if "stayed away past the recovery timeout" in ln]
    assert named and "Storage (/dev/sda2)" in named[0], text
    before = result.written[: result.before_fault[0]]
    assert before, text
    # a direct kernel boot: its command line is the host's (the disk's own says soak again)
    read_back = ScenarioOptions(
        mode=Mode.CMDLINE,
        username=USER,
        password=Secret(PASSWORD),
        timeout=BOOT_TIMEOUT,
        extra_append=("iscsiboot.test=soakread",),
        disk=soaks.work / "away-disk.img",
    )
    again = boot("away: read back", read_back, soaks.kernel_artifacts(), soaks.work / "away-read")
    expect_success(again, "away: read back")
    kept = kept_blocks(again.console)
    lost = [block for block, digest in before if kept.get(block) != digest]
    assert not lost, f"blocks lost: {lost}\n{text}\n{explain(again, 'away: read back')}"
