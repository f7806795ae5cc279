"""``iscsiboot cmdline parse`` and ``iscsiboot generate`` through the real console script."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
from cmdline_support import HOWTO, run_cli
from iscsiboot.cli import main
from iscsiboot.cmdline.parse import parse
from iscsiboot.proc import run

SECRET = "Sup3r-S3cret-pw"
RSECRET = "Rev3rse-S3cret"
IQN_T = "iqn.2024-01.lab.iscsiboot:disk"
IQN_I = "iqn.2024-01.lab.iscsiboot:htpc"
TARGET = ["--initiator", IQN_I, "--target-name", IQN_T, "--target-ip", "10.0.2.2", "--lun", "1"]
CHAP = [
    "--username",
    "htpc",
    "--password",
    SECRET,
    "--reverse-username",
    "tgt",
    "--reverse-password",
    RSECRET,
]
EXPLICIT_LINE = (
    f"ip=dhcp boot=ISCSI=iscsi_initiator={IQN_I},iscsi_target_name={IQN_T},iscsi_target_ip=10.0.2.2,"
    f"iscsi_username=htpc,iscsi_password={SECRET},iscsi_in_username=tgt,iscsi_in_password={RSECRET},"
    "LABEL=System disk=LABEL=Storage"
)


def _seed() -> str:
    return HOWTO.read_text()


# ---------------------------------------------------------------- parse output


def test_parse_json_contract() -> None:
    result = run_cli("cmdline", "parse", "--json", EXPLICIT_LINE)
    assert result.returncode == 0, result.stderr
    obj = json.loads(result.stdout)
    assert {"firmware", "initiator", "targets", "network", "system", "storage", "warnings"} <= set(obj)
    assert obj["firmware"] is False
    assert obj["initiator"] == IQN_I
    (t,) = obj["targets"]
    assert set(t) == {"name", "address", "port", "group", "lun", "chap", "reverse_chap"}
    assert (t["name"], t["address"], t["port"], t["group"], t["lun"]) == (IQN_T, "10.0.2.2", 3260, 1, None)
    assert t["chap"] == {"username": "htpc", "password": "***"}
    assert t["reverse_chap"] == {"username": "tgt", "password": "***"}
    assert (obj["system"], obj["storage"]) == ("LABEL=System", "LABEL=Storage")
    assert obj["network"]["mode"] == "dhcp"


def test_parse_show_secrets_and_from_json_round_trip(tmp_path: Path) -> None:
    result = run_cli("cmdline", "parse", "--json", "--show-secrets", EXPLICIT_LINE)
    obj = json.loads(result.stdout)
    assert obj["targets"][0]["chap"]["password"] == SECRET
    model = tmp_path / "model.json"
    model.write_text(result.stdout)
    out = tmp_path / "cmdline.txt"
    gen = run_cli("generate", "cmdline", "--from-json", str(model), "-o", str(out))
    assert gen.returncode == 0, gen.stderr
    assert parse(out.read_text()).config == parse(EXPLICIT_LINE).config


def test_from_json_with_masked_password_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.json"
    model.write_text(run_cli("cmdline", "parse", "--json", EXPLICIT_LINE).stdout)
    result = run_cli("generate", "cmdline", "--from-json", str(model))
    assert result.returncode == 2
    assert "masked" in result.stderr and "--show-secrets" in result.stderr


def test_parse_text_output_file_and_stdin(tmp_path: Path) -> None:
    f = tmp_path / "cmdline"
    f.write_text("ip=dhcp boot=ISCSI=auto,LABEL=System disk=ISCSI=auto,LABEL=Storage quiet\n")
    result = run_cli("cmdline", "parse", "--file", str(f))
    assert result.returncode == 0
    assert "firmware (iBFT)" in result.stdout
    assert re.search(r"storage:\s+LABEL=Storage \(on iSCSI\)", result.stdout)
    piped = run_cli("cmdline", "parse", "--json", "--file", "-", stdin=f.read_text())
    assert json.loads(piped.stdout)["firmware"] is True


def test_parse_text_says_where_a_label_is_looked_for() -> None:
    # disk=LABEL= names no disk: the label is found on any disk, the LUN included (not "local")
    result = run_cli("cmdline", "parse", "ip=dhcp boot=ISCSI=auto,LABEL=System disk=LABEL=Storage quiet")
    assert result.returncode == 0, result.stderr
    assert re.search(r"system:\s+LABEL=System \(on iSCSI\)", result.stdout)
    assert re.search(r"storage:\s+LABEL=Storage \(on any disk, the LUN included\)", result.stdout)
    assert "local" not in result.stdout


def test_parse_proc_reads_this_machine() -> None:
    result = run_cli("cmdline", "parse", "--json", "--proc")
    assert result.returncode in (0, 2)
    if result.returncode == 0:
        assert "firmware" in json.loads(result.stdout)
    else:
        assert len(result.stderr.strip().splitlines()) == 1


def test_parse_is_fast_and_light() -> None:
    start = time.monotonic()
    probe = run_cli("cmdline", "parse", "--json", "ip=dhcp boot=ISCSI=auto,LABEL=System")
    elapsed = time.monotonic() - start
    assert probe.returncode == 0
    assert elapsed < 5, elapsed
    code = (
        "import sys; from iscsiboot.cli import main; main(['cmdline','parse','--json','ip=dhcp']);"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('construct','pyroute2','pyudev')))"
    )
    done = run([sys.executable, "-c", code], what="import the parse path", timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


# ---------------------------------------------------------------- errors: exit 2, one line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["cmdline", "parse", "boot=ISCSI=iscsi_target_nmae=x,LABEL=System"],
            "did you mean iscsi_target_name",
        ),
        (["cmdline", "parse", "iscsi_target_ip=1.2.3.4 iscsi_target_ip=1.2.3.4"], "duplicate key"),
        (["cmdline", "parse", f"iscsi_target_name={IQN_T}"], "missing required key iscsi_target_ip"),
        (
            ["cmdline", "parse", f"iscsi_target_name={IQN_T} iscsi_target_ip=h iscsi_target_port=x"],
            "must be a number",
        ),
        (["cmdline", "parse", "root=iscsi:10.0.0.1:::xyz:iqn.2024-01.a:b"], "not hexadecimal"),
        (["cmdline", "parse", "boot=ISCSI=auto"], "no locator after the last comma"),
        (
            [
                "cmdline",
                "parse",
                f"iscsi_target_name={IQN_T} iscsi_target_ip=h iscsi_in_username=a iscsi_in_password=b",
            ],
            "iscsi_in_username and iscsi_in_password (reverse, mutual CHAP) given without one-way CHAP",
        ),
        (["cmdline", "parse", "iscsi_initiator="], "empty value"),
        (["cmdline", "parse"], "no command line given"),
        (["cmdline", "parse", "--file", "/nonexistent/cmdline"], "cannot read"),
        (["generate", "cmdline", "--auto", "--target-ip", "10.0.0.1"], "--auto"),
        (["generate", "cmdline", "--target-ip", "10.0.0.1"], "without --target-name"),
        (["generate", "cmdline", *TARGET, "--password", "x"], "--password without --username"),
        (
            ["generate", "cmdline", *TARGET, "--reverse-username", "a", "--reverse-password", "b"],
            "--reverse-username and",
        ),
        (["generate", "cmdline", "--target-name", IQN_T, "--target-ip", "10.0.2.2"], "initiator"),
        (["generate", "cmdline", *TARGET, "--username", "u", "--password", "a,b"], "comma"),
        (["generate", "ipxe", *TARGET, "--username", "u", "--password", "a b$c"], "iPXE"),
        (["generate", "ipxe", "--auto"], "iPXE needs the target"),
        (["generate", "root-path", "--auto"], "needs a target"),
        (["generate", "cmdline", "--from-json", "/dev/null", "--auto"], "--from-json given together"),
        (["generate", "cmdline", *TARGET, "--target-port", "99999"], "port"),
        (["generate", "cmdline", *TARGET, "--ip", "nonsense"], "ip="),
        (["generate", "cmdline", "--system", "System"], "not a locator"),
        (["generate", "cmdline", "--auto", "-o", "/nonexistent/dir/x"], "cannot write"),
        (["generate", "cmdline", "--from-json", "/bin/sh"], "not JSON"),
        (["generate", "cmdline", "--from-json", "/"], "cannot read"),
        (["cmdline", "parse", "--file", "/bin/sh"], "not text"),
        (["generate", "ipxe", *TARGET, "--attempts", "0"], "attempts"),
    ],
)
def test_errors_exit_2_with_one_line(args: list[str], needle: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("iscsiboot: error:")
    assert needle in lines[0]
    assert "Traceback" not in result.stderr


def test_errors_through_main_with_capsys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cmdline", "parse", "iscsi_target_group=1 iscsi_target_group=2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "duplicate key iscsi_target_group" in err


# ---------------------------------------------------------------- secrets


def _outputs(*args: str) -> str:
    result = run_cli(*args)
    return result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["cmdline", "parse", EXPLICIT_LINE],
        ["cmdline", "parse", "--json", EXPLICIT_LINE],
        ["cmdline", "parse", f"root=iscsi:htpc:{SECRET}:tgt:{RSECRET}@10.0.2.2:::1:{IQN_T}"],
        [
            "cmdline",
            "parse",
            "--json",
            f"netroot=iscsi:htpc:{SECRET}@10.0.2.2:::1:{IQN_T} rd.iscsi.in.username=x",
        ],
        ["cmdline", "parse", f"{EXPLICIT_LINE} iscsi_target_port=abc"],
        ["cmdline", "parse", f"{EXPLICIT_LINE} iscsi_password={SECRET}"],
        ["cmdline", "parse", f"{EXPLICIT_LINE.replace('LABEL=System', 'iscsi_password=' + SECRET)}"],
        ["cmdline", "parse", f"root=iscsi:htpc:{SECRET}@10.0.2.2:::zz:{IQN_T}"],
        ["generate", "cmdline", *TARGET, *CHAP],
        ["generate", "cmdline", *TARGET, *CHAP, "--json"],
        ["generate", "extlinux", *TARGET, *CHAP, "--serial"],
        ["generate", "ipxe", *TARGET, *CHAP],
        ["generate", "ipxe", *TARGET, *CHAP, "--embedded"],
        ["generate", "dnsmasq", *TARGET, *CHAP],
        ["generate", "root-path", *TARGET, *CHAP, "--with-credentials"],
        ["generate", "dracut", *TARGET, *CHAP],
        ["generate", "cmdline", *TARGET, *CHAP, "--ip", "10.0.0.2"],
        ["generate", "ipxe", *TARGET, "--username", "u", "--password", SECRET + "$"],
        ["generate", "cmdline", *TARGET, "--username", "u", "--password", SECRET + ","],
    ],
)
def test_no_secret_in_any_output_without_show_secrets(args: list[str]) -> None:
    text = _outputs(*args)
    assert SECRET not in text
    assert RSECRET not in text


def test_secrets_masked_on_stdout_real_in_file(tmp_path: Path) -> None:
    out = tmp_path / "boot.ipxe"
    masked = run_cli("generate", "ipxe", *TARGET, *CHAP)
    assert "set password ***" in masked.stdout
    assert "masked" in masked.stderr
    shown = run_cli("generate", "ipxe", *TARGET, *CHAP, "--show-secrets")
    assert f"set password {SECRET}" in shown.stdout
    assert f"set reverse-password {RSECRET}" in shown.stdout
    written = run_cli("generate", "ipxe", *TARGET, *CHAP, "-o", str(out))
    assert written.returncode == 0 and SECRET not in written.stdout + written.stderr
    assert f"set password {SECRET}" in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600
    assert f"EMBED={out}" in out.read_text()


def test_proc_cmdline_warning_and_password_file(tmp_path: Path) -> None:
    secret_file = tmp_path / "chap"
    secret_file.write_text(SECRET + "\n")
    result = run_cli(
        "generate", "cmdline", *TARGET, "--username", "htpc", "--password-file", str(secret_file)
    )
    assert result.returncode == 0
    assert "/proc/cmdline" in result.stderr
    assert "LUN 1" in result.stderr  # the OpenELEC form carries no LUN: a warning, not a refusal
    assert "iscsi_password=***" in result.stdout


# ---------------------------------------------------------------- the seed how-to


def test_seed_extlinux_template_parses_in_auto_mode() -> None:
    text = _seed()
    (append,) = [line.strip() for line in text.splitlines() if line.strip().startswith("APPEND ")]
    line = append.removeprefix("APPEND ").replace("'''ISCSI_OPTIONS'''", "auto")
    cfg = parse(line).config
    assert cfg.firmware and str(cfg.system) == "LABEL=System" and str(cfg.storage) == "LABEL=Storage"
    ours = run_cli("generate", "extlinux", "--auto").stdout
    assert f"  APPEND {line}" in ours.splitlines()


def _seed_options() -> str:
    lines = _seed().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("iscsi_initiator="))
    return "".join(lines[start : start + 3])


def test_seed_explicit_example_gives_the_classic_mistake_hint() -> None:
    options = _seed_options()
    assert "iscsi_target_group=pandora.openelec" in options
    result = run_cli(
        "cmdline", "parse", f"ip=dhcp boot=ISCSI={options},LABEL=System disk=LABEL=Storage quiet"
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "split at the wrong place" in line
    assert "iscsi_target_name=iqn.2000-01.com.synology:pandora.openelec" in line
    assert "password_in" not in line.replace("iscsi_in_password", "")


def test_seed_explicit_example_corrected_parses() -> None:
    options = _seed_options()
    fixed = options.replace(
        "iqn.2000-01.com.synology,", "iqn.2000-01.com.synology:pandora.openelec,"
    ).replace("iscsi_target_group=pandora.openelec ", "iscsi_target_group=1,")
    cfg = parse(f"boot=ISCSI={fixed},LABEL=System").config
    (t,) = cfg.targets
    assert t.name == "iqn.2000-01.com.synology:pandora.openelec"
    assert t.address == "192.168.1.14" and t.port == 3260 and t.group == 1
    assert t.chap is not None and t.chap.username == "username" and t.chap.password.reveal() == "password"
    assert t.reverse_chap is not None and t.reverse_chap.password.reveal() == "password_in"
    assert cfg.initiator == "iqn.2010-04.org.whatever:mybox"


def test_seed_ipxe_scripts_match_ours() -> None:
    text = _seed()
    sanboot = next(line for line in text.splitlines() if line.startswith("sanboot "))
    uri = sanboot.split()[1]
    (t,) = parse(f"root={uri}").config.targets
    assert (t.address, t.name, t.lun) == ("192.168.1.14", "iqn.2000-01.com.synology:pandora.openelec", None)
    args = [
        "generate",
        "ipxe",
        "--target-name",
        t.name,
        "--target-ip",
        t.address,
        "--username",
        "username",
        "--password",
        "password",
        "--reverse-username",
        "username_in",
        "--reverse-password",
        "password_in",
        "--show-secrets",
    ]
    chained = run_cli(*args).stdout.splitlines()
    embedded = run_cli(*args, "--embedded").stdout.splitlines()
    seed_lines = text.splitlines()
    for wanted in (
        "set username username",
        "set password password",
        "set reverse-username username_in",
        "set reverse-password password_in",
        ":retry_sanboot",
        sanboot,
    ):
        assert wanted in seed_lines
        assert wanted in chained
        assert wanted in embedded
    for wanted in ("#!ipxe", ":retry_dhcp", "dhcp || goto retry_dhcp"):
        assert wanted in seed_lines and wanted in embedded
    assert "dhcp || goto retry_dhcp" not in chained
    assert any("make bin/ipxe.usb EMBED=" in line for line in embedded)
    assert any("make bin/undionly.kpxe EMBED=" in line for line in embedded)
