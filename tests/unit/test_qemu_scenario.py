"""Scenario planning (pure): options -> QEMU argv, APPEND line, target, iPXE script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from iscsiboot.agent.plan import NetResult
from iscsiboot.agent.report import RESULT_TAG, RunResult, SessionInfo, result_line
from iscsiboot.errors import UsageError
from iscsiboot.model import BootConfig, Locator, NetMode, Network, Target
from iscsiboot.qemu.cli import backend_append
from iscsiboot.qemu.harness import _never
from iscsiboot.qemu.outcome import Outcome, find_result, finished, judge, timeline_text
from iscsiboot.qemu.scenario import (
    GUEST_MAC,
    HOST_ADDRESS,
    SANBOOT_ATTEMPTS,
    WRAPPER_SCRIPT,
    Boot,
    Files,
    Mode,
    ScenarioOptions,
    boot_options,
    ipxe_script,
    network_is_up,
    plan,
    target_spec,
)
from iscsiboot.qemu.system import MOUNTS_BEGIN, MOUNTS_END, SYSTEM_MARKER, parse_report
from iscsiboot.qemu.targets import TargetKind
from iscsiboot.secret import Secret

PW = "secret-pass-12"
RPW = "reverse-pw-345"
WORK = Path("/tmp/iscsiboot-test-work")
KERNEL = Path("/k/vmlinuz")
INITRD = Path("/k/initrd")


def mutual(**kw: object) -> ScenarioOptions:
    base: dict[str, object] = {
        "username": "htpc",
        "password": Secret(PW),
        "reverse_username": "nas",
        "reverse_password": Secret(RPW),
    }
    base.update(kw)
    return ScenarioOptions(**base)  # type: ignore[arg-type]


def make(options: ScenarioOptions, port: int = 40123):  # type: ignore[no-untyped-def]
    return plan(options, port=port, workdir=WORK, kernel=KERNEL, initrd=INITRD)


def test_ibft_sanboot_plan() -> None:
    p = make(mutual())
    assert p.boot is Boot.SANBOOT
    argv = list(p.qemu_argv)
    assert argv[argv.index("-boot") + 1] == "n"
    assert "-kernel" not in argv and "-acpitable" not in argv
    assert argv[argv.index("-accel") + 1] == "tcg"
    assert argv[argv.index("-cpu") + 1] == "max"  # RDRAND under TCG: the guest's RNG is ready early
    assert "-enable-kvm" not in argv and "-nographic" not in argv
    assert f"file,id=c0,path={WORK / 'console.log'}" in argv
    assert argv[argv.index("-serial") + 1] == "chardev:c0"
    assert "-no-reboot" in argv
    netdev = argv[argv.index("-netdev") + 1]
    assert netdev == f"user,id=n0,tftp={WORK / 'tftp'},bootfile=boot.ipxe"
    assert f"mac={GUEST_MAC}" in argv[argv.index("-device") + 1]
    # the kernel line on the LUN
    assert "console=ttyS0" in p.append
    assert "boot=ISCSI=auto,LABEL=System" in p.append
    assert "disk=LABEL=Storage" in p.append
    assert "iscsiboot.on_failure=poweroff" in p.append
    # the client model and the iPXE script
    assert "iscsi_target" not in p.append and "ip=" not in p.append
    t = p.client.targets[0]
    assert (t.address, t.port, t.lun) == (HOST_ADDRESS, 40123, TargetKind.TGT.usual_lun)
    assert p.ipxe_script is not None and p.ipxe_script.startswith("#!ipxe")
    assert "sanboot" in p.ipxe_script and "iqn.2026-11.org.iscsiboot:htpc" in p.ipxe_script
    assert PW in p.ipxe_script and RPW in p.ipxe_script  # iPXE needs the real credentials
    assert "scenario.ipxe" in WRAPPER_SCRIPT and "poweroff" in WRAPPER_SCRIPT
    # the target: both accounts, the reverse one outgoing
    accounts = {(a.username, a.outgoing) for a in p.target.accounts}
    assert accounts == {("htpc", False), ("nas", True)}
    assert p.target.lun == 1 and p.target.image == WORK / "disk.img"


def test_cmdline_plan_is_direct_boot_with_explicit_options() -> None:
    p = make(ScenarioOptions(mode=Mode.CMDLINE, username="htpc", password=Secret(PW)))
    assert p.boot is Boot.DIRECT
    argv = list(p.qemu_argv)
    assert "-boot" not in argv
    assert argv[argv.index("-kernel") + 1] == str(KERNEL)
    assert argv[argv.index("-initrd") + 1] == str(INITRD)
    assert argv[argv.index("-append") + 1] == p.append
    assert p.ipxe_script is None and p.table_config is None
    assert not p.client.firmware and p.client.network.mode is NetMode.DHCP
    assert "ip=dhcp" in p.append
    assert "boot=ISCSI=iscsi_initiator=iqn.2026-11.org.iscsiboot:client," in p.append
    assert f"iscsi_target_ip={HOST_ADDRESS},iscsi_target_port=40123" in p.append
    assert f"iscsi_username=htpc,iscsi_password={PW}" in p.append
    assert "iscsi_in_username" not in p.append
    assert p.append.split("boot=ISCSI=")[1].split()[0].endswith(",LABEL=System")


def test_client_password_fault_reaches_only_the_client() -> None:
    wrong = Secret("wrong-pass-999")
    p = make(ScenarioOptions(mode=Mode.CMDLINE, username="u", password=Secret(PW), client_password=wrong))
    assert "wrong-pass-999" in p.append and PW not in p.append
    assert p.target.accounts[0].password == Secret(PW)
    assert p.client.targets[0].chap is not None
    assert p.client.targets[0].chap.password == wrong


def test_acpi_ibft_plan_injects_table() -> None:
    p = make(mutual(acpi_ibft=True))
    assert p.boot is Boot.DIRECT
    argv = list(p.qemu_argv)
    assert argv[argv.index("-acpitable") + 1] == f"file={WORK / 'ibft.bin'}"
    assert p.ipxe_script is None
    assert p.table_config is not None
    net = p.table_config.network
    assert (net.mac, net.address, net.prefix, net.gateway) == (GUEST_MAC, "10.0.2.15", 24, HOST_ADDRESS)
    assert p.table_config.targets[0].lun == 1
    assert "boot=ISCSI=auto" in p.append


def test_vlan_goes_into_the_injected_ibft() -> None:
    p = make(mutual(acpi_ibft=True, vlan=100))
    assert p.table_config is not None and p.table_config.network.vlan == 100
    assert "on VLAN 100" in p.describe()
    assert make(mutual(acpi_ibft=True)).table_config.network.vlan is None


def test_until_exit_keeps_following_after_the_result() -> None:
    assert ScenarioOptions().until_exit is False
    lines = ["noise", _result(ok=False, phase="login", error="stopped before the login phase (break=login)")]
    assert finished(lines)  # the default wait ends at the agent's failure
    assert not _never(lines)  # until_exit: QEMU's exit (the guest powering off) ends it
    o = judge(
        lines, reason="exited", boot_seconds=1, total_seconds=2, console="\n".join(lines), qemu_status=0
    )
    assert o.reason == "agent" and o.phase == "login" and o.qemu_status == 0


def test_target_delay_and_labels() -> None:
    o = ScenarioOptions(mode=Mode.CMDLINE, target_delay=8, storage_label="Data", disk_storage_label="Other")
    p = make(o)
    assert p.target.delay == 8
    assert "disk=LABEL=Data" in p.append
    assert o.written_storage_label == "Other"
    assert "appears 8 s after the guest's network" in p.describe()


def test_kvm_is_opt_in() -> None:
    assert "kvm" in make(ScenarioOptions(kvm=True)).qemu_argv
    assert "kvm" not in make(ScenarioOptions()).qemu_argv


@pytest.mark.parametrize(
    "kwargs",
    [
        {"password": Secret(PW)},  # no user
        {"username": "u"},  # no password
        {"username": "u", "password": Secret("short")},  # tgt needs 12+
        {"reverse_username": "r", "reverse_password": Secret(RPW)},  # mutual without one-way
        {"username": "u", "password": Secret(PW), "reverse_username": "r"},
        {"client_password": Secret(PW)},  # fault without CHAP
        {"target_delay": -1},
        {"target_delay": 5},  # iPXE sanboot cannot wait
        {"mode": Mode.CMDLINE, "acpi_ibft": True},
        {"system_label": "has space"},
        {"target_name": "bad name"},
        {"timeout": 0},
        {"vlan": 100},  # a VLAN only through the injected iBFT
        {"acpi_ibft": True, "vlan": 4095},
        {"acpi_ibft": True, "vlan": 0},
    ],
)
def test_bad_options_are_usage_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        ScenarioOptions(**kwargs)  # type: ignore[arg-type]


def test_describe_masks_secrets() -> None:
    wrong = "wrong-pass-999"
    p = make(mutual(mode=Mode.CMDLINE, client_password=Secret(wrong)))
    text = p.describe()
    for secret in (PW, RPW, wrong):
        assert secret not in text
    assert "***" in text
    assert repr(p.options).count(PW) == 0


# ---------------------------------------------------------------- outcome


def _result(**kw: object) -> str:
    obj = {"ok": True, "phase": "done", "error": None, "timeline": {"network": 1.5, "login": 2.25}}
    obj.update(kw)
    return "ISCSIBOOT-RESULT " + json.dumps(obj)


def system_lines() -> list[str]:
    return [
        f"{SYSTEM_MARKER} pid=1",
        MOUNTS_BEGIN,
        "/dev/sda1 /flash ext4 ro 0 0",
        "/dev/sda2 /storage ext4 rw 0 0",
        MOUNTS_END,
    ]


def test_success_needs_result_and_system() -> None:
    lines = ["[    0.0] Linux", "garbage ISCSIBOOT-RESULT {not json", _result(), *system_lines()]
    assert finished(lines)
    o = judge(lines, reason="matched", boot_seconds=9.0, total_seconds=12.0, console="\n".join(lines))
    assert o.ok and o.reason == "system" and o.phase == "done" and o.error is None
    assert o.system.mounted_at("/storage") is not None
    j = o.to_json()
    assert j["ok"] is True and j["harness"]["system_reached"] is True
    assert timeline_text(o.result)[0].split() == ["network", "1.50", "s"]


def test_agent_ok_without_system_is_a_failure() -> None:
    lines = [_result()]
    assert not finished(lines)
    o = judge(lines, reason="exited", boot_seconds=1, total_seconds=2, console="x")
    assert not o.ok and "SYSTEM" in (o.error or "")
    assert o.to_json()["ok"] is False


def test_agent_failure_ends_the_wait() -> None:
    lines = ["noise", _result(ok=False, phase="login", error="authentication failed")]
    assert finished(lines)
    o = judge(lines, reason="matched", boot_seconds=1, total_seconds=2, console="\n".join(lines))
    assert not o.ok and o.reason == "agent" and o.phase == "login"
    assert o.error == "authentication failed"


def test_silent_console_means_firmware() -> None:
    o: Outcome = judge([], reason="exited", boot_seconds=7, total_seconds=8, console="")
    assert o.phase == "firmware" and "iPXE" in (o.error or "")
    silent = judge([], reason="timeout", boot_seconds=120, total_seconds=121, console="")
    assert silent.phase == "firmware" and "sanboot" in (silent.error or "")
    direct = judge([], reason="exited", boot_seconds=1, total_seconds=2, console="", sanboot=False)
    assert "iPXE" not in (direct.error or "")
    t = judge(["Linux version"], reason="timeout", boot_seconds=120, total_seconds=121, console="Linux")
    assert t.reason == "timeout" and "time limit" in (t.error or "")


def test_find_result_takes_the_last() -> None:
    found = find_result([_result(phase="a"), _result(phase="b")])
    assert found == RunResult(ok=True, phase="b", timeline={"network": 1.5, "login": 2.25})
    assert find_result(["nothing"]) is None
    assert find_result(['ISCSIBOOT-RESULT {"ok": 1}']) is None  # not the agent's schema


def test_the_agents_result_line_round_trips_through_the_harness() -> None:
    net = NetResult(device="eth0", parent=None, mac="52:54:00:12:34:56", mode="dhcp", address="10.0.2.15")
    sent = RunResult(
        ok=True,
        phase="done",
        timeline={"config": 0.25},
        system="/dev/sda1",
        network=net,
        sessions=[SessionInfo("session1", "iqn.2024-01.test:t0")],
        clock={"agent_start": 1.5, "first_netlink": None},
        total=0.25,
    )
    line = result_line(sent.to_dict())
    assert line.startswith(RESULT_TAG + " ")
    assert find_result(["noise", f"iscsiboot: {line}"]) == sent


def test_parse_report_without_marker() -> None:
    r = parse_report("hello\nworld")
    assert not r.reached and r.mounts == ()


# ---------------------------------------------------------------- CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "iscsiboot", "qemu", *args], capture_output=True, text=True, check=False
    )


def test_cli_bad_options_exit_2_one_line_no_secret() -> None:
    done = _cli("boot", "--mode", "cmdline", "--username", "u", "--password", "tiny")
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("iscsiboot: error:")
    assert "tiny" not in done.stderr and "Traceback" not in done.stderr
    done = _cli("boot", "--target-delay", "3")
    assert done.returncode == 2 and "sanboot" in done.stderr


def test_cli_help_lists_scenario_options() -> None:
    done = _cli("boot", "--help")
    assert done.returncode == 0
    for option in (
        "--mode", "--client-password", "--target-delay", "--acpi-ibft", "--json", "--console", "--backend",
    ):  # fmt: skip
        assert option in done.stdout
    assert _cli("demo", "--help").returncode == 0


def test_cli_backend_choice() -> None:
    assert backend_append("native") == ()
    assert backend_append("iscsistart") == ("iscsiboot.backend=iscsistart",)
    done = _cli("boot", "--backend", "carrier-pigeon")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1


def test_result_line_cut_by_a_kernel_message() -> None:
    """The kernel's copy of the line may land inside the console copy (seen under TCG)."""
    network = {"device": "eth0", "parent": None, "mac": None, "mode": "dhcp", "dhcp_seconds": 0.0}
    whole = json.dumps({"ok": True, "phase": "done", "network": network}, separators=(",", ":"))
    cut = whole.index("dhcp_seco") + len("dhcp_seco")
    lines = [
        f"ISCSIBOOT-RESULT {whole[:cut]}[   18.298303] iscsiboot: ISCSIBOOT-RESULT {whole}",
        whole[cut:],
        "iscsiboot: switching to /sysroot",
    ]
    assert find_result(lines) == RunResult.from_json(whole)
    # only the cut console copy (the kernel's copy truncated or missing): glue the next line on
    lines = [f"ISCSIBOOT-RESULT {whole[:cut]}[   18.298303] iscsiboot: something else", whole[cut:]]
    assert find_result(lines) == RunResult.from_json(whole)


def test_boot_options_keep_a_quoted_label_whole() -> None:
    cfg = BootConfig(
        firmware=True,
        network=Network(mode=NetMode.DHCP),
        system=Locator.parse("LABEL=HTPC System"),
        storage=Locator.parse("LABEL=Storage"),
    )
    assert "boot=ISCSI=auto,LABEL=HTPC System" in boot_options(cfg)


def test_scenario_ipxe_script_gives_up_after_bounded_attempts() -> None:
    client = BootConfig(
        initiator="iqn.2026-11.org.iscsiboot:client",
        targets=(Target("iqn.2026-11.org.iscsiboot:htpc", "10.0.2.2", lun=1),),
    )
    script = ipxe_script(client)
    assert script.count("sanboot iscsi:10.0.2.2:::1:iqn.2026-11.org.iscsiboot:htpc") == SANBOOT_ATTEMPTS
    assert "exit 1" in script


def test_late_target_clock_starts_at_the_network_line_even_when_cut() -> None:
    """Seen in CI: the kernel's copy of the agent's line landed inside the console copy."""
    assert network_is_up("iscsiboot: network: eth0 10.0.2.15/24 via 10.0.2.2 (dhcp)")
    assert network_is_up("iscsiboot: netwo[    5.575944] iscsiboot: network: eth0 10.0.2.15/24 (dhcp)")
    assert not network_is_up("iscsiboot: network modules: virtio_pci, virtio_net")
    assert not network_is_up("iscsiboot: netwo")


def test_bad_lun_faults_are_served_by_tgt_to_a_direct_boot(tmp_path: Path) -> None:
    odd = ScenarioOptions(mode=Mode.CMDLINE, lun_block_size=1024)
    spec = target_spec(odd, Files(tmp_path))
    assert (spec.block_size, spec.image) == (1024, tmp_path / "disk.img")
    empty = target_spec(ScenarioOptions(mode=Mode.CMDLINE, empty_lun=True), Files(tmp_path))
    assert (empty.block_size, empty.image) == (None, tmp_path / "empty.img")
    for wrong in ({"mode": Mode.IBFT}, {"mode": Mode.CMDLINE, "target": TargetKind.LIO}):
        with pytest.raises(UsageError, match="direct boot"):
            ScenarioOptions(empty_lun=True, **wrong)
