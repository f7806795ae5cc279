"""iBFT parsing, building, the kernel's sysfs view and the model mapping, on real sample tables."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from ibft_support import (
    GOLDEN,
    MUTUAL,
    NOCHAP,
    REVERSE_SECRET,
    SECRET,
    sample_paths,
    sample_sysfs,
    vector_table,
)
from iscsiboot.errors import RepresentError, TableError
from iscsiboot.ibft.build import build_table, layout
from iscsiboot.ibft.mapping import model_to_table, table_to_model
from iscsiboot.ibft.parse import parse_table
from iscsiboot.ibft.render import explain, table_from_dict, table_to_dict
from iscsiboot.ibft.sysfs import to_sysfs
from iscsiboot.ibft.types import IbftTarget, Nic, Table
from iscsiboot.model import BootConfig, Chap, NetMode, Network, Target
from iscsiboot.secret import Secret

SAMPLES = sample_paths()


def test_samples_present() -> None:
    assert [p.name for p in SAMPLES] == ["ipxe-mutual.bin", "ipxe-nochap.bin"], (
        "tests/data/ibft is incomplete"
    )


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_sysfs_equals_kernel(path: Path) -> None:
    parsed = parse_table(path.read_bytes())
    assert parsed.warnings == ()
    assert to_sysfs(parsed.table, show_secrets=True) == sample_sysfs(path)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_rebuilds_byte_identical(path: Path) -> None:
    data = path.read_bytes()
    table = parse_table(data).table
    assert build_table(table) == data
    # iPXE's layout computed from scratch gives the same bytes too
    assert build_table(layout(table)) == data
    # and through the full JSON form
    assert build_table(table_from_dict(table_to_dict(table, show_secrets=True))) == data


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.stem)
def test_sample_explained_as_golden(path: Path) -> None:
    text = explain(parse_table(path.read_bytes()).table, source=f"table file {path.name}")
    golden = GOLDEN / f"{path.stem}.txt"
    assert text == golden.read_text()


def test_mutual_sample_fields() -> None:
    table = parse_table(MUTUAL.read_bytes()).table
    assert table.control.initiator_offset == 0x50
    assert table.control.slots == (0xA0, 0x180, 0, 0)
    (nic,) = table.nics
    assert (nic.offset, nic.index, nic.flags, nic.origin, nic.prefix) == (0xA0, 0, 3, 3, 24)
    assert nic.pci_bdf == 0x0010 and nic.pci == "00:02.0"
    assert nic.hostname is None and nic.vlan == 0
    (tgt,) = table.targets
    assert tgt.lun == bytes([0, 1, 0, 0, 0, 0, 0, 0])
    assert (tgt.chap_name, tgt.rev_chap_name) == ("htpc", "tgt")
    assert tgt.chap_secret == Secret(SECRET)
    assert tgt.rev_chap_secret == Secret(REVERSE_SECRET)
    assert tgt.rev_chap_name_ref.offset == 0x255


def test_reference_vector() -> None:
    table = vector_table()
    data = build_table(table)
    assert len(data) == 594
    assert data[9] == 0x98
    assert data[0x30:0x40] == bytes.fromhex("01011200000000005000a00080010000")
    assert data[0x200:0x219] == b"iqn.2010-04.org.ipxe:test"
    sysfs = to_sysfs(parse_table(data).table, show_secrets=True)
    assert sysfs["ethernet0/hostname"] == "client1"
    assert sysfs["ethernet0/subnet-mask"] == "255.255.255.0"
    assert "ethernet0/secondary-dns" not in sysfs
    assert sysfs["target0/lun"] == "01000000"
    assert sysfs["target0/chap-secret"] == "secret123456"
    assert not any(k.startswith("target0/rev-chap") for k in sysfs)


def test_sample_to_model() -> None:
    data = MUTUAL.read_bytes()
    cfg, warnings = table_to_model(parse_table(data).table)
    assert warnings == ()
    assert cfg == BootConfig(
        firmware=True,
        initiator="iqn.2024-01.lab.iscsiboot:htpc",
        targets=(
            Target(
                name="iqn.2024-01.lab.iscsiboot:system",
                address="10.0.2.2",
                lun=1,
                chap=Chap("htpc", Secret(SECRET)),
                reverse_chap=Chap("tgt", Secret(REVERSE_SECRET)),
            ),
        ),
        network=Network(mode=NetMode.DHCP, mac="52:54:00:12:34:56", server="10.0.2.2"),
    )


def _two_target_table() -> Table:
    base = vector_table()
    t0 = base.targets[0]
    t1 = replace(
        t0,
        index=1,
        flags=0x01,
        name="iqn.2003-01.org.example:disk2",
        chap_type=0,
        chap_name=None,
        chap_secret=None,
    )
    return layout(replace(base, targets=(replace(t0, flags=0x01), replace(t1, flags=0x03))))


def test_boot_selected_target_first_and_static_network() -> None:
    table = _two_target_table()
    nic = replace(table.nics[0], origin=1, dhcp=None)
    cfg, warnings = table_to_model(replace(table, nics=(nic,)))
    assert [t.name for t in cfg.targets] == ["iqn.2003-01.org.example:disk2", "iqn.2003-01.org.example:disk1"]
    assert cfg.network == Network(
        mode=NetMode.STATIC,
        mac="52:54:00:12:34:56",
        address="192.168.1.10",
        prefix=24,
        gateway="192.168.1.1",
        dns=("192.168.1.1",),
        hostname="client1",
    )
    assert warnings == ()


def test_dhcp_field_alone_means_dhcp() -> None:
    table = vector_table()
    nic = replace(table.nics[0], origin=1)  # manual origin but a DHCP server recorded
    cfg, _ = table_to_model(replace(table, nics=(nic,)))
    assert cfg.network.mode is NetMode.DHCP and cfg.network.server == "192.168.1.1"
    nic = replace(table.nics[0], origin=1, dhcp="0.0.0.0")  # Broadcom writes 0.0.0.0: not DHCP
    cfg, _ = table_to_model(replace(table, nics=(nic,)))
    assert cfg.network.mode is NetMode.STATIC


def test_more_than_two_targets_round_trip() -> None:
    targets = tuple(
        Target(name=f"iqn.2003-01.org.example:disk{i}", address=f"10.0.0.{i + 1}", lun=i) for i in range(5)
    )
    cfg = BootConfig(
        firmware=True,
        initiator="iqn.2010-04.org.ipxe:x",
        targets=targets,
        network=Network(mode=NetMode.DHCP, mac="52:54:00:12:34:56"),
    )
    data = build_table(model_to_table(cfg))
    table = parse_table(data).table
    assert table.control.length == 10 + 4 * 5
    assert len(table.targets) == 5
    assert all(t.offset % 16 == 0 for t in table.targets)
    assert table_to_model(table) == (cfg, ())


def test_warnings_for_suspicious_values() -> None:
    table = vector_table()
    t = table.targets[0]
    odd = replace(t, address="0.0.0.16", nic_assoc=7, lun=bytes([1, 0, 0, 0, 0, 0, 0, 0]))
    _cfg, warnings = table_to_model(layout(replace(table, targets=(odd,))))
    text = " | ".join(warnings)
    assert "not a plausible host" in text
    assert "NIC association 7 points to no NIC" in text
    assert "little-endian" in text and "LUN 256" in text


def test_model_to_table_refuses_host_names() -> None:
    cfg = BootConfig(
        targets=(Target(name="iqn.2003-01.org.example:d", address="nas.example"),),
        network=Network(mode=NetMode.DHCP),
    )
    with pytest.raises(RepresentError, match="host name"):
        model_to_table(cfg)


def test_ipv6_addresses_print_like_the_kernel() -> None:
    table = vector_table()
    t = replace(table.targets[0], address="fe80::5054:ff:fe12:3456")
    nic = replace(table.nics[0], gateway="2001:db8::1")
    table = parse_table(build_table(layout(replace(table, targets=(t,), nics=(nic,))))).table
    sysfs = to_sysfs(table)
    assert sysfs["target0/ip-addr"] == "fe80:0000:0000:0000:5054:00ff:fe12:3456"
    assert sysfs["ethernet0/gateway"] == "2001:0db8:0000:0000:0000:0000:0000:0001"
    assert table.targets[0].address == "fe80::5054:ff:fe12:3456"


def test_kernel_presence_rules() -> None:
    table = vector_table()
    nic = replace(table.nics[0], ip_address="0.0.0.0", prefix=0, hostname="")
    t = replace(table.targets[0], address=None)
    sysfs = to_sysfs(layout(replace(table, nics=(nic,), targets=(t,))))
    assert "ethernet0/ip-addr" not in sysfs  # ::ffff:0.0.0.0 counts as absent
    assert "ethernet0/prefix-len" not in sysfs and "ethernet0/subnet-mask" not in sysfs
    assert sysfs["ethernet0/hostname"] == ""  # shown because its offset is not 0
    assert sysfs["target0/ip-addr"] == "0000:0000:0000:0000:0000:0000:0000:0000"  # always shown


def test_secrets_masked_everywhere() -> None:
    table = parse_table(MUTUAL.read_bytes()).table
    cfg, _ = table_to_model(table)
    outputs = [
        repr(table),
        str(table_to_dict(table)),
        str(to_sysfs(table)),
        explain(table),
        repr(cfg),
    ]
    for out in outputs:
        assert SECRET not in out and REVERSE_SECRET not in out
    assert to_sysfs(table)["target0/chap-secret"] == "***"


# ---------------------------------------------------------------- errors


def _sample() -> bytes:
    return NOCHAP.read_bytes()


def _fix(data: bytearray) -> bytes:
    data[9] = 0
    data[9] = (-sum(data)) & 0xFF
    return bytes(data)


def _patched(offset: int, raw: bytes) -> bytes:
    data = bytearray(_sample())
    data[offset : offset + len(raw)] = raw
    return _fix(data)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", r"acpi_header at offset 0x0: truncated"),
        (b"XXXX" + bytes(60), r"signature b'XXXX' is not one of"),
        (_sample()[:300], r"acpi_header.length at offset 0x4: table length 603 is beyond the 300 bytes"),
        (_patched(4, (40).to_bytes(4, "little")), r"table length 40 is too small"),
        (
            _sample()[:9] + bytes([_sample()[9] ^ 1]) + _sample()[10:],
            r"acpi_header.checksum at offset 0x9: bad",
        ),
        (_patched(8, b"\x02"), r"acpi_header.revision at offset 0x8: revision 2"),
        (_patched(0x30, b"\x02"), r"control at offset 0x30: structure id 2, expected 1"),
        (_patched(0x34, b"\x01"), r"control at offset 0x30: index 1, expected 0"),
        (_patched(0x32, b"\x10\x00"), r"control at offset 0x30: length 16 is below"),
        (_patched(0x3A, (0x1000).to_bytes(2, "little")), r"control.nic0: offset 0x1000 is out of range"),
        (_patched(0x3A, (0x40).to_bytes(2, "little")), r"control.nic0: offset 0x40 is out of range"),
        (_patched(0xA0, b"\x04"), r"nic0 at offset 0xa0: structure id 4 \(target\), expected 3 \(nic\)"),
        (_patched(0xA1, b"\x02"), r"nic0 at offset 0xa0: version 2, expected 1"),
        (_patched(0x180 + 2, (50).to_bytes(2, "little")), r"target0 at offset 0x180: structure length 50"),
        (_patched(0x1A2, (0x400).to_bytes(2, "little")), r"target0 at offset 0x180: target-name .*runs past"),
        (_patched(0x239, b"X"), r"initiator at offset 0x50: initiator-name .* not NUL-terminated"),
        (_patched(0x1A4, (8).to_bytes(2, "little")), r"string offset points into the table header"),
    ],
    ids=lambda v: v.split(":")[0].split(" ")[0] if isinstance(v, str) else "",
)
def test_errors_name_field_and_offset(data: bytes, match: str) -> None:
    with pytest.raises(TableError, match=match) as info:
        parse_table(data)
    assert "\n" not in str(info.value)


def test_lenient_reads_a_bad_checksum_with_a_warning() -> None:
    data = _sample()
    data = data[:9] + bytes([(data[9] + 1) & 0xFF]) + data[10:]
    parsed = parse_table(data, lenient=True)
    assert any("bad checksum" in w for w in parsed.warnings)
    assert to_sysfs(parsed.table, show_secrets=True) == sample_sysfs(NOCHAP)


def test_duplicate_index_is_refused() -> None:
    table = vector_table()
    nics = (table.nics[0], replace(table.nics[0], mac="52:54:00:12:34:57"))
    data = build_table(layout(replace(table, nics=nics)))
    with pytest.raises(TableError, match="two structures have index 0"):
        parse_table(data)


def test_bigger_nic_layout_and_vlan() -> None:
    table = vector_table()
    nic = replace(table.nics[0], vlan=42, flags=0x07)
    table = parse_table(build_table(layout(replace(table, nics=(nic, replace(nic, index=1)))))).table
    assert [n.offset for n in table.nics] == [0xA0, 0x110]
    cfg, _ = table_to_model(table)
    assert cfg.network.vlan == 42
    assert to_sysfs(table)["ethernet1/vlan"] == "42"


def test_table_with_no_initiator() -> None:
    table = replace(vector_table(), initiator=None)
    parsed = parse_table(build_table(layout(table)))
    assert parsed.table.initiator is None
    assert not any(k.startswith("initiator/") for k in to_sysfs(parsed.table))


def test_nic_type_used() -> None:
    assert Nic().length == 102 and IbftTarget().length == 54


def test_lenient_dispatches_by_structure_id_like_linux() -> None:
    # NIC slot 1 points at the target, as a confused firmware might: Linux goes by the id
    data = _patched(0x3E, (0x180).to_bytes(2, "little"))
    with pytest.raises(TableError, match=r"nic1 at offset 0x180: structure id 4 \(target\), expected 3"):
        parse_table(data)
    parsed = parse_table(data, lenient=True)
    assert any("nic1 at offset 0x180" in w for w in parsed.warnings)
    # the target is found twice (target0 and nic1 slots): Linux would refuse the duplicate index
    assert any("two structures have index 0" in w for w in parsed.warnings)


def test_static_network_keeps_static_when_the_model_names_a_server() -> None:
    net = Network(mode=NetMode.STATIC, mac="52:54:00:12:34:56", address="10.0.2.15", prefix=24,
                  gateway="10.0.2.2", server="10.0.2.2")  # fmt: skip
    cfg = BootConfig(
        targets=(Target(name="iqn.2003-01.org.example:d", address="10.0.2.2", lun=1),), network=net
    )
    table = model_to_table(cfg)
    assert table.nics[0].dhcp is None and table.nics[0].origin == 1
    back, _ = table_to_model(parse_table(build_table(table)).table)
    assert back.network == replace(net, server=None)


def test_old_ipxe_ipv6_target_is_flagged_and_skipped() -> None:
    table = vector_table()
    t = replace(table.targets[0], address="0.0.0.0")
    cfg, warnings = table_to_model(layout(replace(table, targets=(t,))))
    assert cfg.targets == ()
    assert any("0.0.0.0 is not a plausible host" in w and "IPv6" in w for w in warnings)
    t = replace(table.targets[0], address=None)
    cfg, warnings = table_to_model(layout(replace(table, targets=(t,))))
    assert cfg.targets == () and any("no target address" in w for w in warnings)


@pytest.mark.parametrize("name", ["htpc\0x", "htpc\udc80"])
def test_a_chap_name_the_model_refuses_is_a_warning_not_an_error(name: str) -> None:
    """A table's CHAP name with a NUL or bytes that were not UTF-8: that target is ignored, with why."""
    table = parse_table(SAMPLES[0].read_bytes()).table  # mutual CHAP
    targets = tuple(replace(t, chap_name=name) for t in table.targets)
    cfg, warnings = table_to_model(replace(table, targets=targets))
    assert cfg.targets == ()
    assert any("CHAP user name" in w and w.endswith("; ignored") for w in warnings), warnings
