"""The phase runner: timeline, deadlines, break=, failure clean-up, and the wired disk/label phases."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from agent_support import fake_iscsi_sysfs, make_disk, make_ext4
from iscsiboot.agent import PHASES
from iscsiboot.agent.backends.result import Cause, LoginResult
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.init import break_action
from iscsiboot.agent.options import parse_options
from iscsiboot.agent.plan import NetResult
from iscsiboot.agent.report import Reporter, RunResult, SessionInfo
from iscsiboot.agent.results import ConfigResult, LoginsResult, ModulesResult, NetworkResult, Results
from iscsiboot.agent.runner import PHASE_TABLE, Agent, Env, Step, run_phases
from iscsiboot.errors import UsageError
from iscsiboot.model import BootConfig, Locator, Target


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _recorder(seen: list[str]) -> Callable[[str], bool]:
    """A break handler that notes the phase in ``seen`` and lets the boot go on."""

    def on_break(phase: str) -> bool:
        seen.append(phase)
        return True

    return on_break


def _reporter() -> tuple[Reporter, io.StringIO]:
    out = io.StringIO()
    return Reporter(out, kmsg=None, report_path=None), out


def _steps(pairs: list[tuple[str, Callable[[Deadline], None]]]) -> list[Step[None]]:
    """Steps that keep no state: each calls its function with the deadline."""

    def bound(run: Callable[[Deadline], None]) -> Callable[[None, Deadline], None]:
        return lambda _state, deadline: run(deadline)

    return [Step(name, bound(run)) for name, run in pairs]


def test_the_table_holds_the_phases_in_order() -> None:
    assert tuple(phase.name for phase in PHASE_TABLE) == PHASES
    agent = Agent("", parse_options(""), _reporter()[0], last="label")
    assert [step.name for step in agent.steps()] == list(PHASES[: PHASES.index("label") + 1])


def test_a_phase_gets_the_results_before_it_and_adds_its_own() -> None:
    class Fake(Agent):
        def config(self, deadline: Deadline) -> ConfigResult:
            return ConfigResult(BootConfig(targets=(Target("iqn.2024-01.test:t0", "10.0.2.2"),)), ("w",))

        def modules(self, config: ConfigResult, deadline: Deadline) -> ModulesResult:
            assert config.warnings == ("w",)
            return ModulesResult(("virtio_net",))

    reporter, _out = _reporter()
    agent = Fake("", parse_options(""), reporter, last="modules")
    result = agent.run()
    assert result.ok and agent.results.modules == ModulesResult(("virtio_net",))
    assert agent.results.network is None and result.warnings == ["w"]


def test_all_phases_timed_in_order() -> None:
    clock = Clock()
    seen: list[tuple[str, float]] = []

    def step(name: str, seconds: float):  # type: ignore[no-untyped-def]
        def run(deadline: Deadline) -> None:
            seen.append((name, deadline.seconds))
            clock.now += seconds

        return run

    reporter, out = _reporter()
    options = parse_options("progress iscsiboot.timeout.login=7")
    result, _state = run_phases(
        _steps([(p, step(p, 0.5)) for p in PHASES]), None, options, reporter, clock=clock
    )
    assert result.ok and result.phase == "done"
    assert list(result.timeline) == list(PHASES) and result.timeline["login"] == 0.5
    assert result.total == 4.0
    assert dict(seen)["login"] == 7.0 and dict(seen)["network"] == 30.0
    assert "### network ###" in out.getvalue()


def test_failure_stops_cleans_up_and_describes() -> None:
    cleaned: list[bool] = []
    ran: list[str] = []

    def ok(deadline: Deadline) -> None:
        ran.append("ok")

    def bad(deadline: Deadline) -> None:
        raise PhaseError(
            "login", "CHAP rejected", cause="auth", evidence="(24 - ...)", fix="check iscsi_password"
        )

    def never(deadline: Deadline) -> None:
        ran.append("never")

    reporter, _out = _reporter()
    result, _state = run_phases(
        _steps([("config", ok), ("login", bad), ("disk", never)]),
        None,
        parse_options(""),
        reporter,
        cleanup=lambda _state: cleaned.append(True),
    )
    assert not result.ok and result.phase == "login" and result.cause == "auth"
    assert ran == ["ok"] and cleaned == [True]
    assert set(result.timeline) == {"config", "login"}


def test_other_errors_are_wrapped_with_the_phase() -> None:
    def usage(deadline: Deadline) -> None:
        raise UsageError("bad thing", fix="do this")

    def boom(deadline: Deadline) -> None:
        raise KeyError("x")

    reporter, _out = _reporter()
    result, _state = run_phases(_steps([("config", usage)]), None, parse_options(""), reporter)
    assert result.phase == "config" and result.error == "bad thing" and result.fix == "do this"
    result, _state = run_phases(_steps([("modules", boom)]), None, parse_options(""), reporter)
    assert result.phase == "modules" and result.cause == "internal" and "KeyError" in (result.error or "")


def test_break_stops_or_continues() -> None:
    ran: list[str] = []

    def step(name: str) -> Callable[[Deadline], None]:
        return lambda _d: ran.append(name)

    reporter, _out = _reporter()
    steps = _steps([(p, step(p)) for p in ("config", "modules", "network")])
    result, _state = run_phases(steps, None, parse_options("break=modules"), reporter)
    assert ran == ["config"] and result.phase == "modules" and result.cause == "break" and not result.ok
    ran.clear()
    breaks: list[str] = []
    result, _state = run_phases(
        steps, None, parse_options("break=modules"), reporter, on_break=_recorder(breaks)
    )
    assert result.ok and ran == ["config", "modules", "network"] and breaks == ["modules"]


@pytest.mark.parametrize(
    ("cmdline", "goes_on"),
    [
        ("break=network iscsiboot.on_failure=poweroff", False),
        ("break=network iscsiboot.on_failure=reboot", False),
        ("break=network iscsiboot.on_failure=shell", True),
        ("break=network", True),  # OpenELEC: a debug shell, then the boot goes on
    ],
)
def test_break_action_stops_when_nobody_is_at_the_console(cmdline: str, goes_on: bool) -> None:
    reporter, out = _reporter()
    assert break_action(parse_options(cmdline), reporter, "network", run_shell=False) is goes_on
    said = "break=network: stopping before the network phase" in out.getvalue()
    assert said is not goes_on


@pytest.fixture
def lab_disk(tmp_path: Path) -> tuple[Path, Path]:
    """A fake sysfs with one iSCSI session whose LUN 1 is a real disk image served as dev/sda."""
    system, storage = tmp_path / "s.img", tmp_path / "t.img"
    make_ext4(system, 8, "System", {"KERNEL": b"k"})
    make_ext4(storage, 8, "Storage")
    dev = tmp_path / "dev"
    dev.mkdir()
    make_disk(dev / "sda", [system, storage])
    for name in ("sda1", "sda2"):
        (dev / name).write_bytes(b"")
    sysfs = fake_iscsi_sysfs(
        tmp_path,
        sessions={1: "iqn.2024-01.test:t0"},
        disks=[(1, 3, 1, "sda", (dev / "sda").stat().st_size, [1, 2])],
    )
    return sysfs, dev


def test_agent_disk_and_label_phases_on_a_session_disk(lab_disk: tuple[Path, Path]) -> None:
    sysfs, dev = lab_disk
    reporter, out = _reporter()
    agent = Agent("", parse_options(""), reporter, Env(sysfs=str(sysfs), dev=str(dev)))
    target = Target("iqn.2024-01.test:t0", "10.0.2.2", lun=1)
    config = ConfigResult(
        BootConfig(
            targets=(target,), system=Locator.parse("LABEL=System"), storage=Locator.parse("LABEL=Storage")
        )
    )
    logins = LoginsResult("native", ((target, LoginResult(Cause.OK, "logged in")),))
    disk = agent.disk(config, logins, ModulesResult(), Deadline(5))
    label = agent.label(config, disk, Deadline(5))
    assert label.system.device == f"{dev}/sda1"
    assert label.storage is not None and label.storage.device == f"{dev}/sda2"
    assert disk.sessions == (SessionInfo("session1", "iqn.2024-01.test:t0"),)
    assert "System is" in out.getvalue()
    agent.results = Results(config=config, login=logins, disk=disk, label=label)
    filled = RunResult(ok=True, phase="done")
    agent.fill(filled)
    values = agent.hook_values(filled)
    assert values["ISCSIBOOT_SYSTEM"] == f"{dev}/sda1" and values["ISCSIBOOT_STORAGE"] == f"{dev}/sda2"
    assert values["ISCSIBOOT_SESSIONS"] == "iqn.2024-01.test:t0"


def test_agent_label_same_partition_for_both_is_an_error(lab_disk: tuple[Path, Path]) -> None:
    sysfs, dev = lab_disk
    reporter, _out = _reporter()
    agent = Agent("", parse_options(""), reporter, Env(sysfs=str(sysfs), dev=str(dev)))
    config = ConfigResult(
        BootConfig(
            targets=(Target("iqn.2024-01.test:t0", "10.0.2.2"),),
            system=Locator.parse("LABEL=System"),
            storage=Locator.parse("LABEL=System"),
        )
    )
    disk = agent.disk(
        config, LoginsResult("native", ()), ModulesResult(), Deadline(5)
    )  # every session's disks
    with pytest.raises(PhaseError, match="same file system"):
        agent.label(config, disk, Deadline(5))


def test_agent_config_phase_with_the_real_parser() -> None:
    reporter, _out = _reporter()
    text = (
        "ip=dhcp boot=ISCSI=iscsi_initiator=iqn.2024-01.test:init,iscsi_target_name=iqn.2024-01.test:t0,"
        "iscsi_target_ip=10.0.2.2,iscsi_username=user,iscsi_password=Secret-Pass-12,LABEL=System "
        "disk=LABEL=Storage"
    )
    agent = Agent(text, parse_options(text), reporter, last="config")
    result = agent.run()
    assert agent.results.config is not None
    assert result.ok and agent.results.config.config.targets[0].name == "iqn.2024-01.test:t0"
    assert result.warnings and "Secret-Pass-12" not in json.dumps(result.to_dict())
    assert "Secret-Pass-12" in [s if isinstance(s, str) else s.reveal() for s in reporter.secrets]
    bad = Agent("boot=ISCSI=", parse_options(""), reporter, last="config").run()
    assert not bad.ok and bad.phase == "config" and bad.cause == "cmdline"
    none = Agent("quiet", parse_options(""), reporter, last="config").run()
    assert not none.ok and "names no iSCSI target" in (none.error or "")


def test_cli_dry_run_prints_the_plan_without_secrets(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        "ip=10.0.0.5::10.0.0.1:255.255.255.0::eth1:off boot=ISCSI=iscsi_initiator=iqn.2024-01.test:init,"
        "iscsi_target_name=iqn.2024-01.test:t0,iscsi_target_ip=10.0.0.9,iscsi_username=u,"
        "iscsi_password=Dry-Run-Secret-1,LABEL=System disk=LABEL=Storage"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "iscsiboot",
            "agent",
            "run",
            "--cmdline-file",
            str(cmdline),
            "--dry-run",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Dry-Run-Secret-1" not in done.stdout + done.stderr
    plan = json.loads(done.stdout)
    assert plan["login"][0]["name"] == "iqn.2024-01.test:t0"
    assert plan["mounts"][1].startswith("/flash/SYSTEM -> /sysroot")
    assert "iscsi_tcp" in plan["modules"]["background"]
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "iscsiboot",
            "agent",
            "run",
            "--cmdline-file",
            str(tmp_path / "none"),
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cannot read" in bad.stderr

    broken = tmp_path / "broken"
    broken.write_text("boot=ISCSI= ip=dhcp")
    bad = subprocess.run(
        [sys.executable, "-m", "iscsiboot", "agent", "run", "--cmdline-file", str(broken), "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2 and "does not parse" in bad.stderr


class Renewing:
    """A network bring-up whose firmware lease's renewal ends as ``outcome`` (see netup.NetworkUp)."""

    def __init__(self, outcome: tuple[dict[str, object] | None, str | None] | None) -> None:
        self.outcome = outcome
        self.waited: list[float] = []

    def renewal(self, seconds: float) -> tuple[dict[str, object] | None, str | None] | None:
        self.waited.append(seconds)
        return self.outcome


def _renewed(outcome: tuple[dict[str, object] | None, str | None] | None):  # type: ignore[no-untyped-def]
    reporter, out = _reporter()
    agent = Agent("quiet", parse_options("quiet"), reporter)
    agent.network_up = Renewing(outcome)  # type: ignore[assignment]
    net = NetResult("eth0", None, None, "dhcp", "10.0.2.15", 24, "10.0.2.2", dhcp_client="firmware")
    agent.results = Results(network=NetworkResult(net))
    agent._renewal()
    result = RunResult(ok=True)
    agent.fill(result)
    return net, result, out.getvalue()


def test_the_firmware_lease_renewed_is_noted_quietly() -> None:
    net, result, shown = _renewed(({"address": "10.0.2.15", "server": "10.0.2.2"}, None))
    assert net.renewal == "renewed" and net.server == "10.0.2.2"
    assert result.warnings == [] and shown == ""
    assert _renewed(None)[0].renewal is None  # no renewal ran (a static address)


def test_a_renewal_that_failed_or_moved_the_address_is_a_warning() -> None:
    net, result, shown = _renewed((None, "no lease from udhcpc (no output)"))
    assert net.renewal == "no lease from udhcpc (no output)"
    assert result.warnings == [
        "the firmware's DHCP lease of 10.0.2.15 was not renewed: no lease from udhcpc (no output)"
    ]
    assert shown.startswith("iscsiboot: warning: the firmware's DHCP lease")
    net, result, _shown = _renewed(({"address": "10.0.2.16", "server": "10.0.2.2"}, None))
    assert net.address == "10.0.2.15" and net.renewal == "the DHCP server leases 10.0.2.16"
    assert "eth0 keeps 10.0.2.15 for this boot" in result.warnings[0]


@pytest.mark.parametrize(
    ("cmdline", "firmware"),
    [
        ("boot=ISCSI=auto,LABEL=System disk=LABEL=Storage", True),
        ("boot=ISCSI=auto,LABEL=System ip=ibft", True),
        ("iscsi_firmware boot=LABEL=System", True),
        ("rd.iscsi.firmware=1 ip=ibft", True),
        ("boot=ISCSI=auto,LABEL=System ip=dhcp", False),  # a fresh lease: the worker imports pyroute2
        ("ip=ibft", False),
        ("rd.iscsi.ibft=0", False),
    ],
)
def test_the_network_is_expected_from_the_ibft(cmdline: str, firmware: bool) -> None:
    assert parse_options(cmdline).network_from_firmware is firmware
