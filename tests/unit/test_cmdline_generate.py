"""The generators: what they write, warn about and refuse."""

from __future__ import annotations

import argparse

import pytest
from iscsiboot.cmdline import generate
from iscsiboot.cmdline.options import add_model_options, model_from_args
from iscsiboot.cmdline.parse import parse
from iscsiboot.errors import RepresentError, UsageError
from iscsiboot.model import BootConfig, Chap, Locator, NetMode, Network, Target
from iscsiboot.secret import Secret

INI = "iqn.2024-01.lab:htpc"
T1 = Target("iqn.2024-01.lab:disk", "10.0.2.2", lun=1, chap=Chap("htpc", Secret("a-long-chap-secret")))
T2 = Target("iqn.2024-01.lab:storage", "fd00::2", port=3261, chap=Chap("htpc", Secret("a-long-chap-secret")))
SYSTEM = Locator.parse("LABEL=System")
STORAGE = Locator.parse("LABEL=Storage")


def _model(**changes: object) -> BootConfig:
    """A model with one explicit target, changed by ``changes``."""
    base: dict[str, object] = {
        "initiator": INI,
        "targets": (T1,),
        "network": Network(mode=NetMode.DHCP),
        "system": SYSTEM,
        "storage": STORAGE,
    }
    base.update(changes)
    return BootConfig(**base)  # type: ignore[arg-type]


def test_locator_with_spaces_is_quoted() -> None:
    cfg = BootConfig(firmware=True, system=Locator.parse("LABEL=HTPC System"))
    text = generate.cmdline(cfg).text
    assert text == 'boot="ISCSI=auto,LABEL=HTPC System"'
    assert parse(text).config == cfg


def test_storage_on_a_second_target_and_ipv6_in_the_spec() -> None:
    cfg = _model(targets=(T1, T2), storage_on_iscsi=True)
    result = generate.cmdline(cfg)
    assert "disk=ISCSI=" in result.text and "iscsi_target_ip=fd00::2" in result.text
    assert any("LUN 1" in w for w in result.warnings)
    back = parse(result.text).config
    assert back.targets == (Target(T1.name, T1.address, chap=T1.chap), T2)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (_model(firmware=True), "firmware"),
        (_model(initiator=None), "initiator"),
        (_model(system=None), "system locator"),
        (_model(targets=(T1, T2)), "2 targets"),
        (_model(storage=None, storage_on_iscsi=True), "storage locator"),
        (_model(targets=(Target("iqn.2024-01.lab:d", "10.0.0.1", chap=Chap("u", Secret("a,b"))),)), "comma"),
        (_model(system=Locator.parse("LABEL=a,b")), "comma"),
        (_model(network=Network(vlan=5, mode=NetMode.DHCP)), "VLAN"),
        (_model(network=Network(device="eth0")), "without a mode"),
        (_model(network=Network(mode=NetMode.FIRMWARE, device="eth0")), "iBFT"),
    ],
)
def test_cmdline_refusals(cfg: BootConfig, match: str | None) -> None:
    with pytest.raises((RepresentError, UsageError), match=match):
        generate.cmdline(cfg)


def test_secret_warnings() -> None:
    short = _model(targets=(Target("iqn.2024-01.lab:d", "10.0.0.1", chap=Chap("u", Secret("short"))),))
    warnings = generate.cmdline(short).warnings
    assert any("/proc/cmdline" in w for w in warnings)
    assert any("RFC 3720" in w for w in warnings)
    assert not any("short" in w.replace("shorter", "") for w in warnings)
    assert generate.cmdline(short).secrets == (Secret("short"),)


def test_ipxe_forms() -> None:
    cfg = _model(targets=(T1, T2), storage_on_iscsi=True)
    text = generate.ipxe(cfg).text
    assert "sanhook --drive 0x81 iscsi:[fd00::2]::3261::iqn.2024-01.lab:storage" in text
    assert text.rstrip().endswith("sanboot iscsi:10.0.2.2:::1:iqn.2024-01.lab:disk || goto retry_sanboot")
    bounded = generate.ipxe(cfg, attempts=2).text.splitlines()
    assert bounded[-4:] == [
        "sanboot iscsi:10.0.2.2:::1:iqn.2024-01.lab:disk || sanboot iscsi:10.0.2.2:::1:iqn.2024-01.lab:disk"
        " || goto sanboot_failed",
        ":sanboot_failed",
        "echo sanboot failed",
        "exit 1",
    ]
    with pytest.raises(RepresentError):
        generate.ipxe(cfg, attempts=0)
    no_lun = generate.ipxe(_model(targets=(Target("iqn.2024-01.lab:d", "10.0.0.1"),)))
    assert any("LUN 0" in w for w in no_lun.warnings)
    other = Target("iqn.2024-01.lab:s", "10.0.0.1", chap=Chap("other", Secret("another-secret")))
    with pytest.raises(RepresentError, match="different credentials"):
        generate.ipxe(_model(targets=(T1, other), storage_on_iscsi=True))


def test_dracut_refuses_storage_on_iscsi_and_mixed_groups() -> None:
    with pytest.raises(RepresentError):
        generate.dracut(_model(storage_on_iscsi=True))
    with pytest.raises(RepresentError, match="portal groups"):
        generate.dracut(_model(targets=(T1, Target("iqn.2024-01.lab:x", "10.0.0.3", group=2)), storage=None))


def test_dnsmasq_without_range_warns() -> None:
    result = generate.dnsmasq(_model())
    assert any("--dhcp-range" in w for w in result.warnings)
    assert 'dhcp-option=tag:!ipxe,option:root-path,"iscsi:10.0.2.2:::1:iqn.2024-01.lab:disk"' in result.text
    assert result.secrets == ()
    assert "a-long-chap-secret" not in result.text


# ---------------------------------------------------------------- options


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    return parser.parse_args(list(argv))


def test_model_options_defaults_and_target() -> None:
    cfg = model_from_args(_args())
    assert cfg == BootConfig(network=Network(mode=NetMode.DHCP), system=SYSTEM, storage=STORAGE)
    argv = ["--initiator", INI, "--target-name", "iqn.2024-01.lab:d", "--target-ip", "[fd00::9]"]
    argv += ["--lun", "0x10", "--target-group", "2", "--ip", "unset", "--storage-on-iscsi"]
    cfg = model_from_args(_args(*argv))
    assert cfg.targets == (Target("iqn.2024-01.lab:d", "fd00::9", group=2, lun=16),)
    assert cfg.network == Network() and cfg.storage_on_iscsi
    assert model_from_args(_args("--lun", "4752-3a4f", "--target-name", "n", "--target-ip", "h")).targets[
        0
    ].lun == (0x3A4F_4752)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--auto", "--target-name", "x"], "--auto"),
        (["--auto", "--initiator", INI], "--initiator"),
        (["--lun", "1"], "without --target-name"),
        (["--target-name", "n", "--target-ip", "h", "--username", "u"], "without a secret"),
        (["--target-name", "n", "--target-ip", "h", "--password", "p", "--password-file", "/x"], "together"),
        (
            ["--target-name", "n", "--target-ip", "h", "--username", "u", "--password-file", "/nonexistent"],
            "cannot read",
        ),
        (["--from-json", "/nonexistent.json"], "cannot read"),
        (["--target-name", "n", "--target-ip", "bad address!"], "not an IPv4"),
    ],
)
def test_model_options_errors(argv: list[str], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        model_from_args(_args(*argv))


@pytest.mark.parametrize("secret", ["x" * 256, "caf\u00e9-secret-value", "tab\tsecret-value"])
def test_credentials_every_format_refuses(secret: str) -> None:
    cfg = _model(targets=(Target("iqn.2024-01.lab:d", "10.0.0.1", chap=Chap("u", Secret(secret))),))
    for make in (generate.cmdline, generate.ipxe, lambda c: generate.root_path(c, credentials=True)):
        with pytest.raises(RepresentError) as info:
            make(cfg)
        assert secret not in str(info.value)


def test_initiator_without_target_is_left_out_with_a_warning() -> None:
    result = generate.cmdline(_model(targets=()))
    assert result.text == "ip=dhcp boot=LABEL=System disk=LABEL=Storage"
    assert any("initiator" in w for w in result.warnings)
