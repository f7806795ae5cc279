"""dracut's documented iSCSI forms: the target from the DHCP root path, the empty
authentication part for a target name with ``@``, and ``ip=dhcp6`` as its own mode.

The command lines are those of ``man dracut.cmdline`` (iSCSI section) and of
dracut's iSCSI QEMU tests (TEST-30-ISCSI: its DHCP server hands out the root
path ``iscsi:192.168.50.1:::1:iqn.2009-06.dracut:target0``).
"""

from __future__ import annotations

import json

import pytest
from cmdline_support import run_cli
from iscsiboot.cmdline import generate
from iscsiboot.cmdline.dhcproot import NO_ROOT_PATH, with_root_path
from iscsiboot.cmdline.ipconf import format_ip, parse_ip
from iscsiboot.cmdline.parse import parse
from iscsiboot.cmdline.rootpath import format_root_path, parse_root_path, redact_root_path
from iscsiboot.errors import ParseError, RepresentError
from iscsiboot.model import BootConfig, Chap, Locator, NetMode, Network, Target, from_dict, to_dict
from iscsiboot.secret import Secret

INITIATOR = "iqn.1994-05.com.redhat:5a6b7c8d"
TARGET0 = "iqn.2009-06.dracut:target0"
TARGET1 = "iqn.2009-06.dracut:target1"
TARGET2 = "iqn.2009-06.dracut:target2"
DHCPD_ROOT_PATH = f"iscsi:192.168.50.1:::1:{TARGET0}"  # TEST-30's dhcpd.conf
SECRET = "topsecretvalue"


# ---------------------------------------------------------------- netroot=dhcp, root=dhcp


def test_test30_root_dhcp_line() -> None:
    cfg = parse(f"root=/dev/root netroot=dhcp ip=enp0s1:dhcp rd.iscsi.initiator={INITIATOR}").config
    assert cfg.target_from_dhcp and not cfg.targets and not cfg.firmware
    assert cfg.network == Network(mode=NetMode.DHCP, device="enp0s1")
    assert cfg.initiator == INITIATOR
    assert cfg.system is None  # root=/dev/root is the root that netroot gives: the default System
    booted = with_root_path(cfg, DHCPD_ROOT_PATH)
    assert booted.targets == (Target(TARGET0, "192.168.50.1", lun=1),)
    assert not booted.target_from_dhcp


@pytest.mark.parametrize("line", ["root=dhcp", "netroot=dhcp", "boot=ISCSI=dhcp,LABEL=System"])
def test_every_dhcp_form_takes_the_target_from_the_lease(line: str) -> None:
    cfg = parse(line).config
    assert cfg.target_from_dhcp and cfg.network.mode is NetMode.DHCP and not cfg.targets


def test_openelec_dhcp_form_with_storage_on_that_target() -> None:
    cfg = parse(
        f"boot=ISCSI=dhcp,LABEL=System disk=ISCSI=dhcp,LABEL=Storage iscsi_initiator={INITIATOR}"
    ).config
    assert cfg.target_from_dhcp and cfg.storage_on_iscsi and cfg.initiator == INITIATOR
    assert cfg.system == Locator.parse("LABEL=System") and cfg.storage == Locator.parse("LABEL=Storage")


@pytest.mark.parametrize("line", ["root=dhcp6", "netroot=dhcp6", "netroot=dhcp6 ip=dhcp6"])
def test_dhcp6_root_path_needs_dhcpv6(line: str) -> None:
    cfg = parse(line).config
    assert cfg.target_from_dhcp and cfg.network.mode is NetMode.DHCP6


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("netroot=dhcp ip=192.168.50.101::192.168.50.1:255.255.255.0:iscsi-1:enp0s1:off", "ip= says static"),
        ("netroot=dhcp ip=off", "ip= says off"),
        ("root=dhcp ip=ibft", "ip= says firmware"),
        ("netroot=dhcp6 ip=dhcp", "DHCPv6"),
        (f"netroot=dhcp netroot=iscsi:192.168.50.1::::{TARGET0}", "targets too"),
        ("netroot=dhcp rd.iscsi.firmware=1", "the iBFT too"),
        ("boot=ISCSI=dhcp", "no locator"),
        (f"netroot=dhcp rd.iscsi.username=u rd.iscsi.password={SECRET}", "rd.iscsi.username"),
    ],
)
def test_dhcp_target_refuses_other_sources(line: str, needle: str) -> None:
    with pytest.raises(ParseError) as info:
        parse(line)
    assert needle in str(info.value) and SECRET not in str(info.value)


def test_json_says_target_from_dhcp() -> None:
    for line, expected in (("root=dhcp", True), (f"netroot=iscsi:192.168.50.1::::{TARGET0}", False)):
        result = run_cli("cmdline", "parse", "--json", line)
        assert result.returncode == 0, result.stderr
        obj = json.loads(result.stdout)
        assert obj["target_from_dhcp"] is expected
        assert {"firmware", "initiator", "targets", "network", "system", "storage"} <= set(obj)
        assert from_dict(obj).target_from_dhcp is expected


def test_readable_form_names_the_dhcp_root_path() -> None:
    result = run_cli("cmdline", "parse", "root=dhcp")
    assert "DHCP server's root path" in result.stdout


# ---------------------------------------------------------------- the lease's root path


def test_no_root_path_is_a_named_cause_with_the_dnsmasq_line() -> None:
    cfg = parse("netroot=dhcp").config
    for missing in (None, "", "  "):
        with pytest.raises(ParseError) as info:
            with_root_path(cfg, missing)
        assert info.value.what == NO_ROOT_PATH
        assert (
            info.value.fix is not None and 'dhcp-option=tag:!ipxe,option:root-path,"iscsi:' in info.value.fix
        )


def test_root_path_credentials_are_secrets() -> None:
    cfg = with_root_path(parse("netroot=dhcp").config, f"iscsi:htpc:{SECRET}@192.168.50.1::::{TARGET0}")
    chap = cfg.targets[0].chap
    assert chap is not None and chap.username == "htpc" and chap.password.reveal() == SECRET
    assert SECRET not in repr(cfg)
    with pytest.raises(ParseError) as info:
        with_root_path(cfg, f"iscsi:htpc:{SECRET}@192.168.50.1::99999::{TARGET0}")
    assert SECRET not in str(info.value) and "99999" in str(info.value)


def test_root_path_that_is_not_iscsi() -> None:
    with pytest.raises(ParseError, match="starts with 'iscsi:'"):
        with_root_path(parse("root=dhcp").config, "192.168.50.1:/srv/nfs/root")


# ---------------------------------------------------------------- man dracut.cmdline, TEST-30, TEST-35


def test_man_page_root_paths() -> None:
    assert parse(f"root=iscsi:192.168.50.1::::{TARGET0}").config.targets == (Target(TARGET0, "192.168.50.1"),)
    assert parse(f"root=iscsi:[2001:DB8::1]::::{TARGET0}").config.targets == (Target(TARGET0, "2001:DB8::1"),)
    cfg = parse(
        f"root=UUID=12424547 netroot=iscsi:192.168.50.1::::{TARGET0} netroot=iscsi:192.168.50.1::::{TARGET1}"
    ).config
    assert [t.name for t in cfg.targets] == [TARGET0, TARGET1]
    assert cfg.system == Locator.parse("UUID=12424547")


def test_test30_static_and_two_target_lines() -> None:
    cfg = parse(
        f"root=LABEL=singleroot netroot=iscsi:192.168.50.1::::{TARGET0} "
        f"ip=192.168.50.101::192.168.50.1:255.255.255.0:iscsi-1:enp0s1:off rd.iscsi.initiator={INITIATOR}"
    ).config
    assert cfg.network.mode is NetMode.STATIC and cfg.network.device == "enp0s1"
    assert cfg.network.gateway == "192.168.50.1" and cfg.network.hostname == "iscsi-1"
    cfg = parse(
        f"root=LABEL=sysroot ip=dhcp netroot=iscsi:192.168.51.1::::{TARGET1} "
        f"netroot=iscsi:192.168.50.1::::{TARGET2} rd.iscsi.initiator={INITIATOR}"
    ).config
    assert [(t.name, t.address) for t in cfg.targets] == [
        (TARGET1, "192.168.51.1"),
        (TARGET2, "192.168.50.1"),
    ]
    cfg = parse("root=LABEL=singleroot rd.iscsi.ibft=1 rd.iscsi.firmware=1").config
    assert cfg.firmware and not cfg.target_from_dhcp


def test_test35_firmware_and_waitnet_keys() -> None:
    cfg = parse(
        f"root=LABEL=sysroot netroot=iscsi:192.168.51.1::::{TARGET1} rd.iscsi.firmware "
        f"rd.iscsi.initiator={INITIATOR} rd.iscsi.waitnet=0 rd.iscsi.testroute=0"
    ).config
    assert cfg.firmware and [t.name for t in cfg.targets] == [TARGET1]


# ---------------------------------------------------------------- the empty authentication part


def test_empty_authentication_allows_at_in_the_target_name() -> None:
    name = "iqn.2009-06.dracut:target@0"
    cfg = parse(f"netroot=iscsi:@192.168.50.1::3260::{name}").config
    assert cfg.targets == (Target(name, "192.168.50.1", port=3260),)
    assert parse_root_path(f"iscsi:@[2001:DB8::1]:::1:{name}") == Target(name, "2001:DB8::1", lun=1)
    # dracut reads credentials only when four colons follow the first '@'
    assert parse_root_path(f"iscsi:192.168.50.1::::{name}").name == name
    with_chap = parse_root_path(f"iscsi:u:{SECRET}@192.168.50.1::::{name}")
    assert with_chap.name == name and with_chap.chap is not None and with_chap.chap.username == "u"
    assert redact_root_path(f"iscsi:@192.168.50.1::::{name}") == f"iscsi:@192.168.50.1::::{name}"


@pytest.mark.parametrize(
    "text",
    [
        f"iscsi:@u:{SECRET}@192.168.50.1::::{TARGET0}",
        f"iscsi:@192.168.50.1:{SECRET}@x:::{TARGET0}",
        f"iscsi:u:{SECRET}@h@192.168.50.1::::{TARGET0}",
        f"iscsi:{SECRET}@192.168.50.1:6::",
        f"iscsi:192.168.50.1::{SECRET}@3260::{TARGET0}",
        # fewer than four colons after the '@': no credentials for dracut, yet the fields hold secrets
        f"iscsi:u:{SECRET}:x:ruser:rsecret@[fec0::",
        f"iscsi:u:p@{SECRET}:x:y:z@10.0.2.2:::1:{TARGET0}",
        # credentials that do not parse: none of their fields is shown as a user name
        f"iscsi:user:p:{SECRET}:@192.168.50.1::::{TARGET0}",
        f"iscsi:u:p:{SECRET}@h:x@192.168.50.1::::{TARGET0}",
    ],
)
def test_at_before_the_target_name_is_refused_without_the_secret(text: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_root_path(text)
    assert SECRET not in str(info.value)
    assert SECRET not in redact_root_path(text)


def test_generators_write_the_empty_authentication_form() -> None:
    name = "iqn.2009-06.dracut:target@0"
    target = Target(name, "192.168.50.1", lun=1)
    cfg = BootConfig(initiator=INITIATOR, targets=(target,), system=Locator.parse("LABEL=System"))
    assert format_root_path(target) == f"iscsi:@192.168.50.1:::1:{name}"
    assert format_root_path(target, empty_auth=False) == f"iscsi:192.168.50.1:::1:{name}"
    out = generate.root_path(cfg)
    assert out.text == f"iscsi:@192.168.50.1:::1:{name}"
    assert any("RFC 3722" in w for w in out.warnings)
    assert (
        f'dhcp-option=tag:!ipxe,option:root-path,"iscsi:@192.168.50.1:::1:{name}"'
        in generate.dnsmasq(cfg).text
    )
    assert f"sanboot iscsi:192.168.50.1:::1:{name} " in generate.ipxe(cfg).text  # iPXE: the plain form
    dracut = generate.dracut(cfg)
    assert f"netroot=iscsi:@192.168.50.1:::1:{name}" in dracut.text
    assert parse(dracut.text).config.targets == (target,)
    assert parse(generate.cmdline(cfg).text).config.targets == (Target(name, "192.168.50.1"),)
    chap = Target(name, "192.168.50.1", chap=Chap("u", Secret("a-long-secret")))
    assert parse_root_path(format_root_path(chap, credentials=True)) == chap


def test_initiator_name_with_at_is_still_refused() -> None:
    cfg = BootConfig(initiator="iqn.2024-01.lab:i@x", targets=(Target(TARGET0, "192.168.50.1"),))
    with pytest.raises(RepresentError, match="RFC 3722"):
        generate.dracut(cfg)


# ---------------------------------------------------------------- generators for the DHCP target


def test_generators_write_the_dhcp_target() -> None:
    cfg = parse(f"boot=ISCSI=dhcp,LABEL=System disk=LABEL=Storage iscsi_initiator={INITIATOR}").config
    line = generate.cmdline(cfg).text
    assert line == f"ip=dhcp boot=ISCSI=dhcp,LABEL=System iscsi_initiator={INITIATOR} disk=LABEL=Storage"
    assert parse(line).config == cfg
    dracut = generate.dracut(cfg).text
    assert "netroot=dhcp" in dracut.split() and f"rd.iscsi.initiator={INITIATOR}" in dracut.split()
    back = parse(dracut).config
    assert back.target_from_dhcp and back.initiator == INITIATOR and back.system == cfg.system
    with pytest.raises(RepresentError, match="initiator"):
        generate.cmdline(parse("boot=ISCSI=dhcp,LABEL=System").config)
    with pytest.raises(RepresentError, match="needs a target"):
        generate.root_path(cfg)
    assert "netroot=dhcp6" in generate.dracut(parse("netroot=dhcp6").config).text.split()
    assert to_dict(cfg)["target_from_dhcp"] is True


# ---------------------------------------------------------------- ip=dhcp6


@pytest.mark.parametrize(
    ("value", "mode", "device"),
    [
        ("dhcp6", NetMode.DHCP6, None),
        ("enp0s1:dhcp6", NetMode.DHCP6, "enp0s1"),
        ("auto6", NetMode.AUTO6, None),
        ("enp0s1:auto6", NetMode.AUTO6, "enp0s1"),
        ("dhcp", NetMode.DHCP, None),
        ("enp0s1:dhcp", NetMode.DHCP, "enp0s1"),
    ],
)
def test_ipv6_methods_are_their_own_modes(value: str, mode: NetMode, device: str | None) -> None:
    net = parse_ip(value)
    assert net.mode is mode and net.device == device
    assert format_ip(net) == value
    assert parse_ip(format_ip(net) or "") == net


def test_long_form_with_dhcp6() -> None:
    net = parse_ip("[2001:DB8::5]::[2001:DB8::1]:64:box:enp0s1:dhcp6")
    assert net.mode is NetMode.DHCP6 and net.address == "2001:db8::5"
