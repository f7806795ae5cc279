"""PID 1's start-up work: NIC drivers, links up, base modules and imports before the config phase."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from agent_support import netlab


def test_links_up_really_sets_the_interface_up(tmp_path: Path) -> None:
    """In a namespace of its own, the start-up message takes a down veth up (as ip link set up)."""
    code = (
        "import json, socket\n"
        "from iscsiboot.agent.startup.early import links_up\n"
        "index = socket.if_nametoindex('eth0')\n"
        "print(json.dumps({'result': links_up([index, 999999])}))\n"
    )
    with netlab(peer_up=False) as lab:
        before = subprocess.run(
            ["ip", "-n", lab.cli, "-j", "link", "show", "eth0"], capture_output=True, text=True, check=True
        )
        assert "UP" not in json.loads(before.stdout)[0]["flags"]
        done = subprocess.run(
            ["ip", "netns", "exec", lab.cli, sys.executable, "-c", code],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        result = {int(k): v for k, v in json.loads(done.stdout)["result"].items()}
        after = subprocess.run(
            ["ip", "-n", lab.cli, "-j", "link", "show", "eth0"], capture_output=True, text=True, check=True
        )
        assert "UP" in json.loads(after.stdout)[0]["flags"]
        assert sorted(result.values()) == [0, 19]  # eth0 done; no such interface: ENODEV
