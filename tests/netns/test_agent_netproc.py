"""PID 1's start-up child (NIC drivers, links) and network worker (pyroute2, the network phase)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent_support import REPO, netlab

WORKER = """
import json
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.startup.netproc import NetWorker
from iscsiboot.agent.plan import net_plan
from iscsiboot.model import from_dict

class Loader:
    def load_nic_drivers(self, deadline, preloaded=False):
        return []

worker = NetWorker.start(Loader(), dhcp=True)
assert worker.wait_nics(30)
said = []
net = worker.bring_up(net_plan(from_dict({"network": {"mode": "dhcp"}}).network), Deadline(30), said.append)
print("RESULT " + json.dumps({"net": net.to_dict(), "said": said, "status": worker.status}), flush=True)
"""


def test_worker_takes_a_dhcp_lease_in_a_namespace(tmp_path: Path) -> None:
    """The whole path: fork, pyroute2 imported in the child, the lease, the result in the parent."""
    with netlab() as lab:
        lab.start_dnsmasq(tmp_path)
        done = subprocess.run(
            ["ip", "netns", "exec", lab.cli, sys.executable, "-c", WORKER],
            capture_output=True, text=True, check=False, timeout=120, cwd=REPO,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
        out = json.loads(line.split(" ", 1)[1])
        net = out["net"]
        assert net["device"] == "eth0" and net["mode"] == "dhcp" and net["dhcp_client"] == "pyroute2"
        assert str(net["address"]).startswith("10.77.0.") and net["gateway"] == "10.77.0.1"
        addrs = json.loads(
            subprocess.run(
                ["ip", "-n", lab.cli, "-j", "addr", "show", "dev", "eth0"],
                capture_output=True, text=True, check=True,
            ).stdout
        )  # fmt: skip
        assert net["address"] in [a["local"] for a in addrs[0]["addr_info"]]  # set by the worker
        assert out["status"] == 0
