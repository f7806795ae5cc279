"""What Linux shows under /sys/firmware/ibft for a table (``iscsi_ibft``).  Pure."""

from __future__ import annotations

import ipaddress

from iscsiboot.ibft.codec import address_present, encode_string, ip_to_bytes
from iscsiboot.ibft.types import Table
from iscsiboot.secret import MASK, Secret


def _sysfs_ip(raw: bytes) -> str:
    if raw[:12] == bytes(10) + b"\xff\xff":
        return ".".join(str(b) for b in raw[12:])
    return ":".join(raw[i : i + 2].hex() for i in range(0, 16, 2))


def _sysfs_string(value: str | Secret | None) -> str:
    raw = encode_string(value) or b""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def sysfs_lun(lun: bytes) -> str:
    return "".join(f"{b:x}" for b in lun)


def subnet_mask(prefix: int) -> str:
    if prefix > 32:
        return "255.255.255.255"
    return str(ipaddress.IPv4Address((0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF))


def to_sysfs(table: Table, *, show_secrets: bool = False) -> dict[str, str]:
    """What Linux shows under /sys/firmware/ibft for ``table``: ``{"<dir>/<attr>": value}``.

    Values lack the trailing newline (``subnet-mask`` has none in the kernel
    either); secrets are ``***`` unless ``show_secrets``.
    """
    out: dict[str, str] = {}
    i = table.initiator
    if i is not None:
        out["initiator/index"] = str(i.index)
        out["initiator/flags"] = str(i.flags)
        for attr, name in (
            ("isns_server", "isns-server"),
            ("slp_server", "slp-server"),
            ("pri_radius_server", "pri-radius-server"),
            ("sec_radius_server", "sec-radius-server"),
        ):
            value = getattr(i, attr)
            if address_present(value):
                out[f"initiator/{name}"] = _sysfs_ip(ip_to_bytes(value))
        if i.name:
            out["initiator/initiator-name"] = _sysfs_string(i.name)
    for n in table.nics:
        d = f"ethernet{n.index}"
        out[f"{d}/index"] = str(n.index)
        out[f"{d}/flags"] = str(n.flags)
        if address_present(n.ip_address):
            out[f"{d}/ip-addr"] = _sysfs_ip(ip_to_bytes(n.ip_address))
        if n.prefix:
            out[f"{d}/prefix-len"] = str(n.prefix)
            out[f"{d}/subnet-mask"] = subnet_mask(n.prefix)
        out[f"{d}/origin"] = str(n.origin)
        for attr, name in (
            ("gateway", "gateway"),
            ("primary_dns", "primary-dns"),
            ("secondary_dns", "secondary-dns"),
            ("dhcp", "dhcp"),
        ):
            value = getattr(n, attr)
            if address_present(value):
                out[f"{d}/{name}"] = _sysfs_ip(ip_to_bytes(value))
        out[f"{d}/vlan"] = str(n.vlan)
        out[f"{d}/mac"] = n.mac
        if n.hostname is not None:
            out[f"{d}/hostname"] = _sysfs_string(n.hostname)
    for t in table.targets:
        d = f"target{t.index}"
        out[f"{d}/index"] = str(t.index)
        out[f"{d}/flags"] = str(t.flags)
        out[f"{d}/ip-addr"] = _sysfs_ip(ip_to_bytes(t.address))
        out[f"{d}/port"] = str(t.port)
        out[f"{d}/lun"] = sysfs_lun(t.lun)
        out[f"{d}/nic-assoc"] = str(t.nic_assoc)
        out[f"{d}/chap-type"] = str(t.chap_type)
        if t.name:
            out[f"{d}/target-name"] = _sysfs_string(t.name)
        if t.chap_name:
            out[f"{d}/chap-name"] = _sysfs_string(t.chap_name)
            out[f"{d}/chap-secret"] = _sysfs_string(t.chap_secret) if show_secrets else MASK
        if t.rev_chap_name:
            out[f"{d}/rev-chap-name"] = _sysfs_string(t.rev_chap_name)
            out[f"{d}/rev-chap-name-secret"] = _sysfs_string(t.rev_chap_secret) if show_secrets else MASK
    out["acpi_header/signature"] = table.signature
    out["acpi_header/oem_id"] = table.oem_id
    out["acpi_header/oem_table_id"] = table.oem_table_id
    return dict(sorted(out.items()))
