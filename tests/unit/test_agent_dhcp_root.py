"""The agent with the target from the DHCP root path (netroot=dhcp), and ip=dhcp6."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from iscsiboot.agent.backends.result import Cause, LoginResult
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.options import parse_options
from iscsiboot.agent.phases import login as login_phase
from iscsiboot.agent.phases.config import load_config, target_from_lease
from iscsiboot.agent.phases.network import bring_up
from iscsiboot.agent.plan import NetResult, net_plan
from iscsiboot.agent.report import Reporter
from iscsiboot.agent.results import ConfigResult, ModulesResult, NetworkResult
from iscsiboot.agent.runner import Agent
from iscsiboot.agent.transport import Transport
from iscsiboot.cmdline.parse import parse
from iscsiboot.model import BootConfig, NetMode, Network, Target

INITIATOR = "iqn.1994-05.com.redhat:5a6b7c8d"
TARGET0 = "iqn.2009-06.dracut:target0"
LINE = f"root=/dev/root netroot=dhcp ip=eth0:dhcp rd.iscsi.initiator={INITIATOR}"
SECRET = "Lease-Secret-99"


def _lease(root_path: str | None) -> NetResult:
    return NetResult(
        device="eth0", parent=None, mac=None, mode="dhcp", address="192.168.50.101", prefix=24,
        server="192.168.50.1", root_path=root_path,
    )  # fmt: skip


def _never_firmware() -> BootConfig:
    raise AssertionError("the iBFT is not read")


def test_config_phase_accepts_the_dhcp_target_and_wants_an_initiator() -> None:
    cfg, _warnings = load_config(LINE, firmware=_never_firmware)
    assert cfg.target_from_dhcp and not cfg.targets
    with pytest.raises(PhaseError) as info:
        load_config("netroot=dhcp", firmware=_never_firmware)
    assert info.value.phase == "config" and "initiator" in info.value.what
    assert info.value.fix is not None and "rd.iscsi.initiator=" in info.value.fix


def test_the_lease_names_the_target() -> None:
    cfg = parse(LINE).config
    added: list[object] = []
    done = target_from_lease(cfg, _lease(f"iscsi:192.168.50.1:::1:{TARGET0}"), added.extend)
    assert done.targets == (Target(TARGET0, "192.168.50.1", lun=1),)
    assert done.initiator == INITIATOR and added == []
    chap = target_from_lease(cfg, _lease(f"iscsi:htpc:{SECRET}@192.168.50.1::::{TARGET0}"), added.extend)
    assert chap.targets[0].chap is not None and [s.reveal() for s in added] == [SECRET]  # type: ignore[attr-defined]


def test_a_lease_without_root_path_is_the_named_cause() -> None:
    with pytest.raises(PhaseError) as info:
        target_from_lease(parse(LINE).config, _lease(None), lambda _s: None)
    exc = info.value
    assert exc.phase == "login" and exc.cause == "no-root-path"
    assert exc.what == "the DHCP server sent no root path (option 17)"
    assert exc.evidence is not None and "192.168.50.1" in exc.evidence
    assert exc.fix is not None and 'dhcp-option=tag:!ipxe,option:root-path,"iscsi:' in exc.fix


def test_a_root_path_that_does_not_parse_never_shows_its_secret() -> None:
    with pytest.raises(PhaseError) as info:
        target_from_lease(
            parse(LINE).config, _lease(f"iscsi:htpc:{SECRET}@192.168.50.1::0::{TARGET0}"), print
        )
    exc = info.value
    assert exc.cause == "root-path" and "port '0'" in exc.what
    assert SECRET not in f"{exc.what} {exc.evidence} {exc.fix}"


def test_the_result_masks_the_root_path_credentials_but_the_worker_gets_them() -> None:
    lease = _lease(f"iscsi:htpc:{SECRET}@192.168.50.1::::{TARGET0}")
    assert lease.to_dict()["root_path"] == f"iscsi:htpc:***@192.168.50.1::::{TARGET0}"
    carried = NetResult.from_dict(json.loads(json.dumps(lease.to_dict(secrets=True))))
    assert carried.root_path == lease.root_path


class _Backend:
    name = "fake"

    def __init__(self) -> None:
        self.targets: list[Target] = []

    def login(self, target: Target, initiator: str, deadline: Deadline) -> LoginResult:
        self.targets.append(target)
        return LoginResult(Cause.OK, "ok")

    def login_firmware(self, deadline: Deadline) -> LoginResult:
        raise AssertionError("no firmware login")


def _agent(monkeypatch: pytest.MonkeyPatch) -> tuple[Agent, _Backend]:
    backend = _Backend()
    monkeypatch.setattr(login_phase, "make_backend", lambda _name, _log=None, **_kw: backend)
    agent = Agent(LINE, parse_options(LINE), Reporter(io.StringIO(), kmsg=None, report_path=None))
    agent._transport = Transport.KERNEL
    return agent, backend


def test_the_login_phase_logs_in_to_the_lease_target(monkeypatch: pytest.MonkeyPatch) -> None:
    agent, backend = _agent(monkeypatch)
    config = ConfigResult(parse(LINE).config)
    lease = NetworkResult(_lease(f"iscsi:192.168.50.1:::1:{TARGET0}"))
    done = agent.login(config, ModulesResult(), lease, Deadline(5.0))
    assert backend.targets == [Target(TARGET0, "192.168.50.1", lun=1)]
    assert done.targets() == frozenset({TARGET0})
    with pytest.raises(PhaseError) as info:
        agent.login(config, ModulesResult(), NetworkResult(_lease(None)), Deadline(5.0))
    assert info.value.cause == "no-root-path" and len(backend.targets) == 1


@pytest.mark.parametrize(("value", "words"), [("dhcp6", "DHCPv6"), ("eth0:auto6", "IPv6 autoconfiguration")])
def test_ipv6_methods_end_in_a_named_cause_not_in_ipv4(value: str, words: str) -> None:
    network = parse(f"ip={value}").config.network
    plan = net_plan(network)
    assert plan.mode is network.mode and plan.mode in (NetMode.DHCP6, NetMode.AUTO6)
    with pytest.raises(PhaseError) as info:
        bring_up(plan, Deadline(1.0), lambda _t: None)
    assert info.value.phase == "network" and info.value.cause == network.mode.value
    assert words in info.value.what and "IPv4" in info.value.what
    assert net_plan(Network(mode=NetMode.DHCP6)).to_dict()["mode"] == "dhcp6"


def test_the_named_cause_needs_no_module_outside_the_image() -> None:
    """The image packs what the agent imports (not the generators): the fix is written without them."""
    code = (
        "import sys\n"
        "from iscsiboot.agent.phases.config import target_from_lease\n"
        "from iscsiboot.agent.plan import NetResult\n"
        "from iscsiboot.agent.errors import PhaseError\n"
        "from iscsiboot.cmdline.parse import parse\n"
        "try:\n"
        "    target_from_lease(parse('netroot=dhcp').config, NetResult('eth0', None, None, 'dhcp'), print)\n"
        "except PhaseError as exc:\n"
        "    print(exc.cause, 'iscsiboot.cmdline.generate' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["no-root-path", "False"], done.stderr


def test_the_kernel_transport_s_login_needs_no_nbd_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image built for kernel iSCSI carries no NBD modules: the login phase must not import them."""
    agent, _backend = _agent(monkeypatch)
    monkeypatch.setitem(sys.modules, "iscsiboot.agent.backends.nbd", None)  # import fails, as in that image
    config = ConfigResult(parse(LINE).config)
    lease = NetworkResult(_lease(f"iscsi:192.168.50.1:::1:{TARGET0}"))
    done = agent.login(config, ModulesResult(), lease, Deadline(5.0))
    assert done.nbd == () and done.targets() == frozenset({TARGET0})
