"""What only a real kernel can show: the agent's 802.1Q VLAN and ``break=<phase>`` in QEMU (TCG).

The host kernel has no 8021q module, so the VLAN is proven in the guest: an
iBFT injected through ``-acpitable`` puts the NIC on VLAN 100 with a static
address; the agent loads 8021q, creates ``eth0.100`` on the NIC, sets the
address on it and reads the interface back from the kernel.  QEMU's user
network does not carry tagged frames, so the run stops before the login
(``break=login``), and with ``iscsiboot.on_failure=poweroff`` the guest powers
off: QEMU exits by itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.outcome import Outcome
from iscsiboot.qemu.scenario import GUEST_ADDRESS, GUEST_PREFIX, HOST_ADDRESS, ScenarioOptions
from vm_support import boot, explain, require_vm

VLAN = 100
BREAK_TIMEOUT = 90.0  # seconds; QEMU is killed after it
# no login happens, so no CHAP: the target stays unused by these runs
STOP = ("iscsiboot.reboot_delay=1",)


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    return prepare()


def _agent_lines(outcome: Outcome) -> list[str]:
    return [line for line in outcome.console.splitlines() if "iscsiboot: " in line]


def expect_stopped_and_powered_off(outcome: Outcome, name: str, phase: str) -> None:
    """The run stopped before ``phase`` (break=), said so, and the guest powered off by itself."""
    why = explain(outcome, name)
    assert outcome.reason == "agent", why
    assert outcome.result is not None, why
    assert outcome.result.ok is False, why
    assert outcome.result.phase == phase, why
    assert outcome.result.cause == "break", why
    assert f"break={phase}" in str(outcome.result.error), why
    assert not outcome.system.reached, why
    text = outcome.console
    assert f"break={phase}: stopping before the {phase} phase" in text, why
    assert f"iSCSI boot stopped at the {phase} phase" in text, why
    assert "powering off in 1 s" in text, why
    assert "reboot: Power down" in text, why  # the kernel's own word for a power-off
    assert outcome.qemu_status == 0, why  # QEMU exited by itself (a kill gives no 0)
    assert "starting a debug shell" not in text, why


def test_vlan_from_ibft_is_created_on_the_nic(artifacts: Artifacts, log_dir: Path) -> None:
    """The iBFT's VLAN 100: 8021q loads, eth0.100 on eth0 gets the iBFT's static address."""
    options = ScenarioOptions(
        acpi_ibft=True,
        vlan=VLAN,
        timeout=BREAK_TIMEOUT,
        until_exit=True,
        extra_append=("break=login", *STOP),
    )
    outcome = boot(f"vlan {VLAN} (break=login)", options, artifacts, log_dir)
    why = explain(outcome, "vlan")
    expect_stopped_and_powered_off(outcome, "vlan", "login")
    text = outcome.console
    assert "ACPI: iBFT" in text, why  # the injected table is what carries the VLAN
    assert re.search(r"8021q: 802\.1Q VLAN Support", text), why  # the real module loaded
    address = f"{GUEST_ADDRESS}/{GUEST_PREFIX}"
    # the agent's own summary, then the interface as the kernel reports it
    assert f"iscsiboot: network: eth0.{VLAN} (VLAN {VLAN} on eth0) {address} via {HOST_ADDRESS}" in text, why
    assert (
        f"iscsiboot: network: eth0.{VLAN} is VLAN {VLAN} on eth0, {address} (as the kernel reports)" in text
    ), why
    assert outcome.result is not None
    net = outcome.result.network
    assert net is not None, why
    assert (net.device, net.parent, net.vlan) == (f"eth0.{VLAN}", "eth0", VLAN), why
    assert (net.address, net.prefix, net.mode) == (
        GUEST_ADDRESS,
        GUEST_PREFIX,
        "static",
    ), why
    timeline = outcome.result.timeline
    assert "network" in timeline and "login" not in timeline, why
    print(f"\n{outcome.boot_seconds:.1f} s", *_agent_lines(outcome), sep="\n")  # shown with -s


def test_break_network_stops_reports_and_powers_off(artifacts: Artifacts, log_dir: Path) -> None:
    """``break=network`` with on_failure=poweroff: no network phase, the result says break, QEMU ends."""
    options = ScenarioOptions(
        acpi_ibft=True,
        timeout=BREAK_TIMEOUT,
        until_exit=True,
        extra_append=("break=network", *STOP),
    )
    outcome = boot("break=network", options, artifacts, log_dir)
    why = explain(outcome, "break=network")
    expect_stopped_and_powered_off(outcome, "break=network", "network")
    assert outcome.result is not None
    assert outcome.result.network is None, why  # the network phase never ran
    timeline = outcome.result.timeline
    assert list(timeline) == ["config", "modules"], why
    assert "iscsiboot: network:" not in outcome.console, why
    print(f"\n{outcome.boot_seconds:.1f} s", *_agent_lines(outcome), sep="\n")  # shown with -s


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"
