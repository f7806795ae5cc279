"""The iBFT structures as ``construct`` layouts (ACPI header, control, initiator, NIC, target).

Separate from :mod:`iscsiboot.ibft.types` (whose sizes they check) so that only
parsing and building raw tables import ``construct``.
"""

from __future__ import annotations

from construct import Array, Bytes, ConstructError, Int8ul, Int16ul, Int32ul, Struct
from iscsiboot.ibft.types import INITIATOR_SIZE, NIC_SIZE, TARGET_SIZE

COMMON = Struct("id" / Int8ul, "version" / Int8ul, "length" / Int16ul, "index" / Int8ul, "flags" / Int8ul)
REF = Struct("length" / Int16ul, "offset" / Int16ul)
IP = Bytes(16)

HEADER = Struct(
    "signature" / Bytes(4),
    "length" / Int32ul,
    "revision" / Int8ul,
    "checksum" / Int8ul,
    "oem_id" / Bytes(6),
    "oem_table_id" / Bytes(8),
    "oem_revision" / Int32ul,
    "creator_id" / Int32ul,
    "creator_revision" / Int32ul,
    "reserved" / Bytes(12),
)
CONTROL_FIXED = Struct("hdr" / COMMON, "extensions" / Int16ul, "initiator" / Int16ul)
INITIATOR = Struct(
    "hdr" / COMMON,
    "isns_server" / IP,
    "slp_server" / IP,
    "pri_radius_server" / IP,
    "sec_radius_server" / IP,
    "name" / REF,
)
NIC = Struct(
    "hdr" / COMMON,
    "ip_address" / IP,
    "prefix" / Int8ul,
    "origin" / Int8ul,
    "gateway" / IP,
    "primary_dns" / IP,
    "secondary_dns" / IP,
    "dhcp" / IP,
    "vlan" / Int16ul,
    "mac" / Bytes(6),
    "pci_bdf" / Int16ul,
    "hostname" / REF,
)
TARGET = Struct(
    "hdr" / COMMON,
    "address" / IP,
    "port" / Int16ul,
    "lun" / Bytes(8),
    "chap_type" / Int8ul,
    "nic_assoc" / Int8ul,
    "name" / REF,
    "chap_name" / REF,
    "chap_secret" / REF,
    "rev_chap_name" / REF,
    "rev_chap_secret" / REF,
)
assert INITIATOR.sizeof() == INITIATOR_SIZE and NIC.sizeof() == NIC_SIZE and TARGET.sizeof() == TARGET_SIZE


__all__ = [
    "COMMON",
    "CONTROL_FIXED",
    "HEADER",
    "INITIATOR",
    "IP",
    "NIC",
    "REF",
    "TARGET",
    "Array",
    "ConstructError",
    "Int16ul",
]  # fmt: skip
