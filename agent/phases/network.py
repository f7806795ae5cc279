# ruff: noqa: PLC0415  (imports are lazy on purpose: each phase loads only what it needs at boot)
"""Bring the network up with pyroute2: pick the interface, wait for carrier, DHCP or static.

Carrier waits follow rtnetlink link events (RTMGRP_LINK), never sleeps.  DHCP
uses pyroute2's asyncio client (the lease is kept in memory, nothing is
written); the agent then sets the address, default route and DNS itself, the
same way as for a static ``ip=``.  A VLAN interface ``<dev>.<id>`` is created
on the chosen device and configured instead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

from iscsiboot.agent.deadline import Deadline
from iscsiboot.agent.errors import PhaseError
from iscsiboot.agent.phases import netsteps
from iscsiboot.agent.phases.lease import DhcpLease, parse_udhcpc, remove_script, udhcpc_argv, write_script
from iscsiboot.agent.plan import LinkInfo, NetPlan, NetResult, candidate_links, vlan_name
from iscsiboot.model import NetMode

IFF_LOOPBACK = 0x8
RTMGRP_LINK = 1

Say = Callable[[str], None]
#: The IPv6 methods of ip= that the agent cannot run yet, in words.
IPV6_AUTOMATIC = {NetMode.DHCP6: "DHCPv6", NetMode.AUTO6: "IPv6 autoconfiguration"}


def link_info(msg: Any) -> LinkInfo:
    kind = None
    try:
        kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
    except (AttributeError, KeyError, TypeError):
        kind = None
    name = msg.get("ifname") or msg.get("IFLA_IFNAME") or ""
    return LinkInfo(
        name=name,
        index=int(msg["index"]),
        mac=msg.get("address"),
        carrier=msg.get("carrier") == 1,
        kind=kind,
        loopback=bool(msg["flags"] & IFF_LOOPBACK) or name == "lo",
    )


def kernel_words(
    name: str, kind: str | None, vlan: int | None, parent: str | None, addresses: list[str]
) -> str:
    """One interface as the kernel reports it, in words (pure)."""
    what = f"{name} is VLAN {vlan} on {parent}" if kind == "vlan" else f"{name} ({kind or 'device'})"
    return f"{what}, {', '.join(addresses) or 'no IPv4 address'} (as the kernel reports)"


async def _collect(result: Any) -> list[Any]:
    if hasattr(result, "__aiter__"):
        return [item async for item in result]
    if asyncio.iscoroutine(result):
        result = await result
        return await _collect(result)
    return list(result)


def _exists(exc: BaseException) -> bool:
    return getattr(exc, "code", None) == errno.EEXIST


class Network:
    """One network bring-up (use ``run``)."""

    def __init__(
        self,
        plan: NetPlan,
        deadline: Deadline,
        say: Say,
        *,
        resolv_conf: str | None = None,
        dhcp_client: str = "pyroute2",
    ) -> None:
        self.dhcp_client = dhcp_client
        self.plan = plan
        self.deadline = deadline
        self.say = say
        self.resolv_conf = resolv_conf
        self.ipr: Any = None
        self.events: Any = None
        self.changed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    # -------------------------------------------------------------- netlink helpers

    async def _listen(self) -> None:
        try:
            while True:
                async for _msg in self.events.get():
                    self.changed.set()
        except (OSError, asyncio.CancelledError):
            return
        except Exception:  # the socket closes under us at the end
            return

    async def links(self) -> list[LinkInfo]:
        return [link_info(m) for m in await _collect(await self.ipr.link("dump"))]

    async def wait_event(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()

    # -------------------------------------------------------------- the steps

    async def pick(self) -> list[LinkInfo]:
        """The candidate interfaces; waits for a named one to appear."""
        last = -1
        while True:
            links = await self.links()
            found = candidate_links(links, self.plan)
            if found:
                return found
            if self.deadline.expired():
                raise netsteps.no_interface(links, self.plan)
            elapsed = int(self.deadline.elapsed())
            if elapsed != last and elapsed >= 1:
                last = elapsed
                self.say(netsteps.waiting_for_interface(elapsed, self.deadline.seconds))
            await self.wait_event(min(1.0, self.deadline.remaining()))

    async def up_and_carrier(self, candidates: list[LinkInfo]) -> LinkInfo:
        for link in candidates:
            await self.ipr.link("set", index=link.index, state="up")
        start = self.deadline.elapsed()
        last = -1
        while True:
            current = {lk.index: lk for lk in await self.links()}
            for link in candidates:
                now = current.get(link.index)
                if now is not None and now.carrier:
                    return now
            if self.deadline.expired():
                raise netsteps.no_carrier(candidates, self.deadline.seconds)
            waited = int(self.deadline.elapsed() - start)
            if waited != last and waited >= 1:
                last = waited
                self.say(netsteps.waiting_for_link(candidates, waited, self.deadline.seconds))
            await self.wait_event(min(1.0, self.deadline.remaining()))

    async def make_vlan(self, parent: LinkInfo, vlan: int) -> LinkInfo:
        name = vlan_name(parent.name, vlan)
        try:
            await self.ipr.link("add", ifname=name, kind="vlan", link=parent.index, vlan_id=vlan)
        except Exception as exc:
            if not _exists(exc):
                raise PhaseError(
                    "network",
                    f"cannot create VLAN {vlan} on {parent.name}",
                    cause="vlan",
                    evidence=str(exc),
                    fix="add the 8021q kernel module to the initramfs",
                ) from None
        found = [lk for lk in await self.links() if lk.name == name]
        if not found:
            raise PhaseError("network", f"VLAN interface {name} did not appear", cause="vlan")
        return await self.up_and_carrier(found)

    async def kernel_view(self, link: LinkInfo) -> str:
        """``link`` read back from the kernel: kind, VLAN id, parent and IPv4 addresses."""
        msg = (await _collect(await self.ipr.link("get", index=link.index)))[0]
        vlan = parent = None
        with contextlib.suppress(AttributeError, KeyError, TypeError):
            vlan = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")
        names = {lk.index: lk.name for lk in await self.links()}
        if msg.get("link") is not None:
            parent = names.get(int(msg.get("link")), f"index {msg.get('link')}")
        addresses = [
            f"{a.get('address')}/{a['prefixlen']}"
            for a in await _collect(await self.ipr.addr("dump"))
            if a["index"] == link.index and a["family"] == socket.AF_INET
        ]
        return kernel_words(link_info(msg).name, link_info(msg).kind, vlan, parent, addresses)

    async def configure(self, link: LinkInfo, address: str, prefix: int, gateway: str | None) -> None:
        try:
            await self.ipr.addr("add", index=link.index, address=address, prefixlen=prefix)
        except Exception as exc:
            if not _exists(exc):
                raise netsteps.address_failed(link.name, address, prefix, str(exc)) from None
        if gateway:
            try:
                await self.ipr.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=link.index)
            except Exception as exc:
                raise netsteps.route_failed(gateway, address, prefix, str(exc)) from None

    async def dhcp(self, link: LinkInfo) -> tuple[Any, float]:
        from iscsiboot.agent.startup.pyroute import load_pyroute2

        load_pyroute2()
        from pyroute2.dhcp.client import AsyncDHCPClient, ClientConfig, randomized_increasing_backoff
        from pyroute2.dhcp.enums import dhcp
        from pyroute2.dhcp.fsm import State
        from pyroute2.dhcp.leases import Lease

        class MemoryLease(Lease):  # type: ignore[misc]
            def dump(self) -> None:
                return None

            @classmethod
            def load(cls, interface: str) -> None:
                return None

        params = (
            dhcp.Option.SUBNET_MASK,
            dhcp.Option.ROUTER,
            dhcp.Option.NAME_SERVER,
            dhcp.Option.DOMAIN_NAME,
            dhcp.Option.HOST_NAME,
            dhcp.Option.ROOT_PATH,
            dhcp.Option.LEASE_TIME,
        )
        config = ClientConfig(
            interface=link.name,
            lease_type=MemoryLease,
            hooks=(),
            requested_parameters=params,
            release=False,
            handle_signals=False,
            write_pidfile=False,
            vendor_id="iscsiboot",
            host_name=self.plan.hostname,
            retransmission=lambda: randomized_increasing_backoff(wait_first=1.0, wait_max=4.0),
        )
        start = self.deadline.elapsed()
        async with AsyncDHCPClient(config) as client:
            await client.bootstrap()
            while True:
                try:
                    await client.wait_for_state(
                        State.BOUND, timeout=min(1.0, max(0.05, self.deadline.remaining()))
                    )
                    break
                except TimeoutError:
                    pass
                if self.deadline.expired():
                    raise PhaseError(
                        "network",
                        f"no DHCP lease on {link.name} within {self.deadline.seconds:.0f} s",
                        cause="dhcp-timeout",
                        evidence=f"DHCP client state {client.state.name}",
                        fix="check the DHCP server (its range and that it serves this network or VLAN), "
                        "or give a static ip=",
                    )
                self.say(
                    f"waiting for a DHCP lease on {link.name} "
                    f"({self.deadline.elapsed() - start:.0f} s of {self.deadline.seconds:.0f})"
                )
            lease = client.lease
        return lease, self.deadline.elapsed() - start

    async def run(self) -> NetResult:
        from iscsiboot.agent.startup.pyroute import load_pyroute2

        load_pyroute2()
        from pyroute2.iproute.linux import AsyncIPRoute

        self.events = AsyncIPRoute()
        await self.events.__aenter__()
        await self.events.bind(RTMGRP_LINK)
        self._listener = asyncio.create_task(self._listen())
        self.ipr = AsyncIPRoute()
        await self.ipr.__aenter__()
        try:
            return await self._run()
        finally:
            self.events.close()
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
            self.ipr.close()

    async def _run(self) -> NetResult:
        plan = self.plan
        start = self.deadline.elapsed()
        setup = start
        link = await self.up_and_carrier(await self.pick())
        parent: LinkInfo | None = None
        if plan.vlan is not None:
            parent, link = link, await self.make_vlan(link, plan.vlan)
        carrier = self.deadline.elapsed() - start
        result = NetResult(
            device=link.name,
            parent=parent.name if parent else None,
            mac=(parent or link).mac,
            mode=plan.mode.value,
            carrier_seconds=round(carrier, 3),
            setup_seconds=round(setup, 3),
        )
        if plan.mode is NetMode.STATIC:
            assert plan.address is not None and plan.prefix is not None
            await self.configure(link, plan.address, plan.prefix, plan.gateway)
            result.address, result.prefix, result.gateway = plan.address, plan.prefix, plan.gateway
            result.dns = list(plan.dns)
        elif plan.mode is NetMode.DHCP:
            start = self.deadline.elapsed()
            lease = await self.lease(link)
            result.dhcp_seconds = round(self.deadline.elapsed() - start, 3)
            result.dhcp_client = lease.client
            result.address, result.prefix, result.gateway = lease.address, lease.prefix, lease.gateway
            result.dns = list(lease.dns or plan.dns)
            result.server, result.root_path = lease.server, lease.root_path
            await self.configure(link, lease.address, lease.prefix, lease.gateway)
        if parent is not None:
            result.vlan = plan.vlan
            try:
                self.say(f"network: {await self.kernel_view(link)}")
            except Exception as exc:  # the read-back only reports; the VLAN is configured
                self.say(f"network: cannot read {link.name} back from the kernel: {exc}")
        if self.resolv_conf and result.dns:
            netsteps.write_resolv_conf(self.resolv_conf, result.dns, self.say)
        return result

    async def lease(self, link: LinkInfo) -> DhcpLease:
        """A lease from pyroute2's client, or from busybox udhcpc when that is asked for or missing."""
        if self.dhcp_client != "udhcpc":
            try:
                got, _took = await self.dhcp(link)
            except ImportError as exc:
                self.say(f"pyroute2's DHCP client is not available ({exc}); using udhcpc")
            else:
                return lease_from_pyroute2(got)
        return await self.udhcpc(link)

    async def udhcpc(self, link: LinkInfo) -> DhcpLease:
        argv = udhcpc_argv(link.name, self.deadline.remaining())
        script_dir, argv = write_script(argv, "iscsiboot-udhcpc.")
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        lines: list[str] = []
        found: DhcpLease | None = None
        try:
            assert proc.stdout is not None
            while found is None:
                try:
                    raw = await asyncio.wait_for(proc.stdout.readline(), max(0.05, self.deadline.remaining()))
                except TimeoutError:
                    break
                if not raw:
                    break
                line = raw.decode(errors="replace").strip()
                lines.append(line)
                found = parse_udhcpc(line)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            remove_script(script_dir)
        if found is None:
            raise PhaseError(
                "network",
                f"no DHCP lease on {link.name} (udhcpc) within {self.deadline.seconds:.0f} s",
                cause="dhcp-timeout",
                evidence=(lines[-1] if lines else "no output"),
                fix="check the DHCP server (its range and that it serves this network or VLAN), "
                "or give a static ip=",
            )
        return found


def lease_from_pyroute2(lease: Any) -> DhcpLease:
    options = lease.ack.get("options", {})
    mask = options.get("subnet_mask")
    routers = options.get("router") or []
    return DhcpLease(
        address=lease.ip,
        prefix=ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen if mask else 24,
        gateway=routers[0] if routers else None,
        dns=tuple(options.get("name_server") or ()),
        server=options.get("server_id"),
        root_path=options.get("root_path"),
        client="pyroute2",
    )


def bring_up(
    plan: NetPlan,
    deadline: Deadline,
    say: Say,
    *,
    resolv_conf: str | None = None,
    dhcp_client: str = "pyroute2",
) -> NetResult:
    """Bring the network up as ``plan`` says (blocking; runs its own event loop)."""
    if plan.mode is NetMode.OFF:
        raise PhaseError(
            "network",
            "the network is switched off (ip=off) but the boot needs it",
            cause="config",
            fix="use ip=dhcp or a static ip=",
        )
    if plan.mode in IPV6_AUTOMATIC:
        raise PhaseError(
            "network",
            f"ip={plan.mode.value} asks for {IPV6_AUTOMATIC[plan.mode]}, which this agent cannot do yet "
            "(it does not fall back to IPv4)",
            cause=plan.mode.value,
            fix="use ip=dhcp (IPv4 DHCP) or a static ip= (an IPv6 address in brackets)",
        )
    network = Network(plan, deadline, say, resolv_conf=resolv_conf, dhcp_client=dhcp_client)
    return asyncio.run(network.run())


def renew(plan: NetPlan, device: str, deadline: Deadline, *, dhcp_client: str = "pyroute2") -> DhcpLease:
    """A DHCP lease on ``device``, which has the firmware's address already (the firmware lease's renewal).

    The interface is left as it is; the lease says whether the server still
    gives this machine that address.  PhaseError as the network phase's DHCP.
    """
    network = Network(plan, deadline, lambda _text: None, dhcp_client=dhcp_client)
    return asyncio.run(network.lease(LinkInfo(name=device, index=0, mac=None, carrier=True)))


def prefetch(dhcp: bool) -> None:
    """Import what the network phase needs (run in a thread while the modules load)."""
    from iscsiboot.agent.startup.pyroute import load_pyroute2

    try:
        load_pyroute2()
        import pyroute2.iproute.linux

        if dhcp:
            import pyroute2.dhcp.client  # noqa: F401
    except Exception:
        return  # the network phase imports again and reports
