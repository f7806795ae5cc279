"""The dhcp scenario's network namespace without QEMU: a client on the lab's bridge gets the root
path from dnsmasq and finds the target that tgtd serves inside the namespace; everything goes away."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from iscsiboot.proc import run
from iscsiboot.qemu.netlab import SERVER_ADDRESS, LabNames, NetLab
from iscsiboot.qemu.scenario import DEFAULT_TARGET, Mode, ScenarioOptions, plan
from iscsiboot.qemu.tgt import Tgtd

ROOT_PATH = f"iscsi:{SERVER_ADDRESS}:::1:{DEFAULT_TARGET}"


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for program in ("ip", "dnsmasq", "busybox", "tgtd", "tgtadm"):
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin:/sbin") is None:
            pytest.skip(f"{program} not installed")


def _namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in listed.splitlines() if line}


def _lease(client: str, device: str, tmp: Path) -> dict[str, str]:
    hook = tmp / "hook.sh"
    hook.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > "{tmp}/lease.env"\nexit 0\n')
    hook.chmod(0o755)
    run(["ip", "netns", "exec", client, "busybox", "udhcpc", "-i", device, "-f", "-q", "-n", "-t", "6",
         "-T", "1", "-s", str(hook), "-O", "rootpath"], what="ask for a lease", timeout=60)  # fmt: skip
    pairs = (line.partition("=") for line in (tmp / "lease.env").read_text().splitlines())
    return {key: value for key, _sep, value in pairs}


@pytest.mark.parametrize("no_root_path", [False, True])
def test_a_client_on_the_bridge_gets_the_root_path_and_finds_the_target(
    tmp_path: Path, no_root_path: bool
) -> None:
    _need()
    names = LabNames.fresh()
    options = ScenarioOptions(mode=Mode.DHCP, no_root_path=no_root_path)
    p = plan(options, port=3260, workdir=tmp_path, kernel=Path("/k"), initrd=Path("/i"), lab=names)
    assert p.dnsmasq_config is not None
    p.files.tftp.mkdir(parents=True)
    client, veth, peer = f"{names.namespace}-c", "ibv0", "ibv1"
    lun = tmp_path / "lun.img"
    lun.write_bytes(b"\0" * (4 << 20))
    try:
        with NetLab(tmp_path / "lab", names) as lab:
            lab.start_dnsmasq(p.dnsmasq_config)
            with Tgtd(tmp_path / "tgt", host=SERVER_ADDRESS, port=3260, netns=names.namespace) as tgtd:
                tgtd.add_target(1, DEFAULT_TARGET, [lun])
                run(["ip", "netns", "add", client], what="create the client namespace")
                run(["ip", "-n", names.namespace, "link", "add", veth, "type", "veth", "peer", "name", peer,
                     "netns", client], what="create a veth pair")  # fmt: skip
                run(
                    ["ip", "-n", names.namespace, "link", "set", veth, "master", names.bridge, "up"],
                    what="attach",
                )
                run(["ip", "-n", client, "link", "set", peer, "up"], what="up")
                lease = _lease(client, peer, tmp_path)
                assert lease["ip"].startswith("10.77.0.")
                assert lease.get("rootpath") == (None if no_root_path else ROOT_PATH), lab.dhcp_log()
                run(["ip", "-n", client, "addr", "add", f"{lease['ip']}/24", "dev", peer], what="address")
                discover = [sys.executable, "-m", "iscsiboot", "discover", "--portal", SERVER_ADDRESS]
                found = run(
                    ["ip", "netns", "exec", client, *discover], what="discover", check=False, timeout=60
                )
                assert found.returncode == 0 and DEFAULT_TARGET in found.stdout, found.stderr
            assert "DHCPACK" in lab.dhcp_log()
    finally:
        run(["ip", "netns", "del", client], what="delete the client namespace", check=False)
    assert names.namespace not in _namespaces()


def test_the_namespace_goes_also_when_the_run_fails(tmp_path: Path) -> None:
    _need()
    names = LabNames.fresh()
    with pytest.raises(RuntimeError), NetLab(tmp_path, names) as lab:
        lab.start_dnsmasq("interface=br0\nbind-interfaces\ndhcp-range=10.77.0.100,10.77.0.150,1h\nport=0\n")
        assert names.namespace in _namespaces()
        raise RuntimeError("the boot failed")
    assert names.namespace not in _namespaces()
