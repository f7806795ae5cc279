"""The agent's pure logic: options, planning, deadlines, backoff, report formatting."""

from __future__ import annotations

import importlib
import io
import json
import random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from iscsiboot.agent import PHASES, RUNTIME_MODULES
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.options import OnFailure, parse_options
from iscsiboot.agent.phases.lease import parse_udhcpc
from iscsiboot.agent.phases.network import kernel_words
from iscsiboot.agent.plan import (
    LinkInfo,
    backoff,
    candidate_links,
    locators,
    login_targets,
    merge_firmware,
    mount_plan,
    needed_modules,
    net_plan,
    vlan_name,
)
from iscsiboot.agent.report import Reporter, RunResult, failure_paragraph, result_file
from iscsiboot.cmdline.parse import tokenize
from iscsiboot.errors import ParseError
from iscsiboot.model import BootConfig, Chap, Locator, NetMode, Network, Target
from iscsiboot.secret import Secret

T0 = Target("iqn.2024-01.test:t0", "10.0.2.2", lun=1)
T1 = Target("iqn.2024-01.test:t1", "10.0.2.3")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tokenize_keeps_quoted_spaces() -> None:
    assert tokenize('a "b c"=d  e="f g" h') == ("a", "b c=d", "e=f g", "h")
    assert tokenize("") == ()


def test_options_defaults_and_values() -> None:
    opts = parse_options("quiet")
    assert not opts.debugging and opts.on_failure is None and opts.reboot_delay == 10.0
    opts = parse_options(
        "debugging progress break=login,mount iscsiboot.on_failure=poweroff iscsiboot.reboot_delay=0 "
        "iscsiboot.timeout.network=45 init=/sbin/init iscsiboot.cmdline=/etc/cl"
    )
    assert opts.debugging and opts.progress
    assert opts.breaks == frozenset({"login", "mount"})
    assert opts.on_failure is OnFailure.POWEROFF
    assert opts.reboot_delay == 0.0
    assert opts.timeout("network") == 45.0 and opts.timeout("login") == 60.0
    assert opts.init == "/sbin/init" and opts.cmdline_file == "/etc/cl"


def test_options_errors_and_unknown_break() -> None:
    with pytest.raises(ParseError, match="poweroff, reboot or shell"):
        parse_options("iscsiboot.on_failure=halt")
    with pytest.raises(ParseError, match="seconds"):
        parse_options("iscsiboot.reboot_delay=soon")
    with pytest.raises(ParseError, match="unknown phase"):
        parse_options("iscsiboot.timeout.nap=3")
    assert parse_options("break=nap").warnings and not parse_options("break=nap").breaks


def test_login_targets_once_per_distinct_target() -> None:
    cfg = BootConfig(targets=(T0, Target("iqn.2024-01.test:t0", "10.0.2.2", lun=2), T1))
    assert [t.name for t in login_targets(cfg)] == [T0.name, T1.name]


def test_merge_firmware_fills_from_the_table_and_cmdline_ip_wins() -> None:
    fw = BootConfig(
        firmware=True,
        initiator="iqn.2024-01.test:fw",
        targets=(T0,),
        network=Network(mode=NetMode.STATIC, mac="52:54:00:12:34:56", address="10.0.2.15", prefix=24),
    )
    merged = merge_firmware(BootConfig(firmware=True, system=Locator.parse("LABEL=System")), fw)
    assert merged.initiator == "iqn.2024-01.test:fw" and merged.targets == (T0,)
    assert merged.network.mode is NetMode.STATIC and merged.system == Locator.parse("LABEL=System")
    cmd = BootConfig(firmware=True, network=Network(mode=NetMode.DHCP))
    assert merge_firmware(cmd, fw).network.mode is NetMode.DHCP
    # a DHCP-origin iBFT NIC takes a fresh lease
    dhcp_fw = BootConfig(firmware=True, network=Network(mode=NetMode.DHCP, mac="52:54:00:12:34:56"))
    plan = net_plan(merge_firmware(BootConfig(firmware=True), dhcp_fw).network)
    assert plan.mode is NetMode.DHCP and plan.mac == "52:54:00:12:34:56"


def test_needed_modules() -> None:
    first, rest = needed_modules(BootConfig(targets=(T0,)), ("virtio_net",))
    assert first == ("virtio_net",)
    assert {"iscsi_tcp", "crypto-crc32c", "sd_mod", "squashfs", "loop"} <= set(rest)
    assert "iscsi_ibft" not in rest
    first, rest = needed_modules(BootConfig(firmware=True, network=Network(vlan=100)))
    assert first == ("8021q",) and rest[0] == "iscsi_ibft"


def test_net_plan_and_interface_choice() -> None:
    links = [
        LinkInfo("lo", 1, "00:00:00:00:00:00", True, loopback=True),
        LinkInfo("eth0", 2, "52:54:00:00:00:01", False),
        LinkInfo("eth1", 3, "52:54:00:00:00:02", True),
        LinkInfo("br0", 4, "52:54:00:00:00:03", True, kind="bridge"),
    ]
    plan = net_plan(Network())
    assert plan.mode is NetMode.DHCP and plan.pick_first_with_carrier
    assert [lk.name for lk in candidate_links(links, plan)] == ["eth1", "eth0"]
    assert [lk.name for lk in candidate_links(links, net_plan(Network(device="eth0")))] == ["eth0"]
    by_mac = net_plan(Network(mode=NetMode.FIRMWARE, mac="52:54:00:00:00:01"))
    assert [lk.name for lk in candidate_links(links, by_mac)] == ["eth0"]
    assert candidate_links(links, net_plan(Network(device="eth9"))) == []
    static = net_plan(
        Network(mode=NetMode.STATIC, address="10.0.0.5", prefix=24, gateway="10.0.0.1", dns=("10.0.0.2",))
    )
    assert (static.address, static.prefix, static.gateway, static.dns) == (
        "10.0.0.5",
        24,
        "10.0.0.1",
        ("10.0.0.2",),
    )


def test_vlan_plan() -> None:
    plan = net_plan(Network(mode=NetMode.DHCP, device="eth0", vlan=100))
    assert plan.vlan == 100
    assert vlan_name("eth0", 100) == "eth0.100"
    assert vlan_name("enp0s31f6abcdef", 4094) == "enp0s31f6a.4094"
    assert len(vlan_name("enp0s31f6abcdef", 4094)) == 15


def test_deadline() -> None:
    clock = Clock()
    d = Deadline(5, clock)
    clock.now += 2
    assert d.remaining() == 3 and d.elapsed() == 2 and not d.expired()
    clock.now += 10
    assert d.remaining() == 0 and d.expired()


def test_backoff_grows_with_jitter_and_caps() -> None:
    delays = backoff(first=0.5, cap=8, rng=random.Random(1))
    values = [next(delays) for _ in range(10)]
    assert 0.25 <= values[0] <= 0.5
    assert 0.5 <= values[1] <= 1.0
    assert all(4 <= v <= 8 for v in values[5:])
    other = backoff(first=0.5, cap=8, rng=random.Random(2))
    assert values != [next(other) for _ in range(10)]


def test_mount_plan_matches_openelec() -> None:
    steps = mount_plan("/dev/sda1", "ext4", "/dev/sda2", "ext4", "/sysroot")
    assert [(s.source, s.target) for s in steps] == [
        ("/dev/sda1", "/flash"),
        ("/flash/SYSTEM", "/sysroot"),
        ("/dev/sda2", "/storage"),
    ]
    assert "ro" in steps[0].options.split(",") and steps[1].loop and steps[1].fstype == "squashfs"
    assert "rw" in steps[2].options.split(",") and steps[2].check
    assert len(mount_plan("/dev/sda1", "vfat", None, None, "/sysroot")) == 2
    assert locators(BootConfig()) == (Locator.parse("LABEL=System"), None)


def test_result_file_is_shell_readable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    values = {"A": 'it\'s "quoted" $HOME `x`', "B": None, "C_2": "plain"}
    text = result_file(values)
    script = tmp_path / "r.sh"
    script.write_text(text + 'printf "%s|%s|%s" "$A" "$B" "$C_2"\n')
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True).stdout
    assert out == 'it\'s "quoted" $HOME `x`||plain'
    assert shlex.split(text.splitlines()[0].split("=", 1)[1]) == [values["A"]]
    with pytest.raises(ValueError):
        result_file({"BAD-NAME": "x"})


def test_reporter_masks_secrets_everywhere(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    console = io.StringIO()
    kmsg = tmp_path / "kmsg"
    kmsg.write_text("")
    report = tmp_path / "run/iscsiboot/report.json"
    reporter = Reporter(console, kmsg=str(kmsg), report_path=str(report))
    reporter.add_secrets([Secret("topsecretpass99")])
    reporter.line("argv: iscsistart -w topsecretpass99")
    result = RunResult(
        ok=False,
        phase="login",
        error="cannot log in",
        evidence="iscsistart -w topsecretpass99 failed",
        fix="check iscsi_password",
        timeline={"config": 0.1, "login": 2.0},
    )
    line = reporter.finish(result)
    everything = console.getvalue() + kmsg.read_text() + report.read_text()
    assert "topsecretpass99" not in everything
    assert "***" in everything
    assert console.getvalue().rstrip().splitlines()[-1] == line
    data = json.loads(line.split(" ", 1)[1])
    assert data["ok"] is False and data["phase"] == "login" and data["timeline"]["login"] == 2.0
    assert {"ok", "phase", "error", "timeline", "system", "storage"} <= set(data)
    assert "<3>iscsiboot: iSCSI boot failed in the login phase" in kmsg.read_text()


@pytest.mark.parametrize("secret", ['quote"d-secret-1', "back\\slash-secret", "tab\tsecret-long"])
def test_report_masks_a_secret_that_json_would_escape(tmp_path: Path, secret: str) -> None:
    """JSON writes '"' and '\\' escaped: the report masks each field before that, not the JSON text."""
    console = io.StringIO()
    report = tmp_path / "report.json"
    reporter = Reporter(console, kmsg=None, report_path=str(report))
    reporter.add_secrets([Secret(secret)])
    result = RunResult(ok=False, phase="login", error="cannot log in", evidence=f"sent {secret}")
    line = reporter.finish(result)
    for text in (line, report.read_text(), console.getvalue()):
        assert json.dumps(secret)[1:-1] not in text and secret not in text
    assert json.loads(report.read_text())["evidence"] == "sent ***"


def test_failure_paragraph_names_phase_cause_evidence_fix() -> None:
    text = failure_paragraph(
        RunResult(phase="login", error="CHAP rejected", evidence="(24 - auth)", fix="check iscsi_password")
    )
    assert text.startswith("iSCSI boot failed in the login phase: CHAP rejected.")
    assert "Seen: (24 - auth)." in text and "Fix: check iscsi_password." in text
    stopped = failure_paragraph(
        RunResult(phase="login", error="stopped before the login phase (break=login)", cause="break")
    )
    assert stopped == "iSCSI boot stopped at the login phase: stopped before the login phase (break=login)."
    err = PhaseError("disk", "no disk", evidence="session1", fix="map a LUN")
    assert "disk phase" in err.paragraph() and str(err) == "disk: no disk (map a LUN)"


def test_runtime_modules_import_and_phase_names() -> None:
    assert PHASES == ("config", "modules", "network", "login", "disk", "label", "mount", "handoff")
    for name in RUNTIME_MODULES:
        if name.startswith("iscsiboot"):
            importlib.import_module(name)


def test_chap_in_model_is_secret() -> None:
    t = Target("iqn.x:y", "10.0.0.1", chap=Chap("u", Secret("abcdefghijkl")))
    assert "abcdefghijkl" not in repr(login_targets(BootConfig(targets=(t,))))


def test_parse_udhcpc_report_lines() -> None:
    lease = parse_udhcpc(
        "LEASE|10.0.2.15|255.255.255.0|10.0.2.2 10.0.2.1|10.0.2.3|10.0.2.2|iscsi:10.0.2.2::::iqn.x:y"
    )
    assert lease is not None
    assert (lease.address, lease.prefix, lease.gateway) == ("10.0.2.15", 24, "10.0.2.2")
    assert lease.dns == ("10.0.2.3",) and lease.root_path == "iscsi:10.0.2.2::::iqn.x:y"
    bare = parse_udhcpc("LEASE|10.1.0.9|255.255.0.0||||")
    assert bare is not None and bare.gateway is None and bare.dns == () and bare.prefix == 16
    assert parse_udhcpc("udhcpc: sending discover") is None
    assert parse_udhcpc("LEASE|not-an-ip|255.0.0.0||||") is None
    assert parse_options("iscsiboot.dhcp=udhcpc").dhcp_client == "udhcpc"
    with pytest.raises(ParseError):
        parse_options("iscsiboot.dhcp=dhclient")


def test_boot_modules_stay_light() -> None:
    """PID 1 starts without pyroute2, asyncio or construct, and the disk phase never needs them."""
    code = (
        "import sys, iscsiboot.agent.init, iscsiboot.agent.runner, iscsiboot.agent.phases.modules; "
        "import iscsiboot.agent.phases.disk, iscsiboot.agent.phases.label, iscsiboot.agent.phases.mount; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pyroute2', 'asyncio', 'construct', "
        "'pyudev', 'sqlite3')); print(heavy)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_kernel_words_name_vlan_parent_and_addresses() -> None:
    words = kernel_words("eth0.100", "vlan", 100, "eth0", ["192.0.2.10/24"])
    assert words == "eth0.100 is VLAN 100 on eth0, 192.0.2.10/24 (as the kernel reports)"
    assert (
        kernel_words("eth0", None, None, None, []) == "eth0 (device), no IPv4 address (as the kernel reports)"
    )


def test_a_dhcp_origin_nic_with_the_firmwares_address_keeps_that_lease() -> None:
    leased = Network(
        mode=NetMode.DHCP, mac="52:54:00:12:34:56", address="10.0.2.15", prefix=24, gateway="10.0.2.2",
        dns=("10.0.2.3",),
    )  # fmt: skip
    plan = net_plan(
        merge_firmware(BootConfig(firmware=True), BootConfig(firmware=True, network=leased)).network
    )
    assert plan.mode is NetMode.DHCP and plan.firmware_lease
    assert (plan.address, plan.prefix, plan.gateway, plan.dns) == ("10.0.2.15", 24, "10.0.2.2", ("10.0.2.3",))
    fresh = net_plan(leased, firmware_lease=False)  # the boot needs a lease of its own (a DHCP root path)
    assert not fresh.firmware_lease and (fresh.address, fresh.gateway, fresh.dns) == (None, None, ())
    assert not net_plan(Network(mode=NetMode.DHCP, mac="52:54:00:12:34:56")).firmware_lease
    assert not net_plan(Network(mode=NetMode.STATIC, address="10.0.0.5", prefix=24)).firmware_lease
