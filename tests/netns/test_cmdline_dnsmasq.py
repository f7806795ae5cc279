"""The generated dnsmasq configuration, served for real by dnsmasq in a network namespace.

A busybox DHCP client in a second namespace asks three ways (as iPXE with
user class ``iPXE``, as a BIOS PXE ROM, as an x86-64 UEFI PXE ROM) and must
get the boot script, ``undionly.kpxe`` and ``ipxe.efi`` respectively, each
the PXE ROMs with the RFC 4173 root path (option 17), iPXE without it; then it
fetches the script by TFTP.  With ``--clients`` the MAC gets its own script and
root path, and a MAC that is not listed gets neither.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from iscsiboot.cmdline import clients, generate
from iscsiboot.cmdline.parse import parse
from iscsiboot.proc import run

SERVER_IP = "10.9.77.1"
MAC = "52:54:00:9a:77:02"


@dataclass(frozen=True)
class Lab:
    server_ns: str
    client_ns: str
    client_if: str
    server_if: str
    tmp: Path


def _need() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    for program in ("ip", "dnsmasq", "busybox"):
        if shutil.which(program) is None and shutil.which(program, path="/usr/sbin:/sbin") is None:
            pytest.skip(f"{program} not installed")


def _ns(ns: str, *argv: str, check: bool = True) -> str:
    return run(
        ["ip", "netns", "exec", ns, *argv], what=f"run {argv[0]} in {ns}", check=check, timeout=60
    ).stdout


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    _need()
    tag = f"{os.getpid() % 100000}"
    server, client = f"ibsv{tag}", f"ibcl{tag}"
    sif, cif = f"ibs{tag}", f"ibc{tag}"
    created: list[str] = []
    try:
        for ns in (server, client):
            run(["ip", "netns", "add", ns], what="create a namespace")
            created.append(ns)
        run(
            ["ip", "link", "add", sif, "netns", server, "type", "veth", "peer", "name", cif, "netns", client],
            what="create a veth pair",
        )
        _ns(server, "ip", "addr", "add", f"{SERVER_IP}/24", "dev", sif)
        _ns(client, "ip", "link", "set", cif, "address", MAC)
        for ns, dev in ((server, sif), (server, "lo"), (client, cif), (client, "lo")):
            _ns(ns, "ip", "link", "set", dev, "up")
        yield Lab(server, client, cif, sif, tmp_path)
        _kill_dnsmasq(tmp_path)
    finally:
        _kill_dnsmasq(tmp_path)
        for ns in created:
            run(["ip", "netns", "del", ns], what="delete a namespace", check=False)


def _kill_dnsmasq(tmp: Path) -> None:
    pidfile = tmp / "dnsmasq.pid"
    if pidfile.exists():
        text = pidfile.read_text().strip()
        pidfile.unlink()
        if text.isdigit():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(text), 15)


def _dhcp(lab: Lab, name: str, *options: str) -> dict[str, str]:
    """Run udhcpc once; return the environment its script saw on 'bound'."""
    out = lab.tmp / f"{name}.env"
    hook = lab.tmp / "hook.sh"
    hook.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > "{lab.tmp}/$UDHCPC_NAME.env"\nexit 0\n')
    hook.chmod(0o755)
    _ns(
        lab.client_ns,
        "env",
        f"UDHCPC_NAME={name}",
        "busybox",
        "udhcpc",
        "-i",
        lab.client_if,
        "-f",
        "-q",
        "-n",
        "-t",
        "6",
        "-T",
        "1",
        "-s",
        str(hook),
        "-O",
        "rootpath",
        *options,
    )
    env = {}
    for line in out.read_text().splitlines():
        key, _sep, value = line.partition("=")
        env[key] = value
    return env


def test_dnsmasq_serves_ipxe_pxe_and_uefi_clients(lab: Lab) -> None:
    cfg = parse(
        f"rd.iscsi.initiator=iqn.2024-01.lab:htpc netroot=iscsi:{SERVER_IP}:::1:iqn.2024-01.lab:disk"
    ).config
    tftp = lab.tmp / "tftp"
    tftp.mkdir()
    script = generate.ipxe(cfg).text
    (tftp / "boot.ipxe").write_text(script)
    conf = lab.tmp / "dnsmasq.conf"
    conf.write_text(
        generate.dnsmasq(
            cfg,
            interface=lab.server_if,
            dhcp_range="10.9.77.100,10.9.77.150,1h",
            tftp_root=str(tftp),
            dns=False,
        ).text
    )
    _ns(
        lab.server_ns,
        "dnsmasq",
        f"--conf-file={conf}",
        f"--pid-file={lab.tmp / 'dnsmasq.pid'}",
        f"--dhcp-leasefile={lab.tmp / 'leases'}",
        "--user=root",
        "--group=root",
        "--no-ping",
        "--log-facility=" + str(lab.tmp / "dnsmasq.log"),
    )
    root_path = "iscsi:10.9.77.1:::1:iqn.2024-01.lab:disk"

    ipxe = _dhcp(lab, "ipxe", "-x", "0x4d:69505845")  # user class "iPXE"
    assert ipxe["boot_file"] == "boot.ipxe"
    assert "rootpath" not in ipxe  # iPXE would hook the SAN before the script sets the credentials
    assert ipxe["ip"].startswith("10.9.77.")

    bios = _dhcp(lab, "bios")
    assert bios["boot_file"] == "undionly.kpxe"
    assert bios["rootpath"] == root_path

    uefi = _dhcp(lab, "uefi", "-x", "0x5d:0007")  # client architecture: x86-64 UEFI
    assert uefi["boot_file"] == "ipxe.efi"

    # the hook only records the lease; configure the address it gave, then fetch the script
    _ns(lab.client_ns, "ip", "addr", "add", f"{ipxe['ip']}/24", "dev", lab.client_if)
    fetched = lab.tmp / "fetched.ipxe"
    _ns(lab.client_ns, "busybox", "tftp", "-g", "-r", "boot.ipxe", "-l", str(fetched), SERVER_IP)
    assert fetched.read_text() == script
    assert f"sanboot {root_path} || goto retry_sanboot" in script


def _serve(lab: Lab, text: str) -> None:
    conf = lab.tmp / "dnsmasq.conf"
    conf.write_text(text)
    _ns(
        lab.server_ns,
        "dnsmasq",
        f"--conf-file={conf}",
        f"--pid-file={lab.tmp / 'dnsmasq.pid'}",
        f"--dhcp-leasefile={lab.tmp / 'leases'}",
        "--user=root",
        "--group=root",
        "--no-ping",
        "--log-facility=" + str(lab.tmp / "dnsmasq.log"),
    )


def test_each_listed_client_gets_its_own_script_and_root_path(lab: Lab) -> None:
    model = parse(
        f"rd.iscsi.initiator=iqn.2024-01.lab:htpc netroot=iscsi:{SERVER_IP}:::1:iqn.2024-01.lab:disk"
    ).config
    listed = clients.parse_clients(f"52:54:00:9a:77:01 other 1\n{MAC} htpc2 2\n")
    configs = clients.client_configs(model, listed, {})
    common = {"interface": lab.server_if, "dhcp_range": "10.9.77.100,10.9.77.150,1h", "dns": False}
    _serve(lab, clients.dnsmasq(configs, tftp_root=str(lab.tmp), **common).text)  # type: ignore[arg-type]
    ipxe = _dhcp(lab, "ipxe", "-x", "0x4d:69505845")
    assert ipxe["boot_file"] == "htpc2.ipxe" and "rootpath" not in ipxe
    agent = _dhcp(lab, "agent")
    assert agent["rootpath"] == "iscsi:10.9.77.1:::2:iqn.2024-01.lab:disk"
    assert agent["hostname"] == "htpc2"
    _kill_dnsmasq(lab.tmp)

    stranger = clients.client_configs(model, clients.parse_clients("52:54:00:9a:77:01 other 1\n"), {})
    _serve(lab, clients.dnsmasq(stranger, tftp_root=str(lab.tmp), **common).text)  # type: ignore[arg-type]
    unknown = _dhcp(lab, "stranger", "-x", "0x4d:69505845")
    assert "rootpath" not in unknown and unknown.get("boot_file", "") == ""
