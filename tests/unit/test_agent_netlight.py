"""The network phase for a plan with its own address: raw rtnetlink (pure; netns tests run it for real)."""

from __future__ import annotations

import errno
import socket
import struct

import pytest
from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.phases import netlight
from iscsiboot.agent.phases.netlight import (
    IFLA_ADDRESS,
    IFLA_CARRIER,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_NEWLINK,
    add_address_request,
    attribute,
    attributes,
    default_route_request,
    error_of,
    message,
    messages,
    parse_link,
    suits,
)
from iscsiboot.agent.plan import LinkInfo, NetPlan, net_plan
from iscsiboot.model import NetMode, Network

STATIC = NetPlan(NetMode.STATIC, "eth0", None, None, "10.0.0.5", 24, "10.0.0.1", ("10.0.0.1",))


def test_it_takes_plans_with_their_own_ipv4_address_and_no_vlan() -> None:
    assert suits(STATIC)
    lease = net_plan(Network(mode=NetMode.DHCP, mac="52:54:00:12:34:56", address="10.0.2.15", prefix=24))
    assert lease.firmware_lease and suits(lease)
    assert not suits(net_plan(Network(mode=NetMode.DHCP)))  # a fresh lease: pyroute2's DHCP client
    assert not suits(NetPlan(NetMode.STATIC, "eth0", None, 7, "10.0.0.5", 24))  # a VLAN to create
    assert not suits(NetPlan(NetMode.STATIC, "eth0", None, None, "2001:db8::5", 64))
    assert not suits(NetPlan(NetMode.STATIC, "eth0", None, None, "10.0.0.5", 24, "2001:db8::1"))


def _nlmsg(data: bytes) -> tuple[int, int, int, int, int]:
    return struct.unpack_from("=IHHII", data)


def test_address_request_is_ip_addr_add() -> None:
    msg = add_address_request(3, "10.0.2.15", 24, 9)
    length, kind, flags, seq, _port = _nlmsg(msg)
    assert (length, kind, seq) == (len(msg), 20, 9)  # RTM_NEWADDR
    assert flags == 0x1 | 0x4 | 0x400 | 0x200  # request, ack, create, exclusive
    family, prefix, _flags, scope, index = struct.unpack_from("=BBBBi", msg, 16)
    assert (family, prefix, scope, index) == (socket.AF_INET, 24, 0, 3)
    attrs = attributes(msg, 24)
    assert attrs == {1: socket.inet_aton("10.0.2.15"), 2: socket.inet_aton("10.0.2.15")}  # address, local


def test_route_request_replaces_the_main_tables_default_route() -> None:
    msg = default_route_request("10.0.2.2", 3, 4)
    _length, kind, flags, seq, _port = _nlmsg(msg)
    assert (kind, seq, flags) == (24, 4, 0x1 | 0x4 | 0x400 | 0x100)  # RTM_NEWROUTE: create, replace
    family, dst_len, _src, _tos, table, proto, scope, rtype, _flags = struct.unpack_from(
        "=BBBBBBBBI", msg, 16
    )
    assert (family, dst_len, table, proto, scope, rtype) == (socket.AF_INET, 0, 254, 4, 0, 1)
    attrs = attributes(msg, 28)
    assert attrs == {5: socket.inet_aton("10.0.2.2"), 4: struct.pack("=i", 3)}  # gateway, output interface


def _link(index: int, flags: int, *attrs: bytes) -> bytes:
    return struct.pack("=BxHiII", 0, 1, index, flags, 0) + b"".join(attrs)


def test_a_link_reads_as_pyroute2s_view_of_it() -> None:
    kind = attribute(IFLA_LINKINFO, attribute(IFLA_INFO_KIND, b"veth\0"))
    payload = _link(
        4,
        0x1003,
        attribute(IFLA_IFNAME, b"eth0\0"),
        attribute(IFLA_ADDRESS, bytes.fromhex("525400123456")),
        attribute(IFLA_CARRIER, b"\x01"),
        kind,
    )
    assert parse_link(payload) == LinkInfo("eth0", 4, "52:54:00:12:34:56", True, "veth", False)
    lo = parse_link(_link(1, 0x9, attribute(IFLA_IFNAME, b"lo\0"), attribute(IFLA_CARRIER, b"\x00")))
    assert lo == LinkInfo("lo", 1, None, False, None, True)


def test_messages_split_a_datagram_and_errors_read_their_errno() -> None:
    ack = message(NLMSG_ERROR, 0, 7, struct.pack("=i", 0) + bytes(16))
    nack = message(NLMSG_ERROR, 0, 8, struct.pack("=i", -errno.EEXIST) + bytes(16))
    link = message(RTM_NEWLINK, 2, 9, _link(2, 0, attribute(IFLA_IFNAME, b"eth1\0")))
    done = message(NLMSG_DONE, 2, 9, struct.pack("=i", 0))
    parts = messages(ack + nack + link + done + b"\x01\x02")  # a torn tail is left
    assert [(kind, seq) for kind, _flags, seq, _data in parts] == [
        (NLMSG_ERROR, 7),
        (NLMSG_ERROR, 8),
        (RTM_NEWLINK, 9),
        (NLMSG_DONE, 9),
    ]
    assert error_of(parts[0][3]) == 0 and error_of(parts[1][3]) == errno.EEXIST
    assert parse_link(parts[2][3]).name == "eth1"
    assert attributes(struct.pack("=HH", 2, 1)) == {}  # a bad length ends the list


class FakeRtnl:
    """The kernel side of the phase: links that get carrier when set up, an errno per request."""

    def __init__(self, links: list[LinkInfo], *, carrier: bool = True, errors: dict[int, int] | None = None):
        self.up: set[int] = set()
        self.all = links
        self.carrier = carrier
        self.errors = errors or {}
        self.sent: list[int] = []

    def request(self, build):  # type: ignore[no-untyped-def]
        data = build(len(self.sent) + 1)
        kind = _nlmsg(data)[1]
        self.sent.append(kind)
        if kind == 16:
            self.up.add(struct.unpack_from("=i", data, 20)[0])
        return self.errors.get(kind, 0)

    def links(self) -> list[LinkInfo]:
        return [
            LinkInfo(lk.name, lk.index, lk.mac, self.carrier and lk.index in self.up, lk.kind, lk.loopback)
            for lk in self.all
        ]

    def wait_event(self, timeout: float) -> None:
        return None

    def close(self) -> None:
        return None


def _run(monkeypatch: pytest.MonkeyPatch, fake: FakeRtnl, plan: NetPlan, seconds: float = 5.0):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(netlight, "Rtnl", lambda: fake)
    said: list[str] = []
    return netlight.bring_up(plan, Deadline(seconds), said.append), said


ETH0 = LinkInfo("eth0", 2, "52:54:00:12:34:56", False)


def test_the_firmware_lease_goes_on_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = net_plan(
        Network(
            mode=NetMode.DHCP, mac="52:54:00:12:34:56", address="10.0.2.15", prefix=24, gateway="10.0.2.2"
        )
    )
    fake = FakeRtnl([LinkInfo("lo", 1, None, True, loopback=True), ETH0])
    net, said = _run(monkeypatch, fake, plan)
    assert fake.sent == [16, 20, 24]  # up, address, default route
    assert (net.device, net.address, net.prefix, net.gateway, net.mode) == (
        "eth0",
        "10.0.2.15",
        24,
        "10.0.2.2",
        "dhcp",
    )
    assert net.dhcp_client == "firmware" and net.renewal is None and said == []


def test_an_address_already_there_is_fine_a_refused_route_is_the_route_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net, _said = _run(monkeypatch, FakeRtnl([ETH0], errors={20: errno.EEXIST}), STATIC)
    assert net.address == "10.0.0.5"
    with pytest.raises(PhaseError) as caught:
        _run(monkeypatch, FakeRtnl([ETH0], errors={24: errno.ENETUNREACH}), STATIC)
    assert caught.value.cause == "route" and caught.value.evidence == "(101, 'Network is unreachable')"
    assert caught.value.fix == "check that the gateway 10.0.0.1 lies in 10.0.0.5/24"


def test_no_interface_and_no_carrier_fail_as_the_pyroute2_phase_does(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PhaseError) as caught:
        _run(monkeypatch, FakeRtnl([ETH0]), NetPlan(NetMode.STATIC, "eth9", None, None, "10.0.0.5", 24), 0.0)
    assert caught.value.cause == "no-interface"
    assert caught.value.evidence == "interfaces: eth0 (52:54:00:12:34:56)"
    with pytest.raises(PhaseError) as caught:
        _run(monkeypatch, FakeRtnl([ETH0], carrier=False), STATIC, 0.0)
    assert caught.value.cause == "no-carrier" and caught.value.what == "no link (carrier) on eth0 within 0 s"
