"""The network phase for a plan that brings its address: raw rtnetlink, no pyroute2, no asyncio.

A static ``ip=``, a static iBFT NIC, or the firmware's DHCP lease
(:attr:`~iscsiboot.agent.plan.NetPlan.firmware_lease`) needs no DHCP client
before the login: the interface is picked, set up, waited for (carrier),
given its IPv4 address and default route, as :mod:`.network` does with
pyroute2, whose import (with asyncio) costs a slow guest most of a second.
The same steps, the same choices (:func:`~iscsiboot.agent.plan.candidate_links`)
and the same failures (:mod:`.netsteps`); a VLAN or an IPv6 address goes
through :mod:`.network` (:func:`suits`).

The requests (pure builders and parsers, tested without a kernel):

* ``RTM_GETLINK`` dump: name, index, MAC, carrier, kind (``IFLA_LINKINFO``);
* ``RTM_NEWLINK`` with ``IFF_UP``;
* ``RTM_NEWADDR`` (``IFA_LOCAL`` and ``IFA_ADDRESS``, as ``ip addr add``);
* ``RTM_NEWROUTE`` replacing the main table's default route (protocol static).

Link events (``RTMGRP_LINK``) wake the carrier wait, as in :mod:`.network`.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import struct

from iscsiboot.agent.phases import netsteps
from iscsiboot.agent.plan import LinkInfo, NetResult, candidate_links
from iscsiboot.model import NetMode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from iscsiboot.agent.deadline import Deadline
    from iscsiboot.agent.plan import NetPlan

    Say = Callable[[str], None]

NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINKINFO, IFLA_CARRIER = 1, 3, 18, 33
IFLA_INFO_KIND = 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
IFF_UP, IFF_LOOPBACK = 0x1, 0x8
RTMGRP_LINK = 1
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port
_IFINFO = struct.Struct("=BxHiII")  # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBi")  # ifaddrmsg: family, prefix length, flags, scope, index
_RTMSG = struct.Struct(
    "=BBBBBBBBI"
)  # rtmsg: family, dst/src length, tos, table, protocol, scope, type, flags


def suits(plan: NetPlan) -> bool:
    """Whether this module brings ``plan`` up: its own IPv4 address, no VLAN."""
    if plan.vlan is not None or plan.address is None or plan.prefix is None or ":" in plan.address:
        return False
    if plan.gateway is not None and ":" in plan.gateway:
        return False
    return plan.mode is NetMode.STATIC or plan.firmware_lease


# ------------------------------------------------------------------ messages (pure)


def attribute(kind: int, data: bytes) -> bytes:
    """One rtattr: length, type, the data, padded to 4 bytes."""
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + bytes(-length % 4)


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


def dump_links_request(seq: int) -> bytes:
    return message(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, _IFINFO.pack(_socket.AF_UNSPEC, 0, 0, 0, 0))


def link_up_request(index: int, seq: int) -> bytes:
    body = _IFINFO.pack(_socket.AF_UNSPEC, 0, index, IFF_UP, IFF_UP)
    return message(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def add_address_request(index: int, address: str, prefix: int, seq: int) -> bytes:
    """``ip addr add ADDRESS/PREFIX dev INDEX`` (IPv4)."""
    packed = _socket.inet_aton(address)
    body = _IFADDR.pack(_socket.AF_INET, prefix, 0, RT_SCOPE_UNIVERSE, index)
    body += attribute(IFA_LOCAL, packed) + attribute(IFA_ADDRESS, packed)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return message(RTM_NEWADDR, flags, seq, body)


def default_route_request(gateway: str, index: int, seq: int) -> bytes:
    """``ip route replace default via GATEWAY dev INDEX proto static`` (IPv4, the main table)."""
    body = _RTMSG.pack(
        _socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
    )
    body += attribute(RTA_GATEWAY, _socket.inet_aton(gateway)) + attribute(RTA_OIF, struct.pack("=i", index))
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return message(RTM_NEWROUTE, flags, seq, body)


def messages(datagram: bytes) -> list[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, payload) of each netlink message in ``datagram``."""
    out: list[tuple[int, int, int, bytes]] = []
    offset = 0
    while offset + _HEADER.size <= len(datagram):
        length, kind, flags, seq, _port = _HEADER.unpack_from(datagram, offset)
        if length < _HEADER.size or offset + length > len(datagram):
            break
        out.append((kind, flags, seq, datagram[offset + _HEADER.size : offset + length]))
        offset += (length + 3) & ~3
    return out


def attributes(data: bytes, offset: int = 0) -> dict[int, bytes]:
    """type -> data of the rtattrs from ``offset`` (the first of a type wins)."""
    out: dict[int, bytes] = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out.setdefault(kind & 0x3FFF, data[offset + 4 : offset + length])  # without NLA_F_NESTED
        offset += (length + 3) & ~3
    return out


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.split(b"\0", 1)[0].decode(errors="replace")


def parse_link(payload: bytes) -> LinkInfo:
    """An RTM_NEWLINK message as :class:`LinkInfo` (what :func:`.network.link_info` reads from pyroute2)."""
    _family, _kind, index, flags, _change = _IFINFO.unpack_from(payload)
    attrs = attributes(payload, _IFINFO.size)
    name = _text(attrs.get(IFLA_IFNAME)) or ""
    raw_mac = attrs.get(IFLA_ADDRESS)
    mac = ":".join(f"{b:02x}" for b in raw_mac) if raw_mac else None
    carrier = attrs.get(IFLA_CARRIER)
    kind = None
    if IFLA_LINKINFO in attrs:
        kind = _text(attributes(attrs[IFLA_LINKINFO]).get(IFLA_INFO_KIND))
    return LinkInfo(
        name=name,
        index=index,
        mac=mac,
        carrier=carrier is not None and carrier[:1] == b"\x01",
        kind=kind,
        loopback=bool(flags & IFF_LOOPBACK) or name == "lo",
    )


def error_of(payload: bytes) -> int:
    """The errno of an NLMSG_ERROR payload (0: an acknowledgement)."""
    return -struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else errno.EIO


# ------------------------------------------------------------------ the socket


class Rtnl:
    """A NETLINK_ROUTE socket for requests, and one bound to link events."""

    def __init__(self) -> None:
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0)
        self.events = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW, 0)
        self.events.bind((0, RTMGRP_LINK))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()
        self.events.close()

    def _next(self) -> int:
        self.seq += 1
        return self.seq

    def request(self, build: Callable[[int], bytes]) -> int:
        """Send one request; its errno (0: done)."""
        seq = self._next()
        self.sock.send(build(seq))
        while True:
            for kind, _flags, got, payload in messages(self.sock.recv(65536)):
                if got == seq and kind == NLMSG_ERROR:
                    return error_of(payload)

    def links(self) -> list[LinkInfo]:
        seq = self._next()
        self.sock.send(dump_links_request(seq))
        found: list[LinkInfo] = []
        while True:
            for kind, _flags, got, payload in messages(self.sock.recv(65536)):
                if got != seq:
                    continue
                if kind == NLMSG_DONE:
                    return found
                if kind == NLMSG_ERROR:
                    err = error_of(payload)
                    raise OSError(err, f"link dump: {os.strerror(err)}")
                if kind == RTM_NEWLINK:
                    found.append(parse_link(payload))

    def wait_event(self, timeout: float) -> None:
        """Until a link event arrives or ``timeout`` passes (the events are drained)."""
        if select.select([self.events], [], [], max(0.0, timeout))[0]:
            while select.select([self.events], [], [], 0)[0]:
                self.events.recv(65536)


# ------------------------------------------------------------------ the phase


def bring_up(plan: NetPlan, deadline: Deadline, say: Say, *, resolv_conf: str | None = None) -> NetResult:
    """Bring ``plan`` (:func:`suits`) up: the same result and failures as :func:`.network.bring_up`."""
    assert plan.address is not None and plan.prefix is not None
    start = deadline.elapsed()
    rtnl = Rtnl()
    try:
        link = _up_and_carrier(rtnl, _pick(rtnl, plan, deadline, say), deadline, say)
        carrier = deadline.elapsed() - start
        err = rtnl.request(
            lambda seq: add_address_request(link.index, plan.address or "", plan.prefix or 0, seq)
        )
        if err not in (0, errno.EEXIST):
            raise netsteps.address_failed(link.name, plan.address, plan.prefix, _os_text(err))
        if plan.gateway:
            err = rtnl.request(lambda seq: default_route_request(plan.gateway or "", link.index, seq))
            if err:
                raise netsteps.route_failed(plan.gateway, plan.address, plan.prefix, _os_text(err))
    finally:
        rtnl.close()
    result = NetResult(
        device=link.name,
        parent=None,
        mac=link.mac,
        mode=plan.mode.value,
        address=plan.address,
        prefix=plan.prefix,
        gateway=plan.gateway,
        dns=list(plan.dns),
        carrier_seconds=round(carrier, 3),
        setup_seconds=round(start, 3),
        dhcp_client="firmware" if plan.firmware_lease else None,
    )
    if resolv_conf and result.dns:
        netsteps.write_resolv_conf(resolv_conf, result.dns, say)
    return result


def _os_text(err: int) -> str:
    """An errno as pyroute2's NetlinkError shows it (the evidence :mod:`.network` gives)."""
    return f"({err}, {os.strerror(err)!r})"


def _pick(rtnl: Rtnl, plan: NetPlan, deadline: Deadline, say: Say) -> list[LinkInfo]:
    last = -1
    while True:
        links = rtnl.links()
        found = candidate_links(links, plan)
        if found:
            return found
        if deadline.expired():
            raise netsteps.no_interface(links, plan)
        elapsed = int(deadline.elapsed())
        if elapsed != last and elapsed >= 1:
            last = elapsed
            say(netsteps.waiting_for_interface(elapsed, deadline.seconds))
        rtnl.wait_event(min(1.0, deadline.remaining()))


def _up_request(index: int) -> Callable[[int], bytes]:
    return lambda seq: link_up_request(index, seq)


def _up_and_carrier(rtnl: Rtnl, candidates: list[LinkInfo], deadline: Deadline, say: Say) -> LinkInfo:
    for link in candidates:
        err = rtnl.request(_up_request(link.index))
        if err:
            raise OSError(err, f"set {link.name} up: {os.strerror(err)}")
    start = deadline.elapsed()
    last = -1
    while True:
        current = {lk.index: lk for lk in rtnl.links()}
        for link in candidates:
            now = current.get(link.index)
            if now is not None and now.carrier:
                return now
        if deadline.expired():
            raise netsteps.no_carrier(candidates, deadline.seconds)
        waited = int(deadline.elapsed() - start)
        if waited != last and waited >= 1:
            last = waited
            say(netsteps.waiting_for_link(candidates, waited, deadline.seconds))
        rtnl.wait_event(min(1.0, deadline.remaining()))
