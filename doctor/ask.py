"""Ask a target which LUN is its disk, as the box would log in (``generate ipxe --lun-from-target``).

tgt serves its first disk at LUN 1 (LUN 0 is its controller), LIO and istgt at
LUN 0; rather than assume either, log in with the box's initiator name and
CHAP, and take the first LUN whose INQUIRY says disk.
"""

from __future__ import annotations

import dataclasses

from iscsiboot.doctor.checks import login_cause
from iscsiboot.doctor.products import Product, identify
from iscsiboot.errors import IscsibootError, UsageError
from iscsiboot.iscsi.session import Session
from iscsiboot.model import BootConfig
from iscsiboot.secret import mask


def with_target_lun(cfg: BootConfig, *, timeout: float) -> tuple[BootConfig, str]:
    """``cfg`` with its first target's LUN as that target reports it, and a line saying so."""
    if not cfg.targets:
        raise UsageError(
            "asking the target for its LUN needs the target", fix="give --target-ip and --target-name"
        )
    if cfg.initiator is None:
        raise UsageError(
            "asking the target for its LUN needs the box's initiator name (the target's ACL knows it)",
            fix="give --initiator",
        )
    t = cfg.targets[0]
    if t.lun is not None:
        raise UsageError("--lun and --lun-from-target both given", fix="drop one")
    try:
        with Session.login(
            t.address,
            t.port,
            initiator=cfg.initiator,
            target=t.name,
            chap=t.chap,
            reverse_chap=t.reverse_chap,
            timeout=timeout,
        ) as session:
            disks = session.disk_luns()
            inquiry = session.inquiry(disks[0]) if disks else None
    except (IscsibootError, OSError) as exc:
        cause, fix = login_cause(exc, t, cfg.initiator)
        raise IscsibootError(
            mask(f"cannot ask {t.name} at {t.portal} for its LUNs: {cause}", cfg.secrets()), fix=fix
        ) from None
    if not disks or inquiry is None:
        raise IscsibootError(f"{t.name} at {t.portal} serves no disk LUN", fix="add a disk to the target")
    product = identify(inquiry.vendor)
    named = "" if product is Product.UNKNOWN else f", {product.value}"
    note = f"{t.name} serves its first disk at LUN {disks[0]} ({inquiry.vendor} {inquiry.product}{named})"
    targets = (dataclasses.replace(t, lun=disks[0]), *cfg.targets[1:])
    return dataclasses.replace(cfg, targets=targets), note
