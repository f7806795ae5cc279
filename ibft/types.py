"""The iSCSI Boot Firmware Table as values: its constants and structures.

Strings in the table are ``str | None``: ``None`` when the (length, offset)
pair is (0, 0), ``""`` when the length is 0 but the offset is not.  IP
addresses are ``str | None``: ``None`` for sixteen zero bytes, a dotted quad
for an IPv4-mapped address (``0.0.0.0`` for ``::ffff:0.0.0.0``), otherwise
the compressed IPv6 text.  Each string also carries its heap reference
(``*_ref``) so a table rebuilds byte for byte; those references take no part
in equality.

Pure, and free of ``construct``: the layouts (:mod:`iscsiboot.ibft.layouts`)
import their sizes from here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from iscsiboot.ibft.codec import pci_text
from iscsiboot.model import DEFAULT_PORT
from iscsiboot.secret import Secret

SIGNATURES = ("iBFT", "IBFT", "BIFT")
HEADER_SIZE = 48
CONTROL_MIN = 18
INITIATOR_SIZE = 74
NIC_SIZE = 102
TARGET_SIZE = 54
IPXE_ALIGN = 16
MAX_LENGTH = 0x10000  # string offsets are 16-bit: nothing beyond 64 KiB can be referenced
IPXE_OEM_ID = "FENSYS"
IPXE_OEM_TABLE_ID = "iPXE"
QEMU_MAC = "52:54:00:12:34:56"
QEMU_PCI = 0x0018  # 00:03.0, where QEMU's i440fx machine puts the first added NIC

FLAG_VALID = 0x01
FLAG_BOOT = 0x02
NIC_FLAG_GLOBAL = 0x04
TARGET_FLAG_RADIUS_CHAP = 0x04
TARGET_FLAG_RADIUS_REVERSE = 0x08


class StructId(enum.IntEnum):
    RESERVED = 0
    CONTROL = 1
    INITIATOR = 2
    NIC = 3
    TARGET = 4
    EXTENSIONS = 5


class ChapType(enum.IntEnum):
    NONE = 0
    CHAP = 1
    MUTUAL = 2


ORIGINS = {0: "other", 1: "manual", 2: "well-known", 3: "dhcp", 4: "router-advertisement"}
ORIGIN_MANUAL = 1
ORIGIN_DHCP = 3


@dataclass(frozen=True)
class Ref:
    """A heap reference: ``length`` bytes at table offset ``offset`` (plus a NUL)."""

    length: int = 0
    offset: int = 0


NOREF = Ref()


@dataclass(frozen=True)
class Control:
    offset: int = HEADER_SIZE
    version: int = 1
    length: int = CONTROL_MIN
    index: int = 0
    flags: int = 0
    extensions: int = 0
    initiator_offset: int = 0
    # the u16 offsets after the initiator's: NIC 0, target 0, NIC 1, target 1, ...
    slots: tuple[int, ...] = (0, 0, 0, 0)


@dataclass(frozen=True)
class Initiator:
    offset: int = 0
    version: int = 1
    length: int = INITIATOR_SIZE
    index: int = 0
    flags: int = FLAG_VALID | FLAG_BOOT
    isns_server: str | None = None
    slp_server: str | None = None
    pri_radius_server: str | None = None
    sec_radius_server: str | None = None
    name: str | None = None
    name_ref: Ref = field(default=NOREF, compare=False)


@dataclass(frozen=True)
class Nic:
    offset: int = 0
    version: int = 1
    length: int = NIC_SIZE
    index: int = 0
    flags: int = FLAG_VALID | FLAG_BOOT
    ip_address: str | None = None
    prefix: int = 0
    origin: int = ORIGIN_DHCP
    gateway: str | None = None
    primary_dns: str | None = None
    secondary_dns: str | None = None
    dhcp: str | None = None
    vlan: int = 0
    mac: str = "00:00:00:00:00:00"
    pci_bdf: int = 0
    hostname: str | None = None
    hostname_ref: Ref = field(default=NOREF, compare=False)

    @property
    def pci(self) -> str:
        return pci_text(self.pci_bdf)


@dataclass(frozen=True)
class IbftTarget:
    offset: int = 0
    version: int = 1
    length: int = TARGET_SIZE
    index: int = 0
    flags: int = FLAG_VALID | FLAG_BOOT
    address: str | None = None
    port: int = DEFAULT_PORT
    lun: bytes = bytes(8)
    chap_type: int = ChapType.NONE
    nic_assoc: int = 0
    name: str | None = None
    chap_name: str | None = None
    chap_secret: Secret | None = None
    rev_chap_name: str | None = None
    rev_chap_secret: Secret | None = None
    name_ref: Ref = field(default=NOREF, compare=False)
    chap_name_ref: Ref = field(default=NOREF, compare=False)
    chap_secret_ref: Ref = field(default=NOREF, compare=False)
    rev_chap_name_ref: Ref = field(default=NOREF, compare=False)
    rev_chap_secret_ref: Ref = field(default=NOREF, compare=False)


@dataclass(frozen=True)
class Table:
    signature: str = "iBFT"
    length: int = 0
    revision: int = 1
    checksum: int = 0
    oem_id: str = IPXE_OEM_ID
    oem_table_id: str = IPXE_OEM_TABLE_ID
    oem_revision: int = 0
    creator_id: int = 0
    creator_revision: int = 0
    reserved: bytes = bytes(12)
    control: Control = field(default_factory=Control)
    initiator: Initiator | None = None
    nics: tuple[Nic, ...] = ()
    targets: tuple[IbftTarget, ...] = ()

    def secrets(self) -> tuple[Secret, ...]:
        return tuple(
            s
            for t in self.targets
            for s in (t.chap_secret, t.rev_chap_secret)
            if s is not None and s.reveal()
        )


@dataclass(frozen=True)
class Parsed:
    table: Table
    warnings: tuple[str, ...] = ()
