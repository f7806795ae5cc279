"""dracut's ``netroot=dhcp`` in QEMU (TCG): the guest's only boot settings come from a real DHCP server.

``iscsiboot qemu boot --mode dhcp``: guest, dnsmasq and tgtd share a network
namespace of their own; dnsmasq serves the configuration ``iscsiboot generate
dnsmasq`` writes, whose option 17 names the target.  The kernel command line
says ``netroot=dhcp`` and the initiator, nothing of the target.  Without
option 17 the boot ends in the named cause.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from iscsiboot.qemu.artifacts import prepare
from iscsiboot.qemu.harness import Artifacts
from iscsiboot.qemu.netlab import SERVER_ADDRESS
from iscsiboot.qemu.scenario import DEFAULT_TARGET, Mode, ScenarioOptions
from vm_support import BOOT_TIMEOUT, boot, expect_failure, expect_success, explain, require_vm


@pytest.fixture(scope="module")
def artifacts() -> Artifacts:
    require_vm()
    return prepare()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path / "logs"


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in listed.splitlines() if line.startswith("iscsiboot-")}


def test_netroot_dhcp_boots_from_the_root_path_of_dnsmasq(artifacts: Artifacts, log_dir: Path) -> None:
    before = _namespaces()
    outcome = boot(
        "dhcp root path", ScenarioOptions(mode=Mode.DHCP, timeout=BOOT_TIMEOUT), artifacts, log_dir
    )
    expect_success(outcome, "dhcp root path")
    why = explain(outcome, "dhcp root path")
    assert outcome.result is not None and outcome.result.network is not None, why
    assert outcome.result.network.root_path == f"iscsi:{SERVER_ADDRESS}:::1:{DEFAULT_TARGET}", why
    assert outcome.result.network.server == SERVER_ADDRESS, why
    assert any(s.target == DEFAULT_TARGET for s in outcome.result.sessions), why
    assert "netroot=dhcp" in outcome.console and f"{DEFAULT_TARGET}" not in _kernel_line(outcome.console)
    assert _namespaces() == before, "the network namespace outlived the run"


def test_a_lease_without_root_path_ends_in_the_named_cause(artifacts: Artifacts, log_dir: Path) -> None:
    options = ScenarioOptions(mode=Mode.DHCP, no_root_path=True, timeout=BOOT_TIMEOUT)
    outcome = boot("dhcp no root path", options, artifacts, log_dir)
    expect_failure(outcome, "dhcp no root path", "login")
    why = explain(outcome, "dhcp no root path")
    assert outcome.result is not None and outcome.result.cause == "no-root-path", why
    assert outcome.result.error == "the DHCP server sent no root path (option 17)", why
    assert 'dhcp-option=tag:!ipxe,option:root-path,"iscsi:' in str(outcome.result.fix), why
    assert not outcome.result.sessions, why


def _kernel_line(console: str) -> str:
    """The kernel's echo of its command line (what the guest was told)."""
    return next((line for line in console.splitlines() if "Command line:" in line), "")
