"""What the boot must do, computed from the boot model alone (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from iscsiboot.agent.transport import MODULES, Transport
from iscsiboot.model import BootConfig, Locator, NetMode, Network, Target

if TYPE_CHECKING:
    import random

FIRMWARE_MODULES: tuple[str, ...] = ("iscsi_ibft",)
VLAN_MODULES: tuple[str, ...] = ("8021q",)
FS_MODULES: dict[str, str] = {
    "ext2": "ext4",
    "ext3": "ext4",
    "ext4": "ext4",
    "vfat": "vfat",
    "btrfs": "btrfs",
    "xfs": "xfs",
    "squashfs": "squashfs",
}
# Modules a file system's mount asks the kernel for by name (no modprobe in the image to answer):
# vfat loads its code page and I/O character set when mounted.
FS_HELPERS: dict[str, tuple[str, ...]] = {"vfat": ("nls_cp437", "nls_ascii", "nls_iso8859_1", "nls_utf8")}


def merge_firmware(cmdline: BootConfig, firmware: BootConfig) -> BootConfig:
    """The command line's settings, with the iBFT filling targets, initiator and network.

    Targets and initiator come from the iBFT unless the command line names
    them; the network comes from the iBFT unless the command line chose a mode
    (``ip=dhcp`` or a static ``ip=`` wins over the table).
    """
    network = cmdline.network
    if network.mode in (NetMode.UNSET, NetMode.FIRMWARE):
        network = firmware.network
        if network.mode in (NetMode.UNSET, NetMode.FIRMWARE):
            network = replace(network, mode=NetMode.DHCP)
    return replace(
        cmdline,
        firmware=True,
        initiator=cmdline.initiator or firmware.initiator,
        targets=cmdline.targets or firmware.targets,
        network=network,
    )


def login_targets(cfg: BootConfig) -> tuple[Target, ...]:
    """Each distinct target once, in order (boot= and disk= often name the same one)."""
    seen: set[tuple[str, str, int]] = set()
    out: list[Target] = []
    for target in cfg.targets:
        key = (target.name, target.address.lower(), target.port)
        if key not in seen:
            seen.add(key)
            out.append(target)
    return tuple(out)


def needed_modules(
    cfg: BootConfig, nic_drivers: tuple[str, ...] = (), transport: Transport = Transport.KERNEL
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modules the network needs first, modules that may load in the background).

    The NBD transport reads the iBFT itself (ACPI or the memory scan): no iscsi_ibft.
    """
    network = [*nic_drivers]
    if cfg.network.vlan is not None:
        network.extend(VLAN_MODULES)
    rest = [*MODULES[transport].base]
    if cfg.firmware and transport is Transport.KERNEL:
        rest[:0] = FIRMWARE_MODULES
    return tuple(dict.fromkeys(network)), tuple(m for m in dict.fromkeys(rest) if m not in network)


# ------------------------------------------------------------------ network


@dataclass(frozen=True)
class LinkInfo:
    """One network interface as the kernel reports it."""

    name: str
    index: int
    mac: str | None
    carrier: bool
    kind: str | None = None  # rtnetlink IFLA_INFO_KIND: "veth", "vlan", None for hardware
    loopback: bool = False


@dataclass(frozen=True)
class NetPlan:
    """How to bring the network up.

    A DHCP plan with an address is the firmware's lease (an iBFT NIC whose address
    came from DHCP): that address goes on at once and DHCP renews it in the
    background (:attr:`firmware_lease`), as ``iscsistart -N`` sets the iBFT's address.
    """

    mode: NetMode  # DHCP, STATIC or OFF
    device: str | None  # by name (ip=...:eth0:...)
    mac: str | None  # by MAC (from the iBFT)
    vlan: int | None
    address: str | None = None  # static, or the firmware's DHCP lease
    prefix: int | None = None
    gateway: str | None = None
    dns: tuple[str, ...] = ()
    hostname: str | None = None

    @property
    def pick_first_with_carrier(self) -> bool:
        return self.device is None and self.mac is None

    @property
    def firmware_lease(self) -> bool:
        """DHCP with the address the firmware leased: set it first, renew in the background."""
        return self.mode is NetMode.DHCP and self.address is not None and self.prefix is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (PID 1 sends the plan to its network worker)."""
        return {**asdict(self), "mode": self.mode.value, "dns": list(self.dns)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetPlan:
        return cls(**{**data, "mode": NetMode(data["mode"]), "dns": tuple(data.get("dns", ()))})


@dataclass
class NetResult:
    """What the network phase set up (in the result JSON as ``network``)."""

    device: str
    parent: str | None
    mac: str | None
    mode: str
    address: str | None = None
    prefix: int | None = None
    gateway: str | None = None
    dns: list[str] = field(default_factory=list)
    server: str | None = None
    root_path: str | None = None
    carrier_seconds: float = 0.0
    setup_seconds: float = 0.0  # imports and netlink sockets, before the interface is picked
    dhcp_seconds: float = 0.0
    dhcp_client: str | None = None  # pyroute2, udhcpc, or firmware (the firmware's lease, renewed later)
    vlan: int | None = None
    renewal: str | None = None  # the firmware lease's renewal: "renewed", else what went wrong

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """JSON-ready; the root path's credentials masked unless ``secrets`` (for PID 1's network worker)."""
        data = asdict(self)
        if self.root_path and not secrets:
            from iscsiboot.cmdline.rootpath import redact_root_path  # noqa: PLC0415  (only with a root path)

            data["root_path"] = redact_root_path(self.root_path)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def net_plan(network: Network, *, firmware_lease: bool = True) -> NetPlan:
    """The network plan of a (merged) boot model.

    A DHCP-origin iBFT NIC (the model says DHCP) with the address the firmware
    leased keeps it: it is set at once, and DHCP renews it in the background
    (:attr:`NetPlan.firmware_lease`; not with ``firmware_lease=False``, when the boot
    needs a lease of its own, as for a root path from DHCP).  Without an address it
    takes a fresh lease, as Debian's initramfs does; an unset mode means DHCP too.
    """
    mode = network.mode
    if mode in (NetMode.UNSET, NetMode.FIRMWARE):
        mode = NetMode.DHCP
    leased = mode is NetMode.DHCP and network.address is not None  # the firmware's lease
    keep = mode is NetMode.STATIC or (leased and firmware_lease and network.prefix is not None)
    return NetPlan(
        mode=mode,
        device=network.device,
        mac=network.mac,
        vlan=network.vlan,
        address=network.address if keep else None,
        prefix=network.prefix if keep else None,
        gateway=network.gateway if keep else None,
        dns=() if leased and not keep else network.dns,  # a fresh lease brings its own
        hostname=network.hostname,
    )


def candidate_links(links: list[LinkInfo], plan: NetPlan) -> list[LinkInfo]:
    """The interfaces the plan may use, best first; empty when the named one is absent."""
    usable = [link for link in links if not link.loopback and link.kind in (None, "veth")]
    if plan.mac is not None:
        return [link for link in links if link.mac == plan.mac]
    if plan.device is not None:
        return [link for link in links if link.name == plan.device]
    return sorted(usable, key=lambda link: (not link.carrier, link.index))


def vlan_name(device: str, vlan: int) -> str:
    """The name of the VLAN interface on ``device`` (at most 15 characters)."""
    suffix = f".{vlan}"
    return device[: 15 - len(suffix)] + suffix


# ------------------------------------------------------------------ login retries


def backoff(
    first: float = 0.5, factor: float = 2.0, cap: float = 8.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Exponential backoff with full jitter: delays in [d/2, d], d doubling up to ``cap``."""
    if rng is None:
        import random  # noqa: PLC0415  (only a login retry needs it; not on PID 1's way to the plan)

        rng = random.Random()
    rand = rng
    delay = first
    while True:
        yield rand.uniform(delay / 2, delay)
        delay = min(cap, delay * factor)


def relogin_backoff(rng: random.Random | None = None) -> Iterator[float]:
    """Between logins after the connection broke: a quarter second, doubling to one.

    Connecting is cheap, and the target is then found within a second of its return.
    """
    return backoff(first=0.25, cap=1.0, rng=rng)


def refused_backoff(rng: random.Random | None = None) -> Iterator[float]:
    """Between logins the target refused (credentials, ACL): a second, doubling to a minute.

    A target that restores its configuration after its service started (an account
    before the mutual one, the ACL last) refuses for a moment; wrong credentials are
    not tried over and over.
    """
    return backoff(first=1.0, cap=60.0, rng=rng)


# ------------------------------------------------------------------ mounts


@dataclass(frozen=True)
class MountStep:
    source: str
    target: str
    fstype: str
    options: str
    loop: bool = False
    check: bool = False  # run e2fsck -p first


def mount_plan(
    system_dev: str, system_fs: str, storage_dev: str | None, storage_fs: str | None, sysroot: str
) -> tuple[MountStep, ...]:
    """System read-only at /flash, its SYSTEM squashfs at the new root, Storage read-write at /storage."""
    steps = [
        MountStep(system_dev, "/flash", system_fs, "ro,noatime"),
        MountStep("/flash/SYSTEM", sysroot, "squashfs", "ro", loop=True),
    ]
    if storage_dev is not None and storage_fs is not None:
        steps.append(
            MountStep(storage_dev, "/storage", storage_fs, "rw,noatime", check=storage_fs.startswith("ext"))
        )
    return tuple(steps)


def locators(cfg: BootConfig) -> tuple[Locator, Locator | None]:
    """System (default ``LABEL=System``, as OpenELEC) and Storage (None: no disk= given)."""
    return cfg.system or Locator.parse("LABEL=System"), cfg.storage
