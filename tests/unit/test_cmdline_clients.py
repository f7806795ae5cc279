"""Several HTPCs on one NAS: the clients file, a model per client, one dnsmasq configuration with tags."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.cli import main
from iscsiboot.cmdline import clients, generate
from iscsiboot.errors import ParseError
from iscsiboot.model import BootConfig, Chap, Target
from iscsiboot.secret import Secret

MODEL = BootConfig(
    initiator="iqn.2026-11.org.example:htpc",
    targets=(
        Target(
            "iqn.2026-11.org.example:nas", "192.168.1.14", lun=1, chap=Chap("htpc", Secret("htpc-secret-12"))
        ),
    ),
)
TEXT = """\
# MAC name target-or-LUN credentials
52:54:00:00:00:01  htpc1  1
52:54:00:00:00:02  htpc2  iqn.2026-11.org.example:htpc2  htpc2.chap   # its own target and CHAP
"""


def test_the_clients_file_is_read_line_by_line() -> None:
    one, two = clients.parse_clients(TEXT)
    assert (one.mac, one.name, one.lun, one.target_name, one.credentials) == (
        "52:54:00:00:00:01",
        "htpc1",
        1,
        None,
        None,
    )
    assert (two.target_name, two.lun, two.credentials, two.script) == (
        "iqn.2026-11.org.example:htpc2",
        None,
        "htpc2.chap",
        "htpc2.ipxe",
    )


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("52:54:00:00:00:01 htpc1\n", "fields"),
        ("52:54:00:00:01 htpc1 1\n", "MAC"),
        ("52:54:00:00:00:01 HTPC_1 1\n", "client name"),
        ("52:54:00:00:00:01 a 1\n52:54:00:00:00:01 b 2\n", "twice"),
        ("# nobody\n", "no clients"),
    ],
)
def test_mistakes_name_their_line(text: str, what: str) -> None:
    with pytest.raises(ParseError, match=what):
        clients.parse_clients(text)


def test_each_client_gets_its_lun_or_target_its_credentials_and_its_own_initiator() -> None:
    chap = clients.parse_credentials("htpc2\nhtpc2-secret-12\n", where="htpc2.chap")
    (_, m1), (_, m2) = clients.client_configs(MODEL, clients.parse_clients(TEXT), {"htpc2.chap": chap})
    assert m1.initiator == "iqn.2026-11.org.example:htpc.htpc1" and m1.targets[0].lun == 1
    assert m1.targets[0].chap == MODEL.targets[0].chap
    assert m2.initiator == "iqn.2026-11.org.example:htpc.htpc2"
    assert m2.targets[0].name == "iqn.2026-11.org.example:htpc2" and m2.targets[0].chap == chap
    assert "set password htpc2-secret-12" in generate.ipxe(m2).text


def test_one_dnsmasq_configuration_with_a_tag_per_client_and_nothing_for_strangers() -> None:
    configs = clients.client_configs(
        MODEL, clients.parse_clients("52:54:00:00:00:01 htpc1 1\n52:54:00:00:00:02 htpc2 2\n"), {}
    )
    lines = clients.dnsmasq(configs, dhcp_range="10.0.0.100,10.0.0.200,1h").text.splitlines()
    assert "dhcp-host=52:54:00:00:00:02,set:htpc2,htpc2" in lines
    assert "dhcp-boot=tag:ipxe,tag:htpc2,htpc2.ipxe" in lines
    assert (
        'dhcp-option=tag:htpc2,tag:!ipxe,option:root-path,"iscsi:192.168.1.14:::2:iqn.2026-11.org.example:nas"'
        in lines
    )
    assert "dhcp-boot=tag:ipxe,boot.ipxe" not in lines  # no shared script: a stranger boots no one's disk
    assert not [line for line in lines if "root-path" in line and "tag:htpc" not in line]
    assert "htpc-secret-12" not in "\n".join(lines)


def test_generate_ipxe_writes_a_script_per_client(tmp_path: Path) -> None:
    (tmp_path / "clients.txt").write_text(TEXT)
    (tmp_path / "htpc2.chap").write_text("htpc2\nhtpc2-secret-12\n")
    out = tmp_path / "scripts"
    out.mkdir()
    model = ["--target-ip", "192.168.1.14", "--target-name", "iqn.2026-11.org.example:nas", "--lun", "1"]
    model += [
        "--initiator",
        "iqn.2026-11.org.example:htpc",
        "--username",
        "htpc",
        "--password",
        "htpc-secret-12",
    ]
    assert main(["generate", "ipxe", "--clients", str(tmp_path / "clients.txt"), *model, "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["htpc1.ipxe", "htpc2.ipxe"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in out.iterdir())
    assert "set username htpc2" in (out / "htpc2.ipxe").read_text()
    conf = tmp_path / "dnsmasq.conf"
    assert (
        main(["generate", "dnsmasq", "--clients", str(tmp_path / "clients.txt"), *model, "-o", str(conf)])
        == 0
    )
    assert "dhcp-boot=tag:ipxe,tag:htpc1,htpc1.ipxe" in conf.read_text().splitlines()
