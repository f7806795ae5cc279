"""The config phase keeps the address a DHCP-origin iBFT NIC got (the firmware's lease)."""

from __future__ import annotations

from iscsiboot.agent.phases.config import with_firmware_lease
from iscsiboot.agent.plan import net_plan
from iscsiboot.ibft.mapping import table_to_model
from iscsiboot.ibft.types import ORIGIN_DHCP, ORIGIN_MANUAL, IbftTarget, Nic, Table
from iscsiboot.model import NetMode

MAC = "52:54:00:12:34:56"


def _table(**nic: object) -> Table:
    fields = {
        "ip_address": "10.0.2.15", "prefix": 24, "origin": ORIGIN_DHCP, "gateway": "10.0.2.2",
        "primary_dns": "10.0.2.3", "dhcp": "10.0.2.2", "mac": MAC, **nic,
    }  # fmt: skip
    target = IbftTarget(address="10.0.2.2", port=3260, name="iqn.2026-11.org.iscsiboot:htpc")
    return Table(nics=(Nic(**fields),), targets=(target,))  # type: ignore[arg-type]


def _network(table: Table):  # type: ignore[no-untyped-def]
    model, _warnings = table_to_model(table)
    return with_firmware_lease(model, table).network


def test_a_dhcp_origin_nic_keeps_its_address_prefix_gateway_and_dns() -> None:
    table = _table()
    assert table_to_model(table)[0].network.address is None  # the model alone names the MAC only
    network = _network(table)
    assert network.mode is NetMode.DHCP and network.mac == MAC
    assert (network.address, network.prefix, network.gateway, network.dns) == (
        "10.0.2.15",
        24,
        "10.0.2.2",
        ("10.0.2.3",),
    )
    assert net_plan(network).firmware_lease


def test_without_a_usable_address_the_boot_takes_a_fresh_lease() -> None:
    for nic in (
        {"ip_address": "0.0.0.0"},
        {"ip_address": None},
        {"prefix": 0},
        {"ip_address": "127.0.0.1"},
        {"ip_address": "fe80::1", "prefix": 64},
    ):
        network = _network(_table(**nic))
        assert network.mode is NetMode.DHCP and network.address is None, nic
        assert not net_plan(network).firmware_lease


def test_a_static_nic_is_static_already() -> None:
    network = _network(_table(origin=ORIGIN_MANUAL, dhcp=None))
    assert network.mode is NetMode.STATIC and network.address == "10.0.2.15"


def test_no_gateway_or_dns_in_the_table_is_none() -> None:
    network = _network(_table(gateway="0.0.0.0", primary_dns=None))
    assert (network.address, network.gateway, network.dns) == ("10.0.2.15", None, ())
