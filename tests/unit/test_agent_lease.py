"""The firmware lease's renewal in the background: udhcpc's report, else pyroute2's client."""

from __future__ import annotations

import sys
import time

import pytest
from iscsiboot.agent import netup
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.options import parse_options
from iscsiboot.agent.phases import lease, network
from iscsiboot.agent.phases.lease import DhcpLease, Renewal
from iscsiboot.agent.plan import NetPlan
from iscsiboot.model import NetMode

PLAN = NetPlan(NetMode.DHCP, None, "52:54:00:12:34:56", None, "10.0.2.15", 24, "10.0.2.2", hostname="htpc")


def _udhcpc(monkeypatch: pytest.MonkeyPatch, code: str) -> list[list[str]]:
    """udhcpc replaced by a Python program; the argument lists it was started with."""
    started: list[list[str]] = []

    def argv(interface: str, seconds: float) -> list[str]:
        started.append([interface, str(seconds)])
        return [sys.executable, "-c", f"import sys\n{code}", "/bin/sh"]

    monkeypatch.setattr(lease, "udhcpc_argv", argv)
    return started


def test_udhcpc_asks_for_the_firmwares_address_and_its_lease_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    started = _udhcpc(
        monkeypatch,
        "print('udhcpc: sending discover', flush=True)\n"
        "assert sys.argv[1:3] == ['-r', '10.0.2.15'] and sys.argv[3] == '-s', sys.argv\n"
        "print('LEASE|10.0.2.15|255.255.255.0|10.0.2.2|10.0.2.3|10.0.2.2|', flush=True)\n",
    )
    renewal = Renewal(PLAN, "eth0", 30).start()
    found, problem = renewal.outcome(30)
    assert started == [["eth0", "30"]] and problem is None and found is not None
    assert (found["address"], found["prefix"], found["gateway"], found["dns"]) == (
        "10.0.2.15",
        24,
        "10.0.2.2",
        ["10.0.2.3"],
    )
    assert found["server"] == "10.0.2.2" and found["client"] == "udhcpc"
    assert renewal.script_dir is None  # its report script is gone


def test_a_udhcpc_without_a_lease_or_too_slow_is_the_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    _udhcpc(monkeypatch, "print('udhcpc: no lease, failing', flush=True)\nsys.exit(1)\n")
    assert Renewal(PLAN, "eth0", 30).start().outcome(30) == (
        None,
        "no lease from udhcpc (udhcpc: no lease, failing)",
    )
    _udhcpc(monkeypatch, "import time\ntime.sleep(60)\n")
    renewal = Renewal(PLAN, "eth0", 30).start()
    started = time.monotonic()
    assert renewal.outcome(0.3) == (None, "no answer within 0.3 s")
    assert renewal.proc is not None and renewal.proc.returncode is not None  # killed
    assert time.monotonic() - started < 5


def test_without_udhcpc_pyroute2s_client_renews_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_udhcpc(interface: str, seconds: float) -> list[str]:
        raise PhaseError("network", "no DHCP client", cause="missing-tool")

    def renew(plan: NetPlan, device: str, deadline: object, *, dhcp_client: str) -> DhcpLease:
        assert (plan, device, dhcp_client) == (PLAN, "eth0", "pyroute2")
        return DhcpLease("10.0.2.15", 24, "10.0.2.2", ("10.0.2.3",), "10.0.2.2", None, "pyroute2")

    monkeypatch.setattr(lease, "udhcpc_argv", no_udhcpc)
    monkeypatch.setattr(network, "renew", renew)
    renewal = Renewal(PLAN, "eth0", 30).start()
    assert renewal.thread is not None
    found, problem = renewal.outcome(30)
    assert problem is None and found is not None and found["client"] == "pyroute2"


def test_the_renewal_starts_when_the_login_is_done_and_only_once(monkeypatch: pytest.MonkeyPatch) -> None:
    here = netup.InProcess(parse_options(""), resolv_conf=None)
    started: list[tuple[str, float]] = []
    monkeypatch.setattr(here, "start_renewal", lambda _plan, dev, seconds: started.append((dev, seconds)))
    here.pending = (PLAN, "eth0", 30.0)  # what the network phase leaves for later
    assert started == []
    here.start_background()
    here.start_background()
    assert started == [("eth0", 30.0)]
    # a run that ends before its login phase still renews: asking how it went starts it
    here.pending = (PLAN, "eth1", 5.0)
    assert here.renewal(0.1) is None and started[-1] == ("eth1", 5.0)
