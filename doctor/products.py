"""Which target product answers, from its INQUIRY data, and the advice that differs by product.

The vendor and product fields of standard INQUIRY data name the
implementation (SPC-4 6.6.2): tgt answers ``IET`` (``VIRTUAL-DISK`` for a
disk, ``Controller`` for its LUN 0), the Linux kernel's LIO target (which
Synology, QNAP and TrueNAS SCALE run) ``LIO-ORG``, istgt ``FreeBSD``
(``iSCSI DISK``).  Where the advice is the same for every target the doctor
names none.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable


class Product(enum.Enum):
    TGT = "tgt"
    LIO = "LIO"
    ISTGT = "istgt"
    UNKNOWN = "unknown"


_VENDORS = {"IET": Product.TGT, "LIO-ORG": Product.LIO, "FREEBSD": Product.ISTGT}


def identify(vendor: str) -> Product:
    """The product whose INQUIRY vendor field is ``vendor`` (spaces around it ignored)."""
    return _VENDORS.get(vendor.strip().upper(), Product.UNKNOWN)


def identify_any(vendors: Iterable[str]) -> Product:
    """The product behind a target's LUNs: the first vendor field that names one."""
    for vendor in vendors:
        found = identify(vendor)
        if found is not Product.UNKNOWN:
            return found
    return Product.UNKNOWN


def lun_layout(product: Product) -> str:
    """Where ``product`` puts its disks, as a clause for a fix."""
    if product is Product.TGT:
        return "tgt keeps LUN 0 for its controller and serves its first disk at LUN 1"
    if product is Product.LIO:
        return "LIO serves the first disk it maps at LUN 0"
    if product is Product.ISTGT:
        return "istgt serves a logical unit's first disk at LUN 0"
    return "tgt serves its first disk at LUN 1, LIO and istgt at LUN 0"


def lun_fix(product: Product, disks: Iterable[int]) -> str:
    """The fix for settings that point at a LUN which is not the disk."""
    found = list(disks)
    where = f"the disk here is LUN {found[0]}" if found else "this target serves no disk"
    return f"point the settings at the disk LUN: {where} ({lun_layout(product)})"
