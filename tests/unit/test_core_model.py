"""The shared model: validation, LUN encodings, the JSON contract and its round trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from iscsiboot.errors import ParseError, UsageError
from iscsiboot.model import (
    LUN_MAX,
    BootConfig,
    Chap,
    Locator,
    LocatorKind,
    NetMode,
    Network,
    Target,
    address_kind,
    from_dict,
    lun_from_sam,
    lun_from_text,
    lun_to_sam,
    lun_to_text,
    to_dict,
)
from iscsiboot.secret import Secret

luns = st.integers(min_value=0, max_value=LUN_MAX)


@given(luns)
def test_lun_sam_round_trip(lun: int) -> None:
    assert lun_from_sam(lun_to_sam(lun)) == lun


@given(luns)
def test_lun_text_round_trip(lun: int) -> None:
    assert lun_from_text(lun_to_text(lun)) == lun


def test_lun_one_is_sam_order() -> None:
    # iPXE and tgt: LUN 1 is 00 01 00 00 00 00 00 00 on the wire and in the iBFT.
    assert lun_to_sam(1) == bytes.fromhex("0001000000000000")
    assert lun_to_text(1) == "1"
    # RFC 4173 LUNs are hexadecimal: "10" is sixteen.
    assert lun_from_text("10") == 16
    assert lun_from_text("4752-3A4F") == 0x3A4F4752
    with pytest.raises(ValueError):
        lun_from_text("1-2-3-4-5")
    with pytest.raises(ValueError):
        lun_from_text("xyz")


@pytest.mark.parametrize(
    ("address", "kind"),
    [("192.168.1.14", "ipv4"), ("fe80::1", "ipv6"), ("nas.example.org", "hostname"), ("nas", "hostname")],
)
def test_address_kinds(address: str, kind: str) -> None:
    assert address_kind(address) == kind


@pytest.mark.parametrize("address", ["", "999.1.1.1", "a b", "[fe80::1]", "nas_1"])
def test_bad_addresses(address: str) -> None:
    with pytest.raises(UsageError):
        address_kind(address)


def test_locator_parse_and_str() -> None:
    assert Locator.parse("LABEL=System") == Locator(LocatorKind.LABEL, "System")
    assert str(Locator.parse("UUID=1234-ABCD")) == "UUID=1234-ABCD"
    assert str(Locator.parse("/dev/sda1")) == "/dev/sda1"
    with pytest.raises(ParseError):
        Locator.parse("System")
    with pytest.raises(UsageError):
        Locator.parse("LABEL=")


def test_target_validation() -> None:
    chap = Chap("user", Secret("secret123456"))
    with pytest.raises(UsageError, match="port"):
        Target("iqn.2000-01.com.example:t", "10.0.0.1", port=0)
    with pytest.raises(UsageError, match="reverse"):
        Target("iqn.2000-01.com.example:t", "10.0.0.1", reverse_chap=chap)
    with pytest.raises(UsageError):
        Target("iqn with space", "10.0.0.1")
    t = Target("iqn.2000-01.com.example:t", "fe80::1", chap=chap)
    assert t.portal == "[fe80::1]:3260"
    assert t.secrets() == (Secret("secret123456"),)


def test_network_validation() -> None:
    with pytest.raises(UsageError):
        Network(mode=NetMode.STATIC, address="10.0.0.2")
    with pytest.raises(UsageError):
        Network(mac="52:54:00:12:34:5G")
    with pytest.raises(UsageError):
        Network(vlan=4095)
    assert Network(mode=NetMode.STATIC, address="10.0.0.2", prefix=24).prefix == 24


def _sample() -> BootConfig:
    return BootConfig(
        firmware=False,
        initiator="iqn.2010-04.org.whatever:mybox",
        targets=(
            Target(
                "iqn.2000-01.com.synology:pandora.openelec",
                "192.168.1.14",
                lun=1,
                chap=Chap("username", Secret("password1234")),
                reverse_chap=Chap("username_in", Secret("password_in1")),
            ),
        ),
        network=Network(mode=NetMode.DHCP, device="eth0"),
        system=Locator.parse("LABEL=System"),
        storage=Locator.parse("LABEL=Storage"),
    )


def test_json_contract_masks_secrets() -> None:
    doc = to_dict(_sample())
    text = json.dumps(doc)
    assert "password1234" not in text and "password_in1" not in text
    assert doc["targets"][0]["chap"] == {"username": "username", "password": "***"}
    for key in ("firmware", "initiator", "targets", "network", "system", "storage"):
        assert key in doc
    assert set(doc["targets"][0]) >= {"name", "address", "port", "group", "lun", "chap", "reverse_chap"}


def test_json_round_trip_with_secrets() -> None:
    cfg = _sample()
    assert from_dict(json.loads(json.dumps(to_dict(cfg, show_secrets=True)))) == cfg


def test_masked_json_is_refused() -> None:
    with pytest.raises(ParseError, match="masked"):
        from_dict(to_dict(_sample()))


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "object"),
        ({"targets": [{"name": "iqn.x:y", "address": "10.0.0.1", "port": "3260"}]}, "targets[0]"),
        ({"targets": [{"name": "iqn.x:y", "address": "10.0.0.1", "port": True}]}, "targets[0]"),
        ({"network": {"mode": "carrier-pigeon"}}, "network.mode"),
        ({"system": "System"}, "System"),
        ({"targets": [{"name": "iqn.x:y", "address": "10.0.0.1", "port": 70000}]}, "port"),
    ],
)
def test_from_dict_errors_name_the_field(doc: object, field: str) -> None:
    with pytest.raises(ParseError) as info:
        from_dict(doc)
    assert field in str(info.value)


# ---------------------------------------------------------------- NUL and name length


@pytest.mark.parametrize(
    "make",
    [
        lambda: Target("iqn.2024-01.lab:d\0isk", "10.0.0.1"),
        lambda: BootConfig(initiator="iqn.2024-01.lab:h\0"),
        lambda: Chap("us\0er", Secret("a-long-chap-secret")),
        lambda: Chap("user", Secret("a-long\0-secret")),
        lambda: Locator(LocatorKind.LABEL, "Sys\0tem"),
        lambda: Network(mode=NetMode.DHCP, device="eth\0"),
        lambda: Network(mode=NetMode.DHCP, hostname="box\0"),
    ],
)
def test_nul_is_refused_everywhere(make: object) -> None:
    with pytest.raises(UsageError, match="NUL") as info:
        make()  # type: ignore[operator]
    assert "a-long" not in str(info.value)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Target("iqn.2024-01.lab:d\udcffisk", "10.0.0.1"),  # argv's undecodable byte 0xff
        lambda: BootConfig(initiator="iqn.2024-01.lab:h\ud800"),
        lambda: Chap("us\udcfeer", Secret("a-long-chap-secret")),
        lambda: Chap("user", Secret("a-long\udcfe-secret")),
        lambda: Locator(LocatorKind.LABEL, "Sys\udcfftem"),
    ],
)
def test_text_that_was_not_utf8_is_refused(make: object) -> None:
    with pytest.raises(UsageError, match="not UTF-8 text") as info:
        make()  # type: ignore[operator]
    assert "a-long" not in str(info.value)


def test_a_name_that_was_not_utf8_is_one_line_and_exit_2_under_a_strict_locale() -> None:
    exe = Path(sys.executable).with_name("iscsiboot")
    line = b"iscsi_initiator=iqn.2024-01.a:b iscsi_target_name=iqn.2024-01.x:\xff iscsi_target_ip=10.0.0.1"
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(
        [exe, b"cmdline", b"parse", line], env=env, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 2
    err = done.stderr.decode()
    assert err.count("\n") == 1 and "not UTF-8 text (byte 0xff)" in err and "Traceback" not in err


def test_iscsi_names_have_at_most_223_bytes() -> None:
    name = "iqn.2024-01.lab:" + "x" * (223 - 16)
    assert len(Target(name, "10.0.0.1").name) == 223
    assert BootConfig(initiator=name).initiator == name
    with pytest.raises(UsageError, match="224 bytes"):
        Target(name + "x", "10.0.0.1")
    with pytest.raises(UsageError, match="224 bytes"):
        BootConfig(initiator=name[:-1] + "\u00e9")  # two bytes in UTF-8
    with pytest.raises(ParseError, match="224 bytes"):
        from_dict({"targets": [{"name": name + "x", "address": "10.0.0.1"}]})
    with pytest.raises(ParseError, match="NUL"):
        from_dict({"initiator": "iqn.2024-01.lab:\0"})


@pytest.mark.parametrize("address", ["host\n", "1.2.3.4\n", "fe80::1%\nx", "fe80::1%a${x}", "fe80::1%a b"])
def test_addresses_with_a_line_break_or_a_strange_zone_are_refused(address: str) -> None:
    with pytest.raises(UsageError):
        address_kind(address)
    with pytest.raises(UsageError):
        Network(mode=NetMode.STATIC, address="10.0.0.2", prefix=24, gateway=address)


def test_mac_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(UsageError, match="MAC"):
        Network(mac="52:54:00:12:34:56\n")
    assert address_kind("fe80::1%eth0") == "ipv6"
