"""The network phase's words: progress lines and failures, shared by both ways up (pure but resolv.conf).

:mod:`.network` (pyroute2, DHCP, VLANs) and :mod:`.netlight` (raw rtnetlink, a plan
that brings its address) say the same things in the same words.
"""

from __future__ import annotations

import os

from iscsiboot.agent.errors import PhaseError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from iscsiboot.agent.plan import LinkInfo, NetPlan


def no_interface(links: Sequence[LinkInfo], plan: NetPlan) -> PhaseError:
    names = ", ".join(f"{lk.name} ({lk.mac})" for lk in links if not lk.loopback) or "none"
    wanted = f"MAC {plan.mac}" if plan.mac else (plan.device or "an Ethernet interface")
    return PhaseError(
        "network",
        f"no network interface matches {wanted}",
        cause="no-interface",
        evidence=f"interfaces: {names}",
        fix="check the NIC driver is in the initramfs and the device name or MAC in ip=/the iBFT",
    )


def waiting_for_interface(elapsed: int, seconds: float) -> str:
    return f"waiting for a network interface ({elapsed} s of {seconds:.0f})"


def no_carrier(candidates: Sequence[LinkInfo], seconds: float) -> PhaseError:
    names = ", ".join(lk.name for lk in candidates)
    return PhaseError(
        "network",
        f"no link (carrier) on {names} within {seconds:.0f} s",
        cause="no-carrier",
        evidence="operstate stayed down",
        fix="check the cable and the switch port; raise iscsiboot.timeout.network for slow switches",
    )


def waiting_for_link(candidates: Sequence[LinkInfo], waited: int, seconds: float) -> str:
    names = " or ".join(lk.name for lk in candidates)
    return f"waiting for link on {names} ({waited} s of {seconds:.0f})"


def address_failed(device: str, address: str | None, prefix: int | None, evidence: str) -> PhaseError:
    return PhaseError(
        "network", f"cannot set {address}/{prefix} on {device}", cause="address", evidence=evidence
    )


def route_failed(gateway: str | None, address: str | None, prefix: int | None, evidence: str) -> PhaseError:
    return PhaseError(
        "network",
        f"cannot add the default route via {gateway}",
        cause="route",
        evidence=evidence,
        fix=f"check that the gateway {gateway} lies in {address}/{prefix}",
    )


def write_resolv_conf(path: str, dns: Sequence[str], say: Callable[[str], None]) -> None:
    """The DNS servers in ``path`` (a line when it cannot be written)."""
    from iscsiboot.output import write_atomic  # noqa: PLC0415  (only with DNS servers)

    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, "".join(f"nameserver {d}\n" for d in dns))
    except OSError as exc:
        say(f"cannot write {path}: {exc.strerror}")
