"""LibreELEC's ``@UID@``: the CPU serial or the boot NIC's MAC, in the boot= and disk= values only."""

from __future__ import annotations

from pathlib import Path

import pytest
from iscsiboot.agent.init import with_client_uid
from iscsiboot.cmdline import uid
from iscsiboot.cmdline.parse import parse
from iscsiboot.errors import ParseError

ARM = (
    "processor\t: 0\nHardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 10000000A1B2C3D4\nModel\t\t: Pi 4\n"
)
X86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: QEMU Virtual CPU\n"
ZEROS = "Serial\t\t: 0000000000000000\n"
LINE = "boot=ISCSI=auto,LABEL=System disk=LABEL=Storage-@UID@ quiet note=@UID@"


def test_the_cpu_serial_wins_else_the_mac_without_colons() -> None:
    # LibreELEC's MACHINE_UID: the serial's last 8 characters (awk's substr(s, length(s) - 7))
    assert uid.client_uid(ARM, "52:54:00:12:34:56") == "a1b2c3d4"
    assert uid.client_uid("Serial\t\t: 12AB\n", None) == "000012ab"
    assert uid.client_uid(X86, "52:54:00:12:34:56") == "525400123456"
    assert uid.client_uid(ZEROS, "52:54:00:AB:CD:EF") == "525400abcdef"
    with pytest.raises(ParseError, match="neither"):
        uid.client_uid(X86, None)


def test_only_boot_and_disk_values_are_substituted() -> None:
    out = uid.substitute(LINE, "525400123456")
    assert out == "boot=ISCSI=auto,LABEL=System disk=LABEL=Storage-525400123456 quiet note=@UID@"
    assert uid.has_placeholder(LINE) and not uid.has_placeholder(out)
    assert (
        parse(out).config.storage is not None
        and str(parse(out).config.storage) == "LABEL=Storage-525400123456"
    )


def test_the_initiator_of_an_explicit_boot_value_becomes_the_clients_own() -> None:
    line = (
        "boot=ISCSI=iscsi_initiator=iqn.2026-11.org.example:@UID@,iscsi_target_name=iqn.2026-11.org.example:nas,"
        "iscsi_target_ip=192.168.1.14,LABEL=System disk=LABEL=Storage"
    )
    cfg = parse(uid.substitute(line, "10000000a1b2c3d4")).config
    assert cfg.initiator == "iqn.2026-11.org.example:10000000a1b2c3d4"


def test_a_strange_id_is_refused() -> None:
    with pytest.raises(ParseError):
        uid.substitute(LINE, "a b")


def test_the_agent_replaces_it_with_the_first_nics_mac_or_the_serial(tmp_path: Path) -> None:
    nic = tmp_path / "class" / "net" / "eth0"
    (nic / "device").mkdir(parents=True)
    (nic / "type").write_text("1\n")
    (nic / "ifindex").write_text("2\n")
    (nic / "address").write_text("52:54:00:00:01:03\n")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(X86)
    out = with_client_uid(LINE, sysfs=str(tmp_path), cpuinfo=str(cpuinfo))
    assert "disk=LABEL=Storage-525400000103" in out.split()
    cpuinfo.write_text(ARM)
    out = with_client_uid(LINE, sysfs=str(tmp_path), cpuinfo=str(cpuinfo))
    assert "disk=LABEL=Storage-a1b2c3d4" in out.split()
    assert with_client_uid("boot=ISCSI=auto", sysfs="/nonexistent") == "boot=ISCSI=auto"
    empty = tmp_path / "empty"
    empty.mkdir()
    # no id at all: the line stays as it is
    assert with_client_uid(LINE, sysfs=str(empty), cpuinfo=str(empty / "none")) == LINE
