"""Properties of the iBFT code (hypothesis): the parser never crashes, models and tables round-trip."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ibft_support import sample_paths, sample_sysfs, write_sysfs_tree
from iscsiboot.errors import IscsibootError, ParseError, RepresentError, TableError
from iscsiboot.ibft.build import build_table
from iscsiboot.ibft.mapping import model_to_table, table_to_model
from iscsiboot.ibft.parse import parse_table
from iscsiboot.ibft.render import explain, table_from_dict, table_to_dict
from iscsiboot.ibft.sources import lun_from_sysfs, read_sysfs
from iscsiboot.ibft.sysfs import sysfs_lun, to_sysfs
from iscsiboot.ibft.types import IbftTarget, Nic
from iscsiboot.model import BootConfig, Chap, NetMode, Network, Target
from iscsiboot.secret import Secret

SAMPLES = [p.read_bytes() for p in sample_paths()]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _exercise(data: bytes, lenient: bool) -> None:
    try:
        parsed = parse_table(data, lenient=lenient)
    except TableError as exc:
        assert "\n" not in str(exc)
        return
    table = parsed.table
    to_sysfs(table, show_secrets=True)
    explain(table, warnings=parsed.warnings)
    table_to_dict(table)
    table_to_model(table)
    if not lenient:
        # every valid table rebuilds to an equal one (bytes no field covers become 0, so the
        # checksum may differ)
        rebuilt = parse_table(build_table(table)).table
        assert replace(rebuilt, checksum=table.checksum) == table


@FUZZ
@given(st.binary(max_size=1200), st.booleans())
def test_arbitrary_bytes_parse_or_fail_cleanly(data: bytes, lenient: bool) -> None:
    _exercise(data, lenient)


@FUZZ
@given(
    st.sampled_from(SAMPLES),
    st.lists(st.tuples(st.integers(0, 700), st.integers(0, 255)), min_size=1, max_size=6),
    st.booleans(),
    st.booleans(),
)
def test_mutated_samples_parse_or_fail_cleanly(
    sample: bytes, edits: list[tuple[int, int]], fix_checksum: bool, lenient: bool
) -> None:
    data = bytearray(sample)
    for pos, value in edits:
        if pos < len(data):
            data[pos] = value
    if fix_checksum:
        data[9] = 0
        data[9] = (-sum(data[: int.from_bytes(data[4:8], "little")])) & 0xFF
    _exercise(bytes(data), lenient)


# ---------------------------------------------------------------- models

_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-:", min_size=1, max_size=30)
_iqn = _word.map(lambda w: f"iqn.2003-01.org.example:{w}")
_host_v4 = st.builds(
    lambda a, b, c, d: f"{a}.{b}.{c}.{d}",
    st.integers(1, 223).filter(lambda a: a != 127),
    st.integers(0, 255),
    st.integers(0, 255),
    st.integers(1, 254),
)


def _routable_v6(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    assert isinstance(ip, ipaddress.IPv6Address)
    return not (ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.ipv4_mapped is not None)


_host_v6 = st.ip_addresses(v=6).filter(_routable_v6).map(str)
_secret = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEF0123456789!@#", min_size=1, max_size=20).map(
    Secret
)
_chap = st.builds(Chap, _word, _secret)
_hostname = st.from_regex(r"\A[a-z]([a-z0-9-]{0,20}[a-z0-9])?\Z")
_mac = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))


@st.composite
def _targets(draw: st.DrawFn) -> Target:
    chap = draw(st.none() | _chap)
    return Target(
        name=draw(_iqn),
        address=draw(_host_v4 | _host_v6),
        port=draw(st.integers(1, 65535)),
        lun=draw(st.integers(0, (1 << 64) - 1)),
        chap=chap,
        reverse_chap=draw(st.none() | _chap) if chap is not None else None,
    )


_dhcp = st.builds(
    Network,
    mode=st.just(NetMode.DHCP),
    mac=_mac,
    server=st.none() | _host_v4,
    hostname=st.none() | _hostname,
    vlan=st.none() | st.integers(1, 4094),
)
_static = st.builds(
    Network,
    mode=st.just(NetMode.STATIC),
    mac=_mac,
    address=_host_v4,
    prefix=st.integers(1, 32),
    gateway=st.none() | _host_v4,
    dns=st.lists(_host_v4, max_size=2).map(tuple),
    hostname=st.none() | _hostname,
    vlan=st.none() | st.integers(1, 4094),
)
_models = st.builds(
    BootConfig,
    firmware=st.just(True),
    initiator=st.none() | _iqn,
    targets=st.lists(_targets(), min_size=1, max_size=4).map(tuple),
    network=_dhcp | _static,
)


@settings(max_examples=300, deadline=None)
@given(_models, st.integers(0, 0xFFFF))
def test_model_round_trip(cfg: BootConfig, pci: int) -> None:
    table = model_to_table(cfg, pci=pci)
    data = build_table(table)
    assert sum(data) & 0xFF == 0
    assert len(data) == table.length
    parsed = parse_table(data)
    assert parsed.warnings == ()
    assert parsed.table == table
    structs: tuple[Nic | IbftTarget, ...] = (*parsed.table.nics, *parsed.table.targets)
    assert all(s.offset % 16 == 0 for s in structs)
    back, _warnings = table_to_model(parsed.table)
    assert back == cfg
    assert parsed.table.nics[0].pci_bdf == pci
    # the JSON form carries every field (secrets shown on request)
    assert table_from_dict(table_to_dict(parsed.table, show_secrets=True)) == parsed.table
    assert build_table(table_from_dict(table_to_dict(parsed.table, show_secrets=True))) == data


@given(st.binary(min_size=8, max_size=8))
def test_sysfs_lun_reads_back(lun: bytes) -> None:
    text = sysfs_lun(lun)
    guess, exact = lun_from_sysfs(text)
    assert sysfs_lun(guess) == text
    if exact:
        assert guess == lun


def test_ipv6_strategy_is_normalised() -> None:
    assert str(ipaddress.ip_address("fe80:0:0::1")) == "fe80::1"


_json_values = (
    st.none() | st.booleans() | st.integers(-5, 1 << 33) | st.text(max_size=20) | st.lists(st.integers(0, 9))
)


@FUZZ
@given(st.sampled_from(SAMPLES), st.data())
def test_table_json_with_wrong_values_fails_cleanly(sample: bytes, data: st.DataObject) -> None:
    obj = table_to_dict(parse_table(sample).table, show_secrets=True)
    paths: list[tuple[object, str]] = [(obj, k) for k in obj]
    for key in ("control", "initiator"):
        paths += [(obj[key], k) for k in obj[key]]
    paths += [(obj["nics"][0], k) for k in obj["nics"][0]]
    paths += [(obj["targets"][0], k) for k in obj["targets"][0]]
    for _ in range(data.draw(st.integers(1, 3))):
        holder, key = data.draw(st.sampled_from(paths))
        holder[key] = data.draw(_json_values)  # type: ignore[index]
    try:
        table = table_from_dict(obj)
    except ParseError as exc:
        assert "\n" not in str(exc)
        return
    try:
        build_table(table)
    except RepresentError as exc:
        assert "\n" not in str(exc)


_ATTR_FILES = sorted(sample_sysfs(sample_paths()[0]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from([*_ATTR_FILES, "ethernet0/prefix-len"]), st.text(max_size=20)),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.sampled_from(_ATTR_FILES), max_size=3),
)
def test_sysfs_reader_on_damaged_trees(
    tmp_path_factory: pytest.TempPathFactory, edits: list[tuple[str, str]], removed: list[str]
) -> None:
    tree = write_sysfs_tree(tmp_path_factory.mktemp("ibft"), parse_table(SAMPLES[0]).table)
    for name, text in edits:
        (tree / name).write_text(text, errors="surrogateescape")
    for name in removed:
        (tree / name).unlink(missing_ok=True)
    try:
        table = read_sysfs(tree)
    except IscsibootError as exc:
        assert "\n" not in str(exc)
        return
    to_sysfs(table)
    explain(table)
    try:
        table_to_model(table)
        build_table(table)
    except IscsibootError as exc:
        assert "\n" not in str(exc)
