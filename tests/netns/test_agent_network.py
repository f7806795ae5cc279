"""Network phase with real netlink in network namespaces, dnsmasq as the DHCP server."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_support import REPO, NetLab, netlab, sh

PASSWORD = "Netns-Secret-1234"

AGENT = """
import json, sys
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.plan import net_plan
from iscsiboot.agent.phases.network import bring_up
from iscsiboot.model import from_dict
network = from_dict({{"network": {network}}}).network
try:
    say = lambda t: print("SAY", t, flush=True)
    result = bring_up(net_plan(network), Deadline({seconds}), say, dhcp_client="{client}")
except PhaseError as exc:
    error = {{"cause": exc.cause, "what": exc.what, "evidence": exc.evidence, "fix": exc.fix}}
    print("ERROR " + json.dumps(error))
    sys.exit(1)
print("RESULT " + json.dumps(result.to_dict()), flush=True)
"""


def _code(network: dict[str, object], seconds: float = 20, client: str = "pyroute2") -> str:
    return AGENT.format(network=json.dumps(network), seconds=seconds, client=client)


def _tagged(stdout: str, tag: str) -> dict[str, object]:
    for line in stdout.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line.split(" ", 1)[1])  # type: ignore[no-any-return]
    raise AssertionError(f"no {tag} line in: {stdout}")


def _addr(lab: NetLab) -> list[str]:
    data = json.loads(sh("ip", "-n", lab.cli, "-j", "addr", "show", "dev", lab.cli_if).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for a in data[0]["addr_info"] if a["family"] == "inet"]


def _default_route(lab: NetLab) -> str | None:
    data = json.loads(sh("ip", "-n", lab.cli, "-j", "route", "show", "default").stdout)
    return data[0]["gateway"] if data else None


def _start(lab: NetLab, code: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", lab.cli, sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )


def _read_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    """Lines of the agent until one contains ``needle`` (the agent's own progress line)."""
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"{needle!r} never printed: {''.join(lines)}")


def test_dhcp_lease_configures_address_route(tmp_path: Path) -> None:
    with netlab() as lab:
        lab.start_dnsmasq(tmp_path)
        done = lab.run_agent(_code({"mode": "dhcp"}))
        assert done.returncode == 0, done.stdout + done.stderr
        result = _tagged(done.stdout, "RESULT")
        address = str(result["address"])
        assert address.startswith("10.77.0.") and 50 <= int(address.rsplit(".", 1)[1]) <= 99
        assert result["prefix"] == 24 and result["gateway"] == "10.77.0.1" and result["dns"] == ["10.77.0.1"]
        assert result["root_path"] == "iscsi:10.77.0.1::3260:1:iqn.2024-01.test:t0"
        assert result["device"] == "eth0" and result["mode"] == "dhcp"
        assert float(result["dhcp_seconds"]) < 5  # type: ignore[arg-type]
        assert _addr(lab) == [f"{address}/24"]
        assert _default_route(lab) == "10.77.0.1"


def test_udhcpc_fallback_gets_the_same_lease(tmp_path: Path) -> None:
    if shutil.which("busybox") is None and shutil.which("udhcpc") is None:
        pytest.skip("needs busybox (busybox-static)")
    with netlab() as lab:
        lab.start_dnsmasq(tmp_path)
        done = lab.run_agent(_code({"mode": "dhcp"}, client="udhcpc"))
        assert done.returncode == 0, done.stdout + done.stderr
        result = _tagged(done.stdout, "RESULT")
        assert result["dhcp_client"] == "udhcpc"
        assert str(result["address"]).startswith("10.77.0.") and result["gateway"] == "10.77.0.1"
        assert result["dns"] == ["10.77.0.1"] and result["server"] == "10.77.0.1"
        assert result["root_path"] == "iscsi:10.77.0.1::3260:1:iqn.2024-01.test:t0"
        assert _addr(lab) == [f"{result['address']}/24"] and _default_route(lab) == "10.77.0.1"


def test_first_interface_with_carrier_is_chosen(tmp_path: Path) -> None:
    """eth0 (first by index) has no link; eth1 has one and a DHCP server behind it."""
    with netlab(peer_up=False) as lab:
        sh(
            "ip", "link", "add", "name", "eth1", "netns", lab.cli, "type", "veth",
            "peer", "name", "veth-srv2", "netns", lab.srv,
        )  # fmt: skip
        sh("ip", "-n", lab.srv, "addr", "flush", "dev", lab.srv_if)
        sh("ip", "-n", lab.srv, "addr", "add", "10.77.0.1/24", "dev", "veth-srv2")
        sh("ip", "-n", lab.srv, "link", "set", "veth-srv2", "up")
        lab.srv_if = "veth-srv2"
        lab.start_dnsmasq(tmp_path)
        done = lab.run_agent(_code({"mode": "dhcp"}))
        assert done.returncode == 0, done.stdout + done.stderr
        result = _tagged(done.stdout, "RESULT")
        assert result["device"] == "eth1" and str(result["address"]).startswith("10.77.0.")


def test_carrier_arriving_late(tmp_path: Path) -> None:
    with netlab(peer_up=False) as lab:
        lab.start_dnsmasq(tmp_path)
        proc = _start(lab, _code({"mode": "dhcp", "device": "eth0"}))
        try:
            lines = _read_until(proc, "waiting for link on eth0 (1 s of 20)")
            lab.peer_up()
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0, "".join(lines) + out
        result = _tagged(out, "RESULT")
        assert float(result["carrier_seconds"]) >= 1.0  # type: ignore[arg-type]
        assert str(result["address"]).startswith("10.77.0.")


def test_dhcp_server_slow_to_answer(tmp_path: Path) -> None:
    with netlab() as lab:
        proc = _start(lab, _code({"mode": "dhcp"}, seconds=30))
        try:
            _read_until(proc, "waiting for a DHCP lease on eth0")
            lab.start_dnsmasq(tmp_path)
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == 0, out
        result = _tagged(out, "RESULT")
        assert float(result["dhcp_seconds"]) >= 1.0  # type: ignore[arg-type]
        assert _addr(lab) == [f"{result['address']}/24"]


def test_static_address_gateway_dns() -> None:
    with netlab() as lab:
        network = {
            "mode": "static",
            "address": "10.77.0.60",
            "prefix": 24,
            "gateway": "10.77.0.1",
            "dns": ["10.77.0.1"],
            "mac": "02:00:00:00:00:01",
        }
        done = lab.run_agent(_code(network))
        assert done.returncode == 0, done.stdout + done.stderr
        result = _tagged(done.stdout, "RESULT")
        assert result["mode"] == "static" and result["address"] == "10.77.0.60"
        assert _addr(lab) == ["10.77.0.60/24"]
        assert _default_route(lab) == "10.77.0.1"
        route = json.loads(sh("ip", "-n", lab.cli, "-j", "route", "get", "10.77.0.200").stdout)[0]
        assert route["prefsrc"] == "10.77.0.60" and route["dev"] == "eth0"


def test_no_carrier_is_a_clear_error() -> None:
    with netlab(peer_up=False) as lab:
        done = lab.run_agent(_code({"mode": "dhcp"}, seconds=2))
        assert done.returncode == 1
        error = _tagged(done.stdout, "ERROR")
        assert error["cause"] == "no-carrier" and "eth0" in str(error["what"])
        assert "cable" in str(error["fix"])
        assert "waiting for link on eth0 (1 s of 2)" in done.stdout


def test_interface_named_by_mac_must_exist() -> None:
    with netlab() as lab:
        done = lab.run_agent(_code({"mode": "dhcp", "mac": "52:54:00:99:99:99"}, seconds=1.5))
        assert done.returncode == 1
        error = _tagged(done.stdout, "ERROR")
        assert error["cause"] == "no-interface" and "02:00:00:00:00:01" in str(error["evidence"])


def test_agent_hook_run_up_to_login_keeps_secrets(tmp_path: Path) -> None:
    """The whole CLI in hook mode: config, modules, a real DHCP lease, then the login fails here
    (this kernel has no iSCSI); the result file and all output name the phase and never the password."""
    cmdline = tmp_path / "cmdline"
    cmdline.write_text(
        "ip=dhcp boot=ISCSI=iscsi_initiator=iqn.2024-01.test:init,iscsi_target_name=iqn.2024-01.test:t0,"
        f"iscsi_target_ip=10.77.0.1,iscsi_username=user,iscsi_password={PASSWORD},LABEL=System "
        "disk=LABEL=Storage iscsiboot.timeout.login=4 quiet\n"
    )
    hook = tmp_path / "result.env"
    report = tmp_path / "report.json"
    with netlab() as lab:
        lab.start_dnsmasq(tmp_path)
        done = lab.run_cli(
            "agent",
            "run",
            "--cmdline-file",
            str(cmdline),
            "--hook",
            str(hook),
            "--json",
            "--report",
            str(report),
        )
    everything = done.stdout + done.stderr + hook.read_text() + report.read_text()
    assert PASSWORD not in everything
    assert done.returncode == 1, everything
    values = dict(line.split("=", 1) for line in hook.read_text().splitlines())
    assert values["ISCSIBOOT_OK"] == "'0'" and values["ISCSIBOOT_PHASE"] == "'login'"
    assert values["ISCSIBOOT_IFACE"] == "'eth0'" and values["ISCSIBOOT_ADDRESS"].startswith("'10.77.0.")
    result = json.loads(done.stdout)
    assert result["phase"] == "login" and set(result["timeline"]) == {"config", "modules", "network", "login"}
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ISCSIBOOT-RESULT ")
    assert json.loads(last.split(" ", 1)[1])["phase"] == "login"
    assert "iSCSI boot failed in the login phase" in done.stderr


LIGHT = """
import json, sys
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.plan import net_plan
from iscsiboot.agent.phases.netlight import bring_up
from iscsiboot.model import from_dict
network = from_dict({{"network": {network}}}).network
try:
    result = bring_up(net_plan(network), Deadline({seconds}), lambda t: print("SAY", t, flush=True))
except PhaseError as exc:
    print("ERROR " + json.dumps({{"cause": exc.cause, "what": exc.what, "evidence": exc.evidence}}))
    sys.exit(1)
print("RESULT " + json.dumps(result.to_dict()), flush=True)
print("IMPORTED " + json.dumps(sorted(m for m in ("asyncio", "pyroute2") if m in sys.modules)))
"""


def test_the_firmwares_lease_is_set_without_pyroute2_as_the_dhcp_path_would() -> None:
    """The iBFT's DHCP-origin address goes on through raw rtnetlink: same address, route, device."""
    with netlab() as lab:
        network = {
            "mode": "dhcp", "mac": "02:00:00:00:00:01", "address": "10.77.0.61", "prefix": 24,
            "gateway": "10.77.0.1", "dns": ["10.77.0.1"],
        }  # fmt: skip
        done = lab.run_agent(LIGHT.format(network=json.dumps(network), seconds=20))
        assert done.returncode == 0, done.stdout + done.stderr
        result = _tagged(done.stdout, "RESULT")
        assert (result["device"], result["mode"], result["dhcp_client"]) == ("eth0", "dhcp", "firmware")
        assert result["mac"] == "02:00:00:00:00:01"
        assert _addr(lab) == ["10.77.0.61/24"] and _default_route(lab) == "10.77.0.1"
        route = json.loads(sh("ip", "-n", lab.cli, "-j", "route", "show", "default").stdout)[0]
        assert route["protocol"] == "static" and route["dev"] == "eth0"
        assert "IMPORTED []" in done.stdout  # neither pyroute2 nor asyncio


def test_the_light_path_says_no_carrier_as_the_pyroute2_path_does() -> None:
    with netlab(peer_up=False) as lab:
        network = {"mode": "static", "address": "10.77.0.62", "prefix": 24}
        done = lab.run_agent(LIGHT.format(network=json.dumps(network), seconds=2))
        assert done.returncode == 1
        error = _tagged(done.stdout, "ERROR")
        assert error["cause"] == "no-carrier" and error["what"] == "no link (carrier) on eth0 within 2 s"
