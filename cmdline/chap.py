"""Rules every generated CHAP name and secret must meet, whatever the format.

open-iscsi and the iBFT take at most 255 bytes; CHAP names and secrets on a
command line, in a root path or an iPXE script must be printable ASCII.
RFC 3720 asks for secrets of at least 12 bytes: shorter ones only give a
warning, because tgt and open-iscsi accept them (other targets refuse them).
"""

from __future__ import annotations

import re

from iscsiboot.errors import RepresentError

#: Longest CHAP name or secret that open-iscsi and the iBFT take.
CHAP_MAX = 255
#: RFC 3720 asks for CHAP secrets of at least 12 bytes; some targets refuse shorter.
CHAP_MIN_ADVISED = 12
_PRINTABLE = re.compile(r"[\x20-\x7e]+")


def check_credential(value: str, what: str) -> str:
    """``value`` when it is 1-255 printable ASCII characters; else RepresentError (value never shown)."""
    if not _PRINTABLE.fullmatch(value):
        raise RepresentError(
            f"the {what} is empty or not printable ASCII",
            fix="choose a CHAP name and secret of printable ASCII characters",
        )
    if len(value) > CHAP_MAX:
        raise RepresentError(
            f"the {what} has {len(value)} characters; open-iscsi and the iBFT take {CHAP_MAX}"
        )
    return value
