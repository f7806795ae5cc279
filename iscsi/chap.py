"""CHAP for iSCSI (RFC 1994, RFC 7143 §12.1.3): responses and their checks.

``R = H(one octet identifier || secret || challenge)``; algorithm 5 is MD5,
the one every iSCSI target knows.  Pure: randomness comes from the caller.
"""

from __future__ import annotations

import hashlib
import hmac

from iscsiboot.iscsi.pdu import ProtocolError

ALGORITHMS = {5: "md5", 6: "sha1", 7: "sha256"}
MD5 = 5
CHALLENGE_LEN = 16


def response(ident: int, secret: bytes, challenge: bytes, algorithm: int = MD5) -> bytes:
    """The CHAP response to ``challenge`` with identifier ``ident``."""
    if not 0 <= ident <= 255:
        raise ProtocolError(f"CHAP identifier {ident} is not 0-255")
    try:
        name = ALGORITHMS[algorithm]
    except KeyError:
        raise ProtocolError(f"CHAP algorithm {algorithm} is not supported") from None
    return hashlib.new(name, bytes([ident]) + secret + challenge).digest()


def verify(ident: int, secret: bytes, challenge: bytes, answer: bytes, algorithm: int = MD5) -> bool:
    """True when ``answer`` proves knowledge of ``secret`` (constant-time compare)."""
    return hmac.compare_digest(response(ident, secret, challenge, algorithm), answer)
