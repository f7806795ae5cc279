"""Messages name what is wrong without showing a CHAP secret; numbers are ASCII digits."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from doctor_support import run_main
from iscsiboot.cliargs import number_type
from iscsiboot.cmdline.parse import parse, redact
from iscsiboot.cmdline.rootpath import parse_root_path, redact_root_path
from iscsiboot.errors import ParseError
from iscsiboot.iscsi.pdu import ProtocolError
from iscsiboot.iscsi.text import decode_number

T = "iqn.2024-01.org.example:t"
I = "iqn.2024-01.org.example:i"  # noqa: E741
SECRET = "topsecretvalue"


def _error(line: str) -> str:
    with pytest.raises(ParseError) as info:
        parse(line)
    return str(info.value)


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        # a root path that fails to parse: its credentials are not quoted
        (f"root=iscsi:user:{SECRET}@10.0.0.1::99999:1:{T}", "port '99999'"),
        (f'root="iscsi:user:{SECRET} x@10.0.0.1::99999:1:{T}"', "port '99999'"),
        (f"root=iscsi:user:top@{SECRET}@10.0.0.1::3260:1:{T}", "one '@'"),
        (f"root=iscsi:user:{SECRET}@10.0.0.1::1", "too few fields"),
        (f"root=iscsi:user:{SECRET}:@10.0.0.1::1:1:{T}", "user:password"),
        (f"root=iscsi:u:p:r:{SECRET} rest@10.0.0.1::3260:1:{T}", "later token holds an '@'"),
        # the part of a password after a space, quote or comma
        (f'iscsi_password="abc {SECRET}" iscsi_password=x', "duplicate key iscsi_password"),
        (f"iscsi_password=abc'{SECRET} iscsi_password=x", "duplicate key iscsi_password"),
        (
            f"boot=ISCSI=iscsi_initiator={I},iscsi_target_name={T},iscsi_target_ip=10.0.0.1,"
            f"iscsi_username=u,iscsi_password=abc,{SECRET},LABEL=System",
            "seems to contain a comma",
        ),
        # a mistyped password key's value
        (f"iscsi_pasword={SECRET}", "did you mean iscsi_password?"),
        (f"rd.iscsi.pasword={SECRET}", "did you mean rd.iscsi.password?"),
        (
            f"boot=ISCSI=iscsi_initiator={I},iscsi_target_name={T},iscsi_pasword=ab,{SECRET}",
            "unknown key 'iscsi_pasword'",
        ),
        # a quote left open swallows the password into another parameter's value
        (f'iscsi_target_group=" iscsi_password={SECRET}"', "white space"),
        (f'ip=" iscsi_password={SECRET}"', "white space"),
        # ... also when the swallowing value starts like a device path (a locator)
        (f'ip=/" iscsi_in_password={SECRET}:', "white space"),
        (f'nameserver=/" iscsi_password={SECRET}', "white space"),
        (f'boot=ISCSI=/" iscsi_password={SECRET} ', "empty iSCSI options"),
    ],
)
def test_errors_never_show_the_secret(line: str, needle: str) -> None:
    text = _error(line)
    assert SECRET not in text and SECRET[:6] not in text, text
    assert needle in text, text


def test_where_shows_the_redacted_token() -> None:
    assert _error(f"iscsi_pasword={SECRET}").startswith("iscsi_pasword=***: unknown key")
    assert redact(f"iscsi_password={SECRET}") == "iscsi_password=***"
    assert redact(f"rd.iscsi.in.password={SECRET}") == "rd.iscsi.in.password=***"
    assert redact("iscsi_target_port=3260") == "iscsi_target_port=3260"
    assert redact_root_path(f"iscsi:u:{SECRET}:r:{SECRET}@h::::{T}") == f"iscsi:u:***:r:***@h::::{T}"
    assert redact_root_path(f"iscsi:u:{SECRET}:x@h::::{T}") == f"iscsi:***@h::::{T}"
    with pytest.raises(ParseError) as info:
        parse_root_path(f"iscsi:user:{SECRET}@10.0.0.1::0:1:{T}")  # no where: quoted redacted
    assert SECRET not in str(info.value) and "iscsi:user:***@10.0.0.1" in str(info.value)


def test_one_letter_password_leaves_words_whole() -> None:
    # was: "iscsi_targ***t_ip=1.2.3.5: duplicat*** k***y iscsi_targ***t_ip (giv*** ***ach k***y onc***)"
    line = f"iscsi_password=e iscsi_username=u iscsi_target_name={T} iscsi_target_ip=1.2.3.4"
    line += " iscsi_target_ip=1.2.3.5"
    text = _error(line)
    assert text == "iscsi_target_ip=1.2.3.5: duplicate key iscsi_target_ip (give each key once)"


def test_password_equal_to_the_port_leaves_the_port_shown(capsys: pytest.CaptureFixture[str]) -> None:
    # was: "iscsi_target_port=***"
    code, out, _err = run_main(
        capsys,
        *("generate", "cmdline", "--initiator", I, "--target-name", T, "--target-ip", "1.2.3.4"),
        *("--username", "u", "--password", "3260"),
    )
    assert code == 0
    assert "iscsi_target_port=3260" in out and "iscsi_password=***" in out
    code, out, _err = run_main(
        capsys,
        *("generate", "root-path", "--target-name", T, "--target-ip", "1.2.3.4", "--with-credentials"),
        *("--username", "u", "--password", "3260"),
    )
    assert code == 0 and out.strip() == f"iscsi:u:***@1.2.3.4::::{T}"


def test_show_secrets_shows_them(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_main(
        capsys,
        *("generate", "cmdline", "--initiator", I, "--target-name", T, "--target-ip", "1.2.3.4"),
        *("--username", "u", "--password", SECRET, "--show-secrets"),
    )
    assert code == 0 and f"iscsi_password={SECRET}" in out


def test_doctor_cmdline_and_extlinux_never_show_the_secret(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = f'root="iscsi:user:{SECRET} x@10.0.0.1::99999:1:{T}" iscsi_pasword={SECRET}'
    code, out, err = run_main(capsys, "doctor", "--cmdline", bad)
    assert code == 2 and SECRET not in out + err and "port '99999'" in err
    conf = tmp_path / "extlinux.conf"
    conf.write_text(f"DEFAULT linux\nLABEL linux\n  KERNEL /KERNEL\n  APPEND iscsi_pasword={SECRET}\n")
    code, out, err = run_main(capsys, "doctor", "--extlinux", str(conf))
    assert code == 2 and SECRET not in out + err and "iscsi_pasword=***" in err


@pytest.mark.parametrize(
    "path",
    [
        f"iscsi:fe80::1::3260:1:{T}",
        f"iscsi:2001:db8::1::3260:1:{T}",
        f"iscsi:fe80:::3260:1:{T}",
    ],
)
def test_ipv6_without_brackets_is_refused(path: str) -> None:
    with pytest.raises(ParseError, match="must be in brackets"):
        parse_root_path(path)
    with pytest.raises(ParseError, match="must be in brackets"):
        parse(f"root={path}")


def test_bracketed_ipv6_and_hex_host_names_still_parse() -> None:
    assert parse_root_path(f"iscsi:[fe80::1]::3260:1:{T}").address == "fe80::1"
    assert parse_root_path(f"iscsi:cafe::3260:1:{T}").address == "cafe"


@pytest.mark.parametrize("text", ["١", "٣٢٦٠", "1_0", " 1", "+1", "²", "0x١"])
def test_numbers_are_ascii_digits(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        number_type()(text)
    with pytest.raises(ProtocolError):
        decode_number(text)
    with pytest.raises(ParseError, match=r"must be a number|white space"):
        parse(f'iscsi_target_port="{text}" iscsi_target_name={T} iscsi_target_ip=1.2.3.4')
    with pytest.raises(ParseError):
        parse_root_path(f"iscsi:10.0.0.1::{text}:1:{T}")
    assert number_type()("0x10") == 16 and decode_number("3260") == 3260


def test_lun_option_refuses_other_digits(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(
        capsys, "generate", "cmdline", "--target-name", T, "--target-ip", "1.2.3.4", "--lun", "١"
    )
    assert code == 2 and "is not a number" in err
