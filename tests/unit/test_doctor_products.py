"""The target product from INQUIRY's vendor field, the LUN advice that differs by product,
and discovery's warning about a target listed at another address (LIO behind forwarding)."""

from __future__ import annotations

import pytest
from iscsiboot.doctor.cli import elsewhere
from iscsiboot.doctor.products import Product, identify, identify_any, lun_fix, lun_layout
from iscsiboot.iscsi.session import DiscoveredTarget


@pytest.mark.parametrize(
    ("vendor", "product"),
    [
        ("IET     ", Product.TGT),
        ("LIO-ORG ", Product.LIO),
        ("FreeBSD ", Product.ISTGT),
        ("SYNOLOGY", Product.UNKNOWN),
        ("", Product.UNKNOWN),
    ],
)
def test_identify_by_vendor(vendor: str, product: Product) -> None:
    assert identify(vendor) is product


def test_identify_any_takes_the_first_known_vendor() -> None:
    assert identify_any(["ACME", "LIO-ORG", "IET"]) is Product.LIO
    assert identify_any([]) is Product.UNKNOWN


def test_lun_fix_names_the_disk_and_the_product_layout() -> None:
    assert "LUN 1" in lun_fix(Product.TGT, [1]) and "controller" in lun_fix(Product.TGT, [1])
    assert lun_fix(Product.LIO, [0]).startswith("point the settings at the disk LUN: the disk here is LUN 0")
    assert "LIO" in lun_fix(Product.LIO, [0])
    assert "no disk" in lun_fix(Product.ISTGT, [])
    assert "tgt" in lun_layout(Product.UNKNOWN) and "LIO" in lun_layout(Product.UNKNOWN)


def test_discover_warns_of_a_target_listed_only_elsewhere() -> None:
    lio = DiscoveredTarget("iqn.2003-01.org.linux-iscsi:nas", ("10.0.2.15:3260,1",))
    same = DiscoveredTarget("iqn.2001-04.com.example:tgt", ("127.0.0.1:40000,1",))
    bare = DiscoveredTarget("iqn.2001-04.com.example:bare", ())
    (line,) = elsewhere((lio, same, bare), "127.0.0.1", 40000)
    assert line.startswith(
        "iqn.2003-01.org.linux-iscsi:nas is listed at 10.0.2.15:3260, not at 127.0.0.1:40000"
    )
    assert elsewhere((DiscoveredTarget("t", ("[fd00::2]:3260,1",)),), "fd00::2", 3260) == []
