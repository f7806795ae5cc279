"""A table as the boot model, and the table iPXE would write for a model.  Pure."""

from __future__ import annotations

import ipaddress

from iscsiboot.errors import RepresentError, UsageError
from iscsiboot.ibft.codec import address_present, encode_string, mac_to_bytes
from iscsiboot.ibft.types import (
    FLAG_BOOT,
    IPXE_OEM_ID,
    IPXE_OEM_TABLE_ID,
    ORIGIN_DHCP,
    ORIGIN_MANUAL,
    QEMU_MAC,
    QEMU_PCI,
    SIGNATURES,
    ChapType,
    IbftTarget,
    Initiator,
    Nic,
    Table,
)
from iscsiboot.model import (
    DEFAULT_PORT,
    BootConfig,
    Chap,
    NetMode,
    Network,
    Target,
    address_kind,
    lun_from_sam,
    lun_to_sam,
)


def plausible_host(address: str) -> bool:
    """False for IPv4 addresses no host has (0/8, loopback, multicast, class E, broadcast)."""
    ip = ipaddress.ip_address(address)
    if ip.version != 4:
        return not (ip.is_unspecified or ip.is_multicast or ip.is_loopback)
    first = int(ip) >> 24
    return not (first in {0, 127} or first >= 224)


def lun_warning(lun: bytes) -> str | None:
    """A LUN whose bytes look like a little-endian integer (u-root's layout), not SAM order."""
    if lun[0] != 0 and not any(lun[1:]):
        as_le = int.from_bytes(lun, "little")
        return (
            f"LUN bytes {lun.hex(' ')} read in SAM order are LUN {lun_from_sam(lun)}, "
            f"but look like LUN {as_le} written as a little-endian integer; SAM order was assumed"
        )
    return None


def _is_valid(flags: int) -> bool:
    # open-iscsi takes any non-zero flags as valid: some firmware sets only the boot bit
    return flags != 0


def _credentials(t: IbftTarget, where: str, warnings: list[str]) -> tuple[Chap | None, Chap | None]:
    """The target's one-way and reverse CHAP, as its CHAP type says (the problems as warnings)."""
    chap: Chap | None = None
    reverse: Chap | None = None
    if t.chap_type not in (0, 1, 2):
        warnings.append(f"{where}: unknown CHAP type {t.chap_type}; treated as mutual CHAP")
    if t.chap_type >= ChapType.CHAP:
        if t.chap_name and t.chap_secret is not None and t.chap_secret.reveal():
            chap = Chap(t.chap_name, t.chap_secret)
        else:
            warnings.append(f"{where}: CHAP type {t.chap_type} without a CHAP name and secret")
    if t.chap_type >= ChapType.MUTUAL and chap is not None:
        if t.rev_chap_name and t.rev_chap_secret is not None and t.rev_chap_secret.reveal():
            reverse = Chap(t.rev_chap_name, t.rev_chap_secret)
        else:
            warnings.append(f"{where}: mutual CHAP without a reverse CHAP name and secret")
    if t.chap_type == ChapType.NONE and t.chap_name:
        warnings.append(f"{where}: CHAP credentials present but CHAP type is 0; not used")
    return chap, reverse


def table_to_model(table: Table) -> tuple[BootConfig, tuple[str, ...]]:
    """The boot model the table describes (``firmware=True``), and warnings."""
    warnings: list[str] = []
    chosen = [t for t in table.targets if t.flags & FLAG_BOOT]
    chosen += [t for t in table.targets if _is_valid(t.flags) and not t.flags & FLAG_BOOT]
    for t in table.targets:
        if not _is_valid(t.flags):
            warnings.append(f"target{t.index}: flags 0 (not valid); ignored")
    nic_by_index = {n.index: n for n in table.nics}
    targets: list[Target] = []
    first_nic: Nic | None = None
    for t in chosen:
        where = f"target{t.index}"
        if t.nic_assoc not in nic_by_index:
            warnings.append(f"{where}: its NIC association {t.nic_assoc} points to no NIC structure")
        elif first_nic is None:
            first_nic = nic_by_index[t.nic_assoc]
        if t.address is not None and not plausible_host(t.address):
            warnings.append(
                f"{where}: address {t.address} is not a plausible host (old iPXE wrote such IPv4-mapped "
                "values for IPv6 targets)" + ("; ignored" if t.address == "0.0.0.0" else "")
            )
            if t.address == "0.0.0.0":
                continue
        if not t.name or t.address is None:
            warnings.append(f"{where}: no target {'name' if t.address else 'address'}; ignored")
            continue
        lw = lun_warning(t.lun)
        if lw:
            warnings.append(f"{where}: {lw}")
        try:  # the model's own checks refuse a name or secret with a NUL or bytes that were not UTF-8
            chap, reverse = _credentials(t, where, warnings)
            targets.append(
                Target(
                    name=t.name,
                    address=t.address,
                    port=t.port or DEFAULT_PORT,
                    lun=lun_from_sam(t.lun),
                    chap=chap,
                    reverse_chap=reverse,
                )
            )
        except UsageError as exc:  # the model's own checks
            warnings.append(f"{where}: {exc}; ignored")
    if not table.targets:
        warnings.append("the table has no target")
    if first_nic is None:
        boot_nics = [n for n in table.nics if n.flags & FLAG_BOOT] or list(table.nics)
        if boot_nics:
            first_nic = boot_nics[0]
    network = Network(mode=NetMode.FIRMWARE)
    if first_nic is not None:
        network = _network_of(first_nic, warnings)
    initiator = table.initiator.name if table.initiator is not None and table.initiator.name else None
    if initiator is not None:
        try:
            BootConfig(initiator=initiator)
        except UsageError as exc:  # the model's own checks
            warnings.append(f"initiator: {exc}; ignored")
            initiator = None
    return BootConfig(firmware=True, initiator=initiator, targets=tuple(targets), network=network), tuple(
        warnings
    )


def _network_of(n: Nic, warnings: list[str]) -> Network:
    where = f"ethernet{n.index}"
    server = n.dhcp if address_present(n.dhcp) else None
    vlan = n.vlan or None
    if vlan is not None and not 1 <= vlan <= 4094:
        warnings.append(f"{where}: VLAN {vlan} is out of range; ignored")
        vlan = None
    hostname = n.hostname or None
    if hostname is not None:
        try:
            address_kind(hostname)
        except UsageError:
            warnings.append(f"{where}: host name {hostname!r} is not valid; ignored")
            hostname = None
    if n.ip_address is not None and address_present(n.ip_address) and not plausible_host(n.ip_address):
        warnings.append(f"{where}: address {n.ip_address} is not a plausible host")
    if n.origin == ORIGIN_DHCP or server is not None:
        return Network(mode=NetMode.DHCP, mac=n.mac, server=server, hostname=hostname, vlan=vlan)
    if not address_present(n.ip_address):
        warnings.append(f"{where}: static origin ({n.origin}) without an address; using DHCP")
        return Network(mode=NetMode.DHCP, mac=n.mac, hostname=hostname, vlan=vlan)
    dns = tuple(d for d in (n.primary_dns, n.secondary_dns) if d is not None and address_present(d))
    gateway = n.gateway if address_present(n.gateway) else None
    limit = 32 if n.ip_address is not None and ":" not in n.ip_address else 128
    prefix = n.prefix
    if prefix > limit:
        warnings.append(f"{where}: prefix length {prefix} is out of range; using {limit}")
        prefix = limit
    return Network(
        mode=NetMode.STATIC,
        mac=n.mac,
        address=n.ip_address,
        prefix=prefix,
        gateway=gateway,
        dns=dns,
        hostname=hostname,
        vlan=vlan,
    )


def model_to_table(
    cfg: BootConfig,
    *,
    mac: str | None = None,
    pci: int = QEMU_PCI,
    oem_id: str = IPXE_OEM_ID,
    oem_table_id: str = IPXE_OEM_TABLE_ID,
    signature: str = "iBFT",
) -> Table:
    """The table iPXE would write for ``cfg`` (one NIC, every target on it)."""
    if not cfg.targets:
        raise RepresentError("the model has no target", where="targets", fix="give at least one target")
    if signature not in SIGNATURES:
        raise RepresentError(f"signature {signature!r} is not one of {', '.join(SIGNATURES)}")
    net = cfg.network
    nic_mac = mac or net.mac or QEMU_MAC
    try:
        mac_to_bytes(nic_mac.lower())
    except ValueError:
        raise RepresentError(f"MAC address {nic_mac!r} is not of the form aa:bb:cc:dd:ee:ff") from None
    if not 0 <= pci <= 0xFFFF:
        raise RepresentError(f"PCI location 0x{pci:x} does not fit 16 bits")
    if len(net.dns) > 2:
        raise RepresentError(f"{len(net.dns)} DNS servers; the iBFT holds two", where="network.dns")
    static = net.mode is NetMode.STATIC
    nic = Nic(
        ip_address=net.address,
        prefix=net.prefix or 0,
        origin=ORIGIN_MANUAL if static else ORIGIN_DHCP,
        gateway=net.gateway,
        primary_dns=net.dns[0] if net.dns else None,
        secondary_dns=net.dns[1] if len(net.dns) > 1 else None,
        # the DHCP server field marks a DHCP-configured NIC for its readers: only DHCP fills it
        dhcp=None if static else net.server,
        vlan=net.vlan or 0,
        mac=nic_mac.lower(),
        pci_bdf=pci,
        hostname=net.hostname,
    )
    targets: list[IbftTarget] = []
    for i, t in enumerate(cfg.targets):
        if address_kind(t.address) == "hostname":
            raise RepresentError(
                f"target address {t.address!r} is a host name; the iBFT holds only IP addresses",
                where=f"targets[{i}].address",
                fix="give the portal's IP address",
            )
        chap_type = ChapType.NONE
        if t.chap is not None:
            chap_type = ChapType.MUTUAL if t.reverse_chap is not None else ChapType.CHAP
        targets.append(
            IbftTarget(
                index=i,
                address=t.address,
                port=t.port,
                lun=lun_to_sam(t.lun or 0),
                chap_type=int(chap_type),
                nic_assoc=0,
                name=t.name,
                chap_name=t.chap.username if t.chap else None,
                chap_secret=t.chap.password if t.chap else None,
                rev_chap_name=t.reverse_chap.username if t.reverse_chap else None,
                rev_chap_secret=t.reverse_chap.password if t.reverse_chap else None,
            )
        )
    for i, it in enumerate(targets):
        for attr in ("name", "chap_name", "chap_secret", "rev_chap_name", "rev_chap_secret"):
            if len(encode_string(getattr(it, attr)) or b"") > 0xFFFF:
                raise RepresentError(f"{attr} is longer than 65535 bytes", where=f"targets[{i}]")
    table = Table(
        signature=signature,
        oem_id=oem_id,
        oem_table_id=oem_table_id,
        initiator=Initiator(name=cfg.initiator),
        nics=(nic,),
        targets=tuple(targets),
    )
    from iscsiboot.ibft.build import layout  # noqa: PLC0415  (model to table: not the boot agent's way)

    table = layout(table)
    if table.length > 0xFFFF:
        raise RepresentError(
            f"the table would be {table.length} bytes; string offsets are 16-bit",
            fix="use shorter names",
        )
    return table
