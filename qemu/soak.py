"""``iscsiboot qemu soak``: the target goes away while the guest writes; nothing may be lost.

The sanboot scenario boots; the test SYSTEM's ``soak`` check (``qemu/system-init.sh``)
writes checksummed blocks to Storage with fsync and reads the disk directly, printing a
line per block, for as long as the host needs (``iscsiboot.soak=SECONDS``).  Meanwhile
:class:`SoakDriver` injects the faults, one cycle after the other: ``target-restart`` kills
tgtd (SIGKILL) and starts it again on the same port with the same target after the outage;
``target-restore`` does the same, but tgtd listens for :data:`RESTORE_GAP` seconds before
its target and accounts are back, as a NAS that restores its configuration after its iSCSI
service started (logins in between are refused or cut off); ``link-down`` cuts the guest
NIC's link through QMP ``set_link`` for the outage.  A cycle's ``recovered_s`` runs from
the target being served again to the first block written after it (host clock, read off
the console).  After the last cycle the guest reads every block
back past the page cache and reports; :func:`report` turns the console into the JSON
contract of ``--json``.
"""

from __future__ import annotations

import enum
import json
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from iscsiboot.qemu.harness import Artifacts, Machine, run_scenario
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import ScenarioOptions
from iscsiboot.qemu.system import parse_tests

LEAD = 4.0  # seconds of writing before each fault
SETTLE = 3.0  # seconds of writing after a recovery before the next fault
RESTORE_GAP = 3.0  # seconds a restored target listens before its target and accounts are back
RECOVER_BUDGET = 5.0  # seconds the guest's writing time allows each recovery
RECOVER_WAIT = 30.0  # seconds a cycle waits for writes to flow again before the next one
TAIL = 6.0  # seconds of writing after the last cycle
BLOCK = 16384  # the guest's block size
NETDEV = "n0"  # the guest NIC's netdev id (qemu/scenario.py)
KERNEL_ERRORS = re.compile(r"I/O error|EXT4-fs error|rejecting I/O|recovery timed out")


class Fault(enum.Enum):
    """What goes wrong (values are the CLI spellings)."""

    TARGET_RESTART = "target-restart"
    TARGET_RESTORE = "target-restore"
    LINK_DOWN = "link-down"


TARGET_FAULTS = frozenset({Fault.TARGET_RESTART, Fault.TARGET_RESTORE})  # the target is stopped


@dataclass(frozen=True)
class Cycle:
    fault: Fault
    down: float  # seconds the target is away

    @property
    def away(self) -> float:
        """Seconds until the target is served again (a restored one listens a while first)."""
        return self.down + (RESTORE_GAP if self.fault is Fault.TARGET_RESTORE else 0.0)


def guest_seconds(cycles: tuple[Cycle, ...]) -> int:
    """How long the guest writes: every cycle with its full recovery budget, and a tail."""
    return int(LEAD + sum(c.away + RECOVER_BUDGET + SETTLE + LEAD for c in cycles) + TAIL)


def soak_append(cycles: tuple[Cycle, ...]) -> tuple[str, ...]:
    return ("iscsiboot.test=soak", f"iscsiboot.soak={guest_seconds(cycles)}")


@dataclass
class CycleResult:
    fault: Fault
    down_s: float
    blocks_before: int = 0  # blocks the guest said were written (fsync'd) before the fault
    recovered_s: float | None = None  # None: writes never flowed again


class Qmp:
    """A QMP client on QEMU's unix socket: one command at a time."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.buffer = b""
        self._read()  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("QEMU closed its QMP socket")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        data: dict[str, Any] = json.loads(line)
        return data

    def execute(self, command: str, **arguments: Any) -> dict[str, Any]:
        message: dict[str, Any] = {"execute": command}
        if arguments:
            message["arguments"] = arguments
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        while True:
            answer = self._read()
            if "event" in answer:
                continue
            if "error" in answer:
                raise ConnectionError(f"QMP {command}: {answer['error'].get('desc', answer['error'])}")
            return answer

    def close(self) -> None:
        self.sock.close()


class SoakDriver:
    """The faults, one cycle after another, timed by the guest's console lines (host clock)."""

    def __init__(self, cycles: tuple[Cycle, ...], clock: Callable[[], float] = time.monotonic) -> None:
        self.cycles = cycles
        self.clock = clock
        self.results: list[CycleResult] = []
        self.machine: Machine | None = None
        self.qmp: Qmp | None = None
        self.state = "wait"  # wait, lead, down, (restoring,) recover, settle, done
        self.since = 0.0  # when the state began
        self.writes_since_state = 0
        self.blocks = 0  # blocks written so far, as the guest said
        self.errors: list[str] = []

    def attach(self, machine: Machine) -> None:
        self.machine = machine

    def say(self, text: str) -> None:
        if self.machine is not None:
            self.machine.say(text)

    def line(self, text: str) -> None:
        if "soak start" in text and self.state == "wait":
            self._enter("lead")
        elif "soakw " in text:
            self.blocks += 1
            self.writes_since_state += 1
            if self.state == "recover":
                current = self.results[-1]
                current.recovered_s = self.clock() - self.since
                self.say(f"soak: writes flow again {current.recovered_s:.1f} s after the target came back")
                self._enter("settle")
        elif "soak result" in text and self.state != "done":
            while self.state in ("down", "restoring"):
                self._restore()
            self._enter("done")

    def tick(self) -> None:
        now = self.clock()
        if self.state == "lead" and now - self.since >= LEAD and self.writes_since_state:
            self._inject()
        elif self.state in ("down", "restoring") and now - self.since >= self._wait_before_restore():
            self._restore()
        elif self.state == "recover" and now - self.since >= RECOVER_WAIT:
            self.say("soak: writes did not flow again; next cycle")
            self._next()
        elif self.state == "settle" and now - self.since >= SETTLE:
            self._next()

    def _wait_before_restore(self) -> float:
        """Seconds in the current state before the next step back: the outage, or the restore's gap."""
        return self.cycles[len(self.results) - 1].down if self.state == "down" else RESTORE_GAP

    def _enter(self, state: str) -> None:
        self.state, self.since, self.writes_since_state = state, self.clock(), 0

    def _next(self) -> None:
        self._enter("lead" if len(self.results) < len(self.cycles) else "done")

    def _inject(self) -> None:
        cycle = self.cycles[len(self.results)]
        self.results.append(CycleResult(cycle.fault, cycle.down, self.blocks))
        self.say(f"soak: cycle {len(self.results)}: {cycle.fault.value} for {cycle.down:g} s")
        try:
            if cycle.fault in TARGET_FAULTS:
                assert self.machine is not None
                self.machine.stop_target()
            else:
                self._link(up=False)
        except Exception as exc:  # the run goes on; the report says what went wrong
            self.errors.append(f"{cycle.fault.value}: {exc}")
        self._enter("down")

    def _restore(self) -> None:
        """The next step back: the target's server alone first for a restore, then the target."""
        fault = self.results[-1].fault
        server_only = fault is Fault.TARGET_RESTORE and self.state == "down"
        try:
            if fault in TARGET_FAULTS:
                assert self.machine is not None
                (self.machine.listen_target if server_only else self.machine.start_target)()
            else:
                self._link(up=True)
        except Exception as exc:
            self.errors.append(f"restore after {fault.value}: {exc}")
        if server_only:
            self.say(f"soak: the target's server is up; its target and accounts follow in {RESTORE_GAP:g} s")
            self._enter("restoring")
        else:
            self.say("soak: the target serves its disk again")
            self._enter("recover")

    def _link(self, *, up: bool) -> None:
        if self.qmp is None:
            if self.machine is None or self.machine.qmp is None:
                raise ConnectionError("the scenario has no QMP socket")
            self.qmp = Qmp(self.machine.qmp)
        self.qmp.execute("set_link", name=NETDEV, up=up)

    def close(self) -> None:
        if self.qmp is not None:
            self.qmp.close()


@dataclass(frozen=True)
class SoakReport:
    ok: bool
    fault: str
    down_s: float
    cycles: int
    recovered_s: tuple[float | None, ...]
    bytes_written: int
    bytes_verified: int
    io_errors: int
    kernel_errors: tuple[str, ...]
    boot_ok: bool = False
    problems: tuple[str, ...] = field(default=())
    written: tuple[tuple[int, str], ...] = field(default=(), repr=False)  # (block, sha256) in order
    before_fault: tuple[int, ...] = ()  # per cycle: blocks written before its fault

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "fault": self.fault,
            "down_s": self.down_s,
            "cycles": self.cycles,
            "recovered_s": [None if r is None else round(r, 2) for r in self.recovered_s],
            "bytes_written": self.bytes_written,
            "bytes_verified": self.bytes_verified,
            "io_errors": self.io_errors,
            "kernel_errors": list(self.kernel_errors),
            "boot_ok": self.boot_ok,
            "problems": list(self.problems),
        }


def written_blocks(console: str) -> tuple[tuple[int, str], ...]:
    """(block, sha256) of every block the guest wrote, in order (pure)."""
    out: list[tuple[int, str]] = []
    for words in (line.split() for line in parse_tests(console).get("soakw", [])):
        if len(words) >= 2 and words[0].isdigit():
            out.append((int(words[0]), words[1][:64]))
    return tuple(out)


def kept_blocks(console: str) -> dict[int, str]:
    """block -> sha256 as a later boot's ``soakread`` check read them (pure)."""
    out: dict[int, str] = {}
    for words in (line.split() for line in parse_tests(console).get("soakr", [])):
        if len(words) >= 2 and words[0].isdigit():
            out[int(words[0])] = words[1][:64]
    return out


def kernel_errors(console: str) -> tuple[str, ...]:
    """The kernel's error lines: from the guest's dmesg dump when it came, else from the console (pure)."""
    dump = parse_tests(console).get("dmesg")
    lines = dump if dump is not None else console.splitlines()
    return tuple(line.strip() for line in lines if KERNEL_ERRORS.search(line))


def report(
    outcome: Outcome, cycles: tuple[Cycle, ...], results: list[CycleResult], problems: list[str]
) -> SoakReport:
    """The soak's verdict from the console and the driver's cycles (pure)."""
    tests = parse_tests(outcome.console)
    written = verified = 0
    io_errors = len(tests.get("soakerr", []))
    result = [line.split() for line in tests.get("soak", []) if line.startswith("result ")]
    found = list(problems)
    if result and len(result[-1]) == 4:
        written, verified, io_errors = int(result[-1][1]), int(result[-1][2]), int(result[-1][3])
    else:
        found.append("the guest did not report the soak's result")
    errors = kernel_errors(outcome.console)
    recovered = tuple(r.recovered_s for r in results)
    if len(results) < len(cycles):
        found.append(f"{len(results)} of {len(cycles)} cycles ran")
    ok = (
        outcome.ok
        and not found
        and written > 0
        and verified == written
        and io_errors == 0
        and not errors
        and all(r is not None for r in recovered)
    )
    first = cycles[0] if cycles else Cycle(Fault.TARGET_RESTART, 0.0)
    return SoakReport(
        ok=ok,
        fault=first.fault.value,
        down_s=first.down,
        cycles=len(results),
        recovered_s=recovered,
        bytes_written=written,
        bytes_verified=verified,
        io_errors=io_errors,
        kernel_errors=errors,
        boot_ok=outcome.ok,
        problems=tuple(found),
        written=written_blocks(outcome.console),
        before_fault=tuple(r.blocks_before for r in results),
    )


VERIFY = 120.0  # seconds for the guest to read every block back and power off


def run_soak(
    cycles: tuple[Cycle, ...],
    artifacts: Artifacts,
    base: ScenarioOptions,
    *,
    progress: Callable[[str], None] = lambda _t: None,
    console: TextIO | None = None,
    log_dir: Path | None = None,
    keep_log: bool | None = None,
) -> tuple[SoakReport, Outcome]:
    """Boot ``base`` with the soak check and a QMP socket, drive ``cycles``, report."""
    options = replace(
        base,
        qmp=True,
        until_exit=True,
        extra_append=(*base.extra_append, *soak_append(cycles)),
        timeout=base.timeout + guest_seconds(cycles) + VERIFY,
    )
    driver = SoakDriver(cycles)
    try:
        outcome = run_scenario(
            options,
            artifacts,
            progress=progress,
            console=console,
            log_dir=log_dir,
            keep_log=keep_log,
            driver=driver,
        )
    finally:
        driver.close()
    return report(outcome, cycles, driver.results, driver.errors), outcome


def text_report(r: SoakReport) -> str:
    """The soak's verdict for a terminal (pure)."""
    recovered = ", ".join("never" if s is None else f"{s:.1f} s" for s in r.recovered_s) or "no cycle"
    lines = [
        f"soak: {'ok' if r.ok else 'FAILED'} ({r.fault}, {r.down_s:g} s down, {r.cycles} cycles)",
        f"recovered: {recovered}",
        f"written: {r.bytes_written} bytes, read back as written: {r.bytes_verified} bytes",
        f"I/O errors: {r.io_errors}, kernel error lines: {len(r.kernel_errors)}",
        *(f"  {line}" for line in r.kernel_errors[:10]),
        *(f"problem: {p}" for p in r.problems),
    ]
    return "\n".join(lines) + "\n"
