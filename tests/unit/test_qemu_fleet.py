"""``qemu fleet`` as a pure plan: every client its MAC, tap, target, CHAP account, initiator and script."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.errors import UsageError
from iscsiboot.qemu.fleet import (
    ClientResult,
    FleetResult,
    Member,
    _printed_marker,
    dnsmasq_config,
    fleet_plan,
)
from iscsiboot.qemu.netlab import LabNames
from iscsiboot.qemu.system import TEST_MARKER

LAB = LabNames("iscsiboot-test-ns")


def _members(n: int = 3) -> tuple[Member, ...]:
    return fleet_plan(n, Path("/tmp/f"), LAB, kernel=Path("/k"), initrd=Path("/i"), timeout=300)


def test_every_client_is_its_own_machine_target_and_account() -> None:
    members = _members()
    rows = [
        (
            m.client.mac,
            m.client.name,
            m.plan.target.tid,
            m.plan.target.iqn,
            m.plan.target.image,
            m.plan.options.username,
            m.plan.files.console,
        )
        for m in members
    ]
    for column in zip(*rows, strict=True):
        assert len(set(column)) == 3
    # one target and initiator name for all in the scripts: @UID@ is each guest's MAC without colons
    assert [m.plan.target.iqn for m in members] == [
        f"iqn.2026-11.org.iscsiboot:htpc-5254000001{i:02x}" for i in (1, 2, 3)
    ]
    scripts = {m.plan.ipxe_script for m in members}
    assert all(
        s is not None and "set initiator-iqn iqn.2026-11.org.iscsiboot:client-${netX/mac:hexraw}" in s
        for s in scripts
    )
    assert all(s is not None and "iqn.2026-11.org.iscsiboot:htpc-${netX/mac:hexraw} ||" in s for s in scripts)
    for i, m in enumerate(members):
        argv = m.plan.qemu_argv
        assert f"tap,id=n0,ifname=tap{i},script=no,downscript=no" in argv
        assert any(f"mac={m.client.mac}" in a for a in argv)
        assert m.plan.ipxe_script is not None and f"set username htpc{i + 1}" in m.plan.ipxe_script
        assert "iscsiboot.test=persist" in m.plan.append


def test_dnsmasq_tags_each_client_with_its_own_script_and_no_secret() -> None:
    members = _members()
    text = dnsmasq_config(members, LAB, Path("/tmp/f/tftp"))
    lines = text.splitlines()
    for m in members:
        assert f"dhcp-host={m.client.mac},set:{m.client.name},{m.client.name}" in lines
        assert f"dhcp-boot=tag:ipxe,tag:{m.client.name},{m.client.name}.ipxe" in lines
        assert f'option:root-path,"iscsi:10.77.0.1:::1:{m.plan.target.iqn}"' in text
    assert "secret" not in text


def test_the_fleet_size_is_bounded() -> None:
    with pytest.raises(UsageError):
        _members(0)
    with pytest.raises(UsageError):
        _members(9)


def test_the_guests_marker_line_and_the_medians() -> None:
    assert _printed_marker(["x", f"{TEST_MARKER} persist wrote abc123"]) == "abc123"
    assert _printed_marker(["nothing"]) is None
    result = FleetResult(
        (
            ClientResult("htpc1", True, 30.0, "a", True, None),
            ClientResult("htpc2", True, 40.0, "b", True, None),
            ClientResult("htpc3", False, None, None, False, "login: auth"),
        ),
        wall_s=60.0,
    )
    data = result.to_json()
    assert data["ok"] is False and data["median_mounted_s"] == 35.0
    assert [c["ok"] for c in data["clients"]] == [True, True, False]
