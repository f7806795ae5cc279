"""The iBFT's field encodings: IP and MAC addresses, PCI locations, strings, the checksum.  Pure."""

from __future__ import annotations

import ipaddress
import re

from iscsiboot.secret import Secret


def pci_text(bdf: int) -> str:
    return f"{bdf >> 8:02x}:{(bdf >> 3) & 0x1F:02x}.{bdf & 7}"


def pci_parse(text: str) -> int:
    """``00:03.0`` (or ``0000:00:03.0``, domain 0 only) -> the iBFT's 16-bit BDF."""
    if re.fullmatch(r"(?:[0-9A-Fa-f]{1,4}:)?[0-9A-Fa-f]{1,2}:[0-9A-Fa-f]{1,2}\.[0-7]", text.strip()) is None:
        raise ValueError(text)  # ASCII hex only: int() would take other scripts' digits, signs and "_"
    parts = text.strip().split(":")
    if len(parts) == 3:
        if int(parts[0], 16) != 0:
            raise ValueError("the iBFT has no PCI domain (only domain 0)")
        parts = parts[1:]
    if len(parts) != 2 or "." not in parts[1]:
        raise ValueError(text)
    dev, fn = parts[1].split(".", 1)
    bus, d, f = int(parts[0], 16), int(dev, 16), int(fn, 16)
    if not (0 <= bus <= 0xFF and 0 <= d <= 0x1F and 0 <= f <= 7):
        raise ValueError(text)
    return (bus << 8) | (d << 3) | f


def ip_from_bytes(raw: bytes) -> str | None:
    if raw == bytes(16):
        return None
    if raw[:12] == bytes(10) + b"\xff\xff":
        return str(ipaddress.IPv4Address(raw[12:]))
    return str(ipaddress.IPv6Address(raw))


def ip_to_bytes(text: str | None) -> bytes:
    if text is None:
        return bytes(16)
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return bytes(10) + b"\xff\xff" + ip.packed
    return ip.packed


def mac_from_bytes(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def mac_to_bytes(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6 or not all(re.fullmatch(r"[0-9A-Fa-f]{2}", p) for p in parts):
        raise ValueError(text)
    return bytes(int(p, 16) for p in parts)


def checksum_of(data: bytes) -> int:
    return sum(data) & 0xFF


def encode_string(value: str | Secret | None) -> bytes | None:
    """A table string's bytes (a secret's revealed), ``None`` for an absent one."""
    if value is None:
        return None
    text = value.reveal() if isinstance(value, Secret) else value
    return text.encode("utf-8", errors="surrogateescape")


def address_present(text: str | None) -> bool:
    """The kernel's ``address_not_null``: neither :: nor ::ffff:0.0.0.0."""
    return text is not None and text != "0.0.0.0"
