"""The kernel command line parser: tokenisation, every form, strict errors."""

from __future__ import annotations

import pytest
from iscsiboot.cmdline.ipconf import format_ip, parse_ip
from iscsiboot.cmdline.parse import parse, tokenize
from iscsiboot.cmdline.rootpath import format_root_path, parse_root_path
from iscsiboot.errors import ParseError
from iscsiboot.model import Chap, Locator, LocatorKind, NetMode, Network, Target
from iscsiboot.secret import Secret

IQN_T = "iqn.2000-01.com.synology:pandora.openelec"
IQN_I = "iqn.2010-04.org.whatever:mybox"
EXPLICIT = (
    f"iscsi_initiator={IQN_I},iscsi_target_name={IQN_T},iscsi_target_ip=192.168.1.14,"
    "iscsi_target_port=3260,iscsi_username=username,iscsi_password=password,"
    "iscsi_in_username=username_in,iscsi_in_password=password_in"
)


# ---------------------------------------------------------------- tokenize


def test_tokenize_quotes_group_and_vanish() -> None:
    assert tokenize('boot="ISCSI=auto,LABEL=HTPC System" quiet') == (
        "boot=ISCSI=auto,LABEL=HTPC System",
        "quiet",
    )


def test_tokenize_drops_init_arguments_after_double_dash() -> None:
    assert tokenize("ip=dhcp  quiet -- single --x") == ("ip=dhcp", "quiet")
    assert tokenize("a --b c") == ("a", "--b", "c")


def test_tokenize_whitespace_and_empty() -> None:
    assert tokenize(" \t\n") == ()
    assert tokenize('a "" b') == ("a", "", "b")
    assert tokenize("a\tb\nc") == ("a", "b", "c")


# ---------------------------------------------------------------- OpenELEC


def test_openelec_auto_howto_layout() -> None:
    cfg = parse("ip=dhcp boot=ISCSI=auto,LABEL=System disk=LABEL=Storage quiet").config
    assert cfg.firmware
    assert cfg.targets == ()
    assert cfg.network.mode is NetMode.DHCP
    assert cfg.system == Locator(LocatorKind.LABEL, "System")
    assert cfg.storage == Locator(LocatorKind.LABEL, "Storage")
    assert not cfg.storage_on_iscsi


def test_openelec_explicit_spec() -> None:
    parsed = parse(f"boot=ISCSI={EXPLICIT},LABEL=System disk=ISCSI=auto,UUID=1234-abcd")
    cfg = parsed.config
    assert cfg.initiator == IQN_I
    (t,) = cfg.targets
    assert (t.name, t.address, t.port, t.group, t.lun) == (IQN_T, "192.168.1.14", 3260, 1, None)
    assert t.chap == Chap("username", Secret("password"))
    assert t.reverse_chap == Chap("username_in", Secret("password_in"))
    assert cfg.firmware and cfg.storage_on_iscsi
    assert cfg.storage == Locator(LocatorKind.UUID, "1234-abcd")
    assert any("/proc/cmdline" in w for w in parsed.warnings)
    assert not any("password_in" in w for w in parsed.warnings)


def test_disk_repeating_the_boot_spec_is_one_target() -> None:
    spec = f"iscsi_initiator={IQN_I},iscsi_target_name={IQN_T},iscsi_target_ip=fd00::14"
    cfg = parse(f"boot=ISCSI={spec},LABEL=System disk=ISCSI={spec},/dev/sda2").config
    assert len(cfg.targets) == 1
    assert cfg.targets[0].address == "fd00::14"
    assert cfg.storage_on_iscsi
    assert cfg.storage == Locator(LocatorKind.PATH, "/dev/sda2")


def test_plain_locators_and_unrelated_tokens() -> None:
    cfg = parse("BOOT_IMAGE=/KERNEL boot=/dev/sda1 disk=LABEL=Storage splash quiet foo=bar").config
    assert not cfg.firmware and cfg.targets == ()
    assert cfg.system == Locator(LocatorKind.PATH, "/dev/sda1")


def test_nfs_boot_is_ignored_with_a_warning() -> None:
    parsed = parse("boot=NFS=10.0.0.1:/export disk=LABEL=Storage")
    assert parsed.config.system is None
    assert any("NFS" in w for w in parsed.warnings)


# ---------------------------------------------------------------- Debian and dracut


def test_debian_auto_and_keys() -> None:
    assert parse("iscsi_auto root=LABEL=root").config.firmware
    cfg = parse(
        f"iscsi_initiator={IQN_I} iscsi_target_name={IQN_T} iscsi_target_ip=10.0.0.1 "
        "iscsi_target_port=3261 iscsi_target_group=2 root=UUID=abc"
    ).config
    assert cfg.initiator == IQN_I
    assert cfg.targets == (Target(IQN_T, "10.0.0.1", 3261, 2),)
    assert cfg.system == Locator(LocatorKind.UUID, "abc")


def test_dracut_netroot_with_rd_iscsi_keys() -> None:
    cfg = parse(
        "netroot=iscsi:10.0.2.2:::1:iqn.2024-01.lab:disk rd.iscsi.initiator=iqn.2024-01.lab:c "
        "rd.iscsi.username=u rd.iscsi.password=p4ssw0rd-long rd.iscsi.target.group=3 "
        "rd.iscsi.in.username=ru rd.iscsi.in.password=rp rd.iscsi.waitnet=0 ip=ibft"
    ).config
    (t,) = cfg.targets
    assert t.lun == 1 and t.group == 3
    assert t.chap == Chap("u", Secret("p4ssw0rd-long"))
    assert t.reverse_chap == Chap("ru", Secret("rp"))
    assert cfg.initiator == "iqn.2024-01.lab:c"
    assert cfg.network.mode is NetMode.FIRMWARE


def test_dracut_target_keys_and_firmware_flags() -> None:
    cfg = parse(
        "rd.iscsi.target.name=iqn.2024-01.lab:d rd.iscsi.target.ip=h.example rd.iscsi.target.port=3262"
    ).config
    assert cfg.targets == (Target("iqn.2024-01.lab:d", "h.example", 3262),)
    assert parse("rd.iscsi.firmware=1").config.firmware
    assert parse("rd.iscsi.ibft").config.firmware
    assert not parse("rd.iscsi.firmware=0").config.firmware


def test_sources_mix_as_a_union() -> None:
    cfg = parse(
        "boot=ISCSI=auto,LABEL=System root=iscsi:10.0.0.9::::iqn.2024-01.lab:x "
        "netroot=iscsi:10.0.0.9::::iqn.2024-01.lab:x BOOTIF=01-52-54-00-12-34-56"
    ).config
    assert cfg.firmware
    assert len(cfg.targets) == 1
    assert cfg.network.mac == "52:54:00:12:34:56"


def test_conflicting_initiators() -> None:
    with pytest.raises(ParseError, match="conflicting initiator"):
        parse(
            f"boot=ISCSI=iscsi_initiator=iqn.2024-01.a:x,iscsi_target_name={IQN_T},iscsi_target_ip=1.2.3.4,"
            "LABEL=System rd.iscsi.initiator=iqn.2024-01.b:y"
        )


# ---------------------------------------------------------------- RFC 4173


@pytest.mark.parametrize(
    ("text", "address", "port", "lun", "name"),
    [
        (
            "iscsi:192.168.1.14::::iqn.2000-01.com.synology:pandora.openelec",
            "192.168.1.14",
            3260,
            None,
            IQN_T,
        ),
        ("iscsi:10.0.2.2:::1:iqn.2024-01.lab:disk", "10.0.2.2", 3260, 1, "iqn.2024-01.lab:disk"),
        ("iscsi:[fec0::2]:6:3261:a:iqn.x:y:z", "fec0::2", 3261, 10, "iqn.x:y:z"),
        (
            "iscsi:srv.example:::4752-3A4F:eui.02004567A425678D",
            "srv.example",
            3260,
            0x3A4F_4752,
            "eui.02004567A425678D",
        ),
    ],
)
def test_root_path_forms(text: str, address: str, port: int, lun: int | None, name: str) -> None:
    t = parse_root_path(text)
    assert (t.address, t.port, t.lun, t.name) == (address, port, lun, name)


def test_root_path_credentials() -> None:
    t = parse_root_path("iscsi:u:p@10.0.0.1::::iqn.2024-01.lab:d")
    assert t.chap == Chap("u", Secret("p")) and t.reverse_chap is None
    t = parse_root_path("iscsi:u:p:ru:rp@[::1]::::iqn.2024-01.lab:d")
    assert t.reverse_chap == Chap("ru", Secret("rp")) and t.address == "::1"
    assert format_root_path(t) == "iscsi:[::1]::::iqn.2024-01.lab:d"
    assert format_root_path(t, credentials=True) == "iscsi:u:p:ru:rp@[::1]::::iqn.2024-01.lab:d"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("iscsi:10.0.0.1:::1", "too few fields"),
        ("iscsi::::1:iqn.x", "server field is empty"),
        ("iscsi:10.0.0.1:17:::iqn.x", "not TCP"),
        ("iscsi:10.0.0.1::70000::iqn.x", "port"),
        ("iscsi:10.0.0.1:::g:iqn.x", "not hexadecimal"),
        ("iscsi:10.0.0.1::::", "target name is empty"),
        ("iscsi:[fe80::1::::iqn.x", "unclosed"),
        ("iscsi:u@10.0.0.1::::iqn.x", "credentials"),
    ],
)
def test_root_path_errors(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse(f"root={text}")


# ---------------------------------------------------------------- ip=


def test_ip_forms() -> None:
    assert parse_ip("dhcp") == Network(mode=NetMode.DHCP)
    assert parse_ip("off") == Network(mode=NetMode.OFF)
    assert parse_ip("none").mode is NetMode.OFF
    assert parse_ip("ibft").mode is NetMode.FIRMWARE
    assert parse_ip("eth0:dhcp") == Network(mode=NetMode.DHCP, device="eth0")
    net = parse_ip("192.168.1.20:192.168.1.14:192.168.1.1:255.255.255.0:htpc:eth0:off:192.168.1.1:8.8.8.8")
    assert net == Network(
        mode=NetMode.STATIC,
        address="192.168.1.20",
        server="192.168.1.14",
        gateway="192.168.1.1",
        prefix=24,
        hostname="htpc",
        device="eth0",
        dns=("192.168.1.1", "8.8.8.8"),
    )
    assert (
        format_ip(net)
        == "192.168.1.20:192.168.1.14:192.168.1.1:255.255.255.0:htpc:eth0:off:192.168.1.1:8.8.8.8"
    )
    v6 = parse_ip("[2001:db8::2]::[2001:db8::1]:64:h:eth0:none")
    assert (v6.address, v6.gateway, v6.prefix) == ("2001:db8::2", "2001:db8::1", 64)
    assert parse_ip(":::::eth1:dhcp") == Network(mode=NetMode.DHCP, device="eth1")
    assert parse_ip("eth0:dhcp:9000:52:54:00:AB:cd:ef") == Network(
        mode=NetMode.DHCP, device="eth0", mac="52:54:00:ab:cd:ef"
    )
    assert parse_ip("eth0:dhcp:1500") == Network(mode=NetMode.DHCP, device="eth0")
    dracut = parse_ip("10.0.0.2::10.0.0.1:24:h:eth0:none:1500:52:54:00:12:34:56")
    assert (dracut.mode, dracut.prefix, dracut.mac, dracut.dns) == (
        NetMode.STATIC,
        24,
        "52:54:00:12:34:56",
        (),
    )


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("bogus", "unknown ip= value"),
        ("10.0.0.2::::::off", "needs a netmask"),
        ("10.0.0.2:::255.0.255.0:::off", "netmask"),
        ("10.0.0.2:::24:::magic", "unknown autoconf"),
        ("10.0.0.999:::24:::off", "not an IP address"),
        ("eth0:dhcp:12", "MTU"),
    ],
)
def test_ip_errors(value: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse(f"ip={value}")


# ---------------------------------------------------------------- strict errors


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("boot=ISCSI=auto", "no locator after the last comma"),
        (f"boot=ISCSI={EXPLICIT}", "no locator after the last comma"),
        ("boot=ISCSI=auto,quiet", "not a locator"),
        ("boot=ISCSI=iscsi_target_nmae=x,LABEL=System", "did you mean iscsi_target_name"),
        ("iscsi_usrname=x", "did you mean iscsi_username"),
        ("rd.iscsi.usrname=x", "did you mean rd.iscsi.username"),
        (f"boot=ISCSI={EXPLICIT},iscsi_target_port=1,LABEL=System", "duplicate key iscsi_target_port"),
        ("iscsi_target_ip=1.2.3.4 iscsi_target_ip=1.2.3.5", "duplicate key"),
        ("boot=LABEL=a boot=LABEL=b", "given twice"),
        (
            f"boot=ISCSI=iscsi_target_name={IQN_T},iscsi_target_ip=1.2.3.4,LABEL=S",
            "missing required key iscsi_initiator",
        ),
        (
            f"boot=ISCSI=iscsi_initiator={IQN_I},iscsi_target_ip=1.2.3.4,LABEL=S",
            "missing required key iscsi_target_name",
        ),
        (f"iscsi_target_name={IQN_T}", "missing required key iscsi_target_ip"),
        (
            f"iscsi_target_name={IQN_T} iscsi_target_ip=1.2.3.4 iscsi_username=u",
            "missing required key iscsi_password",
        ),
        (
            f"iscsi_target_name={IQN_T} iscsi_target_ip=1.2.3.4 iscsi_target_port=http",
            "iscsi_target_port must be a number",
        ),
        (f"iscsi_target_name={IQN_T} iscsi_target_ip=1.2.3.4 iscsi_target_port=0", "1-65535"),
        (f"iscsi_target_name={IQN_T} iscsi_target_ip=1.2.3.4 iscsi_target_group=70000", "0-65535"),
        (
            f"iscsi_target_name={IQN_T} iscsi_target_ip=1.2.3.4 iscsi_in_username=a iscsi_in_password=b",
            "iscsi_in_username and iscsi_in_password \\(reverse, mutual CHAP\\) given without one-way CHAP"
            ".*add iscsi_username and iscsi_password",
        ),
        (
            f"netroot=iscsi:1.2.3.4::::{IQN_T} rd.iscsi.in.username=a rd.iscsi.in.password=b",
            "rd.iscsi.in.username and rd.iscsi.in.password \\(reverse, mutual CHAP\\)",
        ),
        ("iscsi_target_ip=", "empty value"),
        ("iscsi_target_ip", "needs a value"),
        ("rd.iscsi.username", "needs a value"),
        ("iscsi_autp", "did you mean iscsi_auto"),
        ("boot=ISCSI=iscsi_initiator=,LABEL=S", "empty value"),
        ("boot=", "empty value"),
        ("boot=ISCSI=auto,LABEL=", "empty locator"),
        (f"iscsi_target_name={IQN_T} iscsi_target_ip=not_a_host!", "not an IPv4 or IPv6 address"),
        ("BOOTIF=52:54:00:12:34:56", "BOOTIF"),
        ("ip=dhcp ip=off", "given twice"),
        ("rd.iscsi.username=u rd.iscsi.password=p", "missing required key rd.iscsi.target.name"),
    ],
)
def test_strict_errors(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match) as info:
        parse(text)
    assert "\n" not in str(info.value)


def test_classic_mistake_group_is_the_end_of_the_iqn() -> None:
    with pytest.raises(ParseError) as info:
        parse(
            "boot=ISCSI=iscsi_initiator=iqn.2010-04.org.whatever:mybox,iscsi_target_name=iqn.2000-01.com.synology,"
            "iscsi_target_ip=192.168.1.14,iscsi_target_port=3260,iscsi_target_group=pandora.openelec,LABEL=System"
        )
    message = str(info.value)
    assert "iscsi_target_group=pandora.openelec" in message
    assert "split at the wrong place" in message
    assert "iscsi_target_name=iqn.2000-01.com.synology:pandora.openelec" in message


def test_error_messages_mask_passwords() -> None:
    for text in (
        f"boot=ISCSI={EXPLICIT},iscsi_password=topsecret9,LABEL=System",
        "iscsi_password=topsecret9 iscsi_password=topsecret9",
        "root=iscsi:user:topsecret9@10.0.0.1:::zz:iqn.2024-01.x:y",
        "iscsi_target_name=iqn.2024-01.x:y iscsi_target_ip=1.2.3.4 iscsi_password=topsecret9 ip=bad",
        "iscsi_in_password=topsecret9 iscsi_target_name=iqn.2024-01.x:y iscsi_target_ip=1.2.3.4",
        f"boot=ISCSI={EXPLICIT.replace('=password,', '=ab,topsecret9,')},LABEL=System",
        f"boot=ISCSI={EXPLICIT.replace('=password,', '=ab,x=topsecret9,')},LABEL=System",
        f"boot=ISCSI=iscsi_initiator={IQN_I},iscsi_target_name={IQN_T},iscsi_password=ab,topsecret9",
        "root=iscsi:u:topsecret9@10.0.0.1",
        "root=iscsi:u:top:secret9@10.0.0.1::::iqn.2024-01.x:y",
        "netroot=iscsi:u:topsecret9:ru:topsecret9@10.0.0.1:17:::iqn.2024-01.x:y",
    ):
        with pytest.raises(ParseError) as info:
            parse(text)
        assert "topsecret9" not in str(info.value), text
        assert "secret9" not in str(info.value), text
